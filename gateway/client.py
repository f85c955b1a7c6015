"""The client's side of one exchange: its request body, and whether it is still there.

uvicorn drops what is sent after a client has gone without telling the sender, so a response body
streamed to a departed client would otherwise be pulled from its origin or guest to the end (or to
the function's timeout). `ClientConnection.gone()` waits for the disconnect so that the sender can
stop at once; it listens only when nobody else is reading the request body, because ASGI has one
`receive` for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import GatewayError

Message = dict[str, Any]


class ClientConnection:
    def __init__(self, receive: Any, has_body: bool) -> None:
        self._receive = receive
        self._has_body = has_body
        self.bytes_in = 0  # request body bytes read
        self._stashed: Message | None = None  # the empty body message, taken by gone() first
        self._body_read: asyncio.Event | None = None
        self.body_complete = False

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            message = self._stashed or await self._receive()
            self._stashed = None
            if message["type"] == "http.disconnect":
                raise GatewayError("client disconnected")
            chunk = message.get("body", b"")
            if chunk:
                self.bytes_in += len(chunk)
                yield chunk
            if not message.get("more_body", False):
                self.body_complete = True
                if self._body_read is not None:
                    self._body_read.set()
                return

    async def gone(self) -> None:
        """Return once the client has disconnected (or the response is complete, as uvicorn says)."""
        if not self.body_complete:
            if self._has_body:
                # The target may still be streaming the request body: listen after it has all come.
                self._body_read = asyncio.Event()
                await self._body_read.wait()
            else:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    return
                self._stashed = message  # the empty body, for a target that reads it later
        await self._receive()  # after the body, uvicorn answers only http.disconnect
