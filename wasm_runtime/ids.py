"""Host resource type ids: one per WASI resource, shared by every name a component imports it under."""

from __future__ import annotations


class RID:
    POLLABLE = 1
    IO_ERROR = 2
    INPUT_STREAM = 3
    OUTPUT_STREAM = 4
    FIELDS = 10
    INCOMING_REQUEST = 11
    OUTGOING_REQUEST = 12
    REQUEST_OPTIONS = 13
    RESPONSE_OUTPARAM = 14
    INCOMING_RESPONSE = 15
    INCOMING_BODY = 16
    FUTURE_TRAILERS = 17
    OUTGOING_RESPONSE = 18
    OUTGOING_BODY = 19
    FUTURE_INCOMING_RESPONSE = 20
    TERMINAL_INPUT = 30
    TERMINAL_OUTPUT = 31
    NETWORK = 40
    # names not listed get ids from here on, one per distinct name
    DYNAMIC_BASE = 1000


BY_NAME: dict[str, int] = {
    "pollable": RID.POLLABLE,
    "error": RID.IO_ERROR,
    "io-error": RID.IO_ERROR,
    "input-stream": RID.INPUT_STREAM,
    "output-stream": RID.OUTPUT_STREAM,
    "fields": RID.FIELDS,
    "headers": RID.FIELDS,
    "trailers": RID.FIELDS,
    "incoming-request": RID.INCOMING_REQUEST,
    "outgoing-request": RID.OUTGOING_REQUEST,
    "request-options": RID.REQUEST_OPTIONS,
    "response-outparam": RID.RESPONSE_OUTPARAM,
    "incoming-response": RID.INCOMING_RESPONSE,
    "incoming-body": RID.INCOMING_BODY,
    "future-trailers": RID.FUTURE_TRAILERS,
    "outgoing-response": RID.OUTGOING_RESPONSE,
    "outgoing-body": RID.OUTGOING_BODY,
    "future-incoming-response": RID.FUTURE_INCOMING_RESPONSE,
    "terminal-input": RID.TERMINAL_INPUT,
    "terminal-output": RID.TERMINAL_OUTPUT,
    "network": RID.NETWORK,
}
