"""`make run`: the example origin on :9001 and the gateway serving examples/edgefn.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    origin = subprocess.Popen([sys.executable, "-m", "examples.origin", "9001"], cwd=HERE.parent)
    print("example origin on http://127.0.0.1:9001; gateway on http://127.0.0.1:8080")
    print(
        "try: curl -i http://127.0.0.1:8080/web/hello   |   curl -N 'http://127.0.0.1:8080/fn/stream?n=5&ms=300'"
    )
    try:
        from gateway.cli import main as edgefn

        return edgefn(["serve", "--config", str(HERE / "edgefn.toml")])
    finally:
        origin.terminate()
        origin.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
