"""Test guest: allocates without bound (for the memory cap); `/ok` answers normally."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import types


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        if request.path_with_query() != "/ok":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        response = types.OutgoingResponse(types.Fields())
        body = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        types.OutgoingBody.finish(body, None)
