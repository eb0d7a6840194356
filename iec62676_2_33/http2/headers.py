"""Layer 3 (sans-IO): the checks of HTTP/2 header blocks received and sent, in one pass (UPL-16; issue 8).

:func:`check_received` applies exactly the rules of h2's ``validate_headers``
(RFC 9113 §8.2 and §8.3; h2 4.x, ``h2.utilities``) to a decoded header block:

* field names: no byte in 0x00-0x20, 0x41-0x5a (upper case) or 0x7f-0xff,
  not empty, no ``:`` except as the first byte;
* field values: no NUL, CR or LF, no leading or trailing SP/HTAB;
* ``te`` only ``trailers``; no connection-specific field (``connection``,
  ``proxy-connection``, ``keep-alive``, ``transfer-encoding``, ``upgrade``);
* pseudo-header fields: only the six known ones, each at most once, all
  before the regular fields, none in trailers; a request has ``:method`` and
  (unless it is an ordinary CONNECT, which must have neither) ``:scheme`` and
  a non-empty ``:path``, never ``:status``, ``:protocol`` only with CONNECT; a
  response has ``:status`` and no request pseudo-header;
* a request (not trailers) has ``:authority`` or ``host``, at most one
  ``host``, and equal values when it has both.

Measured reason: h2 runs these as a chain of eight generators, each looping
over every field and h2 looping over every byte of every name and value in
Python; that was about 18 us of the ~130 us our server role spends on one
small request (``bench/bench_edge.py``, docs/benchmarks.md "Service edge").
Here the byte rules are two compiled regular expressions and the rest one
loop. The roles turn h2's own checks off (``validate_inbound_headers=False``)
and call this on every header block h2 hands them; a property test
(``tests/test_http2_headers.py``) checks that it refuses exactly what h2's
``validate_headers`` refuses.

:func:`prepare_sent` does the same for a block we send: in one loop what h2's
``normalize_outbound_headers`` and ``validate_outbound_headers`` do as a chain
of ten generators (lower-case names, surrounding whitespace stripped,
connection-specific fields dropped, ``authorization``, ``proxy-authorization``
and short ``cookie`` fields never indexed, then ``te``, pseudo-header and
``:authority``/``host``/``:path`` rules). Measured reason: a role's ``_encode``
went from 4.6 to 1.9 us for a 4-field response and from 9.6 to 4.8 us for an
11-field proxied request (timeit, latin-1 encoding included); a property test
(``tests/test_http2_sent_headers.py``) checks that it returns exactly h2's
fields and refuses exactly what h2 refuses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hpack.struct import NeverIndexedHeaderTuple

from ..errors import RemoteProtocolError

__all__ = ["MalformedHeaders", "check_received", "prepare_sent"]

#: A field name: an optional leading ``:``, then at least one byte that is not a control, space,
#: upper-case letter, colon, DEL or non-ASCII byte.
_NAME = re.compile(rb":?[\x21-\x39\x3b-\x40\x5b-\x7e]+")
#: What a field value must not contain: NUL, LF or CR anywhere, SP/HTAB first or last.
_BAD_VALUE = re.compile(rb"[\x00\n\r]|\A[ \t]|[ \t]\Z")
_CONNECTION = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})
_REQUEST_ONLY = frozenset({b":scheme", b":path", b":authority", b":method", b":protocol"})
_COLON = 0x3A
#: Sent never-indexed (HPACK): credentials, and cookies short enough to guess (h2's rule).
_SECURE = frozenset({b"authorization", b"proxy-authorization"})
_SHORT_COOKIE = 20


class MalformedHeaders(RemoteProtocolError):
    """The header block breaks RFC 9113 §8.2/§8.3 (a connection error, as h2 treats it)."""


class _Head:
    """The RFC 9113 §8.2/§8.3 rules one header block is checked against as its fields go by (shared by
    :func:`check_received` and :func:`prepare_sent`). A method call per field costs about 0.4 µs per
    request head more than the rules written inline twice (timeit: 1.6 -> 2.0 µs to prepare, 4.0 -> 4.5 µs
    to check), some 0.15 % of a proxied call."""

    __slots__ = ("authority", "host", "method", "pseudo", "regular", "request")

    def __init__(self, *, request: bool) -> None:
        self.request = request
        self.pseudo: set[bytes] = set()
        self.regular = False
        self.method: bytes | None = None
        self.authority: bytes | None = None
        self.host: bytes | None = None

    def field(self, name: bytes, value: bytes) -> None:
        """One field (``name`` lower-case, non-empty, not connection-specific)."""
        if name[0] == _COLON:
            if name in self.pseudo:
                raise MalformedHeaders(f"duplicate pseudo-header field {name!r}")
            if self.regular:
                raise MalformedHeaders(f"pseudo-header field out of sequence: {name!r}")
            if name not in _PSEUDO:
                raise MalformedHeaders(f"unknown pseudo-header field {name[:64]!r}")
            self.pseudo.add(name)
            if name == b":method":
                self.method = value
            elif name == b":authority":
                self.authority = value
            elif name == b":path" and self.request and not value:
                raise MalformedHeaders("empty :path")
            return
        self.regular = True
        if name == b"te" and value.lower() != b"trailers":
            raise MalformedHeaders("te other than 'trailers'")
        if name == b"host" and self.request:
            if self.host is not None:
                raise MalformedHeaders("several host header fields")
            self.host = value

    def end(self, *, response: bool, trailer: bool) -> None:
        """After the last field: the pseudo-header set, and a request's :authority and host."""
        _check_pseudo(self.pseudo, self.method, response=response, trailer=trailer)
        if self.request:
            if self.authority is None and self.host is None:
                raise MalformedHeaders("a request without :authority or host")
            if self.authority is not None and self.host is not None and self.authority != self.host:
                raise MalformedHeaders("a request whose :authority and host differ")


