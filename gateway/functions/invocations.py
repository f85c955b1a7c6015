"""Asynchronous invocations, schedules, logs and metrics of one gateway, built and wired together.

`Invocations.for_gateway(gateway)` builds them at start-up; the gateway then
- hands `telemetry` to the code that runs functions (START/END/REPORT, metrics, traceparent),
- asks `intercept(reference, request)` before running a function synchronously: an `Event` or
  `DryRun` request is answered here (202 / 204), anything else runs as usual,
- calls `start()` once functions are loaded and `aclose()` at shutdown.

Functions are invoked, resolved and asked for their async settings and schedules through the
gateway's function service (`gateway.functions.service.Functions`), looked up at call time: it is
built after this object, and its answers follow the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.context import EdgeRequest, EdgeResponse
from gateway.errors import GatewayError
from gateway.functions.logs import FunctionLogs
from gateway.functions.metrics import FunctionMetrics
from gateway.functions.queue import DEFAULT_CONCURRENCY, InvocationQueue, function_name
from gateway.functions.schedules import Scheduler
from gateway.functions.telemetry import InvocationTelemetry
from routes.config import AsyncInvoke

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.functions.service import Functions


class FunctionNotFound(GatewayError):
    status, code = 404, "function_not_found"


class Invocations:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = gateway.config
        self.logs = FunctionLogs()
        self.metrics = FunctionMetrics(gateway.metrics.registry)
        self.telemetry = InvocationTelemetry(self.logs, self.metrics)
        concurrency = int(gateway.env.get("EDGEFN_ASYNC_CONCURRENCY", DEFAULT_CONCURRENCY))
        self.queue = InvocationQueue(
            config.node.data_dir,
            self.invoke,
            settings=self.settings,
            validate=self.validate,
            concurrency=concurrency,
            store=gateway.fleet.event_store() if gateway.fleet is not None else None,
        )
        self.scheduler = Scheduler(
            self.queue, self.schedules, node=config.node.name, region=config.node.region
        )
        self.started = False

    @classmethod
    def for_gateway(cls, gateway: Gateway) -> Invocations:
        return cls(gateway)

    async def start(self) -> None:
        self.queue.start()
        await self.scheduler.start()
        self.metrics.watch_queue(self.queue.stats)
        if self.gateway.runtime is not None:
            self.metrics.watch_runtime(self.gateway.runtime.stats)
        self.started = True

    async def aclose(self) -> None:
        self.metrics.unwatch_queue()
        self.metrics.unwatch_runtime()
        await self.scheduler.aclose()
        await self.queue.aclose()

    async def intercept(self, reference: str | None, request: EdgeRequest) -> EdgeResponse | None:
        return await self.queue.intercept(reference, request)

    # the function service, whichever shape it has ------------------------------------------

    def _service(self) -> Functions:
        service = self.gateway.functions
        if service is None:
            raise FunctionNotFound("no functions are loaded")
        return service

    async def invoke(self, reference: str, request: EdgeRequest) -> EdgeResponse:
        return await self._service().invoke(reference, request)

    def validate(self, reference: str) -> None:
        """DryRun and Event: the function (and qualifier) must resolve now."""
        try:
            self._service().resolve(reference)
        except GatewayError:
            raise
        except (LookupError, ValueError) as exc:
            raise FunctionNotFound(f"function {reference!r} does not resolve: {exc}") from exc

    def settings(self, name: str) -> AsyncInvoke:
        function = self.gateway.config.functions.get(name)
        if function is not None:
            return function.async_
        service = self.gateway.functions
        return service.async_settings(name) if service is not None else AsyncInvoke()

    def schedules(self) -> list[tuple[str, tuple[str, ...]]]:
        listed = {name: f.schedule for name, f in self.gateway.config.functions.items() if f.schedule}
        if self.gateway.functions is not None:
            for name, expressions in self.gateway.functions.schedules():
                listed.setdefault(name, tuple(expressions))
        return sorted(listed.items())


__all__ = ["FunctionNotFound", "Invocations", "function_name"]
