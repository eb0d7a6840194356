"""Attacks on the VSS's RTSP front (``/relay/<id>``), on real loopback TCP servers.

* STR-1, ANX-B-1: a relayed session is bounded in time by the player's side: a player that goes silent (sends
  nothing, while its upstream server sends nothing either) loses its session after the front's ``session_idle``,
  and a player that stops taking what the upstream server sends (a camera streaming interleaved RTP) loses it
  after ``stall_timeout``; in both cases the session's slot comes back. Before, such a session held its slot,
  its player connection and its upstream connection forever.
* ANX-B-1: a stream URI of a lower system that names no reachable server (a port out of range or not a number,
  a broken IPv6 literal, no host) is answered ``404`` to the player, with no traceback in the log. Before, the
  player got no answer and the front logged the relay's ``ValueError`` with its traceback.
* ANX-B-1, ADR-4: a lower system that answers another lower system's stream URI as its own gets an id of its own
  for it: the other system's relay keeps the VSS's account there, so its players still play. Before, the table
  kept one id per URI and the last lower system to answer it set the account (none, for a URI on another host),
  and the other system's players got the upstream server's 401.
* ANX-B-1: a lower system whose URL writes its default port (``http://host:80/…``) answers GetSnapshotUri with
  the URI its Host header named (``http://host/…``, as HTTP clients write it): the VSS relays it on its own
  snapshot route. Before, the two spellings of one server counted as two servers and the client got the lower
  system's own address, which needs the VSS's account there.

Real parts: the front on the library's TCP server, players and hostile upstream RTSP servers on loopback
sockets; a device and ``run_vss`` for the snapshot URI (the device on port 80, which needs the right to bind
it). Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from pathlib import Path

import pytest
from lxml import etree
from test_vss_snapshot import snapshot_uri
from vss_env import ADMIN, add_lower, seed, start_device, start_vss

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.transport.tcp import TcpServer, start_tcp_server
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.rtsp import RelayTable, VssRtspFront
from iec62676_2_33.vss.snapshots import SnapshotTable

WAIT = 15.0


async def _upstream(flood: bool) -> asyncio.Server:
    """An RTSP server that answers each request ``200 OK``; with ``flood`` it then sends interleaved frames without
    end (as a camera streams); it holds its connection at most ``WAIT`` seconds."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(WAIT):
                head = await reader.readuntil(b"\r\n\r\n")
                cseq = next(line for line in head.decode("latin-1").split("\r\n") if line.lower().startswith("cseq"))
                writer.write(f"RTSP/1.0 200 OK\r\n{cseq}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
                frame = b"$\x00" + struct.pack(">H", 60000) + bytes(60000)
                while flood:
                    writer.write(frame)
                    await writer.drain()
                await reader.read()  # silent until the relay lets go
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def _close_all(writer: asyncio.StreamWriter, server: TcpServer, upstream: asyncio.Server) -> None:
    """The player's connection, the front and the upstream server, closed (each wait bounded by the caller)."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    await server.aclose()
    upstream.close()
    await upstream.wait_closed()


async def _session_ends(flood: bool, **limits: float) -> int:
    """Play one relayed session that the player lets go silent (``flood``: that stops reading while the upstream
    streams); the front's sessions in use once it has given the slot back (raises if it never does)."""
    upstream = await _upstream(flood)
    table = RelayTable("rtsp://front")
    relay_id = table.expose(f"rtsp://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/a", "cam").rsplit("/", 1)[1]
    front = VssRtspFront(table)
    for name, seconds in limits.items():  # the front's deadlines, shortened
        setattr(front, name, seconds)
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        writer.write(f"OPTIONS rtsp://127.0.0.1:{port}/relay/{relay_id} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        if not flood:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"RTSP/1.0 200 OK")
            assert await asyncio.wait_for(reader.read(), WAIT) == b"", "the front ends the silent session"
        else:  # the player reads nothing from now on
            await asyncio.to_thread(wait_until, lambda: front.sessions.in_use == 1, WAIT, what="the session")
        await asyncio.to_thread(wait_until, lambda: front.sessions.in_use == 0, WAIT,
                                what="the session to give its slot back")
        return front.sessions.in_use
    finally:
        await _close_all(writer, server, upstream)


async def test_silent_player_loses_its_session_str_1() -> None:
    """STR-1, ANX-B-1: a player that sends one request and then nothing, to an upstream server that sends nothing
    either, is closed after ``session_idle`` and the session's slot comes back."""
    assert await _session_ends(False, session_idle=0.5) == 0


async def test_player_that_takes_nothing_loses_its_session_str_1() -> None:
    """STR-1, ANX-B-1: a player that takes nothing of what its upstream server streams is closed after
    ``stall_timeout`` and the session's slot comes back."""
    assert await _session_ends(True, stall_timeout=0.5, session_idle=60.0) == 0


@pytest.mark.parametrize("upstream", ["rtsp://127.0.0.1:99999/a", "rtsp://127.0.0.1:x/a", "rtsp://[::1/a",
                                      "rtsp:///a"])
async def test_unusable_upstream_is_not_found_anx_b_1(upstream: str, caplog: pytest.LogCaptureFixture) -> None:
    """ANX-B-1: a relayed URI the relay cannot connect to is answered 404, no traceback is logged."""
    table = RelayTable("rtsp://front")
    relay_id = table.expose(upstream, "cam").rsplit("/", 1)[1]
    front = VssRtspFront(table)
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        with caplog.at_level(logging.INFO):
            writer.write(f"DESCRIBE rtsp://127.0.0.1:{port}/relay/{relay_id} RTSP/1.0\r\nCSeq: 7\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.read(), WAIT)
        assert head.startswith(b"RTSP/1.0 404 Not Found\r\nCSeq: 7\r\n"), head[:200]
        assert not [r for r in caplog.records if r.exc_info], "no traceback"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await server.aclose()


def test_default_port_snapshot_is_relayed_anx_b_1(tmp_path: Path) -> None:
    """ANX-B-1: a real device on port 80, a lower system of the VSS as ``http://127.0.0.1:80/…``: the VSS answers
    its snapshot URI on its own route, never the device's address."""
    try:
        with contextlib.closing(bind_listen("127.0.0.1", 80)):
            pass
    except OSError as exc:
        pytest.skip(f"cannot bind port 80 here: {exc}")
    seed(tmp_path / "dev", sources=(MediaSource(token="main", name="Main", rtsp_url="rtsp://127.0.0.1:1/c",
                                                snapshot_url="http://127.0.0.1:1/s.jpg"),))
    device, _ = start_device(tmp_path / "dev", 80)
    try:
        seed(tmp_path / "vss")
        add_lower(tmp_path / "vss", LowerSystem(prefix="cam", url="http://127.0.0.1:80/onvif/device_service",
                                                username=ADMIN[0], password=ADMIN[1]))
        vss, vss_url = start_vss(tmp_path / "vss")
        try:
            assert snapshot_uri(vss_url, "cam:main").startswith(f"{vss_url}/onvif/snapshot/cam%3Asnapshot-")
        finally:
            vss.stop()
    finally:
        device.stop()


@pytest.mark.parametrize(("lower_url", "upstream"), [
    ("http://cam.example:80/onvif/device_service", "http://cam.example/s"),
    ("https://cam.example/onvif/device_service", "https://CAM.example:443/s"),
    ("http://[::1]/onvif/device_service", "http://[0::1]:80/s"),
])
def test_one_server_in_any_spelling_is_relayed_anx_b_1(lower_url: str, upstream: str) -> None:
    """ANX-B-1: the snapshot URI of the lower system's own server is relayed however the default port and the host
    are written (the same rule without binding port 80)."""
    answer = etree.fromstring(f'<tr2:GetSnapshotUriResponse xmlns:tr2="{TR2}"><tr2:MediaUri><tr2:Uri>{upstream}'
                              "</tr2:Uri></tr2:MediaUri></tr2:GetSnapshotUriResponse>")
    SnapshotTable().rewrite(answer, LowerSystem(prefix="cam", url=lower_url, username="vss", password="pw"),
                            "http://vss.example")
    assert answer.findtext(f".//{{{TR2}}}Uri", "").startswith("http://vss.example/onvif/snapshot/cam%3Asnapshot-")


async def _digest_upstream() -> asyncio.Server:
    """An RTSP server that answers a request without ``Authorization`` 401 (Digest) and one with it 200."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while head := await reader.readuntil(b"\r\n\r\n"):
                    lines = head.decode("latin-1").split("\r\n")
                    cseq = next(line for line in lines if line.lower().startswith("cseq"))
                    if any(line.lower().startswith("authorization: digest ") for line in lines):
                        writer.write(f"RTSP/1.0 200 OK\r\n{cseq}\r\nContent-Length: 0\r\n\r\n".encode())
                    else:
                        writer.write(f'RTSP/1.0 401 Unauthorized\r\n{cseq}\r\nWWW-Authenticate: Digest realm="r", '
                                     f'nonce="n1"\r\nContent-Length: 0\r\n\r\n'.encode())
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_another_lower_system_cannot_take_a_relay_anx_b_1() -> None:
    """ANX-B-1, ADR-4: lower system ``a`` (with the VSS's account on the stream's host) and then ``b`` (on another
    host: no account) answer the same URI; ``a``'s relay URI still plays with ``a``'s account, ``b`` got another."""
    upstream = await _digest_upstream()
    table = RelayTable("rtsp://front")
    stream = f"rtsp://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/a"
    mine = table.expose(stream, "a", ("vss", "pw")).rsplit("/", 1)[1]
    assert table.expose(stream, "b").rsplit("/", 1)[1] != mine
    front = VssRtspFront(table)
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        writer.write(f"OPTIONS rtsp://127.0.0.1:{port}/relay/{mine} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"RTSP/1.0 200 OK\r\n"), head[:200]
    finally:
        await _close_all(writer, server, upstream)
