"""Layer 2 (byte transports): an in-memory connected pair of byte streams, for tests.

:func:`memory_pipe` returns two :class:`MemoryStream` ends: what one writes
the other reads. Each direction is a bounded buffer: :meth:`MemoryStream.write`
hands its data over in *limit*-sized slices and waits while the peer has more
than *limit* unread bytes, like a socket's back-pressure, so runtime tests
exercise flow control without sockets. :meth:`MemoryStream.close` is the end
of stream for the peer; writing to an end whose peer has gone raises
:class:`~iec62676_2_33.transport.base.PeerClosed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TransportError
from .base import PeerClosed

__all__ = ["MemoryStream", "memory_pipe"]

#: Default unread bytes one direction holds before writers wait.
DEFAULT_LIMIT = 64 * 1024


class _Channel:
    """One direction: a bounded byte buffer, its end-of-stream flag and its waiters."""

    __slots__ = ("buffer", "drain_waiters", "dropped", "eof", "limit", "read_waiter", "reader_gone")

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.reader_gone = False
        self.dropped = 0
        self.limit = limit
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []

    def wake_reader(self) -> None:
        if self.read_waiter is not None and not self.read_waiter.done():
            self.read_waiter.set_result(None)

    def wake_writers(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class MemoryStream:
    """One end of :func:`memory_pipe` (a :class:`~.base.ByteStream`)."""

    __slots__ = ("_closed", "_extra", "_in", "_name", "_out")

    def __init__(
        self, inbound: _Channel, outbound: _Channel, extra: Mapping[str, Any], name: str
    ) -> None:
        self._in = inbound
        self._out = outbound
        self._extra = dict(extra)
        self._name = name
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryStream {self._name}>"

    @property
    def buffered(self) -> int:
        """Bytes written to this end that the peer has not read yet."""
        return len(self._out.buffer)

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        chan = self._in
        while True:
            if chan.buffer:
                data = bytes(chan.buffer[:max_bytes])
                del chan.buffer[:max_bytes]
                if not chan.buffer:
                    chan.buffer = bytearray()
                if len(chan.buffer) <= chan.limit:
                    chan.wake_writers()
                return data
            if chan.eof or self._closed:
                return b""
            if chan.read_waiter is not None:
                raise RuntimeError(f"read() on {self._name} is already waiting in another task")
            chan.read_waiter = asyncio.get_running_loop().create_future()
            try:
                await chan.read_waiter
            finally:
                chan.read_waiter = None

    def writelines(self, parts: Sequence[bytes]) -> None:
        self.write_nowait(b"".join(parts))

    def write_nowait(self, data: bytes) -> None:
        chan = self._out
        if self._closed:
            raise TransportError(f"cannot write to {self._name}: it is closed")
        if chan.reader_gone:
            raise PeerClosed(
                f"cannot write to {self._name}: the peer closed its end", reason="closed"
            )
        if data:
            chan.buffer += data
            chan.wake_reader()

    async def drain(self) -> None:
        chan = self._out
        while len(chan.buffer) > chan.limit and not chan.reader_gone and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            chan.drain_waiters.append(waiter)
            await waiter
        if chan.reader_gone and chan.dropped:
            raise PeerClosed(
                f"{self._name}: the peer closed its end with {chan.dropped} bytes unread",
                reason="closed",
            )

    async def write(self, data: bytes) -> None:
        step = self._out.limit
        view = memoryview(data)
        for start in range(0, max(len(view), 1), step):
            self.write_nowait(bytes(view[start : start + step]))
            await self.drain()

    async def close(self) -> None:
        self._shut(discard=False)

    def abort(self) -> None:
        self._shut(discard=True)

    def _shut(self, *, discard: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.eof = True
        self._out.wake_reader()
        self._in.reader_gone = True
        self._in.dropped = len(self._in.buffer)
        self._in.buffer = bytearray()
        self._in.wake_writers()
        self._in.wake_reader()
        if discard:
            self._out.buffer = bytearray()
        self._out.wake_writers()

    def extra(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    @property
    def at_eof(self) -> bool:
        return not self._in.buffer and (self._in.eof or self._closed)


def memory_pipe(
    *,
    limit: int = DEFAULT_LIMIT,
    extra_a: Mapping[str, Any] | None = None,
    extra_b: Mapping[str, Any] | None = None,
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected :class:`MemoryStream` ends, ``(a, b)``.

    Each direction holds up to *limit* unread bytes before ``write()`` waits.
    ``a.extra(name)`` answers from *extra_a* and ``b.extra(name)`` from
    *extra_b* (e.g. ``{"peername": ("192.0.2.1", 50000), "peercert": der}``).
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    a_to_b, b_to_a = _Channel(limit), _Channel(limit)
    a = MemoryStream(b_to_a, a_to_b, extra_a or {}, "memory end a")
    b = MemoryStream(a_to_b, b_to_a, extra_b or {}, "memory end b")
    return a, b
