"""Child processes for the blob sweep's crash tests: `python -m tests.registry.sweep_workers MODE ...`.

churn DATA_DIR SEED      deploy, publish, delete versions and functions, and sweep with no grace
                         period, in a loop until killed; prints "ready" after its first change
crash-delete DATA_DIR    one sweep pass with no grace period whose first blob deletion kills the
                         process (SIGKILL) after the file is unlinked and before the transaction
                         that tombstones its record commits
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

from gateway.functions.registry import Registry, RegistryError
from gateway.functions.registry_sqlite import SqliteStore
from gateway.functions.registry_sweep import BlobSweeper


class CrashingStore(SqliteStore):
    """Dies by SIGKILL right after its first blob file is unlinked, inside the transaction."""

    def _unlink_blob(self, path: Path) -> None:
        super()._unlink_blob(path)
        print(f"unlinked {path.stem}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def churn(data_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    registry = Registry(SqliteStore(data_dir))
    sweeper = BlobSweeper(registry, compiled_dir=data_dir / "compiled", grace_s=0.0, lease_s=1.0)
    code_dir = data_dir / f"code-{os.getpid()}"
    code_dir.mkdir(parents=True, exist_ok=True)
    step = 0
    refused: dict[str, int] = {}
    while True:
        step += 1
        name = rng.choice(["alpha", "beta", "gamma"])
        op = rng.choice(["deploy", "deploy", "redeploy", "publish", "delete_version", "delete", "sweep"])
        try:
            if op in ("deploy", "redeploy"):
                # "redeploy": code that earlier steps may have deployed, left and swept (a rollback)
                if op == "deploy":
                    data = f"{seed}-{step}".encode() + rng.randbytes(rng.randint(1, 1 << 20))
                else:
                    data = f"old-{rng.randint(0, 5)}".encode() * 1000
                path = code_dir / f"{step}.wasm"
                path.write_bytes(data)
                registry.deploy(name, path)
                path.unlink()
            elif op == "publish":
                registry.publish(name, f"step {step}")
            elif op == "delete_version":
                versions = [v.version for v in registry.get(name).versions]
                if versions:
                    registry.delete_version(name, rng.choice(versions))
            elif op == "delete":
                registry.delete(name)
            else:
                sweeper.sweep()
        except RegistryError as exc:  # a function that does not exist (yet) is part of the churn
            refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
        if step == 1:
            print("ready", flush=True)


def crash_delete(data_dir: Path) -> None:
    BlobSweeper(Registry(CrashingStore(data_dir)), grace_s=0.0).sweep()
    print("no blob was deleted", flush=True)


if __name__ == "__main__":
    mode, directory, *rest = sys.argv[1:]
    if mode == "churn":
        churn(Path(directory), int(rest[0]))
    elif mode == "crash-delete":
        crash_delete(Path(directory))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
