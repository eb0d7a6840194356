"""Attacks on the uplink's transports and handshake, on real loopback TLS.

* UPL-1, UPL-13: the cloud's per-source admission bounds a source's connections until they
  *authenticate*, not only their TLS handshakes: a source that completes TLS and then says nothing
  (or trickles its upgrade request) holds at most ``per_source_pending`` connections, a newcomer
  from another source evicts the oldest of them, and authenticated uplinks hold no slot (many
  devices behind one address still connect). Before, one source could hold ``rate`` connections a
  second for the whole upgrade deadline each.
* UPL-2, UPL-4: a WebSocket upgrade whose ``Host``, ``Connection`` or ``Sec-WebSocket-Protocol``
  is not ASCII (or not a valid host name) is answered 400 before authentication; it used to escape
  as UnicodeError from wsproto: no answer, a traceback in the cloud's log per request.
* UPL-2, UPL-4: the refusals of a bad upgrade request repeat at most a short excerpt of the
  request's path, Upgrade tokens or subprotocols (a 16 KiB head was echoed whole, to the log and
  the answer).
* UPL-2, UPL-13: a device that sends its upgrade request and closes at once leaves the cloud a 101 it
  cannot write: one INFO line (it was a failed handler and a traceback per connection).
* UPL-2: a hostile cloud's 15 KiB status line (malformed, or the reason of a refusal) becomes a short error
  on the device, as the cloud's own refusals do.
* UPL-4: a device dialling a ``wss`` cloud whose 101 carries a non-ASCII ``Sec-WebSocket-Protocol``
  gets a RemoteProtocolError (it was a UnicodeDecodeError: an "internal error" of the uplink).
* UPL-4: a WebSocket PING flood (about 15 µs of the cloud's Python per 6-byte PING: 300 KB/s took a core)
  closes the connection 1008 past a control-frame budget (50, then 5 a second), as HTTP/2 PINGs do.
* UPL-4: after our CLOSE the peer's PING is not answered (wsproto refused to build the PONG and the
  close ended in a wsproto LocalProtocolError: a traceback on the cloud for an uplink a device
  pinged while it was being closed), and data frames that come before the CLOSE answer are
  dropped, not buffered.

Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import pytest
from test_websocket import RawPeer, _accept_for, masked_frame, raw_cloud, tls_to, ws_server
from test_websocket_e2e import BOUND, Cloud, Pki, running_cloud

from iec62676_2_33.errors import RemoteProtocolError, TransportError
from iec62676_2_33.runtime.cloud import CloudListener, DeviceEvent, ListenerSettings, MtlsAuthenticator
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.runtime.dial import upgrade
from iec62676_2_33.sansio.admission import AdmissionLimits
from iec62676_2_33.transport.contexts import client_context
from iec62676_2_33.transport.tls import TlsStream, connect_tls, start_tls_server
from iec62676_2_33.transport.websocket import WebSocketStream, websocket_connect


async def _answer(tls: TlsStream) -> bytes:
    """Everything the cloud says until it closes."""
    answer = b""
    with contextlib.suppress(TransportError):
        while chunk := await asyncio.wait_for(tls.read(65536), BOUND):
            answer += chunk
    return answer


def _ws_request(target: bytes, headers: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + target + b" HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n" + headers + b"\r\n")


# --------------------------------------------------------------------------- pre-authentication answers


@pytest.mark.parametrize("headers", [
    b"Host: xn--zz\r\nSec-WebSocket-Protocol: h2c-reverse\r\n",
    b"Host: localhost\r\nSec-WebSocket-Protocol: h2c-reverse, \xff\r\n",
    b"Host: localhost\r\nConnection: Upgrade, \xe9\r\nSec-WebSocket-Protocol: h2c-reverse\r\n",
    b"Host: localhost\r\nSec-WebSocket-Protocol: h2c-reverse\r\nSec-WebSocket-Extensions: \xe9\r\n",
], ids=["idna-host", "protocol", "connection", "extensions"])
async def test_a_websocket_upgrade_with_non_ascii_fields_is_answered_400_upl_4(
        headers: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """UPL-4: before authentication, a field wsproto cannot decode is a 400 answer and one INFO line."""
    material = Pki()
    async with running_cloud(material.server_ctx(client_certs="optional"), MtlsAuthenticator()) as cloud:
        tls = await tls_to(material, cloud.port)
        await tls.write(_ws_request(b"/uplink", headers))
        answer = await _answer(tls)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"not ASCII" in answer
        assert cloud.listener.stats["rejected"] == 1
        assert cloud.server.stats["handler_failed"] == 0
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@contextlib.asynccontextmanager
async def cloud_at_path(material: Pki) -> AsyncIterator[tuple[CloudListener, int]]:
    listener = CloudListener(MtlsAuthenticator(), settings=ListenerSettings(upgrade_timeout=BOUND), path="/uplink")
    server = await start_tls_server(listener.handle, ("127.0.0.1", 0), material.server_ctx(client_certs="optional"))
    try:
        yield listener, server.sockets[0].getsockname()[1]
    finally:
        await asyncio.wait_for(server.aclose(), BOUND)


LONG = "x" * 12000


@pytest.mark.parametrize(("request_bytes", "status"), [
    (f"GET /{LONG} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n".encode(),
     b"404"),
    (f"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: {LONG}\r\n\r\n".encode(), b"426"),
    (_ws_request(b"/uplink", f"Host: localhost\r\nSec-WebSocket-Protocol: {LONG}\r\n".encode()), b"400"),
], ids=["path", "upgrade-token", "subprotocols"])
async def test_a_refusal_repeats_only_an_excerpt_of_the_request_upl_2_upl_4(
        request_bytes: bytes, status: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """UPL-2, UPL-4: a 12,000-character path, Upgrade token or subprotocol is echoed as 100 characters at most."""
    caplog.set_level(logging.INFO, logger="iec62676_2_33")
    material = Pki()
    async with cloud_at_path(material) as (listener, port):
        tls = await tls_to(material, port)
        await tls.write(request_bytes)
        answer = await _answer(tls)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"x" * 90 in answer and b"x" * 101 not in answer, len(answer)
        lines = [r.getMessage() for r in caplog.records if "x" * 90 in r.getMessage()]
        assert lines and all("x" * 101 not in line for line in lines)
        assert listener.stats["rejected"] == 1


async def test_a_device_that_closes_right_after_its_upgrade_request_costs_one_line_upl_2(
        caplog: pytest.LogCaptureFixture) -> None:
    """UPL-2, UPL-13: a device sends its upgrade request and closes at once; the 101 cannot be written: that is
    the connection's end (one INFO line), not a failed handler with a traceback."""
    material = Pki()
    async with running_cloud(material.server_ctx()) as cloud:
        ctx = client_context(cafile_pems=[material.ca.cert_pem()], certfile_pem=material.device.cert_pem(),
                             keyfile_pem=material.device.key_pem())
        for _ in range(3):
            tls = await connect_tls("127.0.0.1", cloud.port, ctx, server_hostname="localhost", timeout=BOUND)
            await tls.write(b"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                            b"Upgrade: h2c-reverse\r\n\r\n")
            await tls.close()
        async with asyncio.timeout(BOUND):
            while cloud.listener.stats["upgrades"] < 3 or cloud.server.stats["active"]:
                await asyncio.sleep(0.01)
        assert cloud.server.stats["handler_failed"] == 0
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


# --------------------------------------------------------------------------- the device against a hostile cloud


async def test_a_101_with_a_non_ascii_subprotocol_is_a_protocol_error_upl_4() -> None:
    """UPL-4: the device's WebSocket handshake names the cloud's fault instead of failing with UnicodeDecodeError."""
    material = Pki()

    def answer(req: bytes) -> bytes:
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + _accept_for(req).encode() + b"\r\n"
                b"Sec-WebSocket-Protocol: h2c-reverse\xe9\r\n\r\n")

    async with raw_cloud(material, answer) as port:
        tls = await tls_to(material, port)
        with pytest.raises(RemoteProtocolError) as info:
            await asyncio.wait_for(websocket_connect(tls, host="localhost", target="/uplink"), BOUND)
        assert "not ASCII" in str(info.value)
        await tls.close()


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 1x1 " + b"A" * 15000 + b"\r\n\r\n",
    b"HTTP/1.1 401 " + b"A" * 15000 + b"\r\nContent-Length: 0\r\n\r\n",
], ids=["malformed", "refusal-reason"])
async def test_the_device_repeats_only_an_excerpt_of_a_hostile_answer_upl_2(head: bytes) -> None:
    """UPL-2: a 15,000-byte status line from the cloud becomes a short error, not a 15 KiB one."""
    material = Pki()
    async with raw_cloud(material, lambda _req: head) as port:
        tls = await tls_to(material, port)
        with pytest.raises(RemoteProtocolError) as info:
            await asyncio.wait_for(upgrade(tls, f"https://localhost:{port}/uplink"), BOUND)
        assert len(str(info.value)) < 300, len(str(info.value))
        await tls.close()


