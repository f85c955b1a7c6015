"""`edgefn fleet`: the fleet's members as the admin API lists them (`GET /fleet`).

One line per node (how many processes it runs), then one per member process: its id, host, pid,
when it joined and how long its lease has left. `--json` prints the API's answer. A node not in a
fleet, or a fleet whose Redis is down, is refused with the API's message (exit 1).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from gateway.admin.client import call, common_options, run


def cmd_fleet(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/fleet")
    if args.json:
        print(json.dumps(data))
        return 0
    nodes = data["nodes"]
    print(f"{len(nodes)} node(s), {len(data['members'])} process(es); lease {data['lease_s']:g} s")
    for node, count in nodes.items():
        print(f"  {node}: {count} process(es)")
    for m in data["members"]:
        here = "  <- answered" if m["id"] == data["self"] else ""
        joined = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m["started"]))
        print(
            f"  {m['id']}  node {m['node']}  host {m['host']}  pid {m['pid']}  joined {joined} UTC"
            f"  lease {m['expires_in_s']:.1f} s{here}"
        )
    return 0


def register(sub: Any) -> None:
    """Add `fleet` to the CLI's subparsers."""
    admin = common_options()
    fleet = sub.add_parser("fleet", help="list the fleet's nodes and member processes", parents=[admin])
    fleet.set_defaults(func=run(cmd_fleet), json=False)
