"""Attacks on both HTTP/2 roles of the uplink with hand-built frames (UPL-3, UPL-15, UPL-16).

The attacker is not h2: every frame is built with ``hyperframe`` and every
header block with ``hpack``, so the peer can do what h2 would never do. Each
test states the exact outcome -- the GOAWAY / RST_STREAM / status the role
sends back (parsed with hyperframe), the event the caller sees -- and that
memory stays bounded, measured on the role's own buffers and on h2's
internals (never RSS). The clock is fake (``now`` is passed in).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from h2.errors import ErrorCodes
from helpers import parse_frames
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from iec62676_2_33.errors import ConfigurationError, LocalProtocolError
from iec62676_2_33.http2 import (
    PREFACE,
    ConnectionTerminated,
    DataReceived,
    Event,
    H2ClientRole,
    H2Limits,
    H2ServerRole,
    Rate,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
)
from iec62676_2_33.http2.role import H2Role

NOW = 500.0
FRAME = 16384 + 9
CALM = ErrorCodes.ENHANCE_YOUR_CALM
REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "cam"), (":path", "/")]
POST = [(":method", "POST"), (":scheme", "https"), (":authority", "cam"), (":path", "/up")]
BIG_WINDOW = 2**31 - 1


class Raw:
    """A misbehaving peer that speaks raw frames to one role."""

    def __init__(self, role: H2Role) -> None:
        self.role = role
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.now = NOW
        self.events: list[Event] = []

    def send(self, *frames: Frame, raw: bytes = b"") -> list[Event]:
        data = raw + b"".join(f.serialize() for f in frames)
        events = self.role.receive_data(data, self.now)
        self.events += events
        return events

    def read(self) -> list[Frame]:
        return parse_frames(self.role.data_to_send())

    def headers(
        self, stream_id: int, fields: list[tuple[str, str]], *, end_stream: bool = False
    ) -> HeadersFrame:
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        return HeadersFrame(stream_id, data=self.encoder.encode(fields), flags=flags)

    def decode(self, frame: HeadersFrame) -> list[tuple[str, str]]:
        return [(str(n), str(v)) for n, v in self.decoder.decode(frame.data)]


def attack_server(limits: H2Limits | None = None, *settings: tuple[int, int]) -> Raw:
    """A device role that has read the attacker's preface and SETTINGS."""
    raw = Raw(H2ServerRole(limits=limits or H2Limits(), now=NOW))
    raw.role.initiate()
    raw.send(SettingsFrame(0, settings=dict(settings)), raw=PREFACE)
    frames = raw.read()
    # Our SETTINGS, the connection window raised to 4 MiB, the ACK of theirs.
    assert [type(f) for f in frames] == [SettingsFrame, WindowUpdateFrame, SettingsFrame]
    return raw


def attack_client(limits: H2Limits | None = None, *settings: tuple[int, int]) -> Raw:
    """A cloud role that has read the attacker's (fake device's) SETTINGS."""
    raw = Raw(H2ClientRole(limits=limits or H2Limits(), now=NOW))
    raw.role.initiate()
    assert raw.role.data_to_send().startswith(PREFACE)
    raw.send(SettingsFrame(0, settings=dict(settings)))
    assert [type(f) for f in raw.read()] == [SettingsFrame]  # the ACK
    return raw


def terminated(events: list[Event]) -> list[ConnectionTerminated]:
    return [e for e in events if isinstance(e, ConnectionTerminated)]


def goaways(frames: list[Frame]) -> list[int]:
    return [f.error_code for f in frames if isinstance(f, GoAwayFrame)]


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def check_ended(raw: Raw, code: int, frames: list[Frame] | None = None) -> list[Frame]:
    """Exactly one GOAWAY(code) on the wire, one ConnectionTerminated(local) event."""
    frames = raw.read() if frames is None else frames
    assert goaways(frames) == [code]
    ends = terminated(raw.events)
    assert len(ends) == 1 and ends[0].local and ends[0].error_code == code
    assert raw.role.is_closed
    assert raw.send(PingFrame(0, opaque_data=b"12345678")) == []  # input ignored now
    assert raw.role.inbound_pending == 0
    return frames


