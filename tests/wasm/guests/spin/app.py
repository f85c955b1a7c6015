"""Test guest: spins forever before answering (for the wall-clock timeout)."""

from wit_world import exports
from wit_world.imports import types


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: types.IncomingRequest, response_out: types.ResponseOutparam) -> None:
        n = 0
        while True:
            n += 1
