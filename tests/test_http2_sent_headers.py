"""UPL-16, UPL-14: the one-pass preparation of the header blocks the roles send.

The roles normalise and check an outbound header block once, with
:func:`~iec62676_2_33.http2.headers.prepare_sent`, instead of h2's chain of
``normalize_outbound_headers`` and ``validate_outbound_headers`` generators.
These tests pin that nothing changed: for any block it sends exactly the fields
h2 would send (never-indexed ones included) and refuses exactly what h2 refuses
(property test against h2 itself); a role refuses such a block with a
``LocalProtocolError`` and sends nothing; and a received frame's ``repr`` (which
h2 formats on every frame) stays short whatever the frame carries.
"""

from __future__ import annotations

import h2.exceptions
import pytest
from h2.utilities import HeaderValidationFlags, normalize_outbound_headers, validate_outbound_headers
from hpack.struct import NeverIndexedHeaderTuple
from hyperframe.frame import DataFrame, HeadersFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from iec62676_2_33.errors import LocalProtocolError
from iec62676_2_33.http2 import H2ClientRole, H2ServerRole
from iec62676_2_33.http2.headers import MalformedHeaders, prepare_sent
from iec62676_2_33.http2.role import _BRIEF, _FrameBuffer

NOW = 10.0

NAMES = [b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b":custom", b"",
         b" ", b"host", b"Host", b" host ", b"te", b"TE", b"connection", b"Keep-Alive", b"transfer-encoding",
         b"upgrade", b"proxy-connection", b"content-type", b"X-A", b"authorization", b"Proxy-Authorization",
         b"cookie", b"Cookie"]
VALUES = [b"", b" ", b"GET", b"CONNECT", b"POST", b"http", b"/", b"/p", b"cam", b" cam ", b"other", b"trailers",
          b" Trailers\t", b"gzip", b"200", b"a=b", b"id=0123456789abcdef", b"id=0123456789abcdefg",
          b"session=0123456789abcdef0123", b"\tx\r\n", b"\xff"]
VALID_REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"cam"), (b":path", b"/")]
KINDS = {"request": False, "response": True}

field = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES))
random_block = st.lists(field, max_size=8)
mutated_request = st.tuples(st.permutations(VALID_REQUEST), st.lists(field, max_size=3), st.integers(0, 4)).map(
    lambda t: [*t[0][: 4 - t[2] % 2], *t[1]])
mutated_response = st.lists(field, max_size=3).map(lambda extra: [(b":status", b"200"), *extra])


def h2_sends(headers: list[tuple[bytes, bytes]], *, response: bool) -> list[tuple[bytes, bytes]] | None:
    """What h2's outbound normalisation and validation produce; None where h2 raises."""
    flags = HeaderValidationFlags(is_client=not response, is_trailer=False, is_response_header=response,
                                  is_push_promise=False)
    try:
        return list(validate_outbound_headers(normalize_outbound_headers(headers, flags), flags))
    except (h2.exceptions.ProtocolError, IndexError):  # IndexError: h2 fails on an empty name
        return None


def we_send(headers: list[tuple[bytes, bytes]], *, response: bool) -> list[tuple[bytes, bytes]] | None:
    try:
        return prepare_sent(headers, response=response)
    except MalformedHeaders:
        return None


def _typed(fields: list[tuple[bytes, bytes]] | None) -> list[tuple[type, bytes, bytes]] | None:
    return None if fields is None else [(type(f), f[0], f[1]) for f in fields]


@settings(max_examples=3000, deadline=None)
@given(st.one_of(random_block, mutated_request, mutated_response), st.sampled_from(sorted(KINDS)))
def test_prepare_sent_sends_and_refuses_exactly_what_h2_does_upl16(headers: list[tuple[bytes, bytes]],
                                                                    kind: str) -> None:
    """UPL-16: for any request or response head, the one-pass preparation gives the same fields
    as h2 (same order, values, never-indexed marks), and refuses where h2 raises."""
    response = KINDS[kind]
    assert _typed(we_send(headers, response=response)) == _typed(h2_sends(headers, response=response))


def test_the_property_test_sees_both_outcomes_upl16() -> None:
    """UPL-16: sanity of the inputs: a normalised request is sent and a request without
    :authority or host refused, by both."""
    messy = [*VALID_REQUEST, (b" Cookie", b"a=b "), (b"Connection", b"close")]
    ours, theirs = we_send(messy, response=False), h2_sends(messy, response=False)
    assert ours == theirs == [*VALID_REQUEST, (b"cookie", b"a=b")]
    assert ours is not None and isinstance(ours[-1], NeverIndexedHeaderTuple)
    no_authority = [f for f in VALID_REQUEST if f[0] != b":authority"]
    assert we_send(no_authority, response=False) is None and h2_sends(no_authority, response=False) is None


@pytest.mark.parametrize("bad", [("te", "gzip"), (":custom", "1"), ("host", "other")])
def test_a_role_refuses_a_bad_request_head_and_sends_nothing_upl16(bad: tuple[str, str]) -> None:
    """UPL-16: the client role refuses a head h2 would refuse with LocalProtocolError, before
    anything is queued."""
    client = H2ClientRole(now=NOW)
    client.initiate()
    client.data_to_send()
    with pytest.raises(LocalProtocolError, match="headers not allowed in HTTP/2"):
        client.send_request("GET", "/", [bad], authority="cam")
    assert client.data_to_send() == b""


def test_a_role_refuses_a_request_pseudo_header_in_a_response_upl16() -> None:
    """UPL-16: the server role refuses a response head with a request pseudo-header."""
    client, server = H2ClientRole(now=NOW), H2ServerRole(now=NOW)
    client.initiate()
    server.initiate()
    server.receive_data(client.data_to_send(), NOW)
    client.receive_data(server.data_to_send(), NOW)
    sid = client.send_request("GET", "/", authority="cam")
    server.receive_data(client.data_to_send(), NOW)
    with pytest.raises(LocalProtocolError, match="headers not allowed in HTTP/2"):
        server.send_response(sid, 200, [(":path", "/")])


def test_received_frames_have_a_short_repr_whatever_they_carry() -> None:
    """Frames handed to h2 by our frame buffer are still their hyperframe types (h2 dispatches on
    them) and their repr names type and stream only, however large the payload."""
    buffer = _FrameBuffer()
    buffer.max_frame_size = 1 << 20
    buffer.add_data(HeadersFrame(1, data=b"\x82", flags=["END_HEADERS"]).serialize()
                    + DataFrame(1, data=b"x" * 100_000).serialize())
    frames = list(buffer)
    assert [type(f) for f in frames] == [_BRIEF[HeadersFrame], _BRIEF[DataFrame]]
    assert isinstance(frames[1], DataFrame) and frames[1].data == b"x" * 100_000
    assert [repr(f) for f in frames] == ["HeadersFrame(stream_id=1)", "DataFrame(stream_id=1)"]
