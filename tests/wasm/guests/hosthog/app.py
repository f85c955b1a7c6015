"""Test guest: asks the host to hold or make ever more on its behalf, with little of its own
memory: `/fields/N` appends N-byte values to one `fields` without end, `/keep/N` and `/churn/N`
make 5,000 `fields` of one N-byte value each, keeping or dropping each, `/bodies/N` writes N
bytes into the body of outgoing requests it never sends while there is room, `/handles` keeps new
`fields` handles without end, `/random/N` asks for N random bytes at once, `/status/N` answers
N with a body (or 200 saying the status was refused), `/length/N` says its 6-byte body has N,
`/ok` answers."""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import random, types


def answer(response_out: types.ResponseOutparam, status: int, text: bytes, length: int | None = None) -> None:
    fields = [("content-type", b"text/plain")]
    if length is not None:
        fields.append(("content-length", str(length).encode()))
    response = types.OutgoingResponse(types.Fields.from_list(fields))
    try:
        response.set_status_code(status)
    except Err:
        text = b"refused %d" % status
    body = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    stream = body.write()
    stream.blocking_write_and_flush(text)
    stream.__exit__(None, None, None)
    types.OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        if path.startswith("/fields/"):
            value = b"v" * int(path.removeprefix("/fields/"))
            fields = types.Fields()
            n = 0
            while True:
                fields.append("x-grow", value)
                n += 1
                if n % 100_000 == 0:
                    print(f"appended {n}")
        elif path.startswith(("/keep/", "/churn/")):
            # one N-byte value in each of many fields, kept or each dropped before the next
            kind, _, size = path[1:].partition("/")
            value = b"v" * int(size)
            kept = []
            for _ in range(5000):
                fields = types.Fields.from_list([("x-grow", value)])
                if kind == "keep":
                    kept.append(fields)
                else:
                    fields.__exit__(None, None, None)
            answer(response_out, 200, b"%d kept" % len(kept))
        elif path.startswith("/bodies/"):
            # N bytes into the body of one outgoing request after another, never sent, while the
            # host gives room; then all dropped, and the answer says how much was written
            chunk = b"b" * int(path.removeprefix("/bodies/"))
            kept = []
            written = 0
            while True:
                outgoing = types.OutgoingRequest(types.Fields())
                body = outgoing.body()
                stream = body.write()
                kept.append((outgoing, body, stream))
                room = stream.check_write()
                if room == 0:
                    break
                stream.write(chunk[: min(room, len(chunk))])
                stream.flush()
                written += min(room, len(chunk))
            for outgoing, body, stream in reversed(kept):
                stream.__exit__(None, None, None)
                body.__exit__(None, None, None)
                outgoing.__exit__(None, None, None)
            answer(response_out, 200, b"%d written" % written)
        elif path == "/handles":
            kept = []
            while True:
                kept.append(types.Fields())
                if len(kept) % 100_000 == 0:
                    print(f"kept {len(kept)}")
        elif path.startswith("/status/"):
            answer(response_out, int(path.removeprefix("/status/")), b"a body")
        elif path.startswith("/length/"):
            answer(response_out, 200, b"a body", int(path.removeprefix("/length/")))
        elif path.startswith("/random/"):
            data = random.get_random_bytes(int(path.removeprefix("/random/")))
            answer(response_out, 200, str(len(data)).encode())
        else:
            answer(response_out, 200, b"ok")