def footprint(role: H2Role) -> dict[str, int]:
    """Measurable memory of a role: its buffers and h2's (private) containers."""
    conn = role._conn
    return {
        "outbound": role.outbound_pending,
        "inbound": role.inbound_pending,
        "queued": role.queued_outbound(),
        "role_streams": len(role._streams),
        "h2_streams": len(conn.streams),
        "h2_outbound": len(conn._data_to_send),
        "h2_inbound": len(conn.incoming_buffer._data),
        "h2_header_frames": len(conn.incoming_buffer._headers_buffer),
    }


# ------------------------------------------------------------------ the device


def test_ping_flood_is_cut_off_with_enhance_your_calm_upl15() -> None:
    """UPL-15: the 51st PING in 10 s ends the connection; only 50 ACKs were queued."""
    raw = attack_server()
    for i in range(1000):
        if raw.send(PingFrame(0, opaque_data=i.to_bytes(8, "big"))):
            break
    assert i == 50
    frames = check_ended(raw, CALM)
    assert sum(isinstance(f, PingFrame) and "ACK" in f.flags for f in frames) == 50
    assert terminated(raw.events)[0].reason == "PING flood"
    assert footprint(raw.role)["outbound"] == 0  # all read above
    assert footprint(raw.role)["h2_outbound"] == 0


def test_ping_allowance_refills_with_the_fake_clock_upl15() -> None:
    """UPL-15: 50 PINGs per 10 s are fine, in bursts; the bucket refills with `now`."""
    raw = attack_server()
    for burst in range(5):
        raw.now = NOW + 10.0 * burst
        for _ in range(50):
            raw.send(PingFrame(0, opaque_data=b"pingpong"))
    assert not terminated(raw.events)
    raw.now += 0.1  # half a token back: not enough for one more
    raw.send(PingFrame(0, opaque_data=b"pingpong"))
    check_ended(raw, CALM)


def test_settings_flood_is_cut_off_upl15() -> None:
    """UPL-15: the 51st SETTINGS frame (the first one counts) ends the connection."""
    raw = attack_server()
    for i in range(1000):
        if terminated(raw.send(SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 4096}))):
            break
    assert i == 49
    frames = check_ended(raw, CALM)
    assert sum(isinstance(f, SettingsFrame) and "ACK" in f.flags for f in frames) == 49


def test_rapid_reset_is_cut_off_after_200_resets_upl16() -> None:
    """UPL-16 (CVE-2023-44487): HEADERS + RST_STREAM in a loop; the 201st reset ends it."""
    raw = attack_server()
    for i in range(5000):
        sid = 2 * i + 1
        if terminated(raw.send(raw.headers(sid, REQUEST), RstStreamFrame(sid, error_code=8))):
            break
        assert footprint(raw.role)["h2_streams"] <= 2  # closed streams are not kept
    assert i == 200
    assert len(of(raw.events, StreamReset)) == 200
    assert all(e.remote for e in of(raw.events, StreamReset))
    check_ended(raw, CALM)
    size = footprint(raw.role)
    assert size["role_streams"] == 0 and size["queued"] == 0


def test_refused_streams_count_like_resets_upl16() -> None:
    """UPL-16: a peer that keeps opening streams over the limit is refused, then cut off."""
    raw = attack_server(H2Limits(max_concurrent_streams=2, reset_rate=Rate(10, 10.0)))
    for sid in range(1, 200, 2):
        raw.send(raw.headers(sid, REQUEST))
        if raw.role.is_closed:
            break
    assert sid == 2 * 12 + 1  # 2 accepted, 10 refused, the 11th refusal breaks the rate
    assert len(of(raw.events, RequestReceived)) == 2
    frames = check_ended(raw, CALM)
    refused = [f for f in frames if isinstance(f, RstStreamFrame)]
    assert [f.error_code for f in refused] == [ErrorCodes.REFUSED_STREAM] * 11


def test_empty_data_flood_is_cut_off_upl16() -> None:
    """UPL-16: DATA frames without payload or END_STREAM: the 101st ends the connection."""
    raw = attack_server()
    raw.send(raw.headers(1, POST))
    for i in range(10_000):
        if raw.send(DataFrame(1, b"")):
            break
    assert i == 100
    assert not of(raw.events, DataReceived)  # empty frames are not passed on
    check_ended(raw, CALM)


def test_padding_only_data_counts_as_empty_upl16() -> None:
    """UPL-16: padded DATA frames that carry no byte are empty frames too."""
    raw = attack_server(H2Limits(empty_frame_rate=Rate(5, 10.0)))
    raw.send(raw.headers(1, POST))
    for _ in range(6):
        raw.send(DataFrame(1, b"", flags=["PADDED"], pad_length=20))
    check_ended(raw, CALM)


