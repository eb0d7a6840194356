"""HTTP/2 roles of the uplink driven against each other in memory (UPL-3, UPL-15, UPL-16).

The cloud's :class:`H2ClientRole` and the device's :class:`H2ServerRole` talk
through a byte pump (no sockets, a fake clock): preface and SETTINGS
(UPL-3, UPL-15), requests in reverse over many concurrent streams (UPL-16),
flow control and back-pressure, PING, GOAWAY and resets.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, SettingsFrame

from iec62676_2_33.errors import LocalProtocolError
from iec62676_2_33.http2 import (
    PREFACE,
    ConnectionTerminated,
    DataReceived,
    Event,
    H2ClientRole,
    H2Limits,
    H2ServerRole,
    PingAcknowledged,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)

NOW = 1000.0
# One DATA frame as the roles send it by default (header included): the bounds below are
# "buffer limit + one frame", so they follow the default SETTINGS_MAX_FRAME_SIZE.
FRAME = H2Limits().max_frame_size + 9


def pair(
    *,
    client_limits: H2Limits | None = None,
    server_limits: H2Limits | None = None,
) -> tuple[H2ClientRole, H2ServerRole, list[Event], list[Event]]:
    """A connected cloud/device pair after the SETTINGS exchange."""
    client = H2ClientRole(limits=client_limits or H2Limits(), now=NOW)
    server = H2ServerRole(limits=server_limits or H2Limits(), now=NOW)
    client.initiate()
    server.initiate()
    ev_c, ev_s = pump(client, server)
    return client, server, ev_c, ev_s


def pump(
    client: H2ClientRole, server: H2ServerRole, now: float = NOW
) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until both sides are quiet; events seen by (client, server)."""
    ev_c: list[Event] = []
    ev_s: list[Event] = []
    for _ in range(100_000):
        to_server = client.data_to_send()
        to_client = server.data_to_send()
        if not to_server and not to_client:
            return ev_c, ev_s
        if to_server:
            ev_s += server.receive_data(to_server, now)
        if to_client:
            ev_c += client.receive_data(to_client, now)
    raise AssertionError("the pump did not settle")


def of(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def body_of(events: list[Event], stream_id: int) -> bytes:
    return b"".join(e.data for e in of(events, DataReceived) if e.stream_id == stream_id)


def ack_all(role: H2ClientRole | H2ServerRole, events: list[Event]) -> None:
    for e in of(events, DataReceived):
        role.acknowledge(e.stream_id, e.flow_controlled_length)


def test_client_preface_is_the_rfc7540_magic_then_settings_upl3() -> None:
    """UPL-3: the cloud sends the client connection preface, the device only SETTINGS."""
    client = H2ClientRole(now=NOW)
    server = H2ServerRole(now=NOW)
    client.initiate()
    server.initiate()
    sent = client.data_to_send()
    assert sent.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert sent.startswith(PREFACE)
    frame, length = Frame.parse_frame_header(memoryview(sent[24:33]))
    frame.parse_body(memoryview(sent[33 : 33 + length]))
    assert isinstance(frame, SettingsFrame) and "ACK" not in frame.flags
    assert frame.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 128
    assert frame.settings[SettingsFrame.ENABLE_PUSH] == 0
    answer = server.data_to_send()
    assert not answer.startswith(b"PRI")
    first, _ = Frame.parse_frame_header(memoryview(answer[:9]))
    assert isinstance(first, SettingsFrame)


def test_settings_are_exchanged_and_reported_upl15() -> None:
    """UPL-15: each side sees the other's SETTINGS; both become idle afterwards."""
    limits = H2Limits(max_concurrent_streams=7, initial_window_size=200_000)
    client, server, ev_c, ev_s = pair(server_limits=limits)
    changed = dict(of(ev_c, RemoteSettingsChanged)[0].changed)
    assert changed[SettingsFrame.MAX_CONCURRENT_STREAMS] == 7
    assert changed[SettingsFrame.INITIAL_WINDOW_SIZE] == 200_000
    assert of(ev_s, RemoteSettingsChanged)
    assert client.outbound_pending == server.outbound_pending == 0
    assert not client.is_closed and not server.is_closed


def test_get_request_in_reverse_upl16() -> None:
    """UPL-16: the cloud asks, the device answers on the same stream."""
    client, server, _, _ = pair()
    sid = client.send_request("GET", "/onvif/device_service", [("accept", "*/*")], authority="cam")
    assert sid == 1
    _, ev_s = pump(client, server)
    req = of(ev_s, RequestReceived)[0]
    assert req.stream_id == sid
    assert req.headers[:4] == [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "cam"),
        (":path", "/onvif/device_service"),
    ]
    assert ("accept", "*/*") in req.headers
    assert of(ev_s, StreamEnded) == [StreamEnded(stream_id=sid)]
    server.send_response(sid, 200, [("content-type", "text/plain")], b"hello")
    ev_c, _ = pump(client, server)
    resp = of(ev_c, ResponseReceived)[0]
    assert (":status", "200") in resp.headers and ("content-length", "5") in resp.headers
    assert body_of(ev_c, sid) == b"hello"
    assert of(ev_c, StreamEnded) == [StreamEnded(stream_id=sid)]
    ack_all(client, ev_c)
    assert client.open_streams == server.open_streams == 0


