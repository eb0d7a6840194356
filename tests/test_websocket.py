"""UPL-4, UPL-6: the WebSocket byte transport — handshake checks and framing negatives.

Both ends run over real loopback TLS. The misbehaving peer is python-hyper's
wsproto driven by hand (or raw bytes for frames wsproto will not build), so
every case is a real wire exchange: wrong ``Sec-WebSocket-Accept``, a 101
without the subprotocol, a request without (or with another) subprotocol,
text frames, oversized frames and fragmented control frames each end with
the exact outcome — the right close code and a :class:`WebSocketClosed`, or
a precise error — and nothing crashes. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from test_websocket_e2e import BOUND, Pki, running_cloud
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake

from iec62676_2_33.errors import RemoteProtocolError
from iec62676_2_33.runtime.cloud import MtlsAuthenticator
from iec62676_2_33.sansio.upgrade import UpgradeServer
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.contexts import client_context
from iec62676_2_33.transport.tls import TlsStream, connect_tls, start_tls_server
from iec62676_2_33.transport.websocket import (
    SUBPROTOCOL,
    WebSocketClosed,
    WebSocketStream,
    check_websocket_request,
    websocket_accept,
    websocket_connect,
)

CloudSide = Callable[[WebSocketStream], Awaitable[None]]


@contextlib.asynccontextmanager
async def ws_server(material: Pki, on_stream: CloudSide, *, max_message: int = 1 << 20
                    ) -> AsyncIterator[int]:
    """A TLS server doing the cloud's WebSocket accept, then *on_stream*; yields the port."""

    async def handler(stream: TlsStream) -> None:
        server = UpgradeServer()
        while (request := server.receive_data(await stream.read(65536))) is None:
            pass
        handshake = check_websocket_request(request)
        ws = await websocket_accept(stream, handshake, trailing=server.trailing_data, max_message=max_message)
        await on_stream(ws)

    server = await start_tls_server(handler, ("127.0.0.1", 0), material.server_ctx(client_certs="none"))
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await asyncio.wait_for(server.aclose(), BOUND)


async def tls_to(material: Pki, port: int) -> TlsStream:
    ctx = client_context(cafile_pems=[material.ca.cert_pem()])
    return await connect_tls("127.0.0.1", port, ctx, server_hostname="localhost", timeout=BOUND)


class RawPeer:
    """A hand-driven wsproto client on a TLS stream (the misbehaving device)."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.conn: Connection | None = None

    async def handshake(self, subprotocols: list[str] | None = None) -> AcceptConnection:
        hs = H11Handshake(ConnectionType.CLIENT)
        await self.stream.write(hs.send(Request(host="localhost", target="/uplink",
                                                subprotocols=[SUBPROTOCOL] if subprotocols is None else subprotocols)))
        while True:
            hs.receive_data(await asyncio.wait_for(self.stream.read(65536), BOUND))
            for event in hs.events():
                assert isinstance(event, AcceptConnection), event
                self.conn = hs.connection
                return event

    async def send(self, event: object) -> None:
        assert self.conn is not None
        await self.stream.write(self.conn.send(event))  # type: ignore[arg-type]

    async def next_event(self) -> object:
        assert self.conn is not None
        while True:
            for event in self.conn.events():
                return event
            data = await asyncio.wait_for(self.stream.read(65536), BOUND)
            self.conn.receive_data(data or None)


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    """A client frame built by hand (wsproto never builds the broken ones)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([first_byte, 0x80 | len(payload)]) + mask + body


async def expect_closed(ws: WebSocketStream, code: int, box: list[BaseException]) -> None:
    try:
        while await ws.read():
            pass
    except WebSocketClosed as exc:
        box.append(exc)
    assert box and isinstance(box[0], WebSocketClosed) and box[0].code == code and box[0].local


# --------------------------------------------------------------------------- round trip


