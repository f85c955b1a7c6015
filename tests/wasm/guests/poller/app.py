"""Test guest: wasi:io/poll.poll with several pollables (timers of 300, 50 and 150 ms, and the
request body's stream), reporting the order in which they became ready as JSON."""

import json
import time

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import monotonic_clock, poll, types


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        body = request.consume()
        stream = body.stream()
        names = ["t300", "t50", "t150", "body"]
        pollables = [
            monotonic_clock.subscribe_duration(300_000_000),
            monotonic_clock.subscribe_duration(50_000_000),
            monotonic_clock.subscribe_duration(150_000_000),
            stream.subscribe(),
        ]
        order: list[list[str]] = []
        start = time.monotonic()
        pending = list(range(len(pollables)))
        while pending:
            ready = poll.poll([pollables[i] for i in pending])
            hit = [pending[i] for i in ready]
            order.append([names[i] for i in hit])
            pending = [i for i in pending if i not in hit]
        elapsed_ms = int((time.monotonic() - start) * 1000)
        payload = json.dumps({"order": order, "elapsed_ms": elapsed_ms}).encode()
        response = types.OutgoingResponse(types.Fields.from_list([("content-type", b"application/json")]))
        out = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        w = out.write()
        w.blocking_write_and_flush(payload)
        w.__exit__(None, None, None)
        types.OutgoingBody.finish(out, None)
