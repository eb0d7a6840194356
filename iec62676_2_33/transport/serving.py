"""Layer 2 (byte transports): what every listening server of the library does with its handlers.

:class:`HandlerServer` is the shared lifecycle of :class:`~.tcp.TcpServer` and
:class:`~.tls.TlsServer`: it listens (``_listen``: an :class:`OSError` becomes a
:class:`~iec62676_2_33.errors.TransportError` naming the address); each
accepted connection runs one handler task (``_serve``), whose exception is
logged and counted in ``stats["handler_failed"]`` (or, if it is one of the
server's ``_peer_failures``, the peer's doing, one INFO line) and whose stream
is closed when it returns; ``abort_connections`` ends every connection,
``wait_closed`` waits for the listener and every handler, ``aclose`` does both
and cancels what is left. A subclass sets ``stats`` (with ``"active"`` and
``"handler_failed"``) and ``_logger``, and defines ``_protocol()`` (one
connection's protocol) and ``close()``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, Self, TypeVar

from ..errors import TransportError
from .connection import ConnectionStream, format_addr

__all__ = ["HandlerServer"]

S = TypeVar("S", bound=ConnectionStream[Any])


class HandlerServer(Generic[S]):
    """Listener + one task per connection (see the module docstring)."""

    _logger: ClassVar[logging.Logger]
    #: Exceptions escaping a handler that are the peer's doing (it broke the connection under
    #: the handler): one INFO line, not a failure. None by default.
    _peer_failures: ClassVar[tuple[type[Exception], ...]] = ()
    stats: dict[str, int]

    def __init__(self, handler: Callable[[S], Awaitable[None]]) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], S] = {}
        self._closed = False

    def _protocol(self) -> asyncio.BaseProtocol:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return tuple(self._server.sockets) if self._server is not None else ()

    async def _listen(
        self, sock: socket.socket | None, host: str | None = None, port: int = 0, *, backlog: int
    ) -> None:
        """Listen on the listening *sock*, else on *host*/*port*."""
        loop = asyncio.get_running_loop()
        try:
            if sock is not None:
                self._server = await loop.create_server(self._protocol, sock=sock, backlog=backlog)
            else:
                self._server = await loop.create_server(self._protocol, host, port, backlog=backlog)
        except OSError as exc:
            where = format_addr(sock.getsockname()) if sock is not None else f"{host}:{port}"
            raise TransportError(f"cannot listen on {where}: {exc.strerror or exc}") from None

    def _serve(self, stream: S, loop: asyncio.AbstractEventLoop) -> None:
        """Run the handler on an established connection, as its own task."""
        task = loop.create_task(self._run(stream))
        self._handlers[task] = stream

    async def _run(self, stream: S) -> None:
        self.stats["active"] += 1
        try:
            try:
                await self._handler(stream)
            except Exception as exc:
                if isinstance(exc, self._peer_failures):
                    self._logger.info("connection with %s ended: %s", stream.label, exc)
                else:
                    self.stats["handler_failed"] += 1
                    self._logger.exception(
                        "connection handler for %s failed: %s", stream.label, type(exc).__name__
                    )
                stream.abort()
            await stream.close()
        except BaseException:
            stream.abort()
            raise
        finally:
            self.stats["active"] -= 1
            task = asyncio.current_task()
            if task is not None:
                self._handlers.pop(task, None)

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