async def test_binary_round_trip_ping_and_close_upl_4() -> None:
    """UPL-4: bytes both ways in binary frames (large writes split), PING answered, CLOSE 1000 = EOF."""
    material = Pki()
    payload = os.urandom(700_000)

    async def echo(ws: WebSocketStream) -> None:
        while data := await ws.read():
            await ws.write(data)

    async with ws_server(material, echo) as port:
        tls = await tls_to(material, port)
        ws = await websocket_connect(tls, host=f"localhost:{port}", target="/uplink")
        await ws.write(payload)
        got = bytearray()
        while len(got) < len(payload):
            got += await asyncio.wait_for(ws.read(), BOUND)
        assert bytes(got) == payload
        # PING from our side (through the raw connection) is answered by the cloud's stream
        ws._inner.write_nowait(ws._conn.send(Ping(payload=b"live?")))
        await ws.close()
        assert ws.at_eof


async def test_ping_is_answered_with_pong_upl_4() -> None:
    """UPL-4: the WebSocket stream answers a PING with a PONG carrying the same payload."""
    material = Pki()

    async def reader(ws: WebSocketStream) -> None:
        while await ws.read():
            pass

    async with ws_server(material, reader) as port:
        peer = RawPeer(await tls_to(material, port))
        accepted = await peer.handshake()
        assert accepted.subprotocol == SUBPROTOCOL
        await peer.send(Ping(payload=b"0123"))
        event = await peer.next_event()
        assert event == Pong(payload=b"0123")
        await peer.send(CloseConnection(code=1000))
        assert isinstance(await peer.next_event(), CloseConnection)


# --------------------------------------------------------------------------- framing negatives


@pytest.mark.parametrize(("name", "frame", "code"), [
    ("text frame", "text", 1003),
    ("oversized frame", "big", 1009),
    ("fragmented PING", bytes([0x09]), 1002),      # FIN=0 on a control frame
    ("fragmented CLOSE", bytes([0x08]), 1002),
    ("oversized PING (126 bytes)", "bigping", 1002),
    ("reserved opcode 0x3", bytes([0x83]), 1002),
])
async def test_bad_frames_close_with_the_right_code_upl_4(name: str, frame: object, code: int) -> None:
    """UPL-4: text (1003), oversized (1009) and malformed/fragmented control frames (1002) close the link."""
    material = Pki()
    box: list[BaseException] = []
    done = asyncio.Event()

    async def cloud_side(ws: WebSocketStream) -> None:
        try:
            await expect_closed(ws, code, box)
        finally:
            done.set()

    async with ws_server(material, cloud_side, max_message=1024) as port:
        tls = await tls_to(material, port)
        peer = RawPeer(tls)
        await peer.handshake()
        if frame == "text":
            await peer.send(TextMessage(data="PRI * HTTP/2.0"))
        elif frame == "big":
            await peer.send(BytesMessage(data=b"x" * 2048))
        elif frame == "bigping":
            await tls.write(bytes([0x89, 0x80 | 126, 0, 126]) + os.urandom(4) + b"p" * 126)
        else:
            assert isinstance(frame, bytes)
            await tls.write(masked_frame(frame[0], b"abc"))
        event = await peer.next_event()
        assert isinstance(event, CloseConnection), (name, event)
        assert event.code == code, (name, event)
        await asyncio.wait_for(done.wait(), BOUND)
    assert box and box[0].code == code  # type: ignore[attr-defined]


async def test_peer_close_with_error_code_is_reported_upl_4() -> None:
    """UPL-4: a CLOSE with an error code from the peer ends reads with WebSocketClosed(local=False)."""
    material = Pki()
    box: list[BaseException] = []
    done = asyncio.Event()

    async def cloud_side(ws: WebSocketStream) -> None:
        try:
            while await ws.read():
                pass
        except WebSocketClosed as exc:
            box.append(exc)
        finally:
            done.set()

    async with ws_server(material, cloud_side) as port:
        peer = RawPeer(await tls_to(material, port))
        await peer.handshake()
        await peer.send(CloseConnection(code=1011, reason="internal"))
        event = await peer.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1011
        await asyncio.wait_for(done.wait(), BOUND)
    assert isinstance(box[0], WebSocketClosed) and box[0].code == 1011 and not box[0].local
    assert "1011" in str(box[0])


