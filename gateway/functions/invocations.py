"""Asynchronous invocations, schedules, logs and metrics of one gateway, built and wired together.

`Invocations.for_gateway(gateway)` builds them at start-up; the gateway then
- hands `telemetry` to the code that runs functions (START/END/REPORT, metrics, traceparent),
- asks `intercept(reference, request)` before running a function synchronously: an `Event` or
  `DryRun` request is answered here (202 / 204), anything else runs as usual,
- calls `start()` once functions are loaded and `aclose()` at shutdown.

Functions are invoked through the gateway's function service: `Functions.invoke(reference,
request)` when it has one, else the older `FunctionSet.target(reference).handle(request)`, looked
up at call time so the service can be replaced while the gateway runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        self.started = True

    async def aclose(self) -> None:
        self.metrics.unwatch_queue()
        await self.scheduler.aclose()
        await self.queue.aclose()

    async def intercept(self, reference: str | None, request: EdgeRequest) -> EdgeResponse | None:
        return await self.queue.intercept(reference, request)

    # the function service, whichever shape it has ------------------------------------------

    def _service(self) -> Any:
        service = self.gateway.functions
        if service is None:
            raise FunctionNotFound("no functions are loaded")
        return service

    async def invoke(self, reference: str, request: EdgeRequest) -> EdgeResponse:
        service = self._service()
        if hasattr(service, "invoke"):
            return await service.invoke(reference, request)  # type: ignore[no-any-return]
        return await service.target(reference).handle(request)  # type: ignore[no-any-return]

    def validate(self, reference: str) -> None:
        """DryRun and Event: the function (and qualifier) must resolve now."""
        service = self._service()
        resolve = getattr(service, "resolve", None) or service.target
        try:
            resolve(reference)
        except GatewayError:
            raise
        except (LookupError, ValueError) as exc:
            raise FunctionNotFound(f"function {reference!r} does not resolve: {exc}") from exc

    def settings(self, name: str) -> AsyncInvoke:
        function = self.gateway.config.functions.get(name)
        if function is not None:
            return function.async_
        lookup = getattr(self.gateway.functions, "async_settings", None)
        found = lookup(name) if lookup is not None else None
        return found if isinstance(found, AsyncInvoke) else AsyncInvoke()

    def schedules(self) -> list[tuple[str, tuple[str, ...]]]:
        listed = {name: f.schedule for name, f in self.gateway.config.functions.items() if f.schedule}
        extra = getattr(self.gateway.functions, "schedules", None)
        if callable(extra):
            for name, expressions in extra():
                listed.setdefault(name, tuple(expressions))
        return sorted(listed.items())


__all__ = ["FunctionNotFound", "Invocations", "function_name"]
