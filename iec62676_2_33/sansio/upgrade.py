"""Layer 1 (sans-IO): the h2c-reverse upgrade handshake, both roles (UPL-2, UPL-3, UPL-14).

Theory of operation
-------------------
The device dials out to the cloud (UPL-1) and, on the TLS stream, sends one
HTTP/1.1 request (UPL-2)::

    GET <path+query of RemoteAddress> HTTP/1.1
    Host: <host[:port]>
    Connection: Upgrade
    Upgrade: h2c-reverse
    Authorization: Bearer …          (UPL-14, when an access token is used)

The cloud answers ``101 Switching Protocols`` with ``Upgrade: h2c-reverse``;
from the byte after the blank line on, the stream is HTTP/2 with the roles
reversed (UPL-3): the cloud sends the client connection preface and the
device answers as the HTTP/2 server. Both sides then call h2's
``initiate_connection()``. Any other final status is a refusal.

Both roles are built on h11 and only move bytes: ``receive_data(bytes)``
returns a typed event (or ``None`` while more bytes are needed) and the
methods that produce output return the bytes to write. Nothing here does
I/O, and nothing reads the clock.

:class:`UpgradeClient` (device role) is a table-driven state machine::

    IDLE --initiate()--> SENT --101 h2c-reverse--> SWITCHED
                           |  --other final status--> REFUSED (reading ≤ 4 KiB body)
                           |                             --body done/capped/EOF--> FAILED
                           +--bad 101 / malformed / head > 16 KiB / EOF--> FAILED

:class:`UpgradeServer` (cloud role)::

    RECV_HEAD --complete valid request--> REQUEST --accept()--> SWITCHED
        |                                    +-----reject()---> REJECTED
        +--invalid request (raises, with status_hint)--> ERROR --reject()--> REJECTED

Protocol switching hands over the trailing bytes the h11 way: bytes that
arrived in the same read as the end of the 101 (device) or of the request
(cloud) are returned in :attr:`Switched.trailing_data` /
:attr:`UpgradeServer.trailing_data` and must be fed to h2 first — never lost.

Requests with ``Upgrade: websocket`` (UPL-4, ``wss`` URIs) are classified by
:class:`UpgradeServer` (``kind="websocket"``) but not accepted here: the
RFC 6455 handshake is done by a WebSocket module with wsproto, which can take
the already parsed request via ``initiate_upgrade_connection(headers, path)``.
"""

from __future__ import annotations

import enum
import http
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import h11

from ..errors import ConfigurationError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_HEAD_BYTES",
    "MAX_REFUSAL_BODY_BYTES",
    "UPGRADE_TOKEN",
    "BadUpgradeRequest",
    "Switched",
    "UpgradeClient",
    "UpgradeEvent",
    "UpgradeRefused",
    "UpgradeRequest",
    "UpgradeServer",
    "UplinkTarget",
    "echo_excerpt",
    "parse_remote_address",
]

UPGRADE_TOKEN = "h2c-reverse"
"""The protocol token of the native uplink (UPL-2)."""

MAX_HEAD_BYTES = 16384
"""Largest response head the device accepts from the cloud (bytes)."""

MAX_REFUSAL_BODY_BYTES = 4096
"""How much of a refusal's body the device reads to explain the refusal."""

_DEFAULT_PORT = 443
_MESSAGE_EXCERPT_CHARS = 300
_ECHO_CHARS = 100  # most characters of a request's path or tokens an error message repeats
# Headers the handshake sets itself; callers may not pass them as extras.
_FRAMING_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})
_RESERVED_HEADERS = _FRAMING_HEADERS | {"host", "upgrade"}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")

Headers = list[tuple[str, str]]


# --------------------------------------------------------------------------- URIs


@dataclass(frozen=True, kw_only=True)
class UplinkTarget:
    """Where and how to dial for one ``RemoteAddress`` (UPL-1, UPL-2, UPL-4).

    ``host`` is the bare host (no IPv6 brackets; what TLS checks per UPL-11),
    ``port`` the TCP port, ``target`` the request target (path + query, ``/``
    when empty) and ``host_header`` the ``Host`` value (IPv6 in brackets, port
    omitted when it is the default 443).
    """

    scheme: Literal["https", "wss"]
    host: str
    port: int
    target: str
    host_header: str