def test_window_update_flood_is_cut_off_upl15() -> None:
    """UPL-15: the 1001st WINDOW_UPDATE in 10 s (while we send nothing) ends the connection."""
    raw = attack_server()
    for i in range(5000):
        if raw.send(WindowUpdateFrame(0, window_increment=1)):
            break
    assert i == 1000
    check_ended(raw, CALM)


def test_priority_flood_is_cut_off_upl15() -> None:
    """UPL-15: PRIORITY (and unknown) frames are limited to 500 per 10 s."""
    raw = attack_server()
    for i in range(5000):
        if raw.send(PriorityFrame(3, depends_on=0, stream_weight=10)):
            break
    assert i == 500
    check_ended(raw, CALM)


def test_continuation_flood_is_cut_off_at_the_header_block_cap_upl16() -> None:
    """UPL-16: HEADERS without END_HEADERS, then endless 16 KiB CONTINUATIONs."""
    raw = attack_server()
    raw.send(HeadersFrame(1, data=raw.encoder.encode(REQUEST)))
    for i in range(1000):
        if raw.send(ContinuationFrame(1, data=b"\x40" * 16384)):
            break
        assert footprint(raw.role)["h2_header_frames"] <= 9
    assert i == 7  # 16384 * 8 + HEADERS > 128 KiB
    check_ended(raw, CALM)
    assert "CONTINUATION" in terminated(raw.events)[0].reason


def test_zero_length_continuations_hit_h2s_backlog_upl16() -> None:
    """UPL-16: empty CONTINUATIONs are stopped by h2's CONTINUATION_BACKLOG (64): PROTOCOL_ERROR."""
    raw = attack_server()
    raw.send(HeadersFrame(1, data=raw.encoder.encode(REQUEST)))
    for i in range(1000):
        if raw.send(ContinuationFrame(1, data=b"")):
            break
    assert i == 63
    check_ended(raw, ErrorCodes.PROTOCOL_ERROR)
    assert "continuation" in terminated(raw.events)[0].reason.lower()


def test_hpack_bomb_ends_the_connection_upl16() -> None:
    """UPL-16: one 4 KB header in the dynamic table, referenced 40 times (~160 KB decoded)."""
    raw = attack_server()
    block = raw.encoder.encode(REQUEST + [("x-bomb", "a" * 4000)] * 40)
    assert len(block) < 4200  # small on the wire: the size is only in the decoding
    raw.send(HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]))
    check_ended(raw, CALM)
    assert not of(raw.events, RequestReceived)


def test_header_list_over_the_advertised_limit_gets_431_upl16() -> None:
    """UPL-16: 64 KiB < decoded list <= 128 KiB: 431 on that stream, HPACK stays in step."""
    raw = attack_server()
    big = REQUEST + [("x-big", "b" * 4000)] * 17  # ~68.6 KB decoded
    raw.send(raw.headers(1, big, end_stream=True))
    frames = raw.read()
    assert not of(raw.events, RequestReceived)
    head = [f for f in frames if isinstance(f, HeadersFrame)]
    assert raw.decode(head[0])[0] == (":status", "431") and "END_STREAM" in head[0].flags
    assert not [f for f in frames if isinstance(f, RstStreamFrame)]  # the request had ended
    raw.send(raw.headers(3, REQUEST + [("x-big", "b" * 4000)], end_stream=True))
    assert [e.stream_id for e in of(raw.events, RequestReceived)] == [3]
    assert ("x-big", "b" * 4000) in of(raw.events, RequestReceived)[0].headers
    assert not raw.role.is_closed


def test_stream_over_max_concurrent_streams_is_refused_upl16() -> None:
    """UPL-16: stream 129 gets RST_STREAM REFUSED_STREAM; the connection lives on."""
    raw = attack_server()
    for sid in range(1, 2 * 129, 2):
        raw.send(raw.headers(sid, POST))
    frames = raw.read()
    assert len(of(raw.events, RequestReceived)) == 128
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == [
        (257, ErrorCodes.REFUSED_STREAM)
    ]
    assert raw.role.open_streams == 128
    raw.send(DataFrame(257, b"late body"))  # on the refused stream: a stream error only
    assert [f.error_code for f in raw.read() if isinstance(f, RstStreamFrame)] == [
        ErrorCodes.STREAM_CLOSED
    ]
    assert isinstance(raw.role, H2ServerRole)
    raw.role.send_response(1, 200)
    raw.send(DataFrame(1, b"", flags=["END_STREAM"]))
    raw.send(raw.headers(259, REQUEST, end_stream=True))
    assert of(raw.events, RequestReceived)[-1].stream_id == 259
    assert not terminated(raw.events)
    assert footprint(raw.role)["role_streams"] == 128


