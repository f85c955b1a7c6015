"""The function service: every function of the node, from edgefn.toml or the registry, by reference.

    Functions.resolve("NAME:ALIAS")     -> Resolved: the version labels that may serve it, weighted
    Functions.invoke(reference, req)    -> EdgeResponse: draw a version, run it
    Functions.target(reference)         -> FunctionReference: a route's (or edge trigger's) target

A reference is resolved at request time, so deploying, publishing or moving an alias changes the
next request without a restart. What a resolution reads from the registry is cached per registry
revision; the revision is read at most every `REFRESH_S` (another process, `serve --workers N` or
a fleet node, may have made the change) or at once after `changed()` (a change made here, or a
fleet's change notice). `FunctionTarget`s are kept per (name, version label) and reused across
revisions while what they were built from (code sha256, configuration, secret values) is the same.

Lambda's rules: a weighted alias draws `random.random()` per request (AdditionalVersionWeights) and
the label that ran is in `x-edgefn-executed-version`; reserved concurrency belongs to the function
(its $LATEST configuration), one limit shared by all its versions; secrets named in the
configuration become environment values when the target is built, and are masked in its logs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway.context import EdgeRequest, EdgeResponse
from gateway.errors import UpstreamError
from gateway.functions.invocations import FunctionNotFound
from gateway.functions.registry import (
    LATEST,
    FunctionConfig,
    FunctionInfo,
    NotFound,
    Registry,
    RegistryError,
    Resolved,
)
from gateway.functions.target import ConcurrencyLimit, FunctionTarget, SharedSlots
from gateway.functions.telemetry import InvocationTelemetry
from routes import Config
from routes.config import AsyncInvoke, Function
from wasm_runtime import (
    ComponentChanged,
    GuestRequest,
    GuestResponse,
    LoadedComponent,
    OutboundPolicy,
    OutboundTransport,
    Runtime,
)

log = logging.getLogger("edgefn.functions")

REFRESH_S = 0.2
T = TypeVar("T")
# What a target is built from: equal specs mean the cached target is still right.
Spec = tuple[str, FunctionConfig, tuple[tuple[str, str], ...]]


class UnknownFunction(FunctionNotFound, LookupError):
    """No such function, version or alias (404)."""


class BadReference(FunctionNotFound, ValueError):
    """A reference that cannot name anything, such as `NAME:` (404, as an unknown one)."""


def _translate(exc: RegistryError) -> FunctionNotFound:
    return UnknownFunction(str(exc)) if isinstance(exc, NotFound) else BadReference(str(exc))


class FunctionReference:
    """A function named by a route or an edge trigger, resolved again for every request."""

    def __init__(self, service: Functions, reference: str) -> None:
        self.service = service
        self.reference = reference
        self.name = reference.partition(":")[0]
        self.via = service.via

    async def handle(self, request: EdgeRequest) -> EdgeResponse:
        return await self.service.invoke(self.reference, request)

    async def invoke(
        self,
        guest: GuestRequest,
        *,
        request_id: str,
        also_allow: tuple[str, ...] = (),
        transport: OutboundTransport | None = None,
    ) -> GuestResponse:
        target = await self.service.pick(self.reference)
        return await target.invoke(guest, request_id=request_id, also_allow=also_allow, transport=transport)


class Functions:
    def __init__(
        self,
        config: Config,
        runtime: Runtime,
        registry: Registry,
        telemetry: InvocationTelemetry | None = None,
        shared_slots: SharedSlots | None = None,
    ) -> None:
        """`shared_slots`: where reserved concurrency is counted across processes (the node's,
        or the fleet's); without it, in this process alone."""
        self.config = config
        self.shared_slots = shared_slots
        self.runtime = runtime
        self.registry = registry
        self.telemetry = telemetry
        self.origins = frozenset(config.origins)
        self.node = f"edgefn-{config.node.name}"
        self.via: bytes = f"1.1 {self.node}".encode()
        self.revision = -1
        self._generation = 0
        self._next_check = 0.0
        self._unreadable = False
        self._listeners: list[Callable[[], None]] = []
        self._config_targets: dict[str, FunctionTarget] = {}
        # per revision
        self._resolved: dict[str, Resolved] = {}
        self._infos: dict[str, FunctionInfo] = {}
        self._current: dict[tuple[str, str], FunctionTarget] = {}
        self._schedules: tuple[int, list[tuple[str, tuple[str, ...]]]] | None = None
        # across revisions: targets of this revision and the one before (reused when the spec holds)
        self._built: dict[tuple[str, str], tuple[Spec, FunctionTarget]] = {}
        self._previous: dict[tuple[str, str], tuple[Spec, FunctionTarget]] = {}
        self._components: dict[str, LoadedComponent] = {}
        self._limits: dict[str, ConcurrencyLimit] = {}

    async def load_all(self) -> None:
        """Load the config file's functions and read the revision. The functions load side by side:
        a load is mostly reading, hashing and deserializing on a thread, outside the GIL, so on a
        node of several cores N functions take less than N times one. A broken one fails start-up
        with its own error (the first in the file's order), once every load has ended."""
        functions = list(self.config.functions.items())
        loads = [self._load_config_function(name, function) for name, function in functions]
        loaded = await asyncio.gather(*loads, return_exceptions=True)
        for (name, _), target in zip(functions, loaded, strict=True):
            if isinstance(target, BaseException):
                raise target
            self._config_targets[name] = target
        self._observe(await asyncio.to_thread(self.registry.revision))

    async def _load_config_function(self, name: str, function: Function) -> FunctionTarget:
        component = await self._load_component(name, function)
        target = FunctionTarget(
            self.runtime,
            function,
            component,
            OutboundPolicy(allowed=function.outbound, origins=self.origins),
            via=self.node,
            telemetry=self.telemetry,
            concurrency=self._limit(name, function.reserved_concurrency),
        )
        if target.pool is not None and function.provisioned:
            await self.runtime.provisioned_ready(component, target.pool)  # at start-up, not on a request
        log.info("function %s ready", name)
        return target

    async def _load_component(self, name: str, function: Function) -> LoadedComponent:
        """The component the node process hashed (`Function.sha256`): from its compiled artifact
        without reading the file, as every other worker of the node does. Should the artifact be
        missing and the file changed since, the file as it is now."""
        path = Path(function.component)
        if function.sha256 is not None:
            try:
                return await self.runtime.load(path, sha256=function.sha256)
            except ComponentChanged as exc:
                log.warning("function %s: %s; loading its file as it is now", name, exc)
        return await self.runtime.load(path)

    # -- the hooks the gateway, routes and invocations call ------------------------------------

    def target(self, reference: str) -> FunctionReference:
        return FunctionReference(self, reference)

    async def invoke(self, reference: str, request: EdgeRequest) -> EdgeResponse:
        target = await self.pick(reference)
        return await target.handle(request)

    def resolve(self, reference: str) -> Resolved:
        """What `reference` names now; raises UnknownFunction / BadReference (both 404)."""
        self._observe(self.registry.revision())
        cached = self._resolved.get(reference)
        if cached is not None:
            return cached
        try:
            resolved = self.registry.resolve(reference)
        except RegistryError as exc:
            raise _translate(exc) from exc
        self._resolved[reference] = resolved
        return resolved

    def async_settings(self, name: str) -> AsyncInvoke:
        """Retries and event age of a deployed function (its $LATEST configuration, as Lambda's
        function-level setting); a function deleted while its events wait gets the defaults."""
        self._observe(self.registry.revision())
        info = self._infos.get(name)
        if info is None:
            try:
                info = self.registry.get(name)
            except RegistryError:
                return AsyncInvoke()
        return info.config.async_

    def schedules(self) -> list[tuple[str, tuple[str, ...]]]:
        """Schedules of deployed functions (the config's are the scheduler's own)."""
        revision = self.registry.revision()
        if self._schedules is None or self._schedules[0] != revision:
            listed = [
                (info.name, info.config.schedule) for info in self.registry.deployed() if info.config.schedule
            ]
            self._schedules = (revision, listed)
        return list(self._schedules[1])

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever the registry changed or may have (the scheduler's poke)."""
        self._listeners.append(listener)

    def changed(self) -> None:
        """The registry changed (here, or a fleet notice says so): look at it on the next request."""
        self._next_check = 0.0
        for listener in self._listeners:
            listener()

    # -- resolution ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the registry's revision if it was not read in the last REFRESH_S seconds."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + REFRESH_S
        try:
            revision = await asyncio.to_thread(self.registry.revision)
        except Exception as exc:
            # A control plane that cannot answer (a fleet's Redis down) must not stop what this
            # node already knows how to serve: keep the cache, say so once, try again later.
            if not self._unreadable:
                log.warning("registry unreadable, serving what is cached: %s: %s", type(exc).__name__, exc)
            self._unreadable = True
            return
        if self._unreadable:
            log.info("registry readable again")
            self._unreadable = False
        self._observe(revision)

    def _observe(self, revision: int) -> None:
        if revision == self.revision:
            return
        self.revision = revision
        self._generation += 1
        self._resolved, self._infos, self._current = {}, {}, {}
        self._previous, self._built = self._built, {}
        live = {spec[0] for spec, _ in self._previous.values()}
        self._components = {sha: c for sha, c in self._components.items() if sha in live}
        for listener in self._listeners:
            listener()

    async def _read(self, call: Callable[..., T], *args: object) -> T:
        """A registry read off the event loop, its errors as the 404s of an unknown function."""
        try:
            return await asyncio.to_thread(call, *args)
        except RegistryError as exc:
            raise _translate(exc) from exc

    async def pick(self, reference: str) -> FunctionTarget:
        """The target that serves this request of `reference` (a weighted alias draws here)."""
        name, _, qualifier = reference.partition(":")
        config_target = self._config_targets.get(name)
        if config_target is not None and qualifier in ("", LATEST):
            return config_target  # edgefn.toml's functions need no registry at request time
        await self.refresh()
        resolved = self._resolved.get(reference)
        if resolved is None:
            generation = self._generation
            resolved = await self._read(self.registry.resolve, reference)
            if generation == self._generation:
                self._resolved[reference] = resolved
        choices = resolved.choices
        label = choices[0][0] if len(choices) == 1 else resolved.pick(random.random())
        target = self._current.get((resolved.name, label))
        if target is None:
            target = await self._build(resolved.name, label)
        return target

    async def _build(self, name: str, label: str) -> FunctionTarget:
        config_target = self._config_targets.get(name)
        if config_target is not None:
            return config_target
        generation = self._generation
        info = self._infos.get(name)
        if info is None:
            info = await self._read(self.registry.get, name)
        try:
            sha, config = info.snapshot(label)
        except RegistryError as exc:
            raise _translate(exc) from exc
        secret_env = await asyncio.to_thread(self._secret_env, name, config) if config.secrets else ()
        spec: Spec = (sha, config, secret_env)
        key = (name, label)
        built = self._built.get(key) or self._previous.get(key)
        if built is None or built[0] != spec:
            built = (spec, await self._new_target(name, label, sha, config, secret_env))
        limit = self._limit(name, 0)
        limit.limit = info.config.reserved_concurrency  # the function's, whichever version runs
        if generation == self._generation:
            self._infos[name] = info
            self._built[key] = built
            self._current[key] = built[1]
        return built[1]

    async def _new_target(
        self, name: str, label: str, sha: str, config: FunctionConfig, secret_env: tuple[tuple[str, str], ...]
    ) -> FunctionTarget:
        component = self._components.get(sha)
        path = await self._read(self.registry.blob_path, sha)
        if component is None:
            component = await self.runtime.load(path, sha256=sha)  # a blob is named by its hash
            self._components[sha] = component
        function = Function(
            name=name,
            component=path,
            memory_mb=config.memory_mb,
            timeout_s=config.timeout_s,
            reserved_concurrency=config.reserved_concurrency,
            env=(*config.env, *secret_env),
            outbound=config.outbound,
            instance_reuse=config.instance_reuse,
            provisioned=config.provisioned,
            async_=config.async_,
            schedule=config.schedule,
        )
        log.info("function %s version %s ready (sha256 %s)", name, label, sha[:12])
        return FunctionTarget(
            self.runtime,
            function,
            component,
            OutboundPolicy(allowed=config.outbound, origins=self.origins),
            version=label,
            via=self.node,
            telemetry=self.telemetry,
            concurrency=self._limit(name, config.reserved_concurrency),
            secrets=tuple(value for _, value in secret_env if value),
        )

    def _limit(self, name: str, limit: int) -> ConcurrencyLimit:
        """The function's one limit, whichever version runs (made with `limit` the first time)."""
        if name not in self._limits:
            self._limits[name] = ConcurrencyLimit(limit, self.shared_slots)
        return self._limits[name]

    def _secret_env(self, name: str, config: FunctionConfig) -> tuple[tuple[str, str], ...]:
        env = []
        for variable, secret in config.secrets:
            try:
                env.append((variable, self.registry.secret_value(secret)))
            except NotFound as exc:
                raise UpstreamError(
                    f"function {name!r} reads secret {secret!r} into {variable}, and it does not exist",
                    code="secret_not_found",
                ) from exc
        return tuple(env)


__all__ = ["LATEST", "BadReference", "FunctionReference", "Functions", "UnknownFunction"]
