"""Layer 1 (sans-IO): the little RTSP a tunnel through the uplink must know (STR-1 … STR-4).

No asyncio, socket or clock here: bytes in, units out; the caller passes ``now``.

Theory of operation
-------------------
An RTSP session through the uplink is a byte stream (DESIGN.md "Media is bytes on
streams"); the relays parse it only as far as the standard demands:

* :class:`RtspSplitter` cuts one direction of a session into units: whole RTSP
  messages (head up to :data:`MAX_HEAD` bytes, body by ``Content-Length`` up to
  :data:`MAX_BODY`) and runs of interleaved binary frames (``$``, channel, 16-bit
  length, payload: RTP/RTCP over TCP), which pass through untouched and joined.
  Anything else is garbage: :class:`RtspError` (status 400). Heads are read
  strictly (CRLF line ends only, no other CR, LF or control character, one
  ASCII ``Content-Length``), because what the relays forward is written anew
  from this parse: a bare LF the parser let through could hide a second
  request that the camera runs and the relay never saw.
* :class:`UrlRewriter` maps the URLs a player names (the cloud's front, or the
  device's own stream URI: whatever ends in ``/<token>``) to the camera's URL in
  requests, and the camera's URL back in everything the camera sends (``Content-Base``,
  ``Content-Location``, ``Location``, ``RTP-Info``, the start line of its own
  requests, any body), so the player never sees the camera's address -- in
  whatever form the camera writes its URL (default port or not, host case and
  IPv6 spelling, user information, trailing ``/``, or the address its host name
  resolved to: :meth:`UrlRewriter.add_alias`). Other URLs of the camera's host
  lose the camera's authority; SDP host addresses and ``Transport``'s
  ``source``/``destination`` are dropped. The camera URL's query stays the
  camera's: the player neither sees its items nor sets them again. A SETUP goes
  on with only the transports a tunnel carries (RTP interleaved on the RTSP
  connection, no ``destination``), else 461. Camera-side credentials are added
  to each request where configured (the caller's ``authorization(request)``;
  never logged).
* RTSP over HTTP (STR-2): :class:`Base64Decoder` decodes the POST channel (each
  client write may be a padded base64 piece of its own); :class:`CookieTable`
  pairs the GET and POST channels by ``x-sessioncookie``, bounded in size and with
  a deadline for the partner.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote, urlsplit

from ..errors import RemoteProtocolError
from .admission import source_key

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "POST_CONTENT_LENGTH",
    "SUBPROTOCOL",
    "TUNNEL_CONTENT_TYPE",
    "TUNNEL_PATH",
    "Base64Decoder",
    "CookieTable",
    "Interleaved",
    "RtspError",
    "RtspMessage",
    "RtspSplitter",
    "UrlRewriter",
    "basic_authorization",
    "cookie_owner",
    "rtsp_response",
    "stream_key",
]

#: The WebSocket subprotocol of RTSP over WebSocket (ONVIF Streaming).
SUBPROTOCOL = "rtsp.onvif.org"
#: Where the device serves tunnelled RTSP: ``/onvif/rtsp/<media token>``.
TUNNEL_PATH = "/onvif/rtsp/"
#: Content type of both channels of RTSP over HTTP.
TUNNEL_CONTENT_TYPE = "application/x-rtsp-tunnelled"
#: The POST channel's declared length: large enough for a session's life (STR-2; a player
#: sends only requests and RTCP receiver reports, a few bytes a second) and within the
#: device's HTTP/2 request body limit (H2Limits.max_body_size, 16 MiB).
POST_CONTENT_LENGTH = 16 * 1024 * 1024
#: Largest RTSP message head; a larger one is answered 400 and the connection closed.
MAX_HEAD = 64 * 1024
#: Largest RTSP message body (SDP, parameters).
MAX_BODY = 1024 * 1024


class RtspError(RemoteProtocolError):
    """The peer sent something that is not RTSP (``status_hint``: the RTSP status to answer)."""


@dataclass(frozen=True)
class Interleaved:
    """One or more whole interleaved binary frames, as received."""

    data: bytes


@dataclass
class RtspMessage:
    """A request (``method``, ``target``) or a response (``status``) with headers and body."""

    start: str  # the start line, without CRLF
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start.startswith("RTSP/")

    @property
    def target(self) -> str:
        """A request's URI (``""`` for a response)."""
        parts = self.start.split(" ")
        return parts[1] if len(parts) == 3 and not self.is_response else ""

    @property
    def method(self) -> str:
        return "" if self.is_response else self.start.split(" ", 1)[0]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def set_header(self, name: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()] + [(name, value)]

    def encode(self) -> bytes:
        if self.body or self.header("content-length") is not None:
            self.set_header("Content-Length", str(len(self.body)))
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        return f"{self.start}\r\n{head}\r\n".encode() + self.body  # UTF-8, as the head was read


