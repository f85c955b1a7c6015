"""Request ids: a random per-process prefix and a counter, instead of a `uuid4` per request.

A request id correlates log lines, error bodies and the `x-request-id` a target receives; it is
not a secret and grants nothing. 64 random bits per process keep ids of different processes and
restarts apart (a clash needs two processes to draw the same prefix: ~2^-32 chance across 2^16
processes), and the counter keeps one process's ids apart. A `uuid4` cost two microseconds of
`os.urandom` and the UUID object per request; this costs a counter step and a format.
The prefix is drawn again in a forked child, so workers forked from one parent never share it.
"""

from __future__ import annotations

import itertools
import os
import secrets


class RequestIds:
    """32 hex digits like a uuid4's `.hex`: 16 of the process's prefix, 16 of the counter."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_ids = RequestIds()
new_request_id = _ids.new
