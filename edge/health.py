"""Active health checks: one asyncio task per pool that has `health = {...}`, probing each endpoint.

Every `interval_s` the task sends `GET <endpoint><health.path>` to all endpoints of its pool at
once, through the gateway's shared httpx client, with `timeout_s` for the whole probe. A 2xx or
3xx answer passes; anything else (another status, a refused connection, a timeout) fails. The pool
applies the thresholds (`OriginPool.record_check`). The first round runs at start, so a node that
starts while an endpoint is down learns it within `unhealthy_threshold` rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import httpx

from edge.origins import EndpointState, OriginPool

log = logging.getLogger("edgefn.health")

USER_AGENT = b"edgefn-health/1"


class HealthChecker:
    def __init__(self, pools: Iterable[OriginPool], client: httpx.AsyncClient) -> None:
        self.pools = [p for p in pools if p.config.health is not None]
        self.client = client
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for pool in self.pools:
            self.tasks.append(asyncio.create_task(self._run(pool), name=f"health:{pool.name}"))

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    async def _run(self, pool: OriginPool) -> None:
        health = pool.config.health
        assert health is not None
        while True:
            started = time.monotonic()
            try:
                await self.check_pool(pool)
            except Exception:
                # A bug in one round must not end the checks for good.
                log.exception("health checks of origin %r failed", pool.name)
            await asyncio.sleep(max(0.0, health.interval_s - (time.monotonic() - started)))

    async def check_pool(self, pool: OriginPool) -> None:
        """One round: probe every endpoint concurrently and record the results."""
        await asyncio.gather(*(self._probe(pool, e) for e in pool.endpoints))

    async def _probe(self, pool: OriginPool, endpoint: EndpointState) -> None:
        health = pool.config.health
        assert health is not None
        base = endpoint.url
        prefix = base.raw_path.rstrip(b"/") if base.raw_path not in (b"", b"/") else b""
        url = base.copy_with(raw_path=prefix + health.path.encode("latin-1"))
        started = time.perf_counter()
        ok = False
        error: str | None = None
        try:
            async with asyncio.timeout(health.timeout_s):
                response = await self.client.get(
                    url,
                    headers={b"user-agent": USER_AGENT},
                    timeout=httpx.Timeout(health.timeout_s),
                )
            ok = 200 <= response.status_code < 400
            if not ok:
                error = f"status {response.status_code}"
        except (httpx.HTTPError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency_ms = (time.perf_counter() - started) * 1000.0
        was_healthy = endpoint.healthy
        pool.record_check(endpoint, ok, latency_ms, error)
        if was_healthy != endpoint.healthy:
            log.warning(
                "origin %r endpoint %s is now %s%s",
                pool.name,
                endpoint.url,
                "healthy" if endpoint.healthy else "unhealthy",
                f" ({error})" if error else "",
            )
