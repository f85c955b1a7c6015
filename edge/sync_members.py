"""Who is in a fleet: one member per gateway process, so `serve --workers N` makes N members.

A member is what holds work in Redis under its own name: its consumer in the Event queue's group,
its reserved-concurrency slots, its notice subscription and its caches are all per process. So the
process is the unit that joins, renews and dies; a node is the set of members sharing a node name
(what `GET /fleet` groups them by).

    <prefix>members        sorted set: member id -> lease expiry (Redis' clock, ms)
    <prefix>members:info   hash: member id -> JSON {id, node, host, pid, started}

A member renews its lease every third of `lease_s` (re-writing its info too, so a Redis that lost
its data learns the member again); it leaves at a graceful stop (SIGTERM), and a member killed
without one (SIGKILL, a lost machine) drops out of the listing one lease after its last renewal:
a listing first removes expired members, in the same script.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis

from edge.errors import ControlPlaneError
from edge.sync import ControlPlane, stop_task

log = logging.getLogger("edgefn.fleet")

# KEYS: members, members:info. ARGV: id, info JSON, lease (ms). Join or renew.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: members, members:info. Drops expired members, answers {now, id, expiry, info, ...}.
_LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local out = {tostring(now)}
local alive = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #alive, 2 do
  out[#out + 1] = alive[i]
  out[#out + 1] = alive[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], alive[i]) or '{}'
end
return out
"""


@dataclass(frozen=True)
class Member:
    """One gateway process of the fleet, as the listing shows it."""

    id: str
    node: str
    host: str
    pid: int
    started: float
    expires_in_s: float

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "host": self.host,
            "pid": self.pid,
            "started": self.started,
            "expires_in_s": self.expires_in_s,
        }


class Members:
    """This process's membership (join, renew, leave) and the listing of every member."""

    def __init__(self, plane: ControlPlane, member_id: str, node: str) -> None:
        self.plane = plane
        self.id = member_id
        self.info = {
            "id": member_id,
            "node": node,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": round(time.time(), 3),
        }
        self.keys = [f"{plane.prefix}members", f"{plane.prefix}members:info"]
        self._client = plane.async_client()
        self._renew_script = self._client.register_script(_RENEW)
        self._list_script = self._client.register_script(_LIST)
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_ms(self) -> int:
        return int(self.plane.lease_s * 1000)

    async def start(self) -> None:
        """Join (start-up fails with the reason if Redis refuses), then renew in the background."""
        try:
            await self._renew()
        except redis.RedisError as exc:
            raise ControlPlaneError(f"{self.plane.shown}: cannot join the fleet: {exc}") from exc
        self._task = asyncio.create_task(self._renew_forever(), name="edgefn-fleet-member")

    async def aclose(self) -> None:
        """Leave: the listing stops showing this process at once, not one lease later."""
        await stop_task(self._task)
        self._task = None
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.zrem(self.keys[0], self.id)
            pipe.hdel(self.keys[1], self.id)
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:  # we drop out of the listing after one lease
            log.warning("leaving the fleet failed (%s); this member expires after its lease", exc)
        await self._client.aclose()

    async def list(self) -> list[Member]:
        """Every live member, by node then id. Raises ControlPlaneError when Redis cannot answer."""
        try:
            reply = await self._list_script(keys=self.keys)
        except redis.RedisError as exc:
            raise ControlPlaneError(f"{self.plane.shown}: cannot list the fleet's members: {exc}") from exc
        now = int(reply[0])
        members = []
        for i in range(1, len(reply), 3):
            member_id = reply[i].decode()
            info = json.loads(reply[i + 2])
            members.append(
                Member(
                    id=member_id,
                    node=str(info.get("node", "")),
                    host=str(info.get("host", "")),
                    pid=int(info.get("pid", 0)),
                    started=float(info.get("started", 0.0)),
                    expires_in_s=round((int(float(reply[i + 1])) - now) / 1000, 3),
                )
            )
        return sorted(members, key=lambda m: (m.node, m.id))

    async def _renew(self) -> None:
        await self._renew_script(keys=self.keys, args=[self.id, json.dumps(self.info), self.lease_ms])

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.plane.lease_s / 3)
            try:
                await self._renew()
            except redis.RedisError as exc:
                log.warning("renewing this process's fleet membership failed: %s", exc)


__all__ = ["Member", "Members"]
