"""edge: an edge function for either trigger, in the Workers model.

It forwards the request down the pipeline by sending it to the URL it received (same authority),
with `x-edge-<ROLE>: 1` added, and streams back what the pipeline answered with
`x-edge-<ROLE>-response: 1` added. ROLE comes from env `ROLE` (`viewer` or `origin`).

- A path containing `/edge-answer` is answered by the function itself (a viewer can short-cut).
- With env `PICK_ORIGIN` set, the forwarded request carries `x-edgefn-origin: <PICK_ORIGIN>`, which
  picks that endpoint (URL or region) of the route's origin pool.
- With env `TRY_HOST` set, the function also tries to change the read-only `host` header; the
  gateway keeps the original and logs the attempt.
"""

import os

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, streams, types

SKIP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host"}


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


def pump(reader: streams.InputStream, writer: streams.OutputStream) -> None:
    """Copy a body chunk by chunk, flushing each, so streaming survives the function."""
    while True:
        try:
            chunk = reader.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return
            raise
        if chunk:
            write_all(writer, chunk)


def forward(incoming: types.IncomingRequest, role: str) -> types.IncomingResponse:
    pairs = [(k, v) for k, v in incoming.headers().entries() if k.lower() not in SKIP]
    pairs.append((f"x-edge-{role}", b"1"))
    pick = os.environ.get("PICK_ORIGIN")
    if pick:
        pairs.append(("x-edgefn-origin", pick.encode()))
    if os.environ.get("TRY_HOST"):
        pairs.append(("host", b"evil.example"))
    try:
        fields = types.Fields.from_list(pairs)
    except Err:
        fields = types.Fields.from_list([p for p in pairs if p[0] != "host"])
    request = types.OutgoingRequest(fields)
    method = incoming.method()
    request.set_method(method)
    request.set_scheme(incoming.scheme() or types.Scheme_Http())
    request.set_authority(incoming.authority())
    request.set_path_with_query(incoming.path_with_query() or "/")
    has_body = not isinstance(method, (types.Method_Get, types.Method_Head))
    out_body = request.body() if has_body else None
    future = outgoing_handler.handle(request, None)
    if out_body is not None:
        body = incoming.consume()
        reader = body.stream()
        writer = out_body.write()
        pump(reader, writer)
        reader.__exit__(None, None, None)
        types.IncomingBody.finish(body)
        writer.__exit__(None, None, None)
        types.OutgoingBody.finish(out_body, None)
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


def respond_text(response_out: types.ResponseOutparam, status: int, text: str) -> None:
    response = types.OutgoingResponse(types.Fields.from_list([("content-type", b"text/plain")]))
    response.set_status_code(status)
    out = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    stream = out.write()
    write_all(stream, text.encode())
    stream.__exit__(None, None, None)
    types.OutgoingBody.finish(out, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        role = os.environ.get("ROLE", "viewer")
        print(f"edge {role} ran for {request.path_with_query()}")
        if "/edge-answer" in (request.path_with_query() or ""):
            respond_text(response_out, 200, f"answered at the edge by the {role} function\n")
            return
        try:
            upstream = forward(request, role)
        except Err as e:
            respond_text(response_out, 502, f"edge {role}: forward failed: {type(e.value).__name__}\n")
            return
        headers = [(k, v) for k, v in upstream.headers().entries() if k.lower() not in SKIP]
        headers.append((f"x-edge-{role}-response", b"1"))
        response = types.OutgoingResponse(types.Fields.from_list(headers))
        response.set_status_code(upstream.status())
        out = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        body = upstream.consume()
        reader = body.stream()
        writer = out.write()
        pump(reader, writer)
        reader.__exit__(None, None, None)
        types.IncomingBody.finish(body)
        writer.__exit__(None, None, None)
        types.OutgoingBody.finish(out, None)