def test_post_with_body_larger_than_the_windows_upl16() -> None:
    """UPL-16: a 6 MiB request body crosses 1 MiB stream / 4 MiB connection windows."""
    client, server, _, _ = pair()
    body = bytes(range(256)) * (6 * 4096)
    sid = client.send_request(
        "POST", "/upload", [("content-type", "application/octet-stream")], body, authority="cam"
    )
    seen: list[Event] = []
    for _ in range(10_000):
        _, ev_s = pump(client, server)
        seen += ev_s
        ack_all(server, ev_s)  # the device takes each chunk and returns the window
        if of(ev_s, StreamEnded):
            break
    assert [r.stream_id for r in of(seen, RequestReceived)] == [sid]
    assert ("content-length", str(len(body))) in of(seen, RequestReceived)[0].headers
    assert body_of(seen, sid) == body
    server.send_response(sid, 204)
    ev_c, _ = pump(client, server)
    assert (":status", "204") in of(ev_c, ResponseReceived)[0].headers
    assert client.queued_outbound() == 0


def test_without_acknowledge_the_peer_stops_at_the_window_upl15() -> None:
    """UPL-15: flow control holds; nothing beyond the stream window flows until acked."""
    client, server, _, _ = pair()
    sid = client.send_request("GET", "/big", authority="cam")
    pump(client, server)
    server.send_response(sid, 200, body=b"x" * (3 * 1024 * 1024))
    ev_c, _ = pump(client, server)
    got = sum(len(e.data) for e in of(ev_c, DataReceived))
    assert got == 1024 * 1024  # the client's initial stream window
    assert server.queued_outbound(sid) == 2 * 1024 * 1024
    assert pump(client, server) == ([], [])  # still stalled
    rounds = 0
    while got < 3 * 1024 * 1024:
        rounds += 1
        assert rounds < 50
        ack_all(client, ev_c)
        ev_c, _ = pump(client, server)
        more = sum(len(e.data) for e in of(ev_c, DataReceived))
        assert 0 < more <= 1024 * 1024
        got += more
    assert of(ev_c, StreamEnded) == [StreamEnded(stream_id=sid)]


def test_auto_acknowledge_keeps_the_body_flowing_upl15() -> None:
    """UPL-15: with auto_acknowledge the role returns the window itself."""
    client = H2ClientRole(now=NOW, auto_acknowledge=True)
    server = H2ServerRole(now=NOW)
    client.initiate()
    server.initiate()
    pump(client, server)
    sid = client.send_request("GET", "/big", authority="cam")
    pump(client, server)
    body = b"y" * (5 * 1024 * 1024)
    server.send_response(sid, 200, body=body)
    ev_c: list[Event] = []
    for _ in range(100):
        more_c, _ = pump(client, server)
        ev_c += more_c
        if of(more_c, StreamEnded) or not more_c:
            break
    assert body_of(ev_c, sid) == body
    client.acknowledge(sid, 10)  # a late ack for a finished stream is ignored


