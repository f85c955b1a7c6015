"""The gateway's side of a fleet (`control_plane = "redis://..."`): edge.sync wired to this node.

    what                        shared through                    wired here
    Event queue                 RedisEventStore (a stream)        `event_store()` -> Invocations
    reserved concurrency        FleetSlots (leased slots)         `slots` -> the function service
    registry, aliases, URLs     RedisRegistryStore                open_registry (registry.py)
    registry change notices     pub/sub `registry`                -> functions.changed() + warm-up
    cache purges                pub/sub `purge`                   `purge()`; notices -> local cache
    membership                  Members (one per process)         `members` -> GET /fleet

With `control_plane = "sqlite"` there is no fleet (`join` answers None) and nothing here runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from edge.errors import ControlPlaneError
from edge.sync import Fleet, FleetSlots
from edge.sync_members import Members
from edge.sync_queue import RedisEventStore
from gateway.functions.queue import Event, Store

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("edgefn.fleet")


class GatewayFleet:
    def __init__(self, gateway: Gateway) -> None:
        node = gateway.config.node
        self.gateway = gateway
        self.fleet = Fleet.from_url(node.control_plane, node.name)
        # Each process is a member: with `serve --workers N` a node shows N (docs/fleet.md, Workers).
        self.members = Members(self.fleet.plane, self.fleet.id, node.name)
        self._warmer: asyncio.Task[None] | None = None
        self._rewarm = False
        self._warmed: set[str] = set()  # code sha256s loaded by a warm-up
        notices = self.fleet.notices
        notices.subscribe("purge", self._purged)
        notices.subscribe("registry", self._registry_changed)
        notices.on_resync(self._resync)

    @classmethod
    async def join(cls, gateway: Gateway) -> GatewayFleet:
        """The node's fleet membership, started (the gateway asks only for a redis:// control plane)."""
        fleet = cls(gateway)
        await fleet.fleet.start()
        try:
            await fleet.members.start()
        except ControlPlaneError:
            await fleet.fleet.aclose()
            raise
        return fleet

    async def aclose(self) -> None:
        if self._warmer is not None:
            self._warmer.cancel()
            await asyncio.gather(self._warmer, return_exceptions=True)
        await self.members.aclose()
        await self.fleet.aclose()

    @property
    def slots(self) -> FleetSlots:
        return self.fleet.slots

    def event_store(self) -> Store:
        store: Store = RedisEventStore(self.fleet.plane, self.fleet.id, Event)
        return store

    # cache purges --------------------------------------------------------------------------------

    async def purge(self, *, key: str | None = None, prefix: str | None = None) -> int:
        """Tell every other process of the fleet to purge as this one just did; answers how many
        processes heard it. Raises ControlPlaneError when Redis cannot be reached."""
        payload: dict[str, Any] = {"key": key} if key is not None else {"prefix": prefix}
        return max(0, await self.fleet.notices.publish("purge", payload) - 1)

    def _cache(self) -> Any:
        pipeline = self.gateway.pipeline
        return pipeline.cache.cache if pipeline is not None else None

    def _purged(self, payload: dict[str, Any]) -> None:
        cache = self._cache()
        if cache is None:
            return
        key, prefix = payload.get("key"), payload.get("prefix")
        if isinstance(key, str) and key:
            count = cache.purge_key(key)
        elif isinstance(prefix, str):
            count = cache.purge_prefix(prefix)
        else:
            log.warning("fleet purge notice without a key or prefix: %r", payload)
            return
        log.info(json.dumps({"event": "fleet-purge", "from": payload.get("sender"), "purged": count}))

    def _resync(self) -> None:
        """Notices may have been missed while disconnected: a purge we did not hear would leave
        stale content, so the cache starts over; the registry is looked at again."""
        cache = self._cache()
        if cache is not None:
            cache.purge_prefix("")
        self._registry_changed({})

    # registry changes ----------------------------------------------------------------------------

    def _registry_changed(self, payload: dict[str, Any]) -> None:
        functions = self.gateway.functions
        if functions is None:
            return
        functions.changed()
        self._rewarm = True  # one warm-up at a time; changes meanwhile make it go round again
        if self._warmer is None or self._warmer.done():
            self._warmer = asyncio.create_task(self._warm_up(), name="edgefn-fleet-warm")

    async def _warm_up(self) -> None:
        while self._rewarm:
            self._rewarm = False
            try:
                await self._warm()
            except Exception:  # a bug here must not end warm-ups for good, nor go unseen
                log.exception("warming deployed functions after a registry change failed")

    async def _warm(self) -> None:
        """Fetch and compile the deployed code another node just changed, before a request asks
        for it: a deploy anywhere is then served here without a compile on the request path."""
        registry, runtime = self.gateway.registry, self.gateway.runtime
        if registry is None or runtime is None:
            return
        try:
            infos = await asyncio.to_thread(registry.functions)
        except ControlPlaneError as exc:
            log.warning("warming deployed functions after a fleet change: %s", exc)
            return
        for info in infos:
            if info.source != "registry":
                continue
            versions = {v.version: v.code_sha256 for v in info.versions}
            wanted = {info.code_sha256}
            for alias in info.aliases:
                wanted.update(versions.get(v, "") for v in (alias.version, *(a for a, _ in alias.additional)))
            for sha in sorted(wanted - self._warmed - {""}):
                try:
                    await runtime.load(await asyncio.to_thread(registry.blob_path, sha), sha256=sha)
                except Exception as exc:  # a request for it will report the same failure
                    log.warning(
                        "warming %s (%s) failed: %s: %s", info.name, sha[:12], type(exc).__name__, exc
                    )
                    continue
                self._warmed.add(sha)
