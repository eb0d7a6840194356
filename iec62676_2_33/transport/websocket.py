"""Layer 2 (byte transports): the uplink's byte stream in WebSocket binary frames (UPL-4, UPL-6).

For a ``wss`` RemoteAddress the device does not send ``Upgrade: h2c-reverse``
but an RFC 6455 handshake with ``Sec-WebSocket-Protocol: h2c-reverse``; after
the ``101`` the HTTP/2 byte stream (cloud = HTTP/2 client, device = HTTP/2
server, exactly as in UPL-3) travels in WebSocket *binary* frames in both
directions. :class:`WebSocketStream` is that byte stream: a
:class:`~.base.ByteStream` over another one (the TLS stream), so the HTTP/2
roles, the link monitor and the runtimes see no difference.

Theory of operation
-------------------
The framing and the handshake are python-hyper's sans-IO ``wsproto``; this
module only moves bytes:

* device: :func:`websocket_connect` writes the handshake (``H11Handshake``),
  reads the answer and requires a ``101`` whose ``Sec-WebSocket-Accept`` is
  right (checked by wsproto) and which echoes ``h2c-reverse`` (checked here;
  wsproto accepts a 101 without a subprotocol). A refusal raises
  :class:`~iec62676_2_33.sansio.upgrade.UpgradeRefused` with the status and
  the start of the body, like the native upgrade.
* cloud: the request head was already parsed by
  :class:`~iec62676_2_33.sansio.upgrade.UpgradeServer` (one listener port
  takes both kinds of upgrade). :func:`check_websocket_request` re-parses it
  with wsproto (``initiate_upgrade_connection``) and checks the subprotocol
  *before* authentication, raising
  :class:`~iec62676_2_33.sansio.upgrade.BadUpgradeRequest` with a clear 4xx;
  :func:`websocket_accept` writes the ``101`` and returns the stream.
* :meth:`WebSocketStream.read` returns the payload of binary frames as it
  arrives (frames are not reassembled: the content is a byte stream). PINGs
  are answered with PONGs at once (not after our CLOSE), and PING and PONG
  frames are taken at :data:`CONTROL_FRAME_RATE` at most: a flood (each costs
  about 15 µs of Python to parse and answer, 300 KB/s of them would take a
  core) closes 1008, as the HTTP/2 limits do for HTTP/2 PINGs (the same
  token bucket, :class:`~iec62676_2_33.http2.limits.RateLimiter`). A text frame (1003), a frame or message
  larger than ``max_message`` (1009), and every framing error wsproto finds —
  fragmented or oversized control frames, bad opcodes, unmasked client
  frames, reserved bits (1002), invalid UTF-8 in a close reason (1007) — close
  the connection with that code and raise :class:`WebSocketClosed`, a
  :class:`~iec62676_2_33.errors.TransportError`, so the runtimes treat it as
  any broken link (no crash). A CLOSE from the peer is answered and is the
  end of stream (``b""``).
* :meth:`WebSocketStream.write` sends binary frames of at most
  :data:`MAX_SEND_FRAME` bytes, masked on the device side as RFC 6455
  requires of clients. Plain binary frames (no extension, no fragmented
  message in progress: always, on the uplink) are built by this module in
  one buffer and masked in place; wsproto's ``send`` copies every payload
  several times. Control frames and anything else still go through wsproto.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Literal

from wsproto import ConnectionType, frame_protocol
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

try:
    from websockets.speedups import apply_mask
except ImportError:  # a platform without the C extension: websockets' own Python version
    from websockets.utils import apply_mask

from ..errors import RemoteProtocolError, TransportError
from ..http2.limits import Rate, RateLimiter
from ..sansio.upgrade import (
    MAX_REFUSAL_BODY_BYTES,
    BadUpgradeRequest,
    UpgradeRefused,
    UpgradeRequest,
    echo_excerpt,
)
from .base import ByteStream, PeerClosed

__all__ = [
    "CONTROL_FRAME_RATE",
    "DEFAULT_MAX_MESSAGE",
    "MAX_SEND_FRAME",
    "SUBPROTOCOL",
    "WebSocketClosed",
    "WebSocketStream",
    "check_websocket_request",
    "websocket_accept",
    "websocket_connect",
]

SUBPROTOCOL = "h2c-reverse"
"""The WebSocket subprotocol of the uplink (UPL-4)."""

MAX_SEND_FRAME = 256 * 1024
"""Largest payload of one binary frame we send."""

DEFAULT_MAX_MESSAGE = 1024 * 1024
"""Largest binary frame (or fragmented message) we accept: above it, close 1009."""

CONTROL_FRAME_RATE = Rate(50, 10.0)
"""PING and PONG frames we take from the peer (a burst of 50, then 5 a second): above it, close 1008."""

_READ = 256 * 1024
_CLOSE_WAIT = 2.0


class WebSocketClosed(TransportError):
    """The WebSocket connection ended with an error; ``code`` is the RFC 6455 close code.

    ``local`` says who closed: ``True`` when we closed because the peer broke
    the rules (text frame 1003, oversized 1009, framing error 1002 ...),
    ``False`` when the peer sent a CLOSE with an error code.
    """

    def __init__(self, msg: str, *, code: int, local: bool) -> None:
        super().__init__(msg)
        self.code = code
        self.local = local


def _text(value: bytes | str) -> str:
    raw = value if isinstance(value, str) else value.decode("latin-1")
    return " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())


class WebSocketStream:
    """The HTTP/2 byte stream in WebSocket binary frames over *inner* (a :class:`~.base.ByteStream`)."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_conn",
        "_controls",
        "_eof",
        "_error",
        "_in_message",
        "_inner",
        "_label",
        "_max_message",
        "_pending",
    )

    def __init__(self, inner: ByteStream, conn: Connection, *, max_message: int = DEFAULT_MAX_MESSAGE,
                 label: str = "WebSocket peer") -> None:
        self._inner = inner
        self._conn = conn
        conn._proto._frame_decoder.__class__ = _FastFrameDecoder  # this connection's frames only
        self._max_message = max_message
        self._label = label
        self._buffer: list[bytes | bytearray] = []
        self._in_message = 0
        self._eof = False
        self._closed = False
        self._error: WebSocketClosed | None = None
        self._pending = bytearray()  # bytes not yet handed on: the start of a plain binary frame
        self._controls = RateLimiter(CONTROL_FRAME_RATE, time.monotonic())

    def __repr__(self) -> str:
        return f"<WebSocketStream {self._label}>"

    @property
    def label(self) -> str:
        return self._label

    # ------------------------------------------------------------------ reading

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        while True:
            if self._buffer:
                return self._take(max_bytes)
            if self._error is not None:
                raise self._error
            if self._eof or self._closed:
                return b""
            chunk = await self._inner.read(_READ)
            if not chunk:
                self._eof = True
                if self._conn.state is ConnectionState.OPEN:
                    self._error = WebSocketClosed(
                        f"{self._label} closed the connection without a WebSocket CLOSE (1006)",
                        code=CloseReason.ABNORMAL_CLOSURE, local=False)
                continue
            self.receive(chunk)
            await self._flush()

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._buffer
        if sum(map(len, chunks)) <= max_bytes:  # the usual case: everything, in one copy
            self._buffer = []
            return chunks[0] if len(chunks) == 1 and isinstance(chunks[0], bytes) else b"".join(chunks)
        out = bytearray()
        while chunks and len(out) < max_bytes:
            room = max_bytes - len(out)
            head = chunks[0]
            if len(head) <= room:
                out += head
                chunks.pop(0)
            else:
                out += head[:room]
                chunks[0] = head[room:]
        return bytes(out)

    def receive(self, data: bytes) -> None:
        """Feed bytes from the inner stream (also used for bytes read past the handshake).

        Plain frames (final, binary, no RSV bits, masked exactly when the peer must
        mask, within the size cap) are taken here, unmasked in C; everything else —
        control, text and fragmented frames, anything malformed — goes to wsproto,
        which keeps the protocol's rules and close codes. wsproto only ever sees
        whole frames from this path, so its state is never half-way through one.
        """
        if self._conn.state in (ConnectionState.CLOSED, ConnectionState.REMOTE_CLOSING):
            return
        pending = self._pending
        pending += data
        pos = 0
        while pos < len(pending):
            if self._in_message or not _wsproto_idle(self._conn):  # wsproto is inside a frame or message
                break
            frame = _plain_frame(pending, pos, masked=not self._conn.client, limit=self._max_message)
            if frame is None:  # incomplete: wait for more
                del pending[:pos]
                return
            if frame is False:  # not plain: wsproto's turn
                break
            start, end, key = frame
            payload = bytes(pending[start:end])
            if payload:
                self._buffer.append(apply_mask(payload, key) if key else payload)
            pos = end
        rest = bytes(pending[pos:])
        pending.clear()
        if not rest:
            return
        self._conn.receive_data(rest)
        for event in self._conn.events():
            if self._handle(event):
                break

    def _handle(self, event: Event) -> bool:
        """One wsproto event; ``True`` when the connection is over."""
        if isinstance(event, BytesMessage):
            self._in_message += len(event.data)
            if self._in_message > self._max_message:
                self._fail(CloseReason.MESSAGE_TOO_BIG,
                           f"binary frame larger than {self._max_message} bytes")
                return True
            if event.data:
                self._buffer.append(event.data)
            if event.message_finished:
                self._in_message = 0
        elif isinstance(event, TextMessage):
            self._fail(CloseReason.UNSUPPORTED_DATA,
                       "text frame on the uplink (h2c-reverse needs binary frames)")
            return True
        elif isinstance(event, (Ping, Pong)) and not self._controls.allow(time.monotonic()):
            self._fail(CloseReason.POLICY_VIOLATION, "PING/PONG flood")
            return True
        elif isinstance(event, Ping):
            if self._conn.state is ConnectionState.OPEN:  # after our CLOSE only a CLOSE may follow
                self._send_raw(self._conn.send(event.response()))
        elif isinstance(event, CloseConnection):
            remote = self._conn.state is ConnectionState.REMOTE_CLOSING
            if remote:  # the peer's CLOSE: answer it, then end of stream
                self._send_raw(self._conn.send(event.response()))
                self._eof = True
                if event.code not in (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY):
                    reason = f": {_text(event.reason)}" if event.reason else ""
                    self._error = WebSocketClosed(
                        f"{self._label} closed the WebSocket with code {event.code}{reason}",
                        code=int(event.code), local=False)
            elif self._conn.state is ConnectionState.CLOSED:  # answer to our CLOSE
                self._eof = True
            else:  # wsproto found a framing error (ParseFailed)
                self._fail(int(event.code), event.reason or "framing error")
            return True
        return False

    def _fail(self, code: int, why: str) -> None:
        """Close with *code* because the peer broke the rules; later reads raise."""
        if self._error is None:
            self._error = WebSocketClosed(
                f"{self._label} broke the WebSocket protocol: {_text(why)}; closed with code {code}",
                code=code, local=True)
        self._buffer = []
        if self._conn.state is ConnectionState.OPEN:
            self._send_raw(self._conn.send(CloseConnection(code=code, reason=_text(why)[:100])))
        self._eof = True

    def _send_raw(self, data: bytes) -> None:
        if data and not self._closed:
            try:
                self._inner.write_nowait(data)
            except TransportError:
                pass

    async def _flush(self) -> None:
        try:
            await self._inner.drain()
        except TransportError:
            pass

    @property
    def at_eof(self) -> bool:
        return not self._buffer and (self._eof or self._closed or self._error is not None)

    # ------------------------------------------------------------------ writing

    def write_nowait(self, data: bytes) -> None:
        with memoryview(data) as view:
            self._send((view,))

    def writelines(self, parts: Sequence[bytes]) -> None:
        self._send([memoryview(part) for part in parts])

    def _send(self, views: Sequence[memoryview]) -> None:
        if self._error is not None:
            raise self._error
        if self._closed or self._conn.state is not ConnectionState.OPEN:
            raise TransportError(f"cannot write to {self._label}: the WebSocket is closed")
        views = [v for v in views if v]
        if not views:
            return
        proto = self._conn._proto
        if not proto.extensions and getattr(proto, "_outbound_opcode", None) is None:
            # Plain final binary frames, built here in one buffer: wsproto's
            # send() copies each payload about six times on its way to the wire.
            out = bytearray()
            for view in views:
                for i in range(0, len(view), MAX_SEND_FRAME):
                    _append_binary_frame(out, view[i:i + MAX_SEND_FRAME], mask=self._conn.client)
            self._inner.write_nowait(out)  # type: ignore[arg-type]  # any bytes-like
            return
        view = views[0] if len(views) == 1 else memoryview(b"".join(views))
        frames = [self._conn.send(BytesMessage(data=bytes(view[i:i + MAX_SEND_FRAME])))
                  for i in range(0, len(view), MAX_SEND_FRAME)]
        self._inner.write_nowait(frames[0] if len(frames) == 1 else b"".join(frames))

    async def drain(self) -> None:
        await self._inner.drain()

    async def write(self, data: bytes) -> None:
        step = 4 * MAX_SEND_FRAME
        with memoryview(data) as view:
            for start in range(0, len(view), step):
                self._send((view[start:start + step],))
                await self._inner.drain()

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Send CLOSE 1000 (if still open), wait briefly for the answer, close the inner stream."""
        if self._closed:
            return
        try:
            if self._conn.state is ConnectionState.OPEN:
                self._send_raw(self._conn.send(CloseConnection(code=CloseReason.NORMAL_CLOSURE)))
                try:
                    await asyncio.wait_for(self._await_close_answer(), _CLOSE_WAIT)
                except (TimeoutError, TransportError):
                    pass
        finally:
            self._closed = True
            await self._inner.close()

    async def _await_close_answer(self) -> None:
        while self._conn.state is not ConnectionState.CLOSED:
            chunk = await self._inner.read(_READ)
            if not chunk:
                return
            self.receive(chunk)
            self._buffer.clear()  # nobody reads after close(): data frames before the answer are dropped

    def abort(self) -> None:
        self._closed = True
        self._inner.abort()

    def extra(self, name: str, default: Any = None) -> Any:
        if name == "websocket_subprotocol":
            return SUBPROTOCOL
        return self._inner.extra(name, default)


#: XOR tables for masking: ``_XOR[k]`` maps every byte ``b`` to ``b ^ k``.
class _FastMasker:
    """wsproto's ``XorMaskerSimple`` (same interface and key rotation) on the C ``apply_mask`` of the
    maintained ``websockets`` library: unmasking a bulk stream in pure Python cost about 50 times more."""

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        if not data:
            return bytearray(data)
        out = bytearray(apply_mask(bytes(data), self._key))
        rotation = len(data) % 4
        self._key = self._key[rotation:] + self._key[:rotation]
        return out


class _FastFrameDecoder(frame_protocol.FrameDecoder):
    """wsproto's frame decoder unmasking with :class:`_FastMasker` (identical results). It is given to
    the connections of this module only (their decoder's class is swapped), never to other wsproto users."""

    def parse_header(self) -> bool:
        parsed = bool(super().parse_header())
        if parsed and isinstance(self.masker, frame_protocol.XorMaskerSimple):
            self.masker = _FastMasker(self.masker._masking_key)  # type: ignore[assignment]
        return parsed


def _wsproto_idle(conn: Connection) -> bool:
    """wsproto holds no part of a frame and no fragmented message (its decoders are private)."""
    proto = conn._proto
    frames, messages = proto._frame_decoder, proto._message_decoder
    return frames.header is None and not len(frames.buffer) and messages.opcode is None


def _plain_frame(buf: bytearray, pos: int, *, masked: bool,
                 limit: int) -> tuple[int, int, bytes] | Literal[False] | None:
    """Parse a plain frame at ``buf[pos:]``: (payload start, end, mask key or b""); None if incomplete;
    False when the frame is anything but a final binary frame we may take ourselves."""
    if buf[pos] != 0x82:  # FIN, no RSV bits, opcode binary
        return False
    if len(buf) - pos < 2:
        return None
    second = buf[pos + 1]
    if bool(second & 0x80) != masked:
        return False
    length, head = second & 0x7F, 2
    if length >= 126:
        size = 2 if length == 126 else 8
        if len(buf) - pos < 2 + size:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 2 + size], "big")
        head += size
    if length > limit:
        return False
    key = b""
    if masked:
        if len(buf) - pos < head + 4:
            return None
        key = bytes(buf[pos + head:pos + head + 4])
        head += 4
    start = pos + head
    if len(buf) < start + length:
        return None
    return start, start + length, key