def test_100_concurrent_streams_interleave_upl16() -> None:
    """UPL-16: 100 requests in flight at once; responses are framed round-robin."""
    # A small outbound buffer: the role frames only as the link drains, fairly. 16 KiB
    # frames (the default is 64 KiB) so that each ~36 KiB body takes 3 frames.
    client, server, _, _ = pair(
        server_limits=H2Limits(max_outbound_buffer=20_000, max_frame_size=16384)
    )
    bodies = {}
    for i in range(100):
        payload = f"request {i} ".encode() * 300
        sid = client.send_request("POST", f"/r/{i}", body=payload, authority="cam")
        bodies[sid] = payload
    assert client.open_streams == 100
    _, ev_s = pump(client, server)
    requests = of(ev_s, RequestReceived)
    assert len(requests) == 100
    for sid, payload in bodies.items():
        assert body_of(ev_s, sid) == payload
    ack_all(server, ev_s)
    for sid in reversed(list(bodies)):
        server.send_response(sid, 200, body=bodies[sid][::-1] * 10)  # ~36 KiB: 3 frames each
    ev_c, _ = pump(client, server)
    for sid, payload in bodies.items():
        assert body_of(ev_c, sid) == payload[::-1] * 10
    order = [e.stream_id for e in of(ev_c, DataReceived)]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > 200  # interleaved, not one stream after the other
    assert len(of(ev_c, StreamEnded)) == 100
    ack_all(client, ev_c)
    assert client.open_streams == server.open_streams == 0


