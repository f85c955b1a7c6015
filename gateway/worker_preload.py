"""What the node process of `edgefn serve --workers N` imports before it forks its workers
(`gateway.server.worker_context`): the modules a worker runs, then all their objects frozen.

Frozen (`gc.freeze`), they are out of every collection in the workers, so no worker's collector
writes to their pages and the pages stay shared between the node process and the workers.
"""

import contextlib
import gc

import uvicorn.lifespan.on  # noqa: F401  (what uvicorn.Config.load() imports for the gateway's listener)

import gateway.functions.registry_sqlite  # every gateway opens its registry at start
import gateway.server  # noqa: F401  (the gateway, its routes and the wasm runtime)

with contextlib.suppress(ModuleNotFoundError):  # each is used when installed (or built)
    import uvloop  # noqa: F401
with contextlib.suppress(ModuleNotFoundError):
    import wasm_runtime._fastcall  # noqa: F401

gc.collect()
gc.freeze()
