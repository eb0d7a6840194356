"""Layer 2 (byte transports): what every listening server of the library does with its handlers.

:class:`HandlerServer` is the shared lifecycle of :class:`~.tcp.TcpServer` and
:class:`~.tls.TlsServer`: each accepted connection runs one handler task;
``abort_connections`` ends every connection, ``wait_closed`` waits for the
listener and every handler, ``aclose`` does both and cancels what is left.
A subclass sets ``_server`` when it listens and defines ``close()``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Self

__all__ = ["HandlerServer"]


class HandlerServer:
    """Listener + one task per connection (see the module docstring)."""

    _server: asyncio.Server | None
    _handlers: dict[asyncio.Task[None], Any]  # task -> its stream (anything with abort())

    def close(self) -> None:
        raise NotImplementedError

    def abort_connections(self) -> None:
        """Abort every established connection (their handlers see the end of stream)."""
        for stream in list(self._handlers.values()):
            stream.abort()

    async def wait_closed(self) -> None:
        """Wait until the listener is closed and every handler has returned."""
        if self._server is not None:
            await self._server.wait_closed()
        while self._handlers:
            await asyncio.gather(*list(self._handlers), return_exceptions=True)

    async def aclose(self) -> None:
        """Close, abort every connection, cancel the handlers and wait for them."""
        self.close()
        self.abort_connections()
        for task in list(self._handlers):
            task.cancel()
        await self.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
