"""Test guest: answers the first request of an instance only, then returns without setting a
response (as a componentize-js guest does), so the host must fall back to fresh instances.
`/never` never sets a response."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import types

served = 0


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        global served
        served += 1
        if served > 1 or request.path_with_query() == "/never":
            return
        response = types.OutgoingResponse(types.Fields.from_list([("x-served", str(served).encode())]))
        body = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        types.OutgoingBody.finish(body, None)