def test_50_mib_response_streams_with_back_pressure_upl16() -> None:
    """UPL-16: 50 MiB through bounded buffers; the client gets every byte in order."""
    limits = H2Limits(max_outbound_buffer=256 * 1024)
    # The cloud accepts this long a body (the default cap is 16 MiB).
    client, server, _, _ = pair(
        server_limits=limits, client_limits=H2Limits(max_body_size=64 * 1024 * 1024)
    )
    sid = client.send_request("GET", "/recording", authority="cam")
    pump(client, server)
    server.send_response(sid, 200, [("content-type", "video/mp4")], end_stream=False)
    total = 50 * 1024 * 1024
    chunk = 256 * 1024
    sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()
    produced = received = 0
    ended = False
    bound = limits.max_outbound_buffer + FRAME
    max_seen = 0
    steps = 0
    while not ended:
        steps += 1
        assert steps < 200_000
        # The application keeps at most 1 MiB queued (the runtime's back-pressure).
        while produced < total and server.queued_outbound(sid) < 1024 * 1024:
            block = (produced // chunk % 251).to_bytes(1, "big") * chunk
            sent_hash.update(block)
            produced += chunk
            server.send_data(sid, block, end_stream=produced >= total)
        max_seen = max(max_seen, server.outbound_pending)
        assert server.outbound_pending <= bound
        wire = server.data_to_send(64 * 1024)  # a slow link: 64 KiB per step
        assert server.outbound_pending <= bound
        for e in client.receive_data(wire, NOW):
            if isinstance(e, DataReceived):
                got_hash.update(e.data)
                received += len(e.data)
                client.acknowledge(e.stream_id, e.flow_controlled_length)
            elif isinstance(e, StreamEnded):
                ended = True
        server.receive_data(client.data_to_send(), NOW)
        # Never more body in flight than the client's window allows.
        assert produced - server.queued_outbound(sid) - received <= 1024 * 1024 + 2 * FRAME
    assert received == total
    assert got_hash.digest() == sent_hash.digest()
    assert max_seen > limits.max_outbound_buffer // 2  # the buffer was really used


def test_ping_round_trip_upl15() -> None:
    """UPL-15 (PING, used by UPL-7): the peer answers with the same payload."""
    client, server, _, _ = pair()
    client.ping(b"uplink!!")
    server.ping(b"\x00" * 8)
    ev_c, ev_s = pump(client, server)
    assert of(ev_c, PingAcknowledged) == [PingAcknowledged(opaque=b"uplink!!")]
    assert of(ev_s, PingAcknowledged) == [PingAcknowledged(opaque=b"\x00" * 8)]
    with pytest.raises(LocalProtocolError):
        client.ping(b"short")


def test_goaway_close_ends_both_sides_upl15() -> None:
    """UPL-15: GOAWAY from the cloud ends the device's role with the reason."""
    client, server, _, _ = pair()
    sid = client.send_request("GET", "/", authority="cam")
    pump(client, server)
    client.close(0, "cloud shutting down")
    assert client.is_closed
    _, ev_s = pump(client, server)
    term = of(ev_s, ConnectionTerminated)
    assert term == [
        ConnectionTerminated(
            error_code=0, reason="cloud shutting down", local=False, last_stream_id=0
        )
    ]
    assert server.is_closed
    server.send_response(sid, 200, body=b"late")  # dropped: the connection is gone
    assert server.receive_data(b"\x00" * 30, NOW) == []
    with pytest.raises(LocalProtocolError):
        client.send_request("GET", "/", authority="cam")


def test_peer_reset_reaches_the_other_role_upl16() -> None:
    """UPL-16: the cloud cancels a request; the device sees StreamReset(remote=True)."""
    client, server, _, _ = pair()
    sid = client.send_request("POST", "/slow", body=b"abc", authority="cam", end_stream=False)
    pump(client, server)
    server.send_response(sid, 200, end_stream=False)
    server.send_data(sid, b"partial")
    pump(client, server)
    client.reset_stream(sid, ErrorCodes.CANCEL)
    _, ev_s = pump(client, server)
    assert of(ev_s, StreamReset) == [
        StreamReset(stream_id=sid, error_code=ErrorCodes.CANCEL, remote=True)
    ]
    server.send_data(sid, b"more", end_stream=True)  # gone: dropped, no error
    assert server.queued_outbound(sid) == 0
    with pytest.raises(LocalProtocolError):
        server.send_data(99, b"x")  # never opened
    assert server.open_streams == 0


def test_send_request_stops_at_the_peers_concurrency_limit_upl16() -> None:
    """UPL-16: at the device's MAX_CONCURRENT_STREAMS the cloud must queue."""
    client, server, _, _ = pair(server_limits=H2Limits(max_concurrent_streams=2))
    first = client.send_request("GET", "/a", authority="cam")
    client.send_request("GET", "/b", authority="cam")
    with pytest.raises(LocalProtocolError) as exc:
        client.send_request("GET", "/c", authority="cam")
    assert exc.value.status_hint == 503
    pump(client, server)
    server.send_response(first, 200)
    ev_c, _ = pump(client, server)
    assert of(ev_c, StreamEnded) == [StreamEnded(stream_id=first)]
    assert client.send_request("GET", "/c", authority="cam") == 5


def test_bad_local_use_raises_local_protocol_error_upl16() -> None:
    """UPL-16: the caller's own mistakes are LocalProtocolError, never h2 exceptions."""
    client, server, _, _ = pair()
    with pytest.raises(LocalProtocolError):
        client.send_request("GET", "/", [("te", "gzip")], authority="cam")
    with pytest.raises(LocalProtocolError):
        client.send_request("GET", "/", [("x-name", "snow\u2603")], authority="cam")
    sid = client.send_request("POST", "/", authority="cam", end_stream=False)
    pump(client, server)
    with pytest.raises(LocalProtocolError):
        server.send_data(sid, b"body before head")
    with pytest.raises(LocalProtocolError):
        server.send_response(sid, 100)
    server.send_response(sid, 200, end_stream=False)
    with pytest.raises(LocalProtocolError):
        server.send_response(sid, 200)
    server.send_data(sid, b"", end_stream=True)
    with pytest.raises(LocalProtocolError):
        server.send_data(sid, b"after the end")
    with pytest.raises(LocalProtocolError):
        client.acknowledge(sid, 10**9)
    with pytest.raises(LocalProtocolError):
        client.acknowledge(sid, -1)
    fresh = H2ServerRole(now=NOW)
    with pytest.raises(LocalProtocolError):
        fresh.receive_data(b"", NOW)
    fresh.initiate()
    with pytest.raises(LocalProtocolError):
        fresh.initiate()