def _append_binary_frame(out: bytearray, payload: memoryview, *, mask: bool) -> None:
    """Append one final binary frame carrying *payload* to *out* (RFC 6455 §5.2).

    With *mask* (we are the client, §5.3) a fresh key from ``os.urandom`` masks
    the payload with ``apply_mask`` on its way into *out*.
    """
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        out += bytes((0x82, bit | n))
    elif n < 0x10000:
        out += bytes((0x82, bit | 126)) + n.to_bytes(2, "big")
    else:
        out += bytes((0x82, bit | 127)) + n.to_bytes(8, "big")
    if not mask:
        out += payload
        return
    key = os.urandom(4)
    out += key
    out += apply_mask(payload, key)


# --------------------------------------------------------------------------- device


def _header_bytes(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("ascii"), value.encode("latin-1")) for name, value in headers]


async def websocket_connect(inner: ByteStream, *, host: str, target: str,
                            extra_headers: Sequence[tuple[str, str]] = (),
                            max_message: int = DEFAULT_MAX_MESSAGE,
                            label: str = "the cloud") -> WebSocketStream:
    """The device's RFC 6455 handshake on *inner* (UPL-4); the stream once the 101 is checked.

    *host* is the ``Host`` value, *target* the request target (path and
    query), *extra_headers* e.g. ``Authorization: Bearer …`` (UPL-14). Raises
    :class:`UpgradeRefused` for a final status other than 101 and
    :class:`~iec62676_2_33.errors.RemoteProtocolError` for a 101 that is not
    right (wrong ``Sec-WebSocket-Accept``, no or another subprotocol, a
    malformed answer); the caller bounds the wait.
    """
    handshake = H11Handshake(ConnectionType.CLIENT)
    try:
        request = handshake.send(Request(host=host, target=target, subprotocols=[SUBPROTOCOL],
                                         extra_headers=_header_bytes(extra_headers)))
    except (WsLocalProtocolError, ValueError, UnicodeError):
        # never quote the headers: one of them may carry a token
        raise RemoteProtocolError("the WebSocket upgrade request headers are invalid") from None
    await inner.write(request)
    refusal: RejectConnection | None = None
    body = bytearray()
    received = False
    while True:
        data = await inner.read(_READ)
        if not data and not received:
            raise PeerClosed(f"{label} closed the connection before answering the WebSocket upgrade",
                             reason="closed before the handshake answer")
        received = True
        try:
            handshake.receive_data(data if data else None)
            events = list(handshake.events())
        except WsRemoteProtocolError as exc:
            raise RemoteProtocolError(
                f"the cloud's WebSocket handshake answer is not valid: {exc} (UPL-4)") from None
        except UnicodeError:  # wsproto decodes some fields as ASCII (Sec-WebSocket-Protocol …)
            raise RemoteProtocolError(
                "the cloud's WebSocket handshake answer is not valid: a header field is not ASCII (UPL-4)") from None
        for event in events:
            if isinstance(event, AcceptConnection):
                if event.subprotocol != SUBPROTOCOL:
                    raise RemoteProtocolError(
                        "the cloud accepted the WebSocket without the subprotocol "
                        f"{SUBPROTOCOL!r} (Sec-WebSocket-Protocol "
                        f"{'missing' if event.subprotocol is None else repr(event.subprotocol)}, UPL-4)")
                conn = handshake.connection
                assert conn is not None
                stream = WebSocketStream(inner, conn, max_message=max_message, label=label)
                for early in conn.events():  # frames that came with the 101
                    if stream._handle(early):
                        break
                return stream
            if isinstance(event, RejectConnection):
                refusal = event
                if not event.has_body:
                    raise _refused(event, b"")
            elif isinstance(event, RejectData):
                body += event.data[:MAX_REFUSAL_BODY_BYTES - len(body)]
                if event.body_finished or len(body) >= MAX_REFUSAL_BODY_BYTES:
                    assert refusal is not None
                    raise _refused(refusal, bytes(body))
        if not data:
            if refusal is not None:
                raise _refused(refusal, bytes(body))
            raise RemoteProtocolError("connection closed before the WebSocket handshake answer")