# --------------------------------------------------------------------------- closing a WebSocket uplink


async def _device_over_wss(material: Pki, port: int) -> RawPeer:
    """A hand-driven device: mTLS, the WebSocket upgrade, its HTTP/2 SETTINGS in a binary frame."""
    ctx = client_context(cafile_pems=[material.ca.cert_pem()], certfile_pem=material.device.cert_pem(),
                         keyfile_pem=material.device.key_pem())
    tls = await connect_tls("127.0.0.1", port, ctx, server_hostname="localhost", timeout=BOUND)
    peer = RawPeer(tls)
    await peer.handshake()
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2conn.initiate_connection()
    assert peer.conn is not None
    await tls.write(peer.conn.send(_bytes_message(h2conn.data_to_send())))
    return peer


def _bytes_message(data: bytes) -> object:
    from wsproto.events import BytesMessage

    return BytesMessage(data=data)


async def _until_close_frame(peer: RawPeer) -> None:
    from wsproto.events import CloseConnection

    while not isinstance(await peer.next_event(), CloseConnection):
        pass


async def _connected_over_wss(material: Pki, cloud: Cloud) -> tuple[RawPeer, asyncio.Queue[DeviceEvent]]:
    """:func:`_device_over_wss` once the cloud has it connected; the queue then has the cloud's later events."""
    events: asyncio.Queue[DeviceEvent] = asyncio.Queue()
    cloud.listener.observers.append(events.put_nowait)
    peer = await _device_over_wss(material, cloud.port)
    assert (await asyncio.wait_for(events.get(), BOUND)).kind == "connected"
    return peer, events


