"""stream: sends `n` chunks of `size` bytes, `ms` milliseconds apart (query parameters).

Byte k of the body is `k % 256`, cut from a block computed once when the component is built,
so the guest copies memory and does no per-byte work. Each chunk is flushed on its own, so a
client sees it as soon as it is written.
"""

from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import monotonic_clock, streams, types

SEGMENT = 1 << 20
BLOCK = bytes(range(256)) * (SEGMENT // 256 + 1)


def write_all(stream: streams.OutputStream, data: memoryview) -> None:
    while data:
        n = stream.check_write()
        if n == 0:
            with stream.subscribe() as ready:
                ready.block()
            continue
        stream.write(bytes(data[:n]))
        data = data[n:]


def param(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int(query[name][0])
    except (KeyError, ValueError, IndexError):
        return default


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        query = parse_qs(urlsplit(request.path_with_query() or "/").query)
        n, ms, size = param(query, "n", 5), param(query, "ms", 300), param(query, "size", 16)
        headers = types.Fields.from_list(
            [("content-type", b"application/octet-stream"), ("x-chunks", str(n).encode())]
        )
        response = types.OutgoingResponse(headers)
        body = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        stream = body.write()
        block = memoryview(BLOCK)
        offset = 0
        for i in range(n):
            if i and ms:
                with monotonic_clock.subscribe_duration(ms * 1_000_000) as pause:
                    pause.block()
            left = size
            while left:
                take = min(left, SEGMENT)
                start = offset % 256
                write_all(stream, block[start : start + take])
                offset += take
                left -= take
            stream.flush()
            with stream.subscribe() as flushed:
                flushed.block()
        stream.__exit__(None, None, None)
        types.OutgoingBody.finish(body, None)
