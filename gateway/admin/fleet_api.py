"""Admin endpoint of fleet membership: `GET /fleet`.

    {"self": "<member id of the process that answered>",
     "lease_s": 15.0,
     "nodes": {"edge-a": 2, "edge-b": 2},
     "members": [{"id", "node", "host", "pid", "started", "expires_in_s"}, ...]}

A member is one gateway process (edge/sync_members.py): a node run with `serve --workers N` shows
N members under its name. `self` says which of them answered, since the admin listener of such
a node is shared by its workers as the public one is. Without a fleet (`control_plane = "sqlite"`)
the endpoint answers 404 `not_in_a_fleet`; with Redis unreachable, 503 `control_plane_unavailable`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.errors import ControlPlaneError
from gateway.admin.errors import admin_error

if TYPE_CHECKING:
    from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]


def fleet_routes(gateway: Gateway, guard: Guard) -> list[Route]:
    """The fleet's admin route, behind `guard` (the admin app's bearer-token check)."""

    async def members(request: Request) -> Response:
        fleet = gateway.fleet
        if fleet is None:
            message = 'this node is not in a fleet (control_plane = "sqlite")'
            return admin_error(404, "not_in_a_fleet", message)
        try:
            found = await fleet.members.list()
        except ControlPlaneError as exc:
            return admin_error(503, "control_plane_unavailable", str(exc))
        return JSONResponse(
            {
                "self": fleet.members.id,
                "lease_s": fleet.fleet.plane.lease_s,
                "nodes": dict(sorted(Counter(m.node for m in found).items())),
                "members": [m.describe() for m in found],
            }
        )

    return [Route("/fleet", guard(members), methods=["GET"])]
