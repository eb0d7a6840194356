"""The plain-TCP byte stream and server (transport/tcp.py): bytes both ways, half-close, and every
buffer bounded by back-pressure (measured on the stream's own counters, never RSS)."""

from __future__ import annotations

import asyncio
import socket

from iec62676_2_33.transport import tcp
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.tcp import TcpStream, start_tcp_server


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


async def test_echo_half_close_and_the_byte_stream_interface() -> None:
    """A TcpStream is a ByteStream; what the client sends comes back; a client that shuts down its
    sending side still gets the answer, then the end of stream."""
    streams: list[TcpStream] = []

    async def echo(stream: TcpStream) -> None:
        streams.append(stream)
        received = b""
        while data := await stream.read(4096):
            received += data
        await stream.write(received[::-1])

    sock = listening()
    async with await start_tcp_server(echo, sock) as server:
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"0123456789" * 1000)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer == (b"0123456789" * 1000)[::-1]
        assert isinstance(streams[0], ByteStream)
        assert streams[0].extra("peername") == writer.get_extra_info("sockname")
        assert server.stats["accepted"] == 1
        writer.close()


async def test_a_reader_that_does_not_read_bounds_the_unread_bytes() -> None:
    """The handler does not read while the client sends 4 MiB: the socket is paused and the stream
    holds at most READ_HIGH_WATER + READ_CHUNK unread bytes; then every byte arrives in order."""
    done = asyncio.Event()
    got: list[bytes] = []
    stats: list[dict[str, int | bool]] = []
    payload = bytes(range(256)) * (16 * 1024)

    async def lazy(stream: TcpStream) -> None:
        for _ in range(1000):  # bounded: until the transport has paused the socket
            if stream.buffer_stats()["reading_paused"]:
                break
            await asyncio.sleep(0.01)
        stats.append(stream.buffer_stats())
        while data := await stream.read(65536):
            got.append(data)
        done.set()

    sock = listening()
    async with await start_tcp_server(lazy, sock):
        _reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(payload)
        writer.write_eof()
        await asyncio.wait_for(done.wait(), 20)
        writer.close()
    assert stats[0]["reading_paused"] is True
    assert 0 < int(stats[0]["unread"]) <= tcp.READ_HIGH_WATER + tcp.READ_CHUNK
    assert b"".join(got) == payload


async def test_a_peer_that_does_not_read_makes_drain_wait() -> None:
    """The client reads nothing while the handler writes 8 MiB: drain() holds the writer, so the
    transport's write buffer never holds more than WRITE_HIGH_WATER plus one write."""
    levels: list[int] = []
    blocked = asyncio.Event()

    async def writer_side(stream: TcpStream) -> None:
        block = b"w" * 65536
        for _ in range(128):
            stream.write_nowait(block)
            levels.append(int(stream.buffer_stats()["transport_write"]))
            if stream.buffer_stats()["writing_paused"]:
                blocked.set()
            await stream.drain()

    sock = listening()
    async with await start_tcp_server(writer_side, sock):
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        await asyncio.wait_for(blocked.wait(), 10)
        total = 0
        while data := await asyncio.wait_for(reader.read(1 << 20), 10):
            total += len(data)
        writer.close()
    assert total == 128 * 65536
    assert max(levels) <= tcp.WRITE_HIGH_WATER + 65536
