"""Layer 2 (byte transports): what the lean socket transports share — a connection and its stream view.

:mod:`.tcp` and :mod:`.tls_engine` both drive a TCP socket from an
:class:`asyncio.BufferedProtocol` that holds no more than one connection
needs; this module is the part of that design they have in common:

* :func:`recv_buffer` — the receive buffer all connections of a thread share
  (the transport calls ``buffer_updated()`` right after ``recv_into()``, before
  any other protocol runs, so each protocol copies out only what it keeps);
* :class:`LeanConnection` — the protocol's common state and callbacks: the
  transport, end of stream, the error its stream raises, the one reader's
  waiter (:meth:`LeanConnection._new_read_waiter`), the writers' waiters and
  ``close()``'s; write back-pressure from the transport's write buffer
  (``pause_writing`` above :data:`WRITE_HIGH_WATER`, ``resume_writing`` at
  :data:`WRITE_LOW_WATER`);
* :class:`ConnectionStream` — the :class:`~.base.ByteStream` view of a
  connection, one slot wide: ``drain``, ``close`` (the connection's graceful
  ``_shutdown``, which TLS overrides to send close_notify first, then an abort
  after :data:`CLOSE_TIMEOUT`), ``abort`` (the connection's ``_abort``),
  ``extra``, the flow-control part of ``buffer_stats``.

How bytes are read and written stays each transport's own: TCP keeps the
chunks it received, TLS decrypts into a plaintext buffer and encrypts on
write. Every class here is slotted and adds no object per connection: a
connection is its protocol object and the one-slot stream that views it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Generic, TypeVar, cast

from ..errors import TransportError

__all__ = [
    "CLOSE_TIMEOUT",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "ConnectionStream",
    "LeanConnection",
    "format_addr",
    "recv_buffer",
]

#: TCP write buffer level above which a stream's ``drain()`` (and ``write()``) waits.
WRITE_HIGH_WATER = 64 * 1024
#: TCP write buffer level at which waiting writers are released.
WRITE_LOW_WATER = 16 * 1024
#: How long a stream's ``close()`` waits for buffered data to leave before it aborts.
CLOSE_TIMEOUT = 5.0


def format_addr(addr: Any) -> str:
    """An address for messages: ``host:port``, ``[v6]:port``."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


def recv_buffer(local: threading.local, size: int) -> memoryview:
    """The receive buffer of *size* bytes that every connection of this thread shares, kept in
    ``local.buf`` and made at its first use. Shared, its size costs nothing per connection: the
    transport calls ``buffer_updated()`` right after ``recv_into()``, before any other protocol
    runs, and ``buffer_updated()`` copies out whatever it cannot consume at once."""
    buf: memoryview | None = getattr(local, "buf", None)
    if buf is None:
        buf = local.buf = memoryview(bytearray(size))
    return buf


class LeanConnection(asyncio.BufferedProtocol):
    """The state and callbacks every lean connection has (module docstring); a transport's
    protocol adds its read buffer, and its own ``buffer_updated``/``eof_received``/``connection_lost``."""

    __slots__ = (
        "_close_waiter",
        "_drain_waiters",
        "_eof",
        "_error",
        "_label",
        "_loop",
        "_lost",
        "_read_waiter",
        "_reading_paused",
        "_transport",
        "_writing_paused",
    )

    def __init__(self, label: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._label = label
        self._transport: asyncio.Transport | None = None
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

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()

    # ------------------------------------------------------------------ waiters

    def _new_read_waiter(self) -> asyncio.Future[None]:
        """The future :meth:`_wake_reader` resolves (data, end of stream, an error); one reader at a time.

        The reader awaits it in its own ``read()`` and sets ``_read_waiter`` back to ``None``
        after: a helper coroutine would be one more object per idle connection, whose reader waits.
        """
        if self._read_waiter is not None:
            raise RuntimeError(f"read() on {self._label} is already waiting in another task")
        waiter = self._read_waiter = self._loop.create_future()
        return waiter

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _wake_all(self) -> None:
        """The connection is lost: wake the reader, the writers and ``close()``."""
        self._wake_reader()
        self._wake_writers()
        if self._close_waiter is not None and not self._close_waiter.done():
            self._close_waiter.set_result(None)

    # ------------------------------------------------------------------ closing (the stream's)

    def _shutdown(self) -> None:
        """Start a graceful close: close the transport once its buffered data has left."""
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        """Close at once, dropping buffered data."""
        if self._transport is not None and not self._lost:
            self._transport.abort()


C = TypeVar("C", bound=LeanConnection)


class ConnectionStream(Generic[C]):
    """A :class:`LeanConnection` as a :class:`~.base.ByteStream`: the members every transport shares
    (module docstring); a transport's stream adds ``read``, ``write`` and ``at_eof``."""

    __slots__ = ("_p",)

    def __init__(self, connection: C) -> None:
        self._p = connection

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._p._label}>"

    @property
    def label(self) -> str:
        """Who is at the other end, for messages: ``"host:port"`` (a client's stream) or
        ``"client addr:port"`` (a server's)."""
        return self._p._label

    # ------------------------------------------------------------------ writing

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

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        p = self._p
        if p._lost or p._transport is None:
            return
        p._shutdown()
        if p._lost:
            return
        if p._close_waiter is None:
            p._close_waiter = p._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(p._close_waiter), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        self._p._abort()

    # ------------------------------------------------------------------ information

    def extra(self, name: str, default: Any = None) -> Any:
        transport = self._p._transport
        if transport is None:
            return default
        return transport.get_extra_info(name, default)

    def _flow_stats(self) -> dict[str, int | bool]:
        """The part of ``buffer_stats()`` every transport has: ``transport_write`` (the TCP write
        buffer), ``reading_paused``/``writing_paused``."""
        p = self._p
        transport = p._transport
        return {
            "transport_write": (
                transport.get_write_buffer_size() if transport is not None and not p._lost else 0
            ),
            "reading_paused": p._reading_paused,
            "writing_paused": p._writing_paused,
        }
