"""`edgefn fleet`: the members of a running fleet, and a clear refusal on a node without one."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

from tests.fleet.conftest import TOKEN, Fleet, Node
from tests.invocations.conftest import EDGEFN, node_factory  # noqa: F401  (a fixture)

ROUTE = """
[[routes]]
name = "hello"
path = "/hello"
function = "hello"

[functions.hello]
component = "{hello}"
"""


def edgefn(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFN_ADMIN_TOKEN": TOKEN}
    return subprocess.run([*EDGEFN, *args], capture_output=True, text=True, timeout=60, env=env)


def test_fleet_lists_every_node_and_process(fleet: Fleet) -> None:
    a, b = fleet(ROUTE, n=2, workers=2)
    shown = edgefn("fleet", "--admin", a.admin)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("2 node(s), 4 process(es)"), shown.stdout
    assert "  node-0: 2 process(es)" in shown.stdout and "  node-1: 2 process(es)" in shown.stdout
    assert shown.stdout.count("<- answered") == 1
    data = json.loads(edgefn("fleet", "--admin", b.admin, "--json").stdout)
    assert data["nodes"] == {"node-0": 2, "node-1": 2}
    assert {m["node"] for m in data["members"]} == {"node-0", "node-1"}
    assert data["self"] in {m["id"] for m in data["members"] if m["node"] == "node-1"}


def test_fleet_on_a_node_without_one_says_so(node_factory: Callable[..., Node]) -> None:  # noqa: F811
    node = node_factory(ROUTE)
    refused = edgefn("fleet", "--admin", node.admin)
    assert refused.returncode == 1
    assert "not in a fleet" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
