"""UPL-16: the roles' own checks of header blocks (issue 8, the service edge).

The roles turned h2's inbound header validation off in favour of
:func:`~iec62676_2_33.http2.headers.check_received` (one pass instead of eight
generators) and h2's second outbound normalisation off (the roles' ``_encode``
does it once). These tests pin that nothing was lost: the check refuses
exactly what h2's ``validate_headers`` refuses (property test against h2
itself), a malformed request still ends the connection with PROTOCOL_ERROR,
``authorization`` still goes out never-indexed, and hpack's per-header debug
log (which would print credentials) stays silent.
"""

from __future__ import annotations

import logging

import h2.exceptions
import pytest
from h2.errors import ErrorCodes
from h2.utilities import HeaderValidationFlags, validate_headers
from helpers import parse_frames
from hpack import Decoder, Encoder
from hpack.struct import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame, HeadersFrame, SettingsFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from iec62676_2_33.http2 import PREFACE, ConnectionTerminated, H2ClientRole, H2ServerRole, RequestReceived
from iec62676_2_33.http2.headers import MalformedHeaders, check_received

NOW = 10.0

NAMES = [b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b":custom", b":", b"::x",
         b"host", b"te", b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection",
         b"content-type", b"x-a", b"X-Upper", b"a:b", b"", b"sp ace", b"tab\t", b"del\x7f", b"\xc3\xa9", b"cookie"]
VALUES = [b"", b"GET", b"POST", b"CONNECT", b"http", b"/", b"/p", b"cam", b"other", b"trailers", b"TrailerS",
          b"gzip", b"200", b" lead", b"trail ", b"\tx", b"x\t", b"a\r\nb", b"cr\r", b"lf\n", b"nul\x00", b"\xff"]
VALID_REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"cam"), (b":path", b"/")]

field = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES))
random_block = st.lists(field, max_size=8)
# Mostly-valid requests with a few changes, so the accepting side is exercised too.
mutated_request = st.tuples(st.permutations(VALID_REQUEST), st.lists(field, max_size=3), st.integers(0, 4)).map(
    lambda t: [*t[0][: 4 - t[2] % 2], *t[1]])
KINDS = {"request": (False, False), "response": (True, False), "trailer": (False, True)}


def h2_accepts(headers: list[tuple[bytes, bytes]], *, response: bool, trailer: bool) -> bool:
    flags = HeaderValidationFlags(is_client=response, is_trailer=trailer, is_response_header=response,
                                  is_push_promise=False)
    try:
        list(validate_headers(headers, flags))
    except h2.exceptions.ProtocolError:
        return False
    return True


def we_accept(headers: list[tuple[bytes, bytes]], *, response: bool, trailer: bool) -> bool:
    try:
        check_received(headers, response=response, trailer=trailer)
    except MalformedHeaders:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@given(st.one_of(random_block, mutated_request), st.sampled_from(sorted(KINDS)))
def test_check_received_refuses_exactly_what_h2_refuses_upl16(headers: list[tuple[bytes, bytes]], kind: str) -> None:
    """UPL-16: for any header block, request, response or trailers, the one-pass check and h2's
    ``validate_headers`` agree on accept/refuse."""
    response, trailer = KINDS[kind]
    assert we_accept(headers, response=response, trailer=trailer) == h2_accepts(
        headers, response=response, trailer=trailer)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_property_test_sees_both_outcomes_upl16(kind: str) -> None:
    """UPL-16: sanity of the property test's inputs: a well-formed block is accepted and an
    upper-case name refused, by both checks."""
    response, trailer = KINDS[kind]
    good = {"request": VALID_REQUEST, "response": [(b":status", b"200")], "trailer": [(b"x-a", b"1")]}[kind]
    bad = [*good, (b"X-Upper", b"1")]
    assert we_accept(good, response=response, trailer=trailer) and h2_accepts(good, response=response,
                                                                              trailer=trailer)
    assert not we_accept(bad, response=response, trailer=trailer)
    assert not h2_accepts(bad, response=response, trailer=trailer)


