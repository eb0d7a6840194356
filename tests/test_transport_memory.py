"""UPL-1: the in-memory byte-stream pair the runtime tests use instead of sockets.

:func:`memory_pipe` behaves like a connection: bytes in order both ways,
bounded buffers with back-pressure on ``write()``, end of stream on close,
errors when writing to a closed end, and the connection information given at
construction. Every wait is bounded; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from iec62676_2_33.errors import TransportError
from iec62676_2_33.transport import ByteStream, MemoryStream, PeerClosed, memory_pipe

BOUND = 10.0


async def test_round_trip_both_ways() -> None:
    """UPL-1: what one end writes the other reads, in order, both ways."""
    a, b = memory_pipe()
    async with asyncio.timeout(BOUND):
        await a.write(b"hello ")
        a.write_nowait(b"world")
        await a.drain()
        assert await b.read(6) == b"hello "
        assert await b.read() == b"world"
        await b.write(b"back")
        assert await a.read() == b"back"
    assert isinstance(a, ByteStream) and isinstance(b, ByteStream)


async def test_reader_waits_for_data() -> None:
    """UPL-1: read() waits until bytes arrive (woken by the write, not by a timer)."""
    a, b = memory_pipe()
    async with asyncio.timeout(BOUND):
        reader = asyncio.create_task(b.read())
        await a.write(b"late")
        assert await reader == b"late"


async def test_write_waits_for_the_reader() -> None:
    """UPL-1: write() returns only once the peer has taken all but *limit* bytes.

    The writer never has more than two *limit*-sized slices buffered.
    """
    limit = 1000
    a, b = memory_pipe(limit=limit)
    payload = os.urandom(10 * limit)
    taken = {"bytes": 0, "peak": 0}
    returned_after: list[int] = []

    async def writer() -> None:
        await a.write(payload)
        returned_after.append(taken["bytes"])

    async with asyncio.timeout(BOUND):
        task = asyncio.create_task(writer())
        got = bytearray()
        while len(got) < len(payload):
            taken["peak"] = max(taken["peak"], a.buffered)
            got += await b.read(300)
            taken["bytes"] = len(got)
        await task
    assert bytes(got) == payload
    assert returned_after[0] >= len(payload) - limit
    assert taken["peak"] <= 2 * limit
    assert a.buffered == 0


async def test_close_is_end_of_stream() -> None:
    """UPL-1: close() ends the stream for the peer after the buffered bytes; idempotent."""
    a, b = memory_pipe()
    async with asyncio.timeout(BOUND):
        await a.write(b"last words")
        await a.close()
        await a.close()
        assert not b.at_eof
        assert await b.read() == b"last words"
        assert await b.read() == b""
        assert b.at_eof
        with pytest.raises(TransportError, match="memory end a: it is closed"):
            a.write_nowait(b"x")


async def test_close_wakes_a_waiting_reader() -> None:
    """UPL-1: a reader waiting on the peer gets b"" when the peer closes."""
    a, b = memory_pipe()
    async with asyncio.timeout(BOUND):
        reader = asyncio.create_task(b.read())
        await asyncio.sleep(0)  # let the reader start waiting (ordering, not timing)
        a.abort()
        assert await reader == b""


async def test_writing_to_a_closed_peer_raises_peer_closed() -> None:
    """UPL-1: once the peer is gone, writes fail; a blocked writer learns what was lost."""
    a, b = memory_pipe(limit=10)
    async with asyncio.timeout(BOUND):
        blocked = asyncio.create_task(a.write(b"x" * 100))
        await asyncio.sleep(0)  # let the writer reach its wait (ordering, not timing)
        assert not blocked.done()
        await b.close()
        with pytest.raises(PeerClosed, match="the peer closed its end with 20 bytes unread"):
            await blocked
        with pytest.raises(PeerClosed, match="the peer closed its end"):
            a.write_nowait(b"more")
        assert await a.read() == b""


async def test_extra_info_and_repr() -> None:
    """UPL-1: extra() answers what each end was given, else the default."""
    a, b = memory_pipe(
        extra_a={"peername": ("192.0.2.1", 443)},
        extra_b={"peername": ("198.51.100.7", 50000), "peercert": b"\x30\x00"},
    )
    assert a.extra("peername") == ("192.0.2.1", 443)
    assert b.extra("peercert") == b"\x30\x00"
    assert a.extra("peercert") is None
    assert a.extra("alpn", "h2") == "h2"
    assert repr(b) == "<MemoryStream memory end b>"
    assert isinstance(a, MemoryStream)


async def test_one_reader_at_a_time() -> None:
    """UPL-1: a second concurrent read() is a programming error, reported as such."""
    a, b = memory_pipe()
    async with asyncio.timeout(BOUND):
        first = asyncio.create_task(b.read())
        await asyncio.sleep(0)  # ordering: the first reader is now waiting
        with pytest.raises(RuntimeError, match="already waiting"):
            await b.read()
        await a.write(b"ok")
        assert await first == b"ok"
    with pytest.raises(ValueError):
        memory_pipe(limit=0)
