"""bench.gateway_inproc drives the Gateway's ASGI app itself: real answers, the runtime's clock
removed afterwards, and clear refusals of bad arguments (its figures are the bench's, not a test's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gateway_inproc
from wasm_runtime.runtime import Runtime


def test_each_path_is_answered_by_the_gateway_and_timed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edgefn.toml"
    config.write_text(
        f'[node]\nname = "bench"\nlisten = "127.0.0.1:0"\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[[routes]]\nname = "floor"\npath = "/floor"\nredirect = { to = "/", status = 308 }\n'
    )
    invoke = Runtime.invoke
    argv = [str(config), "--path", "/floor", "--path", "/nowhere", "--requests", "20", "--rounds", "2", "--telemetry"]
    assert gateway_inproc.main(argv) == 0
    floor, nowhere, telemetry = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (floor["path"], floor["status"], nowhere["status"]) == ("/floor", [308], [404])
    assert floor["us_per_request"] > 0 and len(floor["rounds_us"]) == 2 and floor["runtime_us"] is None
    assert telemetry["telemetry_us"] > 0
    assert Runtime.invoke is invoke  # the clock around it is gone


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gateway_inproc.main(["edgefn.toml"])
    assert "give --path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gateway_inproc.main(["edgefn.toml", "--path", "/", "--rounds", "0"])
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("feature", ["logs", "metrics"])
def test_a_feature_is_measured_in_pairs_and_put_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], feature: str
) -> None:
    """--without: rounds with and without the feature in one process, their paired difference
    printed, and the feature working again afterwards."""
    import logging

    from gateway.functions.metrics import FunctionMetrics
    from gateway.observability import GatewayMetrics

    config = tmp_path / "edgefn.toml"
    config.write_text(
        f'[node]\nname = "bench"\nlisten = "127.0.0.1:0"\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[[routes]]\nname = "floor"\npath = "/floor"\nredirect = { to = "/", status = 308 }\n'
    )
    observe, child = GatewayMetrics.observe, FunctionMetrics.child
    level = logging.getLogger("edgefn").level
    argv = [str(config), "--path", "/floor", "--requests", "20", "--rounds", "4", "--without", feature]
    assert gateway_inproc.main(argv) == 0
    (floor,) = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (floor["status"], floor["without"], len(floor["rounds_us"])) == ([308], feature, 4)
    assert floor["without_us"] > 0 and isinstance(floor["feature_us"], float)
    assert (GatewayMetrics.observe, FunctionMetrics.child) == (observe, child)
    assert logging.getLogger("edgefn").level == level