def test_body_over_max_body_size_gets_413_and_no_more_is_buffered_upl16() -> None:
    """UPL-16: a body growing past max_body_size: 413 + RST_STREAM NO_ERROR, then dropped."""
    raw = attack_server(H2Limits(max_body_size=10_000))
    raw.send(raw.headers(1, POST))
    for _ in range(3):
        raw.send(DataFrame(1, b"z" * 4000))
    assert len(of(raw.events, DataReceived)) == 2  # the third crossed the limit
    assert of(raw.events, StreamReset) == [
        StreamReset(stream_id=1, error_code=ErrorCodes.NO_ERROR, remote=False)
    ]
    frames = raw.read()
    head = next(f for f in frames if isinstance(f, HeadersFrame))
    assert raw.decode(head)[0] == (":status", "413") and "END_STREAM" in head.flags
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == [
        (1, ErrorCodes.NO_ERROR)
    ]
    # The peer goes on uploading 6 MiB (more than the 4 MiB connection window):
    # nothing reaches the caller and the window keeps being returned.
    for _ in range(384):
        raw.send(DataFrame(1, b"z" * 16384))
        raw.read()
    assert len(of(raw.events, DataReceived)) == 2
    assert not raw.role.is_closed
    assert footprint(raw.role)["role_streams"] == 0


def test_declared_content_length_over_max_body_size_gets_413_upl16() -> None:
    """UPL-16: content-length over max_body_size is answered before any body arrives."""
    raw = attack_server(H2Limits(max_body_size=10_000))
    raw.send(raw.headers(1, POST + [("content-length", "1000000000")]))
    frames = raw.read()
    assert not of(raw.events, RequestReceived)
    head = next(f for f in frames if isinstance(f, HeadersFrame))
    assert raw.decode(head)[0] == (":status", "413")
    assert [f.error_code for f in frames if isinstance(f, RstStreamFrame)] == [ErrorCodes.NO_ERROR]


def test_peer_that_never_reads_keeps_the_outbound_buffer_bounded_upl16() -> None:
    """UPL-16: 100 MiB queued, huge windows, nothing read: at most limit + one frame buffered."""
    limits = H2Limits(max_outbound_buffer=64 * 1024, max_control_backlog=2048)
    raw = attack_server(limits, (SettingsFrame.INITIAL_WINDOW_SIZE, BIG_WINDOW))
    raw.send(WindowUpdateFrame(0, window_increment=BIG_WINDOW - 65535))
    raw.send(raw.headers(1, REQUEST, end_stream=True))
    raw.read()
    role = raw.role
    assert isinstance(role, H2ServerRole)
    role.send_response(1, 200, end_stream=False)
    mib = bytes(1024 * 1024)
    head_room = 200  # the response HEADERS frame
    for _ in range(100):
        role.send_data(1, mib)
        assert role.outbound_pending <= limits.max_outbound_buffer + FRAME + head_room
    assert role.queued_outbound(1) >= 100 * 1024 * 1024 - limits.max_outbound_buffer - FRAME
    # It keeps PINGing within the rate but never reads the answers: cut off.
    for i in range(1000):
        raw.now += 0.2
        if raw.send(PingFrame(0, opaque_data=b"12345678")):
            break
    assert 2048 // 17 <= i <= 2048 // 17 + 1
    bound = limits.max_outbound_buffer + FRAME + head_room + limits.max_control_backlog + 17 + 100
    assert role.outbound_pending <= bound
    frames = check_ended(raw, CALM)
    assert terminated(raw.events)[0].reason == "the peer provokes answers but does not read them"
    assert footprint(role)["queued"] == 0  # the queue was dropped with the connection
    assert sum(len(f.data) for f in frames if isinstance(f, DataFrame)) <= 64 * 1024 + 16384


