"""Test guest: spins forever (for the wall-clock timeout).

`/answer-then-spin` first sets its response head and writes and flushes one chunk, then spins:
what it wrote must reach the client while it spins (the runtime holds a guest's posts to the event
loop only briefly), not when the timeout ends it. `/ok` answers at once.
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import types


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        if request.path_with_query() == "/ok":  # an instance that has served, before it spins
            response = types.OutgoingResponse(types.Fields())
            body = response.body()
            types.ResponseOutparam.set(response_out, Ok(response))
            types.OutgoingBody.finish(body, None)
            return
        if request.path_with_query() == "/answer-then-spin":
            response = types.OutgoingResponse(types.Fields())
            body = response.body()
            types.ResponseOutparam.set(response_out, Ok(response))
            stream = body.write()
            stream.write(b"first")
            stream.flush()
        n = 0
        while True:
            n += 1
