"""The gateway runs the blob sweep by itself: started with the registry, stopped with it; a pass on
a running node removes code a redeploy replaced while the new code keeps serving, and the old code
deployed again afterwards is stored again and served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.registry.conftest import AdminNode
from tests.registry.test_blob_sweep import sha

Start = Callable[..., AdminNode]


def serve(node: AdminNode, url: str) -> httpx.Response:
    host = url.split("//", 1)[1].split(":", 1)[0]
    return httpx.get(f"http://127.0.0.1:{node.port}/?n=1", headers={"host": host}, timeout=120)


def test_a_running_node_sweeps_code_a_redeploy_replaced(
    admin_node: Start, example_components: dict[str, Path]
) -> None:
    node = admin_node()
    assert node.gateway is not None
    sweeper = node.gateway.blob_sweeper
    assert sweeper is not None and sweeper._task is not None and not sweeper._task.done()
    components = node.gateway.config.node.data_dir / "components"
    hello, stream = sha(example_components["hello"]), sha(example_components["stream"])

    node.ok("POST", "/functions/f/code", 201, content=example_components["hello"].read_bytes())
    node.ok("POST", "/functions/f/code", 200, content=example_components["stream"].read_bytes())
    url = node.ok("POST", "/functions/f/urls", 201)["url"]
    assert serve(node, url).status_code == 200
    # One pass now, with no grace period. The compiled artifacts here are the test machine's
    # shared cache (data_dir/compiled is a symlink, tests/gateway/conftest.py): not this node's to
    # prune, so hello's artifact stays although nothing here names hello any more.
    shared = node.gateway.config.node.data_dir / "compiled"
    assert shared.is_symlink() and list(shared.glob(f"{hello}-*.cwasm"))
    sweeper.grace_s = 0.0
    assert sweeper.sweep().marked == [hello]
    report = sweeper.sweep()
    assert report.deleted == [hello] and report.local == []
    assert list(shared.glob(f"{hello}-*.cwasm"))
    assert sorted(p.stem for p in components.glob("*.wasm")) == [stream]
    assert serve(node, url).status_code == 200

    node.ok("POST", "/functions/f/code", 200, content=example_components["hello"].read_bytes())
    assert sorted(p.stem for p in components.glob("*.wasm")) == sorted([hello, stream])
    response = serve(node, url)
    assert response.status_code == 200 and response.headers["x-edgefn-executed-version"] == "$LATEST"
    assert response.json()["path"] == "/?n=1"  # hello echoes the request
    node.stop()
    assert sweeper._task is None  # stopped with the gateway