def _server() -> tuple[H2ServerRole, Encoder]:
    role = H2ServerRole(now=NOW)
    role.initiate()
    role.receive_data(PREFACE + SettingsFrame(0).serialize(), NOW)
    role.data_to_send()
    return role, Encoder()


@pytest.mark.parametrize("bad", [("X-Upper", "1"), ("connection", "close"), ("te", "gzip"), ("x-a", " lead"),
                                 (":custom", "1")])
def test_a_malformed_request_ends_the_connection_with_protocol_error_upl16(bad: tuple[str, str]) -> None:
    """UPL-16: a request head h2 would refuse ends the connection with GOAWAY PROTOCOL_ERROR and a
    local ConnectionTerminated; the application never sees the request; a good one before it is
    delivered."""
    role, encoder = _server()
    good = HeadersFrame(1, data=encoder.encode([(n.decode(), v.decode()) for n, v in VALID_REQUEST]),
                        flags=["END_HEADERS", "END_STREAM"])
    fields = [(":method", "GET"), (":scheme", "http"), (":authority", "cam"), (":path", "/"), bad]
    if bad[0].startswith(":"):
        fields.insert(0, fields.pop())
    block = HeadersFrame(3, data=encoder.encode(fields), flags=["END_HEADERS", "END_STREAM"])
    events = role.receive_data(good.serialize() + block.serialize(), NOW)
    requests = [e for e in events if isinstance(e, RequestReceived)]
    assert [r.stream_id for r in requests] == [1]
    ends = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert len(ends) == 1 and ends[0].local and ends[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert [f.error_code for f in parse_frames(role.data_to_send()) if isinstance(f, GoAwayFrame)] == [
        ErrorCodes.PROTOCOL_ERROR]
    assert role.is_closed


def test_authorization_goes_out_never_indexed_and_normalised_upl14() -> None:
    """UPL-14: the cloud's request head carries ``authorization`` as a never-indexed HPACK field
    (the roles normalise outbound headers once, h2 no longer does it again), names lower-cased
    and values trimmed."""
    client = H2ClientRole(now=NOW)
    client.initiate()
    server = H2ServerRole(now=NOW)
    server.initiate()
    server.receive_data(client.data_to_send(), NOW)
    client.receive_data(server.data_to_send(), NOW)
    client.send_request("GET", "/", [("Authorization", "Bearer secret-token"), ("X-A", " v ")], authority="cam")
    heads = [f for f in parse_frames(client.data_to_send().removeprefix(PREFACE)) if isinstance(f, HeadersFrame)]
    decoded = list(Decoder().decode(heads[-1].data, raw=True))
    auth = [h for h in decoded if h[0] == b"authorization"]
    assert auth == [(b"authorization", b"Bearer secret-token")]
    assert isinstance(auth[0], NeverIndexedHeaderTuple)
    assert (b"x-a", b"v") in decoded


def test_hpack_debug_log_carries_no_header_values_upl14(caplog: pytest.LogCaptureFixture) -> None:
    """UPL-14: with DEBUG logging on, encoding and decoding a request with a bearer token logs
    nothing of it (hpack would log every header it encodes or decodes)."""
    caplog.set_level(logging.DEBUG)
    client = H2ClientRole(now=NOW)
    client.initiate()
    server = H2ServerRole(now=NOW)
    server.initiate()
    server.receive_data(client.data_to_send(), NOW)
    client.receive_data(server.data_to_send(), NOW)
    client.send_request("GET", "/", [("authorization", "Bearer secret-token")], authority="cam")
    events = server.receive_data(client.data_to_send(), NOW)
    assert any(isinstance(e, RequestReceived) and ("authorization", "Bearer secret-token") in e.headers
               for e in events)
    assert "secret-token" not in caplog.text
