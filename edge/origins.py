"""Origin pools: which endpoint of a pool to try, in which order.

The pool only orders endpoints; the proxy in `gateway.proxy` walks that order, trying the next
endpoint after a connect failure. Selection by geography and health checks build on `candidates`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from routes.config import Origin


@dataclass
class EndpointState:
    url: httpx.URL
    region: str | None
    weight: float
    # Passive ejection: after a connect failure an endpoint goes to the back of the order for a while.
    ejected_until: float = 0.0
    failures: int = field(default=0)

    def available(self, now: float) -> bool:
        return now >= self.ejected_until


class OriginPool:
    EJECT_S = 5.0

    def __init__(self, origin: Origin) -> None:
        self.name = origin.name
        self.config = origin
        self.endpoints = [
            EndpointState(url=httpx.URL(e.url), region=e.region, weight=e.weight) for e in origin.endpoints
        ]

    def candidates(self) -> list[EndpointState]:
        """Endpoints in the order to try them: available ones first, in config order."""
        now = time.monotonic()
        ready = [e for e in self.endpoints if e.available(now)]
        ejected = [e for e in self.endpoints if not e.available(now)]
        return ready + ejected

    def report_connect_failure(self, endpoint: EndpointState) -> None:
        endpoint.failures += 1
        endpoint.ejected_until = time.monotonic() + self.EJECT_S

    def report_success(self, endpoint: EndpointState) -> None:
        endpoint.failures = 0
        endpoint.ejected_until = 0.0

    def describe(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "name": self.name,
            "select": self.config.select,
            "endpoints": [
                {"url": str(e.url), "region": e.region, "available": e.available(now), "failures": e.failures}
                for e in self.endpoints
            ],
        }
