"""Test guest: allocates without bound (for the memory cap); `/ok` answers normally; `/hold/N`
keeps N MiB for as long as the instance lives, then answers (for the memory it reports)."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import types

held: list[bytearray] = []


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        if path.startswith("/hold/"):
            held.append(bytearray(int(path.removeprefix("/hold/")) << 20))
        elif path != "/ok":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        response = types.OutgoingResponse(types.Fields())
        body = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        types.OutgoingBody.finish(body, None)