def parse_remote_address(remote_address: str) -> UplinkTarget:
    """Split a ``RemoteAddress`` URI (``https://…`` or ``wss://…``) for dialling.

    Raises :class:`ConfigurationError` saying what is wrong with the URI. The
    query string may carry an access token (UPL-4, RFC 6750 §2.3), so the URI
    is never repeated in an error message.
    """
    try:
        parts = urllib.parse.urlsplit(remote_address.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"RemoteAddress is not a valid URI: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "wss"):
        raise ConfigurationError(
            f"RemoteAddress scheme {scheme!r} is not supported: use https (h2c-reverse, UPL-2) "
            "or wss (WebSocket, UPL-4)"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            "RemoteAddress must not carry user information (user:password@); "
            "configure a certificate or an authorization server instead"
        )
    raw_host = parts.hostname
    if not raw_host:
        raise ConfigurationError("RemoteAddress has no host")
    try:
        host = raw_host.encode("ascii").decode("ascii")
    except UnicodeError:
        try:
            host = raw_host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ConfigurationError("RemoteAddress host is not a valid host name") from None
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in target):
        raise ConfigurationError(
            "RemoteAddress path or query contains spaces, control or non-ASCII characters; "
            "percent-encode them"
        )
    if port is None:
        port = _DEFAULT_PORT
    if not 0 < port < 65536:
        raise ConfigurationError(f"RemoteAddress port {port} is out of range")
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == _DEFAULT_PORT else f"{bracketed}:{port}"
    return UplinkTarget(
        scheme="https" if scheme == "https" else "wss",
        host=host,
        port=port,
        target=target,
        host_header=host_header,
    )


# ------------------------------------------------------------------------- events


@dataclass(frozen=True, kw_only=True)
class UpgradeEvent:
    """Base class of the events the handshake state machines return."""


@dataclass(frozen=True, kw_only=True)
class Switched(UpgradeEvent):
    """The cloud answered ``101`` with ``Upgrade: h2c-reverse`` (UPL-2).

    ``trailing_data`` are the bytes that followed the 101 in the stream (the
    start of the cloud's HTTP/2 preface, UPL-3): feed them to h2 first.
    ``headers`` are the 101's header fields as (lower-case name, value).
    """

    trailing_data: bytes
    headers: Headers


@dataclass(frozen=True, kw_only=True)
class UpgradeRequest(UpgradeEvent):
    """A complete, valid upgrade request as seen by the cloud (UPL-2, UPL-4, UPL-14).

    ``target`` is the request target as sent, ``path`` and ``query`` its parts
    (not percent-decoded). ``headers`` are (lower-case name, value) pairs.
    ``authorization`` is the ``Authorization`` value (UPL-14) or ``None``.
    ``kind`` says which handshake the device asked for: ``"h2c-reverse"``
    (native, accept with :meth:`UpgradeServer.accept`) or ``"websocket"``
    (UPL-4, to be completed with wsproto).
    """

    method: str
    target: str
    path: str
    query: str
    headers: Headers
    host: str
    authorization: str | None
    kind: Literal["h2c-reverse", "websocket"]


# ------------------------------------------------------------------------- errors


class UpgradeRefused(RemoteProtocolError):
    """The cloud answered the upgrade request with a final status other than 101.

    ``status`` and ``reason`` come from the status line, ``headers`` are the
    response's header fields (lower-case names; e.g. ``www-authenticate``,
    ``retry-after``), ``body_excerpt`` the start of the body (at most
    :data:`MAX_REFUSAL_BODY_BYTES` bytes, decoded, control characters replaced)
    so the error can say e.g. ``401 Unauthorized: invalid token``.
    ``status_hint`` is the refusal's status.
    """

    def __init__(self, status: int, reason: str, headers: Headers, body_excerpt: str) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body_excerpt = body_excerpt
        text = f"{status} {reason}".rstrip()
        if body_excerpt:
            short = body_excerpt
            if len(short) > _MESSAGE_EXCERPT_CHARS:
                short = short[:_MESSAGE_EXCERPT_CHARS] + "…"
            text = f"{text}: {short}"
        super().__init__(f"the cloud refused the uplink upgrade: {text}", status_hint=status)