def _refused(event: RejectConnection, body: bytes) -> UpgradeRefused:
    headers = [(n.decode("ascii", "replace").lower(), v.decode("latin-1")) for n, v in event.headers]
    try:
        reason = HTTPStatus(event.status_code).phrase
    except ValueError:
        reason = ""
    return UpgradeRefused(event.status_code, reason, headers, _text(body.decode("utf-8", "replace")))


# --------------------------------------------------------------------------- cloud


def check_websocket_request(request: UpgradeRequest) -> H11Handshake:
    """Validate a parsed ``Upgrade: websocket`` request for the uplink (UPL-4).

    Returns the wsproto handshake to accept with :func:`websocket_accept`.
    Raises :class:`BadUpgradeRequest` (answer with
    ``UpgradeServer.reject_error``): 400 for a request wsproto refuses
    (no ``Sec-WebSocket-Key``, ...), 426 with ``Sec-WebSocket-Version: 13``
    for another version, 400 when ``h2c-reverse`` is not among the offered
    subprotocols.
    """
    handshake = H11Handshake(ConnectionType.SERVER)
    raw = [(name.encode("ascii"), value.encode("latin-1")) for name, value in request.headers]
    try:
        handshake.initiate_upgrade_connection(raw, request.target)
        events = list(handshake.events())
    except WsRemoteProtocolError as exc:
        hint = exc.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        headers = [(n.decode("ascii"), v.decode("latin-1"))
                   for n, v in (hint.headers if isinstance(hint, RejectConnection) else [])]
        raise BadUpgradeRequest(f"invalid WebSocket upgrade request: {exc} (RFC 6455)",
                                status_hint=status, response_headers=headers) from None
    except UnicodeError:  # wsproto decodes Host as IDNA and Connection, Sec-WebSocket-* as ASCII
        raise BadUpgradeRequest("invalid WebSocket upgrade request: Host, Connection or a Sec-WebSocket "
                                "header field is not ASCII or not a valid host name (RFC 6455)",
                                status_hint=400) from None
    ws_request = next((e for e in events if isinstance(e, Request)), None)
    if ws_request is None:
        raise BadUpgradeRequest("invalid WebSocket upgrade request (RFC 6455)", status_hint=400)
    if SUBPROTOCOL not in ws_request.subprotocols:
        offered = echo_excerpt(", ".join(ws_request.subprotocols))
        raise BadUpgradeRequest(
            "the WebSocket upgrade must offer the subprotocol "
            f"{SUBPROTOCOL!r} in Sec-WebSocket-Protocol (UPL-4); "
            + (f"offered: {offered}" if offered else "none was offered"),
            status_hint=400, response_headers=[("Sec-WebSocket-Protocol", SUBPROTOCOL)])
    return handshake


async def websocket_accept(inner: ByteStream, handshake: H11Handshake, *, trailing: bytes = b"",
                           max_message: int = DEFAULT_MAX_MESSAGE,
                           label: str = "the device") -> WebSocketStream:
    """Write the ``101`` (echoing ``h2c-reverse``) and return the stream (cloud side, UPL-4).

    *trailing* are bytes read past the request head; they are fed first.
    """
    await inner.write(handshake.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
    conn = handshake.connection
    assert conn is not None
    stream = WebSocketStream(inner, conn, max_message=max_message, label=label)
    if trailing:
        stream.receive(trailing)
    return stream

