"""One loaded function version as a target: invoke it per request, within its limits.

A `FunctionTarget` is the function side of the `Target` seam: it turns an `EdgeRequest` into a
`wasm_runtime.GuestRequest`, enforces reserved concurrency (the slot is held until the last body
byte has been sent, since a streaming function is still running until then) and labels the
response with the version that served it. Which target serves a reference (`NAME:ALIAS`...) is
the function service's business (`gateway.functions.service`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from gateway.context import EdgeRequest, EdgeResponse
from gateway.errors import Throttled
from gateway.functions.telemetry import InvocationRecord, InvocationTelemetry
from gateway.proxy import forwarded_headers
from routes.config import Function
from wasm_runtime import (
    FunctionThrottled,
    GuestRequest,
    GuestResponse,
    InvocationStats,
    Limits,
    OutboundPolicy,
    OutboundTransport,
    Runtime,
)

log = logging.getLogger("edgefn.functions")
function_log = logging.getLogger("edgefn.function")

LATEST = "$LATEST"


class SharedSlots(Protocol):
    """Concurrency slots counted across processes (`edge.sync.FleetSlots` in a fleet)."""

    async def acquire(self, function: str, limit: int) -> str | None: ...
    async def release(self, function: str, slot: str) -> None: ...


class ConcurrencyLimit:
    """Reserved concurrency of one function (0 = no limit), shared by its versions: counted on
    this node, or with `shared` across every node of a fleet."""

    def __init__(self, limit: int, shared: SharedSlots | None = None) -> None:
        self.limit = limit
        self.in_use = 0
        self.shared = shared

    async def acquire(self, name: str) -> str | None:
        """Take a slot or raise `Throttled`; hand the answer back to `release`."""
        limit = self.limit
        if limit and self.in_use >= limit:
            raise Throttled(f"function {name!r} is at its reserved concurrency of {limit}")
        slot = None
        if limit and self.shared is not None:
            slot = await self.shared.acquire(name, limit)
            if slot is None:
                raise Throttled(
                    f"function {name!r} is at its reserved concurrency of {limit} across the fleet"
                )
        self.in_use += 1
        return slot

    async def release(self, name: str, slot: str | None) -> None:
        self.in_use -= 1
        if slot is not None and self.shared is not None:
            await self.shared.release(name, slot)


class FunctionTarget:
    def __init__(
        self,
        runtime: Runtime,
        function: Function,
        component: object,
        policy: OutboundPolicy,
        *,
        version: str = LATEST,
        via: str = "edgefn",
        telemetry: InvocationTelemetry | None = None,
        concurrency: ConcurrencyLimit | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        """`function.env` is what the guest sees (secret values included); `secrets` are those
        values again, so the logs can mask them."""
        self.runtime = runtime
        self.telemetry = telemetry
        self.function = function
        self.component = component
        self.version = version
        self.policy = policy
        self.limits = Limits(
            memory_mb=function.memory_mb, timeout_s=function.timeout_s, instance_reuse=function.instance_reuse
        )
        self.env = dict(function.env)
        self.secrets = secrets
        self.concurrency = concurrency or ConcurrencyLimit(function.reserved_concurrency)
        # this configuration's instances: warm ones, or with instance_reuse = 0 never-used ones made
        # ahead of need (never shared: env and globals stay per function, a redeploy makes a new pool)
        self.pool = runtime.warm_pool(component, self.limits, provisioned=function.provisioned)  # type: ignore[arg-type]
        self.via = f"1.1 {via}".encode()

    async def handle(self, request: EdgeRequest) -> EdgeResponse:
        response = await self.invoke(guest_request(request, self.via), request_id=request.request_id)
        out = [(k.encode("latin-1"), v) for k, v in response.headers]
        out.append((b"x-edgefn-executed-version", self.version.encode()))
        return EdgeResponse(
            status=response.status,
            headers=out,
            body=response.body,
            served_by=f"function:{self.function.name}:{self.version}",
        )

    async def invoke(
        self,
        guest: GuestRequest,
        *,
        request_id: str,
        also_allow: tuple[str, ...] = (),
        transport: OutboundTransport | None = None,
    ) -> GuestResponse:
        """Run the function within its limits; the concurrency slot is held until the body ends.
        `also_allow`: authorities this call may reach beyond the function's `outbound` (an edge
        function's own URL)."""
        name = self.function.name
        try:
            slot = await self.concurrency.acquire(name)
        except Throttled:
            if self.telemetry is not None:
                self.telemetry.throttled(name, self.version)
            raise
        record: InvocationRecord | None = None
        if self.telemetry is not None:
            record = self.telemetry.begin(
                name,
                self.version,
                request_id,
                memory_mb=self.function.memory_mb,
                headers=guest.headers,
                secrets=self.secrets,
            )
            transport = record.transport(transport or self.runtime.transport)
        policy = self.policy
        if also_allow:
            policy = OutboundPolicy(allowed=(*policy.allowed, *also_allow), origins=policy.origins)
        try:
            response = await self.runtime.invoke(
                self.component,  # type: ignore[arg-type]
                guest,
                limits=self.limits,
                env=self.env,
                outbound=policy,
                request_id=request_id,
                log=record.guest_log if record else _guest_logger(name, self.version, request_id),
                transport=transport,
                function=name,
                pool=self.pool,
            )
        except BaseException as exc:
            await self.concurrency.release(name, slot)
            if isinstance(exc, FunctionThrottled) and self.telemetry is not None:
                self.telemetry.throttled(name, self.version)
            if record is not None:
                record.end(None, error=exc)
            raise
        # status and stats, not the response: the body (this generator) hangs off the response, and
        # a generator holding it would make every request a reference cycle for the collector
        response.body = self._release_after(response.body, response.status, response.stats, record, slot)
        return response

    async def _release_after(
        self,
        body: AsyncIterator[bytes],
        status: int,
        stats: InvocationStats,
        record: InvocationRecord | None,
        slot: str | None,
    ) -> AsyncIterator[bytes]:
        error: BaseException | None = None
        try:
            async for chunk in body:
                yield chunk
        except Exception as exc:  # not GeneratorExit: a reader that stops early is no failure
            error = exc
            raise
        finally:
            await self.concurrency.release(self.function.name, slot)
            try:
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()  # the guest stops now rather than at its timeout
            finally:
                if record is not None:
                    record.end(stats, status=status, error=error)


def guest_request(request: EdgeRequest, via: bytes) -> GuestRequest:
    """The request as a function sees it: the client's headers plus the forwarding ones."""
    headers = forwarded_headers(request, via)
    headers.insert(0, (b"host", request.host.encode("latin-1")))
    return GuestRequest(
        method=request.method,
        scheme=request.scheme,
        authority=request.host,
        path_with_query=request.path_with_query,
        headers=[(k.decode("latin-1"), v) for k, v in headers],
        # None: the guest's body stream ends at once, without a trip to the event loop for it
        body=request.body if request.has_body else None,
    )


def _guest_logger(name: str, version: str, request_id: str):  # type: ignore[no-untyped-def]
    def emit(stream: str, line: str) -> None:
        function_log.info(
            json.dumps(
                {
                    "function": name,
                    "version": version,
                    "request_id": request_id,
                    "stream": stream,
                    "message": line,
                }
            )
        )

    return emit