class BadUpgradeRequest(RemoteProtocolError):
    """The device's upgrade request is invalid (cloud role).

    ``status_hint`` is the status to answer with, ``response_headers`` the
    header fields that answer should carry (``Allow`` for 405, ``Upgrade`` for
    426); :meth:`UpgradeServer.reject_error` builds that answer.
    """

    def __init__(
        self,
        msg: str,
        *,
        status_hint: int = 400,
        response_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(msg, status_hint=status_hint)
        self.response_headers: tuple[tuple[str, str], ...] = tuple(response_headers)


# ------------------------------------------------------------------------ helpers


def _decode_headers(raw: Sequence[tuple[bytes, bytes]]) -> Headers:
    return [(name.decode("ascii"), value.decode("latin-1")) for name, value in raw]


def _tokens(headers: Headers, name: str) -> list[str]:
    """The comma-separated, lower-cased tokens of every ``name`` field."""
    out: list[str] = []
    for found, value in headers:
        if found == name:
            out.extend(tok.strip().lower() for tok in value.split(",") if tok.strip())
    return out


def _values(headers: Headers, name: str) -> list[str]:
    return [value for found, value in headers if found == name]


def _sanitise(text: str) -> str:
    """Make peer-supplied text safe for one log line."""
    return " ".join(_CONTROL_CHARS.sub(" ", text).split())


def echo_excerpt(text: str) -> str:
    """A short, safe excerpt of peer-supplied text for an error message (a head may be 16 KiB); the
    WebSocket handshake (:mod:`..transport.websocket`) quotes its peer with it too."""
    text = _sanitise(text)
    return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "…"


def _safe_reason(exc: h11.RemoteProtocolError) -> str:
    """h11's reason, unless it quotes the offending bytes (a token, a password, or 16 KiB of them)."""
    text = str(exc)
    if "bytearray(" in text or "b'" in text or 'b"' in text or len(text) > 120:
        return "not valid HTTP/1.1"
    return text


def _check_extra_headers(
    extra: Sequence[tuple[str, str]], what: str, reserved: frozenset[str] = _RESERVED_HEADERS
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in extra:
        if name.lower() in reserved:
            raise LocalProtocolError(
                f"{what} may not set the {name!r} header field: the handshake sets it itself"
            )
        out.append((name, value))
    return out


def _h11_headers_error(name_hint: str) -> LocalProtocolError:
    # The h11 message quotes the offending value, which may be a bearer token:
    # say which field is wrong, never its value (secrets never reach a log).
    return LocalProtocolError(
        f"{name_hint} contain an invalid header name or value "
        "(control characters, line breaks or leading/trailing spaces)"
    )


class _Progress:
    """Counts how many bytes each h11 event consumed (for the head-size cap)."""

    def __init__(self, conn: h11.Connection) -> None:
        self._conn = conn
        self.fed = 0
        self._mark = 0

    def feed(self, data: bytes) -> None:
        self.fed += len(data)
        self._conn.receive_data(data)

    def step(self) -> int:
        """Bytes consumed since the previous call."""
        consumed = self.fed - len(self._conn.trailing_data[0])
        size = consumed - self._mark
        self._mark = consumed
        return size


# ------------------------------------------------------------------ device role


class _ClientState(enum.Enum):
    IDLE = "idle"
    SENT = "sent"
    REFUSED = "refused"  # reading the body of a refusal
    SWITCHED = "switched"
    FAILED = "failed"


_CLIENT_CALLS: dict[str, frozenset[_ClientState]] = {
    "initiate": frozenset({_ClientState.IDLE}),
    "receive_data": frozenset({_ClientState.SENT, _ClientState.REFUSED}),
    "receive_eof": frozenset({_ClientState.SENT, _ClientState.REFUSED}),
}


class UpgradeClient:
    """The device side of the h2c-reverse handshake (UPL-2, UPL-3, UPL-14).

    ``remote_address`` is the configured ``RemoteAddress`` (``https`` URI);
    its path and query are the request target. ``extra_headers`` are added to
    the request, e.g. ``("Authorization", "Bearer …")`` (UPL-14).

    Usage: write :meth:`initiate`'s bytes, then feed every read to
    :meth:`receive_data` until it returns :class:`Switched` (then hand
    ``trailing_data`` to h2) or raises (:class:`UpgradeRefused` for a
    refusal, :class:`RemoteProtocolError` for a broken response).
    """

    def __init__(
        self,
        remote_address: str,
        *,
        extra_headers: Sequence[tuple[str, str]] = (),
        user_agent: str = "iec62676-2-33",
    ) -> None:
        self.remote = parse_remote_address(remote_address)
        if self.remote.scheme != "https":
            raise ConfigurationError(
                "the native h2c-reverse upgrade needs an https RemoteAddress; "
                "wss addresses use the WebSocket handshake (UPL-4)"
            )
        headers = [
            ("Host", self.remote.host_header),
            ("User-Agent", user_agent),
            ("Connection", "Upgrade"),
            ("Upgrade", UPGRADE_TOKEN),
            *_check_extra_headers(extra_headers, "extra_headers"),
        ]
        try:
            self._request = h11.Request(method="GET", target=self.remote.target, headers=headers)
        except h11.LocalProtocolError:
            raise _h11_headers_error("the upgrade request headers") from None
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._progress = _Progress(self._conn)
        self._state = _ClientState.IDLE
        self._refusal: h11.Response | None = None
        self._body = bytearray()

    @property
    def state(self) -> str:
        """``idle``, ``sent``, ``refused``, ``switched`` or ``failed``."""
        return self._state.value

    def _require(self, call: str) -> None:
        if self._state not in _CLIENT_CALLS[call]:
            raise LocalProtocolError(
                f"UpgradeClient.{call}() is not allowed in state {self._state.value!r}"
                + (
                    "; after the switch the bytes belong to HTTP/2"
                    if self._state is _ClientState.SWITCHED
                    else ""
                )
            )

    def initiate(self) -> bytes:
        """The upgrade request to write to the TLS stream (UPL-2)."""
        self._require("initiate")
        data = self._conn.send(self._request) + self._conn.send(h11.EndOfMessage())
        self._state = _ClientState.SENT
        return data

    def receive_data(self, data: bytes) -> UpgradeEvent | None:
        """Feed bytes read from the cloud.

        Returns :class:`Switched` once a 101 naming h2c-reverse is in, else
        ``None`` while more bytes are needed. Raises :class:`UpgradeRefused`
        for any other final status, :class:`RemoteProtocolError` for a 101
        naming another protocol, a malformed response or a head larger than
        :data:`MAX_HEAD_BYTES`.
        """
        self._require("receive_data")
        if data:
            self._progress.feed(data)
        return self._drain()

    def receive_eof(self) -> None:
        """The cloud closed the stream; always raises."""
        self._require("receive_eof")
        if self._state is _ClientState.REFUSED:
            raise self._refused()
        self._state = _ClientState.FAILED
        raise RemoteProtocolError("connection closed before the upgrade response")

    # -- internals

    def _fail(self, msg: str) -> RemoteProtocolError:
        self._state = _ClientState.FAILED
        return RemoteProtocolError(msg)

    def _refused(self) -> UpgradeRefused:
        self._state = _ClientState.FAILED
        assert self._refusal is not None
        status = self._refusal.status_code
        reason = echo_excerpt(self._refusal.reason.decode("latin-1"))
        if not reason:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        excerpt = _sanitise(bytes(self._body).decode("utf-8", errors="replace"))
        return UpgradeRefused(status, reason, _decode_headers(self._refusal.headers), excerpt)

    def _drain(self) -> UpgradeEvent | None:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self._state is _ClientState.REFUSED:
                    raise self._refused() from None
                if exc.error_status_hint == 431:
                    raise self._fail(
                        f"the upgrade response head is larger than {MAX_HEAD_BYTES} bytes"
                    ) from None
                raise self._fail(f"malformed upgrade response: {_safe_reason(exc)}") from None
            size = self._progress.step()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            is_head = isinstance(event, (h11.InformationalResponse, h11.Response))
            if is_head and size > MAX_HEAD_BYTES:
                raise self._fail(
                    f"the upgrade response head is {size} bytes, "
                    f"more than the {MAX_HEAD_BYTES} allowed"
                )
            if isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    continue  # 100 Continue, 103 Early Hints …: not final
                headers = _decode_headers(event.headers)
                offered = _tokens(headers, "upgrade")
                if offered != [UPGRADE_TOKEN]:
                    named = echo_excerpt(", ".join(_values(headers, "upgrade")))
                    raise self._fail(
                        "the cloud switched to "
                        + (f"{named!r}" if named else "an unnamed protocol")
                        + f" instead of {UPGRADE_TOKEN!r} (UPL-2)"
                    )
                self._state = _ClientState.SWITCHED
                trailing, _closed = self._conn.trailing_data
                return Switched(trailing_data=trailing, headers=headers)
            if isinstance(event, h11.Response):
                self._refusal = event
                self._state = _ClientState.REFUSED
                continue
            if isinstance(event, h11.Data):
                room = MAX_REFUSAL_BODY_BYTES - len(self._body)
                self._body += event.data[:room]
                if len(self._body) >= MAX_REFUSAL_BODY_BYTES:
                    raise self._refused()
                continue
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                if self._state is _ClientState.REFUSED:
                    raise self._refused()
                raise self._fail("connection closed before the upgrade response")
            raise self._fail(f"unexpected HTTP/1.1 event {type(event).__name__}")


# ------------------------------------------------------------------- cloud role


class _ServerState(enum.Enum):
    RECV_HEAD = "recv_head"
    REQUEST = "request"
    SWITCHED = "switched"
    REJECTED = "rejected"
    ERROR = "error"


_SERVER_CALLS: dict[str, frozenset[_ServerState]] = {
    "receive_data": frozenset({_ServerState.RECV_HEAD, _ServerState.REQUEST}),
    "receive_eof": frozenset({_ServerState.RECV_HEAD, _ServerState.REQUEST}),
    "accept": frozenset({_ServerState.REQUEST}),
    "reject": frozenset({_ServerState.RECV_HEAD, _ServerState.REQUEST, _ServerState.ERROR}),
    "trailing_data": frozenset({_ServerState.REQUEST, _ServerState.SWITCHED}),
}


class UpgradeServer:
    """The cloud side of the h2c-reverse handshake (UPL-2, UPL-3, UPL-4, UPL-14).

    Feed the device's bytes to :meth:`receive_data` until it returns an
    :class:`UpgradeRequest`; authenticate it (mTLS identity or
    ``authorization``, UPL-13/UPL-14), then write :meth:`accept`'s bytes and
    hand :attr:`trailing_data` to h2 (the cloud is the HTTP/2 client, UPL-3),
    or write :meth:`reject`'s bytes and close.

    Invalid requests raise :class:`BadUpgradeRequest` with ``status_hint``:
    431 head larger than ``max_head_bytes``; 405 method not GET; 426 no or
    another ``Upgrade`` token; 400 ``Connection`` lacking ``upgrade``, a
    request body, not HTTP/1.1, or a malformed request; 404 a path that
    ``accepted_paths`` refuses. Answer with :meth:`reject_error`.
    """

    def __init__(
        self,
        *,
        max_head_bytes: int = MAX_HEAD_BYTES,
        accepted_paths: Callable[[str], bool] | None = None,
    ) -> None:
        if max_head_bytes < 64:
            raise ConfigurationError(f"max_head_bytes must be at least 64, not {max_head_bytes}")
        self._max_head = max_head_bytes
        self._accepted_paths = accepted_paths
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self._progress = _Progress(self._conn)
        self._state = _ServerState.RECV_HEAD
        self._request: UpgradeRequest | None = None
        self._trailing = b""

    @property
    def state(self) -> str:
        """``recv_head``, ``request``, ``switched``, ``rejected`` or ``error``."""
        return self._state.value

    @property
    def request(self) -> UpgradeRequest | None:
        """The parsed request, once complete."""
        return self._request

    def _require(self, call: str) -> None:
        if self._state not in _SERVER_CALLS[call]:
            raise LocalProtocolError(
                f"UpgradeServer.{call} is not allowed in state {self._state.value!r}"
            )

    def receive_data(self, data: bytes) -> UpgradeRequest | None:
        """Feed bytes read from the device; the request once its head is complete.

        Bytes arriving after the request (before :meth:`accept`) are kept
        for :attr:`trailing_data`.
        """
        self._require("receive_data")
        if data:
            self._progress.feed(data)
        if self._state is _ServerState.REQUEST:
            early = len(self._conn.trailing_data[0])
            if early > self._max_head:
                # The device must wait for the 101 (the cloud speaks HTTP/2
                # first, UPL-3); do not buffer without bound meanwhile.
                raise self._bad(
                    f"the device sent {early} bytes before the upgrade was answered", 400
                )
            return None
        return self._drain()

    def receive_eof(self) -> None:
        """The device closed the stream before the handshake ended; always raises."""
        self._require("receive_eof")
        before = self._state is _ServerState.RECV_HEAD
        self._state = _ServerState.ERROR
        if before:
            raise BadUpgradeRequest("connection closed before the upgrade request was complete")
        raise RemoteProtocolError("connection closed by the device before the upgrade was answered")

    def accept(self, extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
        """The ``101 Switching Protocols`` response bytes (UPL-2).

        Only for ``kind == "h2c-reverse"``. After it the cloud is the HTTP/2
        client: call h2's ``initiate_connection()`` and feed it
        :attr:`trailing_data` first (UPL-3).
        """
        self._require("accept")
        assert self._request is not None
        if self._request.kind != "h2c-reverse":
            raise LocalProtocolError(
                "a WebSocket upgrade is completed by the WebSocket module (wsproto, UPL-4), "
                "not by UpgradeServer.accept()"
            )
        headers = [
            ("Connection", "Upgrade"),
            ("Upgrade", UPGRADE_TOKEN),
            *_check_extra_headers(extra_headers, "accept()"),
        ]
        try:
            response = h11.InformationalResponse(
                status_code=101, reason=b"Switching Protocols", headers=headers
            )
        except h11.LocalProtocolError:
            raise _h11_headers_error("accept() headers") from None
        data = self._conn.send(response)
        assert self._conn.our_state is h11.SWITCHED_PROTOCOL
        self._trailing = self._conn.trailing_data[0]
        self._state = _ServerState.SWITCHED
        return data

    @property
    def trailing_data(self) -> bytes:
        """Bytes read beyond the request head (feed them to h2, or to wsproto)."""
        self._require("trailing_data")
        if self._state is _ServerState.SWITCHED:
            return self._trailing
        return self._conn.trailing_data[0]

    def reject(
        self,
        status: int,
        reason: str = "",
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A complete refusal (``Connection: close``, ``Content-Length``); then close.

        ``status`` is 300..599. A ``reason`` that is not printable ASCII (it may
        quote a peer's text) gives way to the status's standard phrase. Nothing is added for 401: pass
        ``WWW-Authenticate`` in ``headers``. A body without a
        ``Content-Type`` in ``headers`` is sent as ``text/plain; charset=utf-8``.
        """
        self._require("reject")
        if not 300 <= status <= 599:
            raise LocalProtocolError(f"reject() needs a status in 300..599, not {status}")
        if not (reason.isascii() and reason.isprintable()):  # it may quote a peer (a certificate CN): the body has it
            reason = ""
        if not reason:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        fields = _check_extra_headers(headers, "reject()", _FRAMING_HEADERS)
        if body and not any(name.lower() == "content-type" for name, _ in fields):
            fields.append(("Content-Type", "text/plain; charset=utf-8"))
        fields += [("Content-Length", str(len(body))), ("Connection", "close")]
        try:
            response = h11.Response(
                status_code=status, reason=reason.encode("latin-1"), headers=fields
            )
        except (h11.LocalProtocolError, UnicodeEncodeError):
            raise _h11_headers_error("reject() status reason or headers") from None
        # A fresh h11 connection: the live one may be in ERROR after a broken
        # request, and a refusal is one self-contained response anyway.
        writer = h11.Connection(h11.SERVER)
        data = writer.send(response)
        if body:
            data += writer.send(h11.Data(data=body))
        data += writer.send(h11.EndOfMessage())
        self._state = _ServerState.REJECTED
        return data

    def reject_error(self, exc: RemoteProtocolError, *, body: bytes | None = None) -> bytes:
        """:meth:`reject` with the status (and headers) an error suggests.

        The body defaults to the error's message (it names what was wrong with
        the request, never a secret).
        """
        status = exc.status_hint if 300 <= exc.status_hint <= 599 else 400
        headers = exc.response_headers if isinstance(exc, BadUpgradeRequest) else ()
        text = body if body is not None else (str(exc) + "\n").encode("utf-8")
        return self.reject(status, body=text, headers=headers)

    # -- internals

    def _bad(
        self, msg: str, status: int, headers: Sequence[tuple[str, str]] = ()
    ) -> BadUpgradeRequest:
        self._state = _ServerState.ERROR
        return BadUpgradeRequest(msg, status_hint=status, response_headers=headers)

    def _drain(self) -> UpgradeRequest | None:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    raise self._bad(
                        f"the upgrade request head is larger than {self._max_head} bytes", 431
                    ) from None
                raise self._bad(
                    f"malformed upgrade request: {_safe_reason(exc)}", exc.error_status_hint
                ) from None
            size = self._progress.step()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Request):
                if size > self._max_head:
                    raise self._bad(
                        f"the upgrade request head is {size} bytes, "
                        f"more than the {self._max_head} allowed",
                        431,
                    )
                self._request = self._validate(event)
                continue
            if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                self._state = _ServerState.REQUEST
                return self._request
            if isinstance(event, h11.ConnectionClosed):
                raise self._bad("connection closed before the upgrade request was complete", 400)
            raise self._bad(f"unexpected HTTP/1.1 event {type(event).__name__}", 400)

    def _validate(self, event: h11.Request) -> UpgradeRequest:
        headers = _decode_headers(event.headers)
        method = event.method.decode("ascii")
        target = event.target.decode("ascii")
        if event.http_version != b"1.1":
            raise self._bad(
                f"the upgrade needs HTTP/1.1, not HTTP/{event.http_version.decode('ascii')}", 400
            )
        if method != "GET":
            raise self._bad(
                f"the uplink upgrade request must use GET, not {method} (UPL-2)",
                405,
                [("Allow", "GET")],
            )
        offered = _tokens(headers, "upgrade")
        kind: Literal["h2c-reverse", "websocket"]
        if UPGRADE_TOKEN in offered:
            kind = "h2c-reverse"
        elif "websocket" in offered:
            kind = "websocket"
        else:
            what = (
                "has no Upgrade header field"
                if not offered
                else f"offers {echo_excerpt(', '.join(offered))!r}"
            )
            raise self._bad(
                f"the request {what}; this endpoint only upgrades to {UPGRADE_TOKEN} (UPL-2)",
                426,
                [("Upgrade", UPGRADE_TOKEN)],
            )
        if "upgrade" not in _tokens(headers, "connection"):
            raise self._bad("the Connection header field must contain 'upgrade' (UPL-2)", 400)
        lengths = _values(headers, "content-length")
        if _values(headers, "transfer-encoding") or any(v.strip() != "0" for v in lengths):
            raise self._bad("the upgrade request must not have a body", 400)
        hosts = _values(headers, "host")
        if len(hosts) != 1:
            raise self._bad("the request must have exactly one Host header field", 400)
        auths = _values(headers, "authorization")
        if len(auths) > 1:
            raise self._bad("the request has more than one Authorization header field", 400)
        if target.startswith("/"):
            path, _, query = target.partition("?")
        else:
            parts = urllib.parse.urlsplit(target)
            if parts.scheme.lower() not in ("http", "https", "ws", "wss") or not parts.netloc:
                raise self._bad("the request target must be a path (origin-form)", 400)
            path, query = parts.path or "/", parts.query
        if self._accepted_paths is not None and not self._accepted_paths(path):
            raise self._bad(f"no uplink endpoint at {echo_excerpt(path)!r}", 404)
        return UpgradeRequest(
            method=method,
            target=target,
            path=path,
            query=query,
            headers=headers,
            host=hosts[0],
            authorization=auths[0] if auths else None,
            kind=kind,
        )