async def test_a_ping_after_the_clouds_close_ends_the_uplink_cleanly_upl_4(
        caplog: pytest.LogCaptureFixture) -> None:
    """UPL-4: the cloud closes a device's WebSocket uplink; the device PINGs instead of answering the CLOSE:
    no PONG is built (RFC 6455 §5.5.1: nothing but CLOSE after CLOSE), no traceback, the device disconnects."""
    material = Pki()
    async with running_cloud(material.server_ctx()) as cloud:
        peer, events = await _connected_over_wss(material, cloud)
        cloud.listener.close_all("closed by the test")
        await _until_close_frame(peer)
        await peer.stream.write(masked_frame(0x89, b"are you there?"))  # PING, not the CLOSE answer
        await peer.stream.write(masked_frame(0x88, b"\x03\xe8"))
        assert (await asyncio.wait_for(events.get(), BOUND)).kind == "disconnected"
        await peer.stream.close()
        assert cloud.server.stats["handler_failed"] == 0
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_a_ping_flood_closes_the_uplink_with_1008_upl_4(caplog: pytest.LogCaptureFixture) -> None:
    """UPL-4: a device floods the cloud with WebSocket PINGs (each costs the cloud a parse, a PONG and a TLS
    record): past the control-frame budget the cloud closes 1008 and the device is disconnected; it does not
    answer them all."""
    caplog.set_level(logging.INFO, logger="iec62676_2_33")
    material = Pki()
    async with running_cloud(material.server_ctx()) as cloud:
        peer, events = await _connected_over_wss(material, cloud)
        pings = 20000
        await peer.stream.write(bytes([0x89, 0x80, 0, 0, 0, 0]) * pings)  # empty PINGs, zero mask
        gone = await asyncio.wait_for(events.get(), BOUND)
        assert gone.kind == "disconnected" and "1008" in (gone.reason or ""), gone.reason
        pongs = 0
        with contextlib.suppress(TransportError, TimeoutError):
            while True:
                event = await peer.next_event()
                pongs += type(event).__name__ == "Pong"
                if type(event).__name__ == "CloseConnection":
                    assert event.code == 1008  # type: ignore[attr-defined]
                    break
        assert pongs <= 100, f"{pongs} PONGs for {pings} PINGs"
        await peer.stream.close()


async def test_data_frames_before_the_close_answer_are_not_buffered_upl_4() -> None:
    """UPL-4: between our CLOSE and the peer's answer, binary frames (here 8 MiB) are read and dropped."""
    material = Pki()
    closed: list[WebSocketStream] = []
    done = asyncio.Event()

    async def cloud_side(ws: WebSocketStream) -> None:
        await ws.close()
        closed.append(ws)
        done.set()

    async with ws_server(material, cloud_side) as port:
        tls = await tls_to(material, port)
        peer = RawPeer(tls)
        await peer.handshake()
        await _until_close_frame(peer)
        assert peer.conn is not None
        chunk = os.urandom(1 << 20)
        frame = bytes([0x82, 0x80 | 127]) + len(chunk).to_bytes(8, "big") + b"\0\0\0\0" + chunk  # zero mask
        with contextlib.suppress(TransportError):  # the cloud may stop reading at its close deadline
            for _ in range(8):
                await tls.write(frame)
            await tls.write(masked_frame(0x88, b"\x03\xe8"))
        await asyncio.wait_for(done.wait(), BOUND)
        await tls.close()
    held = sum(len(part) for part in closed[0]._buffer)
    assert held == 0, f"{held} bytes kept after close()"


