"""Connection and session bounds of both RTSP fronts, on real loopback TCP servers.

* STR-1: the cloud's RTSP front counts a session from the moment its tunnel starts to open: with ``max_sessions``
  opens in flight, one more player gets ``503`` at once and the first ones go on unaffected; a failed open
  gives its slot back.
* STR-1, ANX-B-1: the VSS's RTSP front relays at most ``max_sessions`` sessions at once (``503`` beyond), the
  first ones unaffected.
* STR-1, ANX-B-1: either front holds at most ``max_connections`` player connections: one more is closed at once
  without a byte, the held ones are served, and a closed one frees its place.

Real parts: the fronts on the library's TCP server, players and upstream RTSP servers on loopback sockets. The
cloud front's tunnel to a device is replaced by a TCP connection to a loopback RTSP server whose open waits on a
gate, so that opens are really in flight together. Every wait is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from helpers import rtsp_stub_server

from iec62676_2_33.runtime.cloud import UnknownDevice
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.runtime.rtsp_front import RtspFront
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.tcp import start_tcp_server
from iec62676_2_33.vss.rtsp import RelayTable, VssRtspFront

WAIT = 15.0


class _Tunnel:
    """An asyncio TCP connection as the front's tunnel (:class:`~iec62676_2_33.transport.base.ByteStream`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, max_bytes: int = 65536) -> bytes:
        return await self.reader.read(max_bytes)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.abort()

    def extra(self, name: str, default: Any = None) -> Any:
        return default


class _GatedFront(RtspFront):
    """The cloud front whose tunnel to device ``cam`` opens, once ``gate`` is set, to a loopback RTSP server."""

    def __init__(self, gate: asyncio.Event, upstream_port: int, **limits: Any) -> None:
        super().__init__(cast(Any, None), **limits)
        self.gate = gate
        self.upstream_port = upstream_port
        self.opening = 0

    async def _open(self, device_id: str, token: str) -> ByteStream:
        if device_id != "cam":
            raise UnknownDevice(f"no device {device_id}")
        self.opening += 1
        try:
            await asyncio.wait_for(self.gate.wait(), WAIT)
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.upstream_port), WAIT)
        finally:
            self.opening -= 1
        return cast(ByteStream, _Tunnel(reader, writer))


async def _player(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)


def _describe(writer: asyncio.StreamWriter, url: str, cseq: int = 1) -> None:
    writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n".encode())


async def _status(reader: asyncio.StreamReader) -> str:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    return head.decode("latin-1").split("\r\n", 1)[0]


async def _until(check: Callable[[], object], what: str) -> None:
    await asyncio.to_thread(wait_until, check, WAIT, what=what)


async def test_cloud_front_counts_sessions_from_the_open_str_1() -> None:
    """STR-1: two opens in flight fill ``max_sessions`` = 2: a third player gets 503 at once (before, the front
    counted a session only once its tunnel had opened, and let the third open too); the first two then get their
    answers; the slots come back when the sessions end and when an open fails (404)."""
    gate, seen = asyncio.Event(), []
    upstream = await rtsp_stub_server(seen, gate, wait=WAIT)
    front = _GatedFront(gate, upstream.sockets[0].getsockname()[1], max_sessions=2)
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/devices/cam/main"
    players = [await _player(port) for _ in range(3)]
    try:
        for _, writer in players[:2]:
            _describe(writer, url)
        await _until(lambda: front.opening == 2, "two opens in flight")
        _describe(players[2][1], url)
        assert await _status(players[2][0]) == "RTSP/1.0 503 Service Unavailable"
        assert front.sessions.in_use == 2 and front.stats.failed == 1
        gate.set()
        for reader, _ in players[:2]:
            assert await _status(reader) == "RTSP/1.0 200 OK"
        assert front.stats.opened == 2 and len(seen) == 2
        for _, writer in players[:2]:
            writer.close()
        await _until(lambda: front.sessions.in_use == 0, "the sessions to give their slots back")
        reader, writer = await _player(port)
        players.append((reader, writer))
        _describe(writer, f"rtsp://127.0.0.1:{port}/devices/nobody/main")
        assert await _status(reader) == "RTSP/1.0 404 Not Found"
        assert front.sessions.in_use == 0
    finally:
        for _, writer in players:
            writer.close()
        await server.aclose()
        upstream.close()
        await upstream.wait_closed()


async def test_vss_front_bounds_sessions_str_1() -> None:
    """STR-1, ANX-B-1: with ``max_sessions`` = 2 relayed sessions waiting on their upstream server, a third player
    gets 503 (before, the VSS front had no session bound at all); the first two then get their answers."""
    gate, seen = asyncio.Event(), []
    upstream = await rtsp_stub_server(seen, gate, wait=WAIT)
    table = RelayTable("rtsp://front")
    relay_id = table.expose(f"rtsp://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/a", "cam").rsplit("/", 1)[1]
    front = VssRtspFront(table, max_sessions=2)
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/relay/{relay_id}"
    players = [await _player(port) for _ in range(3)]
    try:
        for _, writer in players[:2]:
            _describe(writer, url)
        await _until(lambda: len(seen) == 2, "two sessions at the upstream server")
        _describe(players[2][1], url)
        assert await _status(players[2][0]) == "RTSP/1.0 503 Service Unavailable"
        gate.set()
        for reader, _ in players[:2]:
            assert await _status(reader) == "RTSP/1.0 200 OK"
        assert len(seen) == 2 and front.sessions.in_use == 2
        for _, writer in players[:2]:
            writer.close()
        await _until(lambda: front.sessions.in_use == 0, "the sessions to give their slots back")
    finally:
        for _, writer in players:
            writer.close()
        await server.aclose()
        upstream.close()
        await upstream.wait_closed()


def _cloud_front() -> RtspFront:
    return RtspFront(cast(Any, None), head_timeout=60.0, max_connections=2)


def _vss_front() -> VssRtspFront:
    return VssRtspFront(RelayTable("rtsp://front"), max_connections=2)


@pytest.mark.parametrize("make", [_cloud_front, _vss_front], ids=["cloud", "vss"])
async def test_front_bounds_connections_str_1(make: Callable[[], RtspFront | VssRtspFront]) -> None:
    """STR-1, ANX-B-1: with ``max_connections`` = 2 players connected and silent, a third connection is closed at
    once without a byte (before, it was held and read like any other); the two are still served (404 for an
    unknown path), and when one leaves a new player is served."""
    front = make()
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    unknown = f"rtsp://127.0.0.1:{port}/nothing/here"
    players = [await _player(port) for _ in range(2)]
    try:
        await _until(lambda: front.connections.in_use == 2, "two players connected")
        reader, writer = await _player(port)
        players.append((reader, writer))
        try:
            extra = await asyncio.wait_for(reader.read(1024), WAIT)
        except ConnectionResetError:
            extra = b""
        assert extra == b"" and front.connections.refused == 1
        for cseq, (reader, writer) in enumerate(players[:2], 1):
            _describe(writer, unknown, cseq)
            assert await _status(reader) == "RTSP/1.0 404 Not Found"
        await _until(lambda: front.connections.in_use == 0, "the answered players to be let go")
        reader, writer = await _player(port)
        players.append((reader, writer))
        _describe(writer, unknown)
        assert await _status(reader) == "RTSP/1.0 404 Not Found"
    finally:
        for _, writer in players:
            writer.close()
        await server.aclose()