def check_received(headers: Sequence[tuple[bytes, bytes]], *, response: bool, trailer: bool) -> None:
    """Raise :class:`MalformedHeaders` unless h2's ``validate_headers`` would accept ``headers``.

    ``response``: a response (or informational response) head; ``trailer``:
    a trailer block; neither: a request head.
    """
    head = _Head(request=not response and not trailer)
    for name, value in headers:
        if not _NAME.fullmatch(name):
            raise MalformedHeaders(f"illegal header name {name[:64]!r}")
        if value and _BAD_VALUE.search(value):
            raise MalformedHeaders(f"illegal value of header {name[:64]!r}")
        if name in _CONNECTION:
            raise MalformedHeaders(f"connection-specific header field {name!r}")
        head.field(name, value)
    head.end(response=response, trailer=trailer)


def prepare_sent(headers: Sequence[tuple[bytes, bytes]], *, response: bool) -> list[tuple[bytes, bytes]]:
    """The fields h2's ``normalize_outbound_headers`` + ``validate_outbound_headers`` would send
    for a request (``response`` False) or response head; :class:`MalformedHeaders` where h2 raises."""
    sent: list[tuple[bytes, bytes]] = []
    head = _Head(request=not response)
    for raw_name, raw_value in headers:
        name = raw_name.lower().strip()
        value = raw_value.strip()
        if name in _CONNECTION:
            continue  # dropped, as h2 does
        if not name:
            raise MalformedHeaders("an empty header name")
        head.field(name, value)
        if name in _SECURE or (name == b"cookie" and len(value) < _SHORT_COOKIE):
            sent.append(NeverIndexedHeaderTuple(name, value))
        else:
            sent.append((name, value))
    head.end(response=response, trailer=False)
    return sent


def _check_pseudo(pseudo: set[bytes], method: bytes | None, *, response: bool, trailer: bool) -> None:
    if trailer:
        if pseudo:
            raise MalformedHeaders("pseudo-header fields in trailers")
        return
    if response:
        if b":status" not in pseudo:
            raise MalformedHeaders("a response without :status")
        if pseudo & _REQUEST_ONLY:
            raise MalformedHeaders("request pseudo-header fields in a response")
        return
    if b":method" not in pseudo:
        raise MalformedHeaders("a request without :method")
    connect = method == b"CONNECT"
    if connect and b":protocol" not in pseudo:  # ordinary CONNECT (RFC 9113 §8.5)
        if b":scheme" in pseudo or b":path" in pseudo:
            raise MalformedHeaders("an ordinary CONNECT with :scheme or :path")
    elif b":scheme" not in pseudo or b":path" not in pseudo:
        raise MalformedHeaders("a request without :scheme or :path")
    if b":status" in pseudo:
        raise MalformedHeaders(":status in a request")
    if not connect and b":protocol" in pseudo:
        raise MalformedHeaders(":protocol in a request other than CONNECT")
