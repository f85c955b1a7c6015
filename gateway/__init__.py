"""The HTTP front of edgefn (DESIGN.md): the ASGI app and the request lifecycle around it."""

import sys

# httpx imports its own command line at import (click, pygments and rich: ~25 ms of a ~230 ms
# start, measured with `python -X importtime`) unless that module cannot be imported, which it
# allows for (the CLI is an optional extra). edgefn never runs it; a restart is a node out of
# service. An httpx imported before this package keeps whatever it has.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