def test_a_huge_peer_header_table_does_not_grow_ours_upl15() -> None:
    """UPL-15: SETTINGS_HEADER_TABLE_SIZE 1 GiB from the peer; our HPACK encoder stays at 4 KiB."""
    raw = attack_server(None, (SettingsFrame.HEADER_TABLE_SIZE, 2**30))
    raw.decoder.max_allowed_table_size = 2**30  # what the attacker advertised
    role = raw.role
    assert isinstance(role, H2ServerRole)
    for sid in range(1, 400, 2):
        raw.send(raw.headers(sid, REQUEST, end_stream=True))
        role.send_response(sid, 200, [(f"x-unique-{sid}", "v" * 200)])
        head = next(f for f in raw.read() if isinstance(f, HeadersFrame))
        assert (f"x-unique-{sid}", "v" * 200) in raw.decode(head)  # the peer decodes it fine
    table = role._conn.encoder.header_table
    assert table.maxsize == 4096 and table._current_size <= 4096
    assert not role.is_closed


def test_oversize_frame_is_rejected_before_its_body_is_buffered_upl15() -> None:
    """UPL-15: a frame header announcing 1 MiB ends the connection at once (FRAME_SIZE_ERROR)."""
    raw = attack_server()
    header = (1024 * 1024).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")
    raw.send(raw=header)
    check_ended(raw, ErrorCodes.FRAME_SIZE_ERROR)


def test_wrong_preface_is_a_protocol_error_upl3() -> None:
    """UPL-3: a peer that does not start with the client preface is refused."""
    raw = Raw(H2ServerRole(now=NOW))
    raw.role.initiate()
    raw.send(raw=b"GET / HTTP/1.1\r\nHost: cam\r\n\r\n")
    frames = parse_frames(raw.role.data_to_send())
    check_ended(raw, ErrorCodes.PROTOCOL_ERROR, frames)


def test_first_frame_must_be_settings_upl3() -> None:
    """UPL-3: the preface must go on with SETTINGS."""
    raw = Raw(H2ServerRole(now=NOW))
    raw.role.initiate()
    raw.send(PingFrame(0, opaque_data=b"12345678"), raw=PREFACE)
    check_ended(raw, ErrorCodes.PROTOCOL_ERROR, parse_frames(raw.role.data_to_send()))


def test_h2_protocol_errors_become_goaway_and_keep_earlier_events_upl15() -> None:
    """UPL-15: h2's ProtocolError never escapes; events of earlier frames survive."""
    raw = attack_server()
    events = raw.send(raw.headers(1, REQUEST, end_stream=True), raw.headers(2, REQUEST))
    assert [type(e).__name__ for e in events] == [
        "RequestReceived",
        "StreamEnded",
        "ConnectionTerminated",
    ]
    check_ended(raw, ErrorCodes.PROTOCOL_ERROR)


def test_request_trailers_are_delivered_upl16() -> None:
    """UPL-16: a well-formed request with trailers (not an attack) reaches the caller whole."""
    raw = attack_server()
    events = raw.send(raw.headers(1, POST), DataFrame(1, b"payload"))
    events += raw.send(raw.headers(1, [("x-checksum", "abc")], end_stream=True))
    names = [type(e).__name__ for e in events]
    assert names == ["RequestReceived", "DataReceived", "TrailersReceived", "StreamEnded"]
    assert events[2] == TrailersReceived(stream_id=1, headers=[("x-checksum", "abc")])


def test_limits_are_validated_upl15() -> None:
    """UPL-15: impossible limits are a ConfigurationError, not a broken connection."""
    with pytest.raises(ConfigurationError):
        H2Limits(max_frame_size=1000)
    with pytest.raises(ConfigurationError):
        H2Limits(initial_window_size=2**31)
    with pytest.raises(ConfigurationError):
        H2Limits(ping_rate=Rate(0, 10.0))
    with pytest.raises(ConfigurationError):
        H2Limits(max_header_block_size=1000)  # below max_header_list_size


# ------------------------------------------------------------------- the cloud


def test_client_ping_and_settings_floods_are_cut_off_upl15() -> None:
    """UPL-15: the cloud role enforces the same PING and SETTINGS rates."""
    raw = attack_client()
    for _ in range(51):
        raw.send(PingFrame(0, opaque_data=b"12345678"))
    check_ended(raw, CALM)
    raw = attack_client()
    for _ in range(50):
        raw.send(SettingsFrame(0, settings={}))
    check_ended(raw, CALM)