# --------------------------------------------------------------------------- admission until authentication


def _source(n: int) -> str:
    return f"127.0.0.{n}"


@contextlib.asynccontextmanager
async def cloud_process(tmp_path: Path, material: Pki, limits: AdmissionLimits) -> AsyncIterator[int]:
    """``run_cloud`` (the cloud process's wiring) on loopback; yields the uplink port."""
    (tmp_path / "c").mkdir()
    cert, key, ca = tmp_path / "c" / "cert.pem", tmp_path / "c" / "key.pem", tmp_path / "c" / "ca.pem"
    cert.write_bytes(material.cloud.cert_pem())
    key.write_bytes(material.cloud.key_pem())
    ca.write_bytes(material.ca.cert_pem())
    options = CloudOptions(listen="127.0.0.1:0", cert=cert, key=key, client_cas=[ca])
    lines: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(run_cloud(options, stop, lines.append, settings=ListenerSettings(
        admission=limits, upgrade_timeout=BOUND, preface_timeout=BOUND, first_byte_timeout=BOUND)))
    try:
        async with asyncio.timeout(BOUND):
            while not lines:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        match = re.search(r"https://127\.0\.0\.1:(\d+)", lines[0])
        assert match, lines
        yield int(match.group(1))
    finally:
        stop.set()
        await asyncio.wait_for(task, BOUND)


async def _tls_from(material: Pki, port: int, source: str) -> TlsStream:
    ctx = client_context(cafile_pems=[material.ca.cert_pem()], certfile_pem=material.device.cert_pem(),
                         keyfile_pem=material.device.key_pem())
    return await connect_tls("127.0.0.1", port, ctx, server_hostname="localhost", timeout=BOUND,
                             local_addr=(source, 0))


async def _held(tls: TlsStream) -> bool:
    """Whether the cloud still holds *tls* open: a short upgrade probe is answered or the stream ends."""
    try:
        await tls.write(b"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                        b"Upgrade: h2c-reverse\r\n\r\n")
        first = await asyncio.wait_for(tls.read(65536), BOUND)
    except TransportError:
        return False
    return first.startswith(b"HTTP/1.1 101")


async def _silent_connections(material: Pki, port: int, source: str, n: int) -> list[TlsStream]:
    """Up to *n* connections from *source* that finish TLS and say nothing; the refused ones are left out."""
    streams = []
    for _ in range(n):
        try:
            stream = await _tls_from(material, port, source)
        except TransportError:
            continue
        streams.append(stream)
    return streams


async def test_a_source_holds_few_connections_before_they_authenticate_upl_1_upl_13(tmp_path: Path) -> None:
    """UPL-1, UPL-13: twelve silent connections from one source after TLS: the cloud keeps four (its
    per-source limit) and closes the others before any TLS work; a device from that source that
    authenticates still connects once one is gone, and authenticated uplinks hold no slot."""
    material = Pki()
    limits = AdmissionLimits(max_pending=64, known_reserve=8, per_source_pending=4, rate=None)
    async with cloud_process(tmp_path, material, limits) as port:
        kept = await _silent_connections(material, port, _source(2), 12)
        # Refused connections fail their handshake (the cloud closed them at once): at most four finished it.
        assert 1 <= len(kept) <= 4, f"{len(kept)} connections of one source were kept before authentication"
        for stream in kept[1:]:
            stream.abort()
        assert await _held(kept[0])  # a kept connection is served as usual: its upgrade gets the 101
        # Six authenticated uplinks from one address (a site behind NAT): each leaves its slot on its 101.
        uplinks = []
        for _ in range(6):
            tls = await _tls_from(material, port, _source(3))
            assert await _held(tls)
            uplinks.append(tls)
        for stream in [kept[0], *uplinks]:
            stream.abort()


async def test_a_newcomer_evicts_a_flooding_sources_unauthenticated_connection_upl_1_upl_13(
        tmp_path: Path) -> None:
    """UPL-1, UPL-13: a source holding every stranger slot with silent connections after TLS gives its oldest
    up for a device from another source, which then connects."""
    material = Pki()
    limits = AdmissionLimits(max_pending=6, known_reserve=1, per_source_pending=None, rate=None)
    async with cloud_process(tmp_path, material, limits) as port:
        flood = await _silent_connections(material, port, _source(4), 5)
        assert len(flood) == 5
        more = await _silent_connections(material, port, _source(4), 2)
        assert more == [], "the flooding source got more than the strangers' share"
        device = await _tls_from(material, port, _source(5))
        assert await _held(device)
        with pytest.raises(TransportError):  # the flood's oldest connection was dropped for the device
            while await asyncio.wait_for(flood[0].read(65536), BOUND):
                pass
        for stream in [device, *flood]:
            stream.abort()