def rtsp_response(status: int, reason: str | None, cseq: str | None) -> bytes:
    """A bodyless RTSP response the relays answer themselves (404, 403, 400 ...); ``reason`` ``None``: the
    standard phrase of ``status``."""
    reason = reason or _REASONS.get(status, "Error")
    msg = RtspMessage(f"RTSP/1.0 {status} {reason}", [("CSeq", cseq)] if cseq else [])
    msg.headers.append(("Content-Length", "0"))
    return msg.encode()


#: RFC 2326 §7.1.1 reason phrases of the statuses the relays answer themselves.
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            461: "Unsupported Transport", 503: "Service Unavailable"}

Unit = Interleaved | RtspMessage


class RtspSplitter:
    """One direction of an RTSP session, cut into :class:`RtspMessage` and :class:`Interleaved`."""

    def __init__(self, *, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self._buf = bytearray()
        self._message: RtspMessage | None = None  # head parsed, body incomplete
        self._body_left = 0
        self._scanned = 0  # bytes of an incomplete head already searched for its end

    @property
    def buffered(self) -> int:
        """Bytes held until their unit is complete (at most one head or body plus one frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Unit]:
        """The complete units ``data`` finished; raises :class:`RtspError` on garbage."""
        buf = self._buf
        buf += data
        out: list[Unit] = []
        pos = 0
        frames_from = -1
        while pos < len(buf):
            if self._message is not None:
                if len(buf) - pos < self._body_left:
                    break
                msg, self._message = self._message, None
                msg.body = bytes(buf[pos:pos + self._body_left])
                pos += self._body_left
                out.append(msg)
                continue
            if buf[pos] == 0x24:  # "$": an interleaved frame
                if len(buf) - pos < 4:
                    break
                end = pos + 4 + int.from_bytes(buf[pos + 2:pos + 4], "big")
                if end > len(buf):
                    break
                if frames_from < 0:
                    frames_from = pos
                pos = end
                continue
            if frames_from >= 0:
                out.append(Interleaved(bytes(buf[frames_from:pos])))
                frames_from = -1
            if buf[pos] in b"\r\n":  # stray line ends between messages
                pos += 1
                continue
            # a head that arrives in pieces is searched once, not again from its start at each piece
            end = buf.find(b"\r\n\r\n", pos + self._scanned, pos + self.max_head + 4)
            if end < 0:
                if len(buf) - pos > self.max_head:
                    raise RtspError(f"RTSP head over {self.max_head} bytes", status_hint=400)
                self._check_start(buf[pos])
                self._scanned = max(0, len(buf) - pos - 3)
                break
            self._scanned = 0
            msg = self._parse_head(bytes(buf[pos:end]))
            pos = end + 4
            lengths = [v.strip() for k, v in msg.headers if k.lower() == "content-length"]
            if not lengths or lengths == ["0"]:
                out.append(msg)
                continue
            if len(lengths) > 1 or not _DIGITS.fullmatch(lengths[0]) or int(lengths[0]) > self.max_body:
                raise RtspError(f"bad or too large Content-Length {lengths[0][:20]!r}", status_hint=400)
            self._message, self._body_left = msg, int(lengths[0])
        if frames_from >= 0:
            out.append(Interleaved(bytes(buf[frames_from:pos])))
        del buf[:pos]
        return out

    @staticmethod
    def _check_start(first: int) -> None:
        """Fail at once on bytes that cannot start an RTSP message (no need to wait for 64 KiB):
        methods are upper-case tokens and responses start with ``RTSP/``."""
        if not 0x41 <= first <= 0x5A:
            raise RtspError("not an RTSP message", status_hint=400)

    @staticmethod
    def _parse_head(raw: bytes) -> RtspMessage:
        """A head as RFC 2326 writes it, or :class:`RtspError`: lines end in CRLF only, and no line holds
        another CR, LF or control character. What the relay forwards is re-written from this parse, so a
        bare LF (which a camera may take for a line end) must not hide a second request in a header."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RtspError("RTSP head is not UTF-8", status_hint=400) from None
        lines = text.split("\r\n")
        start = lines[0]
        if start.startswith("RTSP/"):
            if not _STATUS_LINE.fullmatch(start):
                raise RtspError("bad RTSP status line", status_hint=400)
        elif not _REQUEST_LINE.fullmatch(start):
            raise RtspError("bad RTSP request line", status_hint=400)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
                raise RtspError("bad RTSP header line", status_hint=400)
            headers.append((name, value.strip(" \t")))
        return RtspMessage(start, headers)


#: RFC 2326 §6.1 and §7.1, with the method a token of upper-case letters, digits, ``_`` and ``-`` (``GET_PARAMETER``)
#: and the URI free of white space and control characters.
_REQUEST_LINE = re.compile(r"[A-Z][A-Z0-9_-]* [^\x00-\x20\x7f]+ RTSP/[0-9]\.[0-9]")
_STATUS_LINE = re.compile(r"RTSP/[0-9]\.[0-9] [0-9]{3}( [^\x00-\x08\x0a-\x1f\x7f]*)?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Control characters other than horizontal tab (CR and LF included): none belongs in a header value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,10}")


def _climbs(suffix: str) -> bool:
    """Whether what follows a stream's URL (a control path such as ``/trackID=0``, a query) names
    ``.`` or ``..`` segments, also percent-encoded, or a backslash: appended to the camera's URL it
    would reach paths of the camera's server that were never handed out."""
    path = unquote(suffix.partition("?")[0])
    return "\\" in path or any(segment in (".", "..") for segment in path.split("/"))


class UrlRewriter:
    """Player URLs ↔ the camera's URL for one media source (see the module docstring)."""

    def __init__(self, token: str, camera_url: str, *,
                 authorization: Callable[[RtspMessage], str | None] | None = None) -> None:
        self.token = token
        self.camera_url = camera_url.rstrip("/")
        self.authorization = authorization
        self.client_base: str | None = None
        camera = stream_key(self.camera_url)
        self._camera_key = camera
        #: Hosts that are the camera's: its URL's, and any :meth:`add_alias` gave.
        self._hosts = {camera[0][1]} if camera is not None else set()
        self._camera_query = _query_pairs(camera[2]) if camera is not None else []

    def add_alias(self, host: str) -> None:
        """``host`` is the camera too (the address its name resolved to): hidden like the configured one."""
        self._hosts.add(_host_key(host))

    def request(self, msg: RtspMessage) -> RtspMessage:
        """Point a player's request at the camera; raises RtspError: 404 for another stream's URL, 400 for
        ``*`` where RFC 2326 has none, 461 for a SETUP whose transports a tunnel cannot carry."""
        target = msg.target
        if target == "*":
            if msg.method not in _STAR_METHODS:
                raise RtspError(f"{msg.method} needs the stream's URL, not '*'", status_hint=400)
        elif target:
            base = self._client_base(target)
            if base is None:
                raise RtspError(f"{target[:200]!r} names no stream of media source {self.token!r}", status_hint=404)
            suffix = target[len(base):]
            if _climbs(suffix):
                raise RtspError(f"{target[:200]!r} leaves the stream of media source {self.token!r}", status_hint=404)
            parts = msg.start.split(" ")
            msg.start = f"{parts[0]} {self._camera(suffix)} {parts[2]}"
        if msg.method == "SETUP" and (offered := msg.header("transport")) is not None:
            transport = _tunnel_transports(offered)
            if transport is None:
                raise RtspError("a tunnel carries RTP only interleaved on the RTSP connection (RTP/AVP/TCP)",
                                status_hint=461)
            msg.set_header("Transport", transport)
        msg.headers = [(k, v) for k, v in msg.headers if k.lower() != "authorization"]
        credentials = self.authorization(msg) if self.authorization is not None else None
        if credentials is not None:
            msg.headers.append(("Authorization", credentials))
        return msg

    def response(self, msg: RtspMessage) -> RtspMessage:
        """What the camera sends, as the player may see it: the camera's URLs replaced in the headers that
        carry URLs, in a request's start line (a server's ANNOUNCE or SET_PARAMETER) and in any body; the
        camera's host hidden wherever else a URL names it; ``source``/``destination`` dropped from
        ``Transport``; the host addresses of SDP replaced (:func:`_hide_sdp_addresses`).

        The camera's URL is recognised in any form naming the same stream (host case, the
        default port written or not, user information, a trailing ``/``, IPv6 in any spelling),
        so a camera that answers ``rtsp://10.0.0.5:554/stream/`` for ``rtsp://user:pw@10.0.0.5/stream``
        does not show the player its address."""
        base = self.client_base
        if base is not None and not msg.is_response and msg.target:
            parts = msg.start.split(" ")
            msg.start = f"{parts[0]} {self._rewrite(parts[1], base)} {parts[2]}"
        msg.headers = [(k, self._header(k.lower(), v, base)) for k, v in msg.headers]
        if msg.body:
            text = msg.body.decode("latin-1")
            if base is not None:
                text = self._rewrite(text, base)
            msg.body = _hide_sdp_addresses(text).encode("latin-1")
        return msg

    def _header(self, name: str, value: str, base: str | None) -> str:
        if name == "transport":
            return _drop_transport_addresses(value)
        if base is not None and name in _URL_HEADERS:
            return self._rewrite(value, base)
        return value

    def _rewrite(self, text: str, base: str) -> str:
        camera = self._camera_key
        front = urlsplit(base)
        front_authority = front.hostname or ""
        if ":" in front_authority:
            front_authority = f"[{front_authority}]"
        front_authority += f":{front.port}" if front.port else ""

        def swap(found: re.Match[str]) -> str:
            url = found.group(0)
            key = stream_key(url)
            if camera is None or key is None or key[0][1] not in self._hosts:
                return url
            stem = camera[1].rstrip("/")
            same_server = key[0][0] == camera[0][0] and key[0][2] == camera[0][2]  # the host is one of _hosts
            if same_server and key[1].startswith(stem) and key[1][len(stem):len(stem) + 1] in ("", "/"):
                # the camera's own query (rtsp://cam/media.amp?videocodec=h264 answers .../stream=0?videocodec=h264)
                # is the camera's business: the player's URLs go without it, requests get it back (:meth:`_camera`)
                query = _join_query(_without_keys(_query_pairs(key[2]), self._camera_query))
                return base + key[1][len(stem):] + (f"?{query}" if query else "")
            # another path or port of the camera's host: useless to the player, but not its address
            return f"{key[0][0]}://{front_authority}{key[1]}"

        return _URL.sub(swap, text)

    def _camera(self, suffix: str) -> str:
        """The camera's URL for the player's ``suffix`` (after the stream's URL): the camera URL's query, if it
        has one, stays at the end (``/stream=0`` -> ``…/media.amp/stream=0?videocodec=h264``), and the player
        cannot set again what it sets (``?channel=5`` after ``?channel=1`` could name another camera of an NVR)."""
        path, mark, query = self.camera_url.partition("?")
        extra_path, _, extra_query = suffix.partition("?")
        if not mark:
            return self.camera_url + suffix
        extra = _join_query(_without_keys(_query_pairs(extra_query), self._camera_query))
        return f"{path.rstrip('/')}{extra_path}?{query}" + (f"&{extra}" if extra else "")

    def _client_base(self, target: str) -> str | None:
        """The player's URL of this stream: ``target`` up to and including its ``/<token>`` segment."""
        base = self.client_base
        if base is not None and (target == base or target.startswith((base + "/", base + "?"))):
            return self.client_base
        try:
            path = urlsplit(target).path
            at_path = target.index(path) if path else -1
        except ValueError:
            return None
        marker = "/" + self.token
        at = path.rfind(marker)
        while at >= 0 and not (at + len(marker) == len(path) or path[at + len(marker)] == "/"):
            at = path.rfind(marker, 0, at)
        if at < 0 or self.client_base is not None:
            return None
        self.client_base = target[:at_path + at + len(marker)] if path else None
        return self.client_base


#: Methods RFC 2326 lets name the server as a whole (``*``) rather than a stream.
_STAR_METHODS = frozenset({"OPTIONS", "GET_PARAMETER", "SET_PARAMETER"})
_URL_HEADERS = frozenset({"content-base", "content-location", "location", "rtp-info"})
#: A URL inside a header value or a body (ends at white space and at the separators of RTP-Info): RTSP in its
#: forms, and HTTP, which a camera may name its own host with too.
_URL = re.compile(r"(?:rtsp[sut]?|https?)://[^\s;,\"'<>]+", re.IGNORECASE)
_DEFAULT_PORTS = {"rtsp": 554, "rtspu": 554, "rtspt": 554, "rtsps": 322, "http": 80, "https": 443}


def _tunnel_transports(value: str) -> str | None:
    """The transport specifications of a SETUP that a tunnel carries: RTP on the RTSP connection itself (lower
    transport TCP), without a ``destination`` (RFC 2326 §12.39); ``None`` when none is left. UDP and multicast
    cannot pass the tunnel, and would let a player point the camera's packets at another host."""
    kept = []
    for spec in value.split(","):
        params = [p.strip() for p in spec.split(";") if p.strip()]
        if params and params[0].upper().endswith("/TCP"):
            kept.append(";".join(p for p in params if p.partition("=")[0].strip().lower() != "destination"))
    return ",".join(kept) or None


def _drop_transport_addresses(value: str) -> str:
    """A ``Transport`` answer without ``source``/``destination``: the camera's or the device's addresses,
    which RTP interleaved on the tunnel does not use."""
    return ",".join(";".join(p for p in spec.split(";") if p.partition("=")[0].strip().lower()
                             not in ("source", "destination")) for spec in value.split(","))


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """A query's ``key=value`` items in order, as written (nothing decoded: they go back as they came)."""
    return [(item.partition("=")[0], item) for item in query.split("&") if item]


def _without_keys(pairs: list[tuple[str, str]], taken: list[tuple[str, str]]) -> list[tuple[str, str]]:
    keys = {key.lower() for key, _ in taken}
    return [(key, item) for key, item in pairs if key.lower() not in keys]


def _join_query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(item for _, item in pairs)


#: SDP lines that name hosts after ``IN IP4``/``IN IP6`` (RFC 8866 origin and connection, RFC 3605 ``a=rtcp``,
#: RFC 4570 ``a=source-filter``): the prefix up to the address type, then the addresses.
_SDP_ADDRESSES = re.compile(r"^((?:o=|c=|a=rtcp:|a=source-filter:)[^\r\n]*?\bIN[ \t]+IP([46])[ \t]+)([^\r\n]*)",
                            re.MULTILINE | re.IGNORECASE)


def _hide_sdp_addresses(sdp: str) -> str:
    """Every unicast host in SDP's origin, connection, RTCP and source-filter lines -> ``0.0.0.0`` (``::``).

    A tunnelled session carries its media inside the RTSP stream, so these addresses tell the player
    nothing it uses, only where the camera is (cameras write their own address there). Multicast
    groups, ``*`` and the unspecified address stay; a host name counts as a host. Any body gets this
    (an SDP may come without its content type): the lines it matches exist only in SDP."""

    def hide(token: str, unspecified: str) -> str:
        host, slash, rest = token.partition("/")  # c=IN IP4 224.2.1.1/127: a multicast group with a TTL
        if host in ("", "*"):
            return token
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return unspecified + slash + rest
        return token if address.is_multicast or address.is_unspecified else unspecified + slash + rest

    def swap(found: re.Match[str]) -> str:
        unspecified = "0.0.0.0" if found.group(2) == "4" else "::"
        return found.group(1) + " ".join(hide(token, unspecified) for token in found.group(3).split(" "))

    return _SDP_ADDRESSES.sub(swap, sdp)


def _host_key(host: str) -> str:
    """One spelling per host: lower case, an IP address in its canonical form without a zone."""
    host = host.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return host


def stream_key(url: str) -> tuple[tuple[str, str, int], str, str] | None:
    """``url`` as ((scheme, host, port), path, query), the forms of one server made equal (host case and
    spelling, default port, user information); None when it is not a URL of a scheme :data:`_URL` finds."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return (scheme, _host_key(parts.hostname), port or _DEFAULT_PORTS[scheme]), parts.path, parts.query


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` value for camera-side RTSP Basic credentials."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class Base64Decoder:
    """The POST channel of RTSP over HTTP: base64 text in any pieces (whitespace ignored, each
    piece possibly padded on its own, as players encode each write separately) -> bytes."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        text = self._rest + b"".join(data.split())
        out: list[bytes] = []
        while text:
            pad = text.find(b"=")
            end = len(text) - len(text) % 4 if pad < 0 else (pad // 4 + 1) * 4
            if end > len(text) or end == 0:
                break
            chunk = text[:end]
            try:
                out.append(binascii.a2b_base64(chunk, strict_mode=True) if pad < 0 else base64.b64decode(chunk))
            except (binascii.Error, ValueError):
                raise RtspError("the POST channel is not base64", status_hint=400) from None
            text = text[end:]
            while text.startswith(b"="):
                text = text[1:]
        self._rest = text
        if len(self._rest) > 4:
            raise RtspError("the POST channel is not base64", status_hint=400)
        return b"".join(out)


T = TypeVar("T")


def cookie_owner(cookie: str) -> str:
    """Who an ``x-sessioncookie`` counts against: the cloud's proxy sends ``"<client address> <cookie>"``, and
    the address counts as its source (IPv4 address, IPv6 /64: :func:`.admission.source_key`), so a client
    cannot take more waiting channels by spreading them over the addresses of its prefix; a cookie
    without an address (as the cloud's RTSP front makes them) is an owner of its own."""
    address, space, _ = cookie.partition(" ")
    return source_key(address) if space else cookie


class CookieTable(Generic[T]):
    """GET channels waiting for their POST partner, by ``x-sessioncookie`` (bounded, with deadlines).

    At most ``max_entries`` wait at once, and at most ``max_per_owner`` of one owner (the
    user or client address the caller names), so one client cannot hold every slot for a
    whole ``wait``."""

    def __init__(self, *, max_entries: int = 64, wait: float = 10.0, max_per_owner: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_per_owner = max_entries if max_per_owner is None else max_per_owner
        self.wait = wait
        self._entries: OrderedDict[str, tuple[float, str, T]] = OrderedDict()
        self._owners: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, cookie: str, value: T, now: float, owner: str = "") -> bool:
        """Register a GET channel; False when the cookie is taken, the table is full or ``owner``
        has ``max_per_owner`` channels waiting."""
        self.expire(now)
        if (cookie in self._entries or len(self._entries) >= self.max_entries
                or self._owners[owner] >= self.max_per_owner):
            return False
        self._entries[cookie] = (now + self.wait, owner, value)
        self._owners[owner] += 1
        return True

    def take(self, cookie: str, now: float) -> T | None:
        """The GET channel a POST names (removed from the table), or None."""
        self.expire(now)
        entry = self._entries.pop(cookie, None)
        if entry is None:
            return None
        self._forget(entry[1])
        return entry[2]

    def remove(self, cookie: str, value: T) -> None:
        """Forget ``value`` if it still waits under ``cookie`` (its GET gave up)."""
        entry = self._entries.get(cookie)
        if entry is not None and entry[2] is value:
            del self._entries[cookie]
            self._forget(entry[1])

    def expire(self, now: float) -> list[T]:
        """Drop and return the entries whose partner did not come in time."""
        gone: list[T] = []
        while self._entries:
            cookie, (deadline, owner, value) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[cookie]
            self._forget(owner)
            gone.append(value)
        return gone

    def _forget(self, owner: str) -> None:
        self._owners[owner] -= 1
        if not self._owners[owner]:
            del self._owners[owner]
