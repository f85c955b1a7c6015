"""The sandbox: a Python host of the wasi:http/proxy world on wasmtime's component API.

The gateway uses `Runtime.load` at deploy or start-up and `Runtime.invoke` per request; nothing
here imports the gateway.
"""

from ._components import LoadedComponent, hash_file
from .api import (
    GuestRequest,
    GuestResponse,
    InvocationStats,
    LastChunk,
    Limits,
    OutboundRequest,
    OutboundResponse,
    OutboundTimeouts,
    OutboundTransport,
)
from .errors import (
    ComponentChanged,
    FunctionError,
    FunctionFailed,
    FunctionThrottled,
    FunctionTimeout,
    FunctionTrap,
    InvalidComponent,
    OutboundDenied,
    OutboundError,
)
from .outbound import HttpxTransport, OutboundPolicy
from .runtime import Runtime

__all__ = [
    "ComponentChanged",
    "FunctionError",
    "FunctionFailed",
    "FunctionThrottled",
    "FunctionTimeout",
    "FunctionTrap",
    "GuestRequest",
    "GuestResponse",
    "HttpxTransport",
    "InvalidComponent",
    "InvocationStats",
    "LastChunk",
    "Limits",
    "LoadedComponent",
    "OutboundDenied",
    "OutboundError",
    "OutboundPolicy",
    "OutboundRequest",
    "OutboundResponse",
    "OutboundTimeouts",
    "OutboundTransport",
    "Runtime",
    "hash_file",
]
