"""Layer 2 (byte transports): plain TCP, lean per idle connection (the device's direct port).

A :class:`TcpStream` is a :class:`~.base.ByteStream` over a TCP connection
accepted by :func:`start_tcp_server` (the device's direct HTTP/1.1 and h2c
port, the cloud's proxy front). It has the same shape as :mod:`.tls` without
the TLS engine.

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
  :data:`WRITE_HIGH_WATER` (``pause_writing``/``resume_writing``).

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
from typing import Any, cast

from ..errors import TransportError
from .base import PeerClosed
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
#: Transport write buffer level above which :meth:`TcpStream.drain` waits.
WRITE_HIGH_WATER = 64 * 1024
#: Transport write buffer level at which waiting writers are released.
WRITE_LOW_WATER = 16 * 1024
#: How long :meth:`TcpStream.close` waits for buffered data to leave before it aborts.
CLOSE_TIMEOUT = 5.0

_RECV = threading.local()


def _shared_buffer() -> memoryview:
    buf: memoryview | None = getattr(_RECV, "buf", None)
    if buf is None:
        buf = _RECV.buf = memoryview(bytearray(RECV_BUFFER))
    return buf


def _format_addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


class _TcpProtocol(asyncio.BufferedProtocol):
    """One TCP connection: bounded read chunks, write back-pressure (module docstring)."""

    __slots__ = (
        "_chunks",
        "_close_waiter",
        "_drain_waiters",
        "_eof",
        "_error",
        "_label",
        "_loop",
        "_lost",
        "_read_waiter",
        "_reading_paused",
        "_server",
        "_transport",
        "_unread",
        "_writing_paused",
    )

    def __init__(self, server: TcpServer | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = server
        self._label = "peer"
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._unread = 0
        self._eof = False
        self._lost = False
        self._error: TransportError | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._close_waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: a cast, not a check.
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self._label = f"client {_format_addr(transport.get_extra_info('peername'))}"
        if self._server is not None:
            self._server._established(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _shared_buffer()[:READ_CHUNK]

    def buffer_updated(self, nbytes: int) -> None:
        self._chunks.append(bytes(_shared_buffer()[:nbytes]))
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
        self._wake_reader()
        self._wake_writers()
        if self._close_waiter is not None and not self._close_waiter.done():
            self._close_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()

    # ------------------------------------------------------------------ helpers

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)


class TcpStream:
    """A TCP connection as a :class:`~.base.ByteStream` (see the module docstring)."""

    __slots__ = ("_p",)

    def __init__(self, protocol: _TcpProtocol) -> None:
        self._p = protocol

    def __repr__(self) -> str:
        return f"<TcpStream {self._p._label}>"

    @property
    def label(self) -> str:
        """Who is at the other end, for messages: ``"client addr:port"``."""
        return self._p._label

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
            if p._read_waiter is not None:
                raise RuntimeError(f"read() on {p._label} is already waiting in another task")
            waiter = p._read_waiter = p._loop.create_future()
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

    async def drain(self) -> None:
        p = self._p
        while p._writing_paused and not p._lost:
            waiter = p._loop.create_future()
            if p._drain_waiters is None:
                p._drain_waiters = []
            p._drain_waiters.append(waiter)
            await waiter
        if p._lost and p._error is not None:
            raise p._error

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)
        await self.drain()

    def write_eof(self) -> None:
        """Half-close: send FIN after what is buffered; reading goes on (no part of ByteStream:
        a TLS stream cannot half-close)."""
        transport = self._transport()
        if transport.can_write_eof():
            transport.write_eof()

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        p = self._p
        if p._lost or p._transport is None:
            return
        p._transport.close()
        if p._lost:
            return
        if p._close_waiter is None:
            p._close_waiter = p._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(p._close_waiter), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        p = self._p
        if p._transport is not None and not p._lost:
            p._transport.abort()

    # ------------------------------------------------------------------ information

    def extra(self, name: str, default: Any = None) -> Any:
        p = self._p
        if p._transport is None:
            return default
        return p._transport.get_extra_info(name, default)

    def buffer_stats(self) -> dict[str, int | bool]:
        """``unread`` bytes (received, not yet read), ``transport_write`` (the write buffer),
        ``reading_paused``/``writing_paused``."""
        p = self._p
        transport = p._transport
        return {
            "unread": p._unread,
            "transport_write": (
                transport.get_write_buffer_size() if transport is not None and not p._lost else 0
            ),
            "reading_paused": p._reading_paused,
            "writing_paused": p._writing_paused,
        }


# --------------------------------------------------------------------------- server


class TcpServer(HandlerServer):
    """A listening TCP server made by :func:`start_tcp_server`.

    ``stats`` counts ``accepted`` connections, ``handler_failed`` (handlers
    that raised) and ``active`` (handlers running).
    """

    def __init__(self, handler: Callable[[TcpStream], Awaitable[None]]) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], TcpStream] = {}
        self._closed = False
        self.stats: dict[str, int] = {"accepted": 0, "handler_failed": 0, "active": 0}

    def _protocol(self) -> _TcpProtocol:
        return _TcpProtocol(self)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return tuple(self._server.sockets) if self._server is not None else ()

    # ------------------------------------------------------------------ protocol hooks

    def _established(self, protocol: _TcpProtocol) -> None:
        self.stats["accepted"] += 1
        if self._closed:
            assert protocol._transport is not None
            protocol._transport.abort()
            return
        stream = TcpStream(protocol)
        task = protocol._loop.create_task(self._run(stream))
        self._handlers[task] = stream

    async def _run(self, stream: TcpStream) -> None:
        self.stats["active"] += 1
        try:
            try:
                await self._handler(stream)
            except Exception as exc:
                self.stats["handler_failed"] += 1
                logger.exception("connection handler for %s failed: %s", stream.label, type(exc).__name__)
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
    loop = asyncio.get_running_loop()
    try:
        server._server = await loop.create_server(server._protocol, sock=sock, backlog=backlog)
    except OSError as exc:
        raise TransportError(
            f"cannot listen on {_format_addr(sock.getsockname())}: {exc.strerror or exc}"
        ) from None
    return server
