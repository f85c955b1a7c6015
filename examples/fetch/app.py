"""fetch: sends the request on to an origin by name and rewrites the answer.

The method, path and body go to the origin (the body is streamed: the guest copies it chunk by
chunk while the origin reads it).

The origin comes from env `ORIGIN` (default `web`): `http://web/...` reaches the origin pool
named `web` when the function's `outbound` lists it. The response gains `x-fetched-by` and its
body is prefixed with `fetched: `. If the call is refused or fails, the function answers 502
naming the wasi:http error-code it got.
"""

import os

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, streams, types

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}


def read_all(body: types.IncomingBody) -> bytes:
    stream = body.stream()
    parts = []
    while True:
        try:
            parts.append(stream.blocking_read(65536))
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise
    stream.__exit__(None, None, None)
    types.IncomingBody.finish(body)
    return b"".join(parts)


def write_all(stream: streams.OutputStream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = stream.check_write()
        if n == 0:
            with stream.subscribe() as ready:
                ready.block()
            continue
        stream.write(bytes(view[:n]))
        view = view[n:]
    stream.flush()
    with stream.subscribe() as ready:
        ready.block()


def respond(response_out: types.ResponseOutparam, status: int, headers: list, body: bytes) -> None:
    response = types.OutgoingResponse(types.Fields.from_list(headers))
    response.set_status_code(status)
    out = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    stream = out.write()
    write_all(stream, body)
    stream.__exit__(None, None, None)
    types.OutgoingBody.finish(out, None)


def copy_body(source: types.IncomingRequest, sink: types.OutgoingBody) -> None:
    body = source.consume()
    reader = body.stream()
    writer = sink.write()
    while True:
        try:
            chunk = reader.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise
        write_all(writer, chunk)
    reader.__exit__(None, None, None)
    types.IncomingBody.finish(body)
    writer.__exit__(None, None, None)
    types.OutgoingBody.finish(sink, None)


def fetch(origin: str, incoming: types.IncomingRequest) -> types.IncomingResponse:
    method = incoming.method()
    request = types.OutgoingRequest(types.Fields.from_list([("x-from-function", b"fetch")]))
    request.set_method(method)
    request.set_scheme(types.Scheme_Http())
    request.set_authority(origin)
    request.set_path_with_query(incoming.path_with_query() or "/")
    has_body = not isinstance(method, (types.Method_Get, types.Method_Head))
    out_body = request.body() if has_body else None
    future = outgoing_handler.handle(request, None)
    if out_body is not None:
        copy_body(incoming, out_body)
    while True:
        result = future.get()
        if result is None:
            with future.subscribe() as ready:
                ready.block()
            continue
        if isinstance(result, Err):
            raise RuntimeError("response already taken")
        inner = result.value
        if isinstance(inner, Err):
            raise inner
        return inner.value


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        origin = os.environ.get("ORIGIN", "web")
        path = request.path_with_query() or "/"
        try:
            upstream = fetch(origin, request)
        except Err as e:
            name = type(e.value).__name__
            print(f"fetch {origin}{path} failed: {name}")
            respond(response_out, 502, [("content-type", b"text/plain")], f"outbound error: {name}".encode())
            return
        headers = [(k, v) for k, v in upstream.headers().entries() if k.lower() not in HOP_BY_HOP]
        headers.append(("x-fetched-by", b"edgefn-fetch"))
        status = upstream.status()
        body = read_all(upstream.consume())
        respond(response_out, status, headers, b"fetched: " + body)
