"""UPL-4: the cloud's WebSocket reader takes plain binary frames itself and leaves every other frame
to wsproto — the bytes come out the same whichever path read them, split at any boundary."""

from __future__ import annotations

import os

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, Ping

from iec62676_2_33.transport.memory import memory_pipe
from iec62676_2_33.transport.websocket import WebSocketClosed, WebSocketStream


def client_frames() -> tuple[bytes, bytes]:
    """What a device sends: plain frames, a fragmented message, a PING, plain frames again (masked)."""
    client = Connection(ConnectionType.CLIENT)
    parts = [os.urandom(n) for n in (1, 125, 126, 65535, 65536, 70000)]
    wire = b"".join(client.send(BytesMessage(data=p)) for p in parts[:3])
    wire += client.send(BytesMessage(data=parts[3], message_finished=False))
    wire += client.send(Ping(payload=b"hi"))
    wire += client.send(BytesMessage(data=parts[4], message_finished=True))
    wire += client.send(BytesMessage(data=parts[5]))
    return wire, b"".join(parts)


def cloud_stream(max_message: int = 1 << 20) -> tuple[WebSocketStream, object]:
    inner, peer = memory_pipe(limit=1 << 24)
    return WebSocketStream(inner, Connection(ConnectionType.SERVER), max_message=max_message, label="test"), peer


@pytest.mark.parametrize("step", [1, 7, 1000, 1 << 20])
async def test_fast_and_wsproto_paths_give_the_same_bytes_upl_4(step: int) -> None:
    """UPL-4: plain frames (fast path), a fragmented message and a PING (wsproto) interleaved,
    fed in pieces of ``step`` bytes: the payload comes out whole and in order."""
    wire, expected = client_frames()
    ws, _peer = cloud_stream()
    for i in range(0, len(wire), step):
        ws.receive(wire[i:i + step])
    got = bytearray()
    while len(got) < len(expected):
        got += await ws.read(1 << 20)
    assert bytes(got) == expected


async def test_unmasked_client_frame_still_refused_upl_4() -> None:
    """UPL-4: a device frame without a mask is not 'plain': wsproto refuses it (1002)."""
    ws, _peer = cloud_stream()
    ws.receive(bytes([0x82, 3]) + b"abc")
    with pytest.raises(WebSocketClosed) as info:
        await ws.read()
    assert info.value.code == 1002


async def test_frame_over_the_cap_still_refused_upl_4() -> None:
    """UPL-4: a plain frame over the size cap goes to wsproto's rules: closed with 1009."""
    client = Connection(ConnectionType.CLIENT)
    ws, _peer = cloud_stream(max_message=1000)
    ws.receive(client.send(BytesMessage(data=os.urandom(2000))))
    with pytest.raises(WebSocketClosed) as info:
        await ws.read()
    assert info.value.code == 1009
