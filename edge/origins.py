"""Origin pools: which endpoint of a pool to try, in which order, and what is known of its health.

The pool only orders endpoints and keeps score; the proxy in `gateway.proxy` walks the order,
trying the next endpoint after a connect failure, and reports back what happened. Two kinds of
evidence make an endpoint go to the back of the order, never out of it (when every endpoint is
down the gateway still tries them all, and answers 502 only when none connects):

- active checks (`edge.health`): `unhealthy_threshold` failed probes in a row mark it unhealthy,
  `healthy_threshold` passing probes in a row mark it healthy again;
- passive ejection: a connect failure, or `FIVEXX_STREAK` 5xx answers in a row, ejects it for a
  back-off that doubles on each ejection that follows soon after the last (capped at `EJECT_MAX_S`).

Selection (`Origin.select`): `nearest` by great-circle distance from the viewer (or, when the
viewer's place is unknown, from the node's own region) to each endpoint's region, endpoints
without a region last; `weighted` a random order drawn by `weight`; `first-healthy` config order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from edge.geo import Viewer, haversine_km
from routes.config import Origin, Region


@dataclass
class EndpointState:
    url: httpx.URL
    region: str | None
    weight: float
    location: tuple[float, float] | None = None  # the region's (latitude, longitude)
    # active checks
    healthy: bool = True
    check_passes: int = 0  # in a row
    check_failures: int = 0  # in a row
    last_check: float | None = None  # wall-clock time of the last probe
    last_check_ok: bool | None = None
    last_latency_ms: float | None = None
    last_error: str | None = None
    # passive ejection
    ejected_until: float = 0.0  # monotonic
    ejections: int = 0  # in the current streak of ejections; sets the back-off
    ejections_total: int = 0
    failures: int = 0  # connect failures since the last success
    fivexx_streak: int = 0

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


class OriginPool:
    EJECT_S = 5.0
    EJECT_MAX_S = 60.0
    FIVEXX_STREAK = 5

    def __init__(
        self,
        origin: Origin,
        regions: Mapping[str, Region] | None = None,
        node_region: str | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.name = origin.name
        self.config = origin
        regions = regions or {}
        here = regions.get(node_region) if node_region else None
        self.home: tuple[float, float] | None = (here.latitude, here.longitude) if here else None
        self.rng = rng or random.Random()
        self.endpoints: list[EndpointState] = []
        for e in origin.endpoints:
            region = regions.get(e.region) if e.region else None
            self.endpoints.append(
                EndpointState(
                    url=httpx.URL(e.url),
                    region=e.region,
                    weight=e.weight,
                    location=(region.latitude, region.longitude) if region else None,
                )
            )

    # -- order

    def candidates(self, viewer: Viewer | None = None) -> list[EndpointState]:
        """Every endpoint, in the order to try them: available ones by policy, then the rest."""
        select = self.config.select
        if select == "nearest":
            ordered = self._nearest(viewer)
        elif select == "weighted":
            ordered = self._weighted()
        else:
            ordered = list(self.endpoints)
        now = time.monotonic()
        ready = [e for e in ordered if e.available(now)]
        if len(ready) == len(ordered):
            return ordered
        # Down endpoints last; of those, the ones that come back soonest (health first) go first.
        down = sorted(
            (e for e in ordered if not e.available(now)), key=lambda e: (not e.healthy, e.ejected_until)
        )
        return ready + down

    def _nearest(self, viewer: Viewer | None) -> list[EndpointState]:
        origin = (viewer.location if viewer is not None else None) or self.home
        if origin is None:
            return list(self.endpoints)
        far = float("inf")
        # sorted() is stable: equally distant endpoints keep config order.
        return sorted(
            self.endpoints, key=lambda e: far if e.location is None else haversine_km(origin, e.location)
        )

    def _weighted(self) -> list[EndpointState]:
        """A weighted random order (Efraimidis-Spirakis keys); weight 0 goes last, in config order."""
        keyed = [
            (self.rng.random() ** (1.0 / e.weight) if e.weight > 0 else -1.0, i, e)
            for i, e in enumerate(self.endpoints)
        ]
        keyed.sort(key=lambda t: (-t[0], t[1]))
        return [e for _, _, e in keyed]

    # -- passive evidence, reported by whoever sent the request

    def report_connect_failure(self, endpoint: EndpointState) -> None:
        endpoint.failures += 1
        self._eject(endpoint)

    def report_response(self, endpoint: EndpointState, status: int) -> None:
        """The endpoint answered; a streak of 5xx ejects it as a connect failure does."""
        endpoint.failures = 0
        if status >= 500:
            endpoint.fivexx_streak += 1
            if endpoint.fivexx_streak >= self.FIVEXX_STREAK:
                endpoint.fivexx_streak = 0
                self._eject(endpoint)
            return
        endpoint.fivexx_streak = 0
        now = time.monotonic()
        if endpoint.ejections and now >= endpoint.ejected_until + self._backoff(endpoint.ejections):
            endpoint.ejections = 0  # served well for a whole back-off period: forgiven

    def report_success(self, endpoint: EndpointState) -> None:
        """Kept for callers that do not know the status; counts as a non-5xx answer."""
        self.report_response(endpoint, 200)

    def _backoff(self, ejections: int) -> float:
        return min(self.EJECT_MAX_S, self.EJECT_S * 2 ** max(0, ejections - 1))

    def _eject(self, endpoint: EndpointState) -> None:
        now = time.monotonic()
        if now < endpoint.ejected_until:
            return  # already out (requests in flight failing together count once)
        endpoint.ejections += 1
        endpoint.ejections_total += 1
        endpoint.ejected_until = now + self._backoff(endpoint.ejections)

    # -- active evidence, from edge.health

    def record_check(self, endpoint: EndpointState, ok: bool, latency_ms: float, error: str | None) -> None:
        health = self.config.health
        healthy_after = health.healthy_threshold if health else 1
        unhealthy_after = health.unhealthy_threshold if health else 1
        endpoint.last_check = time.time()
        endpoint.last_check_ok = ok
        endpoint.last_latency_ms = round(latency_ms, 2)
        endpoint.last_error = error
        if ok:
            endpoint.check_passes += 1
            endpoint.check_failures = 0
            if not endpoint.healthy and endpoint.check_passes >= healthy_after:
                endpoint.healthy = True
            # As Envoy does by default: a passing probe lifts a passive ejection (ending it now,
            # so that forgiving the ejection streak still takes a back-off period of good answers).
            if endpoint.healthy:
                endpoint.ejected_until = min(endpoint.ejected_until, time.monotonic())
        else:
            endpoint.check_failures += 1
            endpoint.check_passes = 0
            if endpoint.healthy and endpoint.check_failures >= unhealthy_after:
                endpoint.healthy = False

    # -- admin API

    def describe(self) -> dict[str, object]:
        now = time.monotonic()
        health = self.config.health
        return {
            "name": self.name,
            "select": self.config.select,
            "health": None
            if health is None
            else {
                "path": health.path,
                "interval_s": health.interval_s,
                "timeout_s": health.timeout_s,
                "healthy_threshold": health.healthy_threshold,
                "unhealthy_threshold": health.unhealthy_threshold,
            },
            "endpoints": [
                {
                    "url": str(e.url),
                    "region": e.region,
                    "weight": e.weight,
                    "available": e.available(now),
                    "healthy": e.healthy,
                    "ejected": now < e.ejected_until,
                    "ejected_for_s": round(max(0.0, e.ejected_until - now), 3),
                    "ejections": e.ejections,
                    "ejections_total": e.ejections_total,
                    "failures": e.failures,
                    "fivexx_streak": e.fivexx_streak,
                    "last_check": e.last_check,
                    "last_check_ok": e.last_check_ok,
                    "last_latency_ms": e.last_latency_ms,
                    "last_error": e.last_error,
                }
                for e in self.endpoints
            ],
        }