async def test_device_reader_sees_cloud_text_frame_as_1003_upl_4() -> None:
    """UPL-4: the device side enforces binary frames too (a text frame from the cloud closes 1003)."""
    material = Pki()
    closed = asyncio.Event()
    seen: list[CloseConnection] = []

    async def cloud_side(ws: WebSocketStream) -> None:
        ws._inner.write_nowait(ws._conn.send(TextMessage(data="hello")))
        data = await ws._inner.read(65536)  # the device's CLOSE frame
        ws._conn.receive_data(data)
        seen.extend(e for e in ws._conn.events() if isinstance(e, CloseConnection))
        closed.set()

    async with ws_server(material, cloud_side) as port:
        ws = await websocket_connect(await tls_to(material, port), host="localhost", target="/uplink")
        with pytest.raises(WebSocketClosed) as info:
            await asyncio.wait_for(ws.read(), BOUND)
        assert info.value.code == 1003 and info.value.local
        await asyncio.wait_for(closed.wait(), BOUND)
        assert seen and seen[0].code == 1003
        with pytest.raises(WebSocketClosed):
            ws.write_nowait(b"more")
        await ws.close()


# --------------------------------------------------------------------------- handshake negatives


def _accept_for(request: bytes) -> str:
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()


@contextlib.asynccontextmanager
async def raw_cloud(material: Pki, answer: Callable[[bytes], bytes]) -> AsyncIterator[int]:
    async def handler(stream: TlsStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.read(65536)
            if not chunk:
                return
            head += chunk
        await stream.write(answer(head))
        await stream.read(65536)  # until the device gives up

    server = await start_tls_server(handler, ("127.0.0.1", 0), material.server_ctx(client_certs="none"))
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await asyncio.wait_for(server.aclose(), BOUND)


@pytest.mark.parametrize(("answer", "message"), [
    (lambda req: (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
                  b"Sec-WebSocket-Protocol: h2c-reverse\r\n\r\n"), "Bad accept token"),
    (lambda req: (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + _accept_for(req).encode() + b"\r\n\r\n"),
     "without the subprotocol 'h2c-reverse' (Sec-WebSocket-Protocol missing"),
    (lambda req: (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c-reverse\r\nConnection: Upgrade\r\n\r\n"),
     "Missing header, 'Upgrade: websocket'"),
])
async def test_device_refuses_a_wrong_101_upl_4(answer: Callable[[bytes], bytes], message: str) -> None:
    """UPL-4: wrong Sec-WebSocket-Accept, missing subprotocol, wrong Upgrade → precise error, no stream."""
    material = Pki()
    async with raw_cloud(material, answer) as port:
        tls = await tls_to(material, port)
        with pytest.raises(RemoteProtocolError) as info:
            await asyncio.wait_for(websocket_connect(tls, host="localhost", target="/uplink"), BOUND)
        assert message in str(info.value)
        await tls.close()


def _ws_request(extra: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET /uplink HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n" + extra + b"\r\n")


@pytest.mark.parametrize(("extra", "status", "text"), [
    (b"Sec-WebSocket-Version: 13\r\n", b"400", b"none was offered"),
    (b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n", b"400", b"offered: chat, superchat"),
    (b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: h2c-reverse\r\n", b"426", b"Sec-WebSocket-Version"),
])
async def test_cloud_refuses_websocket_requests_it_cannot_serve_upl_4(extra: bytes, status: bytes, text: bytes
                                                                      ) -> None:
    """UPL-4: no or another subprotocol (400), another version (426 + Sec-WebSocket-Version: 13)."""
    material = Pki()
    async with running_cloud(material.server_ctx(client_certs="optional"), MtlsAuthenticator()) as cloud:
        tls = await tls_to(material, cloud.port)
        await tls.write(_ws_request(extra))
        answer = b""
        while chunk := await asyncio.wait_for(tls.read(65536), BOUND):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert text in answer
        assert b"PRI * HTTP/2.0" not in answer
        assert cloud.listener.stats["rejected"] == 1
