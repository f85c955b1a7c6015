"""Errors the runtime raises, and where each one comes from.

FunctionError                 the guest misbehaved; the gateway answers .status with .code
├── FunctionTimeout           504: wall-clock limit reached (epoch interrupt or a host wait)
├── FunctionTrap              502: trap, memory cap, panic, unhandled guest exception
├── FunctionFailed            502: returned an error-code, or never set a response
└── FunctionThrottled         429: no guest thread free within the request's timeout (Retry-After)
InvalidComponent              the file is not a usable wasi:http/proxy component
└── ComponentChanged          its bytes do not hash to the sha256 its load named
OutboundDenied                the outbound policy refused an authority (guest sees HTTP-request-denied)
OutboundError                 a transport failure, named by its wasi:http error-code case
"""

from __future__ import annotations


class FunctionError(Exception):
    status: int = 502
    code: str = "function_error"


class FunctionTimeout(FunctionError):
    status = 504
    code = "function_timeout"


class FunctionTrap(FunctionError):
    status = 502
    code = "function_crashed"


class FunctionFailed(FunctionError):
    status = 502
    code = "function_error"


class InvalidComponent(Exception):
    pass


class ComponentChanged(InvalidComponent):
    """The file's bytes do not hash to the sha256 its load named: replaced since it was hashed."""


class OutboundDenied(Exception):
    pass


class OutboundError(Exception):
    """A failed outbound request; `kind` is a wasi:http `error-code` case name.

    `payload` is the case's payload in canonical form (a dict for records, a str or int for
    options that are set), or None.
    """

    def __init__(self, kind: str, message: str = "", payload: object = None) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.payload = payload


class FunctionThrottled(FunctionError):
    """429: no guest thread became free within the request's timeout (the runtime's thread cap)."""

    status = 429
    code = "throttled"
    retry_after_s = 1
