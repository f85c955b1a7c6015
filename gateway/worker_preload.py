"""What the fork server of `edgefn serve --workers N` imports before it forks any worker
(`gateway.server.worker_context`): the modules a worker runs, then all their objects frozen.

Frozen (`gc.freeze`), they are out of every collection in the workers, so no worker's collector
writes to their pages and the pages stay shared between the fork server and the workers. A node
with two workers and one function: 129 MiB of PSS, against 137 MiB with each worker importing
for itself (spawned) and 151 MiB with the fork server's objects left unfrozen (docs/performance.md).
"""

import contextlib
import gc

import uvicorn.lifespan.on  # what uvicorn.Config.load() imports for the gateway's listener
import uvicorn.protocols.websockets.auto  # noqa: F401

import gateway.cli  # the node's __main__: a worker's start runs it again, as spawn's does
import gateway.functions.registry_sqlite  # every gateway opens its registry at start
import gateway.server  # noqa: F401  (the gateway, its routes and the wasm runtime)

with contextlib.suppress(ModuleNotFoundError):  # each is used when installed (or built)
    import uvloop  # noqa: F401
with contextlib.suppress(ModuleNotFoundError):
    import wasm_runtime._fastcall  # noqa: F401

gc.collect()
gc.freeze()
