"""The untimed parts of bench/start.py: the config it serves and the CPU it reads from /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.start import config, cpu_s
from bench.wasm import EXAMPLES
from routes import load_config


def test_the_start_config_serves_hello_on_its_own_ports(tmp_path: Path, example_components: dict[str, Path]) -> None:
    # the config names examples/hello/hello.wasm, which a fresh clone has only once it is built
    tree = tmp_path / "tree-abc"
    tree.mkdir()
    path = config(tree, tmp_path / "data", 18123)
    loaded = load_config(path)
    assert loaded.node.listen == "127.0.0.1:18123"
    assert loaded.node.admin_listen not in (None, "", loaded.node.listen)
    assert list(loaded.functions) == ["hello"]
    assert loaded.functions["hello"].component == EXAMPLES["hello"]
    assert [(r.path, r.function) for r in loaded.routes] == [("/hello", "hello")]


def test_cpu_s_counts_this_process_cpu() -> None:
    before = cpu_s(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert cpu_s(os.getpid()) > before