def test_client_rst_stream_flood_is_cut_off_upl16() -> None:
    """UPL-16: a device that resets the cloud's stream 201 times is cut off."""
    raw = attack_client()
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    for i in range(1000):
        if terminated(raw.send(RstStreamFrame(sid, error_code=ErrorCodes.CANCEL))):
            break
    assert i == 200
    assert of(raw.events, StreamReset) == [
        StreamReset(stream_id=sid, error_code=ErrorCodes.CANCEL, remote=True)
    ]
    check_ended(raw, CALM)


def test_client_empty_data_flood_is_cut_off_upl16() -> None:
    """UPL-16: empty DATA frames on a response stream: the 101st ends the connection."""
    raw = attack_client()
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    raw.send(raw.headers(sid, [(":status", "200")]))
    for _ in range(101):
        raw.send(DataFrame(sid, b""))
    check_ended(raw, CALM)


def test_client_continuation_flood_and_hpack_bomb_upl16() -> None:
    """UPL-16: a response head that never ends, or that decodes huge, ends the connection."""
    raw = attack_client()
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    raw.send(HeadersFrame(sid, data=raw.encoder.encode([(":status", "200")])))
    for _ in range(9):
        raw.send(ContinuationFrame(sid, data=b"\x40" * 16384))
    check_ended(raw, CALM)
    assert footprint(raw.role)["h2_header_frames"] <= 9

    raw = attack_client()
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    bomb = raw.encoder.encode([(":status", "200")] + [("x-bomb", "a" * 4000)] * 40)
    raw.send(HeadersFrame(sid, data=bomb, flags=["END_HEADERS"]))
    check_ended(raw, CALM)
    assert not of(raw.events, ResponseReceived)


def test_client_resets_a_response_head_over_the_limit_upl16() -> None:
    """UPL-16: 64 KiB < response head <= 128 KiB: that stream is reset, the rest lives."""
    raw = attack_client()
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    raw.send(raw.headers(sid, [(":status", "200")] + [("x-big", "b" * 4000)] * 17))
    assert of(raw.events, StreamReset) == [
        StreamReset(stream_id=sid, error_code=CALM, remote=False)
    ]
    assert [(f.stream_id, f.error_code) for f in raw.read() if isinstance(f, RstStreamFrame)] == [
        (sid, CALM)
    ]
    assert not raw.role.is_closed and not of(raw.events, ResponseReceived)


def test_client_respects_the_devices_max_concurrent_streams_upl16() -> None:
    """UPL-16: with MAX_CONCURRENT_STREAMS 3 the 4th request raises (status hint 503)."""
    raw = attack_client(None, (SettingsFrame.MAX_CONCURRENT_STREAMS, 3))
    role = raw.role
    assert isinstance(role, H2ClientRole)
    assert [role.send_request("GET", "/", authority="cam") for _ in range(3)] == [1, 3, 5]
    with pytest.raises(LocalProtocolError) as exc:
        role.send_request("GET", "/", authority="cam")
    assert exc.value.status_hint == 503
    raw.send(RstStreamFrame(3, error_code=ErrorCodes.REFUSED_STREAM))
    assert role.send_request("GET", "/", authority="cam") == 7


def test_client_resets_a_response_body_over_max_body_size_upl16() -> None:
    """UPL-16: a response body past max_body_size: RST_STREAM CANCEL, nothing more delivered."""
    raw = attack_client(H2Limits(max_body_size=10_000))
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    raw.send(raw.headers(sid, [(":status", "200")]))
    for _ in range(5):
        raw.send(DataFrame(sid, b"r" * 4000))
    assert len(of(raw.events, DataReceived)) == 2
    assert of(raw.events, StreamReset) == [
        StreamReset(stream_id=sid, error_code=ErrorCodes.CANCEL, remote=False)
    ]
    rst = [(f.stream_id, f.error_code) for f in raw.read() if isinstance(f, RstStreamFrame)]
    assert rst[0] == (sid, ErrorCodes.CANCEL)
    assert not raw.role.is_closed
    assert footprint(raw.role)["role_streams"] == 0


