"""Layer 2 (byte transports): plain TCP, lean per idle connection (the device's direct port).

A :class:`TcpStream` is a :class:`~.base.ByteStream` over a TCP connection
accepted by :func:`start_tcp_server` (the device's direct HTTP/1.1 and h2c
port, the cloud's proxy front). It has the same shape as :mod:`.tls` without
the TLS engine: both are built on :mod:`.connection` (the waiters, write
back-pressure, ``drain``/``close``/``abort``/``extra``) and
:class:`~.serving.HandlerServer` (a handler task per connection).

Theory of operation
-------------------
asyncio's plain :class:`asyncio.Protocol` path calls ``recv(256 KiB)`` for
every read, a fresh 256 KiB allocation per read per connection, and the
streams API keeps a growing buffer on top. :class:`_TcpProtocol` is an
:class:`asyncio.BufferedProtocol` instead:

* the socket is read into one :data:`RECV_BUFFER` per thread, shared by all
  connections (the transport hands it back at once, before any other
  protocol runs), and at most :data:`READ_CHUNK` bytes at a time;
* what was read is kept as the ``bytes`` chunks it arrived in (no joining);
  :meth:`TcpStream.read` returns a whole chunk without a copy when it fits;
* at :data:`READ_HIGH_WATER` unread bytes the socket is paused (TCP
  back-pressure does the rest) and resumed below :data:`READ_LOW_WATER`, so a
  connection holds at most ``READ_HIGH_WATER + READ_CHUNK`` unread bytes and
  an idle one holds none (:meth:`TcpStream.buffer_stats` shows them);
* :meth:`TcpStream.drain` waits while the transport's write buffer is above
  :data:`~.connection.WRITE_HIGH_WATER` (``pause_writing``/``resume_writing``,
  :class:`~.connection.LeanConnection`).

OS errors never leave this module: they become
:class:`~iec62676_2_33.errors.TransportError` or :class:`~.base.PeerClosed`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from ..errors import TransportError
from .base import PeerClosed
from .connection import WRITE_HIGH_WATER, WRITE_LOW_WATER, ConnectionStream, LeanConnection, format_addr, recv_buffer
from .serving import HandlerServer

__all__ = [
    "READ_CHUNK",
    "READ_HIGH_WATER",
    "READ_LOW_WATER",
    "RECV_BUFFER",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "TcpServer",
    "TcpStream",
    "start_tcp_server",
]

logger = logging.getLogger(__name__)

#: The receive buffer all connections of a thread share.
RECV_BUFFER = 64 * 1024
#: Most bytes taken from the socket in one read.
READ_CHUNK = 64 * 1024
#: Unread bytes at which the socket is paused.
READ_HIGH_WATER = 64 * 1024
#: Unread bytes below which a paused socket is resumed.
READ_LOW_WATER = 16 * 1024

_RECV = threading.local()


class _TcpProtocol(LeanConnection):
    """One TCP connection: bounded read chunks, write back-pressure (module docstring)."""

    __slots__ = ("_chunks", "_server", "_unread")

    def __init__(self, server: TcpServer | None = None) -> None:
        super().__init__("peer")
        self._server = server
        self._chunks: deque[bytes] = deque()
        self._unread = 0

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._label = f"client {format_addr(transport.get_extra_info('peername'))}"
        if self._server is not None:
            self._server._established(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return recv_buffer(_RECV, RECV_BUFFER)[:READ_CHUNK]

    def buffer_updated(self, nbytes: int) -> None:
        self._chunks.append(bytes(_RECV.buf[:nbytes]))
        self._unread += nbytes
        if self._unread >= READ_HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True  # half-closed: the peer may still wait for our answer; the handler closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None and not self._eof and self._error is None:
            if isinstance(exc, ConnectionResetError):
                self._error = PeerClosed(f"TCP connection with {self._label}: connection reset by peer",
                                         reason="connection reset by peer")
            else:
                self._error = TransportError(f"TCP connection with {self._label} failed: {exc}")
        self._eof = True
        self._wake_all()


class TcpStream(ConnectionStream[_TcpProtocol]):
    """A TCP connection as a :class:`~.base.ByteStream` (see the module docstring); its ``label``
    is ``"client addr:port"``."""

    __slots__ = ()

    # ------------------------------------------------------------------ reading

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        p = self._p
        while not p._chunks:
            if p._error is not None:
                raise p._error
            if p._eof:
                return b""
            waiter = p._new_read_waiter()
            try:
                await waiter
            finally:
                p._read_waiter = None
        first = p._chunks[0]
        if len(first) <= max_bytes:
            p._chunks.popleft()
            data = first
        else:
            data = first[:max_bytes]
            p._chunks[0] = first[max_bytes:]
        p._unread -= len(data)
        if p._reading_paused and p._unread < READ_LOW_WATER and not p._lost and p._transport is not None:
            p._reading_paused = False
            p._transport.resume_reading()
        return data

    @property
    def at_eof(self) -> bool:
        p = self._p
        return not p._chunks and p._eof

    # ------------------------------------------------------------------ writing

    def _transport(self) -> asyncio.Transport:
        p = self._p
        if p._error is not None:
            raise p._error
        if p._transport is None or p._lost or p._transport.is_closing():
            raise TransportError(f"cannot write to {p._label}: the connection is closed")
        return p._transport

    def write_nowait(self, data: bytes) -> None:
        self._transport().write(data)

    def writelines(self, parts: Sequence[bytes]) -> None:
        self._transport().writelines(parts)

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)
        await self.drain()

    def write_eof(self) -> None:
        """Half-close: send FIN after what is buffered; reading goes on (no part of ByteStream:
        a TLS stream cannot half-close)."""
        transport = self._transport()
        if transport.can_write_eof():
            transport.write_eof()

    # ------------------------------------------------------------------ information

    def buffer_stats(self) -> dict[str, int | bool]:
        """``unread`` bytes (received, not yet read), ``transport_write`` (the write buffer),
        ``reading_paused``/``writing_paused``."""
        return {"unread": self._p._unread, **self._flow_stats()}


# --------------------------------------------------------------------------- server


class TcpServer(HandlerServer[TcpStream]):
    """A listening TCP server made by :func:`start_tcp_server`.

    ``stats`` counts ``accepted`` connections, ``handler_failed`` (handlers
    that raised) and ``active`` (handlers running).
    """

    _logger = logger

    def __init__(self, handler: Callable[[TcpStream], Awaitable[None]]) -> None:
        super().__init__(handler)
        self.stats: dict[str, int] = {"accepted": 0, "handler_failed": 0, "active": 0}

    def _protocol(self) -> _TcpProtocol:
        return _TcpProtocol(self)

    # ------------------------------------------------------------------ protocol hooks

    def _established(self, protocol: _TcpProtocol) -> None:
        self.stats["accepted"] += 1
        if self._closed:
            assert protocol._transport is not None
            protocol._transport.abort()
            return
        self._serve(TcpStream(protocol), protocol._loop)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop accepting; established connections keep running (:meth:`abort_connections`)."""
        self._closed = True
        if self._server is not None:
            self._server.close()


async def start_tcp_server(
    handler: Callable[[TcpStream], Awaitable[None]], sock: socket.socket, *, backlog: int = 1024
) -> TcpServer:
    """Accept TCP connections on the listening *sock* and run ``handler(stream)`` for each,
    as its own task. A handler's exception is logged and counted; it never stops the server.
    The stream is closed when the handler returns."""
    server = TcpServer(handler)
    await server._listen(sock, backlog=backlog)
    return server
