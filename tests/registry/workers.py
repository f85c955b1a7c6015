"""Child processes for the durability tests: `python -m tests.registry.workers MODE DATA_DIR ...`.

churn DATA_DIR SEED          deploy/configure/publish/alias/URL/secret changes in a loop until
                             killed; prints "ready" after its first change
aliases DATA_DIR WORKER N    wait for DATA_DIR/go, then set N aliases p<WORKER>-<k> on function
                             "shared", each with a URL; every change is a read-modify-write of
                             the same function document, so a lost update would lose an alias
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from gateway.functions.registry import FunctionConfig, Registry, RegistryError
from gateway.functions.registry_sqlite import SqliteStore


def churn(data_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    registry = Registry(SqliteStore(data_dir))
    code_dir = data_dir / f"code-{os.getpid()}"
    code_dir.mkdir(parents=True, exist_ok=True)
    step = 0
    refused: dict[str, int] = {}
    while True:
        step += 1
        name = rng.choice(["alpha", "beta", "gamma"])
        op = rng.choice(
            [
                "deploy",
                "deploy",
                "configure",
                "publish",
                "publish",
                "alias",
                "url",
                "delete_version",
                "secret",
            ]
        )
        try:
            if op == "deploy":
                path = code_dir / f"{step}.wasm"
                # up to 2 MB: large enough that a kill often lands inside a blob copy
                path.write_bytes(rng.randbytes(rng.randint(1, 2 << 20)))
                secrets = (("DB", "db"),) if "db" in registry.secret_names() and rng.random() < 0.3 else ()
                registry.deploy(name, path, FunctionConfig(memory_mb=rng.choice([128, 256]), secrets=secrets))
                path.unlink()
            elif op == "configure":
                registry.update_config(
                    name, {"timeout_s": rng.choice([1, 5, 10]), "env": {"STEP": str(step)}}
                )
            elif op == "publish":
                registry.publish(name, f"step {step}")
            elif op == "alias":
                versions = [v.version for v in registry.get(name).versions]
                if versions:
                    main, *other = rng.sample(versions, min(2, len(versions)))
                    extra = {other[0]: rng.choice([0.1, 0.5])} if other and rng.random() < 0.5 else {}
                    registry.set_alias(name, rng.choice(["live", "beta"]), main, extra)
            elif op == "url":
                aliases = [a.name for a in registry.get(name).aliases]
                registry.create_url(name, rng.choice([None, *aliases]))
            elif op == "delete_version":
                versions = [v.version for v in registry.get(name).versions]
                if versions:
                    registry.delete_version(name, rng.choice(versions))
            elif op == "secret":
                registry.set_secret("db", f"value-{step}")
        except RegistryError as exc:  # a refused change (alias in the way, URL exists) is part of the churn
            refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
        if step == 1:
            print("ready", flush=True)


def aliases(data_dir: Path, worker: int, count: int) -> None:
    registry = Registry(SqliteStore(data_dir))
    go = data_dir / "go"
    while not go.exists():
        time.sleep(0.005)
    for k in range(count):
        alias = f"p{worker}-{k}"
        registry.set_alias("shared", alias, 1)
        registry.create_url("shared", alias)
    registry.close()


if __name__ == "__main__":
    mode, directory, *rest = sys.argv[1:]
    if mode == "churn":
        churn(Path(directory), int(rest[0]))
    elif mode == "aliases":
        aliases(Path(directory), int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