def test_client_upload_to_a_device_that_never_reads_stays_bounded_upl16() -> None:
    """UPL-16: the cloud queues 100 MiB of upload; only limit + one frame is ever buffered."""
    limits = H2Limits(max_outbound_buffer=128 * 1024)
    raw = attack_client(limits, (SettingsFrame.INITIAL_WINDOW_SIZE, BIG_WINDOW))
    raw.send(WindowUpdateFrame(0, window_increment=BIG_WINDOW - 65535))
    role = raw.role
    assert isinstance(role, H2ClientRole)
    sid = role.send_request("POST", "/firmware", authority="cam", end_stream=False)
    mib = bytes(1024 * 1024)
    for _ in range(100):
        role.send_data(sid, mib)
        assert role.outbound_pending <= limits.max_outbound_buffer + FRAME + 200
    assert role.queued_outbound(sid) > 99 * 1024 * 1024
    size = footprint(role)
    assert size["h2_outbound"] == 0 and size["inbound"] == 0


def test_client_rejects_push_promise_upl16() -> None:
    """UPL-16: push is disabled; a PUSH_PROMISE is a PROTOCOL_ERROR."""
    raw = attack_client()
    assert isinstance(raw.role, H2ClientRole)
    sid = raw.role.send_request("GET", "/", authority="cam")
    push = PushPromiseFrame(
        sid, promised_stream_id=2, data=raw.encoder.encode(REQUEST), flags=["END_HEADERS"]
    )
    raw.send(push)
    check_ended(raw, ErrorCodes.PROTOCOL_ERROR)


# ----------------------------------------------------------------- both, at random


def _random_frames(rng: random.Random, encoder: Encoder, server: bool) -> bytes:
    head = REQUEST if server else [(":status", "200")]
    out = bytearray()
    for _ in range(rng.randint(1, 30)):
        sid = rng.choice([0, 1, 2, 3, 5, 99])
        kind = rng.randrange(9)
        frame: Frame
        if kind == 0:
            flags = rng.sample(["END_HEADERS", "END_STREAM"], rng.randint(0, 2))
            frame = HeadersFrame(sid or 1, data=encoder.encode(head), flags=flags)
        elif kind == 1:
            flags = rng.sample(["END_STREAM"], rng.randint(0, 1))
            frame = DataFrame(sid or 1, data=rng.randbytes(rng.randint(0, 3000)), flags=flags)
        elif kind == 2:
            flags = rng.sample(["END_HEADERS"], rng.randint(0, 1))
            frame = ContinuationFrame(sid or 1, data=rng.randbytes(rng.randint(0, 99)), flags=flags)
        elif kind == 3:
            frame = RstStreamFrame(sid or 1, error_code=rng.randrange(14))
        elif kind == 4:
            frame = WindowUpdateFrame(sid, window_increment=rng.randint(1, 2**31 - 1))
        elif kind == 5:
            frame = PingFrame(0, opaque_data=rng.randbytes(8))
        elif kind == 6:
            frame = SettingsFrame(0, settings={rng.randint(1, 6): rng.randint(0, 2**31)})
        elif kind == 7:
            frame = GoAwayFrame(0, last_stream_id=sid, error_code=rng.randrange(14))
        else:
            out += rng.randbytes(rng.randint(1, 40))
            continue
        out += frame.serialize()
    return bytes(out)


def test_random_frames_never_raise_and_stay_bounded_upl15() -> None:
    """UPL-15: 500 seeded random frame sequences, cut at random: events only, never exceptions."""
    rng = random.Random(62676)
    for _ in range(500):
        server = rng.random() < 0.5
        role: H2Role = H2ServerRole(now=NOW) if server else H2ClientRole(now=NOW)
        role.initiate()
        role.data_to_send()
        if isinstance(role, H2ClientRole):
            for _ in range(3):
                role.send_request("GET", "/", authority="cam")
        blob = (PREFACE if server else b"") + SettingsFrame(0).serialize()
        blob += _random_frames(rng, Encoder(), server)
        at, now = 0, NOW
        while at < len(blob):
            n = rng.randint(1, 5000)
            for event in role.receive_data(blob[at : at + n], now):
                if isinstance(role, H2ServerRole) and isinstance(event, RequestReceived):
                    role.send_response(event.stream_id, 200, body=b"x" * rng.randint(0, 50_000))
            role.data_to_send()
            at, now = at + n, now + 0.01
            assert role.inbound_pending <= FRAME
            assert role.outbound_pending <= H2Limits().max_outbound_buffer + FRAME
