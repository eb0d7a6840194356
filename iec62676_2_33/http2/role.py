"""Layer 3 (sans-IO): the shared base of both HTTP/2 roles of an uplink (UPL-3, UPL-15, UPL-16).

Theory of operation
-------------------
After the ``101`` the uplink is plain HTTP/2 "as if the cloud had opened it"
(UPL-3): the cloud is the HTTP/2 client (:class:`~.client.H2ClientRole`), the
device the HTTP/2 server (:class:`~.server.H2ServerRole`), both on the one
TLS connection the device dialled. Each side calls h2's
``initiate_connection()`` -- never ``initiate_upgrade_connection()``: the
upgrade request was not stream 1 -- so the client sends the connection
preface (``PRI * HTTP/2.0`` magic + SETTINGS) and the server its SETTINGS
(UPL-15). Requests then go in reverse: the cloud asks, the device serves,
many streams at once (UPL-16).

:class:`H2Role` wraps one ``h2.connection.H2Connection``: bytes in
(``receive_data(data, now)``) -> typed, frozen events out; bytes to write come
from ``data_to_send()``. It never does I/O and never reads the clock: the
caller passes ``now`` (seconds, any monotonic origin) with the input, and the
flood limits are token buckets on that clock. Everything the peer can do
wrong ends in events, never in an exception; exceptions
(:class:`~iec62676_2_33.errors.LocalProtocolError`) are only for the caller's
own mistakes.

Input path. The role splits the byte stream into frames itself (9-byte
header, length checked against our SETTINGS_MAX_FRAME_SIZE *before* the body
is buffered -- h2 would buffer a 16 MiB frame whole first) and feeds h2 one
complete frame at a time. That lets it

* count each frame against the :class:`~.limits.H2Limits` rates *before* h2
  queues an answer (PING/SETTINGS ACKs), so a flood leaves at most one
  bucket's worth of answers behind;
* cap a header block (HEADERS + CONTINUATION) at ``max_header_block_size``
  while it is still arriving (h2 only caps the number of CONTINUATIONs, at
  ``h2.frame_buffer.CONTINUATION_BACKLOG`` = 64);
* never lose the events of earlier frames when a later frame of the same read
  makes h2 raise (h2 raises out of ``receive_data`` and drops them);
* check every received header block with :func:`~.headers.check_received`
  (h2's own rules in one pass; h2's slower checks are off), a malformed one
  ending the connection with PROTOCOL_ERROR as h2 would.

h2's ``ProtocolError`` family (and any error of its parsers) becomes GOAWAY
with h2's error code plus ``ConnectionTerminated(local=True)``; a broken limit
becomes GOAWAY ENHANCE_YOUR_CALM. Once terminated, input is ignored and the
inbound buffer is dropped.

Streams. h2's own MAX_CONCURRENT_STREAMS check raises ``TooManyStreamsError``
*before* the header block is decoded, which would leave the HPACK decoder out
of step; the role therefore advertises ``max_concurrent_streams`` in its
SETTINGS but lifts h2's internal check afterwards and refuses an excess stream
itself, after h2 has decoded it, with RST_STREAM REFUSED_STREAM (the
connection lives on; each refusal counts against ``reset_rate`` like a peer
reset, which bounds rapid-reset floods, CVE-2023-44487).

Inbound flow control. Each DATA frame becomes :class:`DataReceived`; the
window is handed back (WINDOW_UPDATE) only when the caller calls
``acknowledge(stream_id, flow_controlled_length)`` after taking the data, so
a slow consumer slows the peer. With ``auto_acknowledge=True`` the role acks
as it delivers (the caller then bounds its own buffering; bodies are capped at
``max_body_size`` either way). When a stream ends or is reset, whatever the
caller had not acknowledged is returned to the connection window for it.

Outbound flow control. ``send_data`` only queues (the caller's ``bytes`` are
referenced, not copied). The role turns queued data into DATA frames,
round-robin over streams, only within the peer's connection and stream
windows and only while fewer than ``max_outbound_buffer`` bytes wait in the
outbound buffer; so that buffer never exceeds ``max_outbound_buffer`` + one
frame (+ small control frames). More is produced when the peer opens its
windows or the caller drains ``data_to_send()``. ``queued_outbound(stream_id)``
is what the caller queued but the role has not framed yet: the runtime's
back-pressure signal. A peer that provokes answers (PING ACKs, ...) while not
reading what is already buffered is cut off after ``max_control_backlog``
bytes of such answers.

h2 cannot drain a connection after GOAWAY (every frame after GOAWAY is an
error in its state machine), so a GOAWAY, sent or received, ends the role:
queued data is dropped, bytes already in the outbound buffer stay for the
caller to flush.

HPACK. The decoder's dynamic table is capped at ``header_table_size`` (what
we advertise); the encoder's is clamped to it too, whatever larger table the
peer offers (h2 would grow ours to the peer's SETTINGS_HEADER_TABLE_SIZE).
Header names and values cross this API as ``str`` decoded/encoded with
ISO-8859-1 (lossless for any byte, the WSGI convention).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import hyperframe.frame
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hpack.exceptions import HPACKError
from hyperframe.exceptions import HyperframeError

from ..errors import LocalProtocolError
from .headers import MalformedHeaders, check_received, prepare_sent
from .limits import DEFAULT_LIMITS, H2Limits, RateLimiter

if TYPE_CHECKING:
    from hpack.struct import Header

__all__ = [
    "PREFACE",
    "ConnectionTerminated",
    "DataReceived",
    "Event",
    "H2Role",
    "Headers",
    "PingAcknowledged",
    "RemoteSettingsChanged",
    "RequestReceived",
    "ResponseReceived",
    "StreamEnded",
    "StreamReset",
    "TrailersReceived",
]

#: RFC 7540 §3.5 client connection preface magic (followed by a SETTINGS frame).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Headers = list[tuple[str, str]]

# Frame types (RFC 7540 §6) and flags the splitter looks at.
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
_FLAG_END_STREAM = _FLAG_ACK = 0x1
_FLAG_PADDED = 0x8
_FLAG_PRIORITY = 0x20
_FRAME_HEADER = 9
_H2_DEFAULT_WINDOW = 65535
_UNLIMITED_STREAMS = 2**31 - 1
_MAX_REASON = 1024


class _BriefRepr:
    """A received frame's ``repr``: its type and stream, nothing computed from its body.

    h2 formats ``repr(frame)`` for its trace log on *every* received frame, whether
    anyone listens or not (our roles give h2 no logger: the text is thrown away).
    hyperframe's repr formats the flags and hexlifies the body -- the whole DATA
    payload, which was more than half the CPU of a bulk download (benchmark 3 of
    issue 3), and 1.1 us for a small HEADERS frame (0.17 us here, timeit; ~2 % of
    the device's time on an uplink GetServiceCapabilities, py-spy). Only the frames our
    own connections receive get these classes (:class:`_FrameBuffer`); hyperframe
    itself is untouched.
    """

    stream_id: int

    def __repr__(self) -> str:
        return f"{type(self).__name__}(stream_id={self.stream_id})"


#: Each frame class h2 dispatches on -> the same class with :class:`_BriefRepr`'s repr.
_BRIEF: dict[type[hyperframe.frame.Frame], type[hyperframe.frame.Frame]] = {
    cls: type(cls.__name__, (_BriefRepr, cls), {})
    for cls in (
        hyperframe.frame.DataFrame,
        hyperframe.frame.HeadersFrame,
        hyperframe.frame.PriorityFrame,
        hyperframe.frame.RstStreamFrame,
        hyperframe.frame.SettingsFrame,
        hyperframe.frame.PushPromiseFrame,
        hyperframe.frame.PingFrame,
        hyperframe.frame.GoAwayFrame,
        hyperframe.frame.WindowUpdateFrame,
        hyperframe.frame.ContinuationFrame,
        hyperframe.frame.AltSvcFrame,
        hyperframe.frame.ExtensionFrame,
    )
}


class _FrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer handing out frames of the :data:`_BRIEF` classes (our connections only)."""

    def __next__(self) -> hyperframe.frame.Frame:
        frame = super().__next__()
        brief = _BRIEF.get(type(frame))
        if brief is not None:
            frame.__class__ = brief
        return frame


def _brief_frame_repr(conn: h2.connection.H2Connection) -> None:
    """Give ``conn`` the :class:`_FrameBuffer`; its dispatch table handles each brief class as its base."""
    conn.incoming_buffer.__class__ = _FrameBuffer
    table = conn._frame_dispatch_table
    for base, brief in _BRIEF.items():
        table[brief] = table[base]


class _SettingValues(list[int | None]):
    """One setting's values in h2's :class:`~h2.settings.Settings`: the current one first, then
    those not yet acknowledged. h2 keeps them in a ``collections.deque`` per setting, and a deque
    allocates a 64-slot block when it is made: about 760 bytes each, 10.6 KiB of the 16.5 KiB an
    idle uplink's HTTP/2 state held in the cloud (tracemalloc, 2,000 devices). In lists, an idle
    uplink costs the cloud 9.3 KiB less RSS (62.6 -> 53.3 KiB, ``bench/bench_cloud_memory.py``,
    5,000 devices). h2 only appends, reads ``[0]``, ``popleft()``s and takes ``len()`` of them.
    """

    __slots__ = ()

    def popleft(self) -> int | None:
        return self.pop(0)


def _compact_settings(settings: Settings) -> None:
    """Hold each of ``settings``' values in a :class:`_SettingValues` instead of h2's deque.

    Only when h2's private structure is what this was measured on (``_settings``: a dict of
    deques); otherwise ``settings`` is left as h2 made it. Called for our connections' two
    ``Settings`` when the connection is built and after every SETTINGS frame received (h2
    makes a new deque for a setting the peer names first).
    """
    table = getattr(settings, "_settings", None)
    if not isinstance(table, dict):
        return
    for key, values in table.items():
        if type(values) is deque:
            table[key] = _SettingValues(values)


def _keep_header_values_out_of_logs() -> None:
    """hpack logs every header it encodes or decodes, values included, at DEBUG
    ("Decoded (b'authorization', b'Bearer ...')"): with DEBUG on that would put
    credentials in the log. The first role built sets the ``hpack`` logger to INFO
    unless the application has set its level (nothing happens at import time). A
    disabled logger costs what a no-op logger did: 18.8-19.6 us for encoding and
    decoding a 7-header request either way (timeit, best of 7).
    """
    logger = logging.getLogger("hpack")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

#: The h2 events that carry a received header block, and which kind of block it is.
_HEADER_BLOCKS: dict[type, str] = {
    h2.events.RequestReceived: "request",
    h2.events.ResponseReceived: "response",
    h2.events.InformationalResponseReceived: "response",
    h2.events.TrailersReceived: "trailer",
}


# ------------------------------------------------------------------------ events


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base class of everything ``receive_data`` returns."""


@dataclass(frozen=True, kw_only=True)
class RequestReceived(Event):
    """Server role: a request opened ``stream_id``; pseudo-headers come first."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, kw_only=True)
class ResponseReceived(Event):
    """Client role: the final response head for ``stream_id`` arrived."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, kw_only=True)
class TrailersReceived(Event):
    """Trailers ended ``stream_id`` (a :class:`StreamEnded` follows)."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, kw_only=True)
class DataReceived(Event):
    """Body bytes; ``acknowledge(stream_id, flow_controlled_length)`` once taken."""

    stream_id: int
    data: bytes
    flow_controlled_length: int


@dataclass(frozen=True, kw_only=True)
class StreamEnded(Event):
    """The peer finished sending on ``stream_id`` (END_STREAM)."""

    stream_id: int


@dataclass(frozen=True, kw_only=True)
class StreamReset(Event):
    """``stream_id`` is gone: reset by the peer (``remote``) or by this role."""

    stream_id: int
    error_code: int
    remote: bool


@dataclass(frozen=True, kw_only=True)
class PingAcknowledged(Event):
    """The peer answered a PING we sent with this 8-byte payload."""

    opaque: bytes


@dataclass(frozen=True, kw_only=True)
class RemoteSettingsChanged(Event):
    """The peer's SETTINGS took effect: ``(setting code, new value)`` pairs."""

    changed: tuple[tuple[int, int], ...]


@dataclass(frozen=True, kw_only=True)
class ConnectionTerminated(Event):
    """The connection is over: GOAWAY sent (``local``) or received."""

    error_code: int
    reason: str
    local: bool
    last_stream_id: int | None = None


# ------------------------------------------------------------------ stream state


@dataclass(eq=False)
class _Stream:
    """What the role keeps per live stream: outbound queue and inbound accounting."""

    headers_sent: bool = False
    local_closed: bool = False
    remote_closed: bool = False
    end_queued: bool = False
    queued: int = 0
    received: int = 0
    unacked: int = 0
    chunks: deque[memoryview] = field(default_factory=deque)

    def take(self, n: int) -> bytes | memoryview:
        """Remove and return the first ``n`` queued bytes (``n <= queued``)."""
        self.queued -= n
        first = self.chunks[0]
        if len(first) >= n:
            if len(first) == n:
                self.chunks.popleft()
            else:
                self.chunks[0] = first[n:]
            return first[:n]
        parts: list[memoryview] = []
        while n:
            chunk = self.chunks[0]
            if len(chunk) <= n:
                parts.append(self.chunks.popleft())
                n -= len(chunk)
            else:
                parts.append(chunk[:n])
                self.chunks[0] = chunk[n:]
                n = 0
        return b"".join(parts)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _wire(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as e:
        raise LocalProtocolError(
            f"header {what} {value!r} is not ISO-8859-1; percent-encode it or use bytes"
        ) from e


# ----------------------------------------------------------------------- the role


class H2Role:
    """One end of the uplink's HTTP/2 connection (shared base; see the module docstring)."""

    def __init__(
        self,
        *,
        client_side: bool,
        limits: H2Limits = DEFAULT_LIMITS,
        now: float,
        auto_acknowledge: bool = False,
    ) -> None:
        self.limits = limits
        self.client_side = client_side
        self.auto_acknowledge = auto_acknowledge
        # Outbound header blocks are normalised and validated once, by _encode(), which every
        # send_headers() of the roles goes through (h2 doing it again cost about 10 us a
        # response); inbound ones by headers.check_received() in _translate(), the same rules
        # as h2's in one pass (see that module).
        config = h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            normalize_outbound_headers=False,
            validate_outbound_headers=False,
            validate_inbound_headers=False,
        )
        _keep_header_values_out_of_logs()
        conn = h2.connection.H2Connection(config=config)
        _brief_frame_repr(conn)
        # Our SETTINGS are the *initial* values, so h2 applies them at once and
        # the peer's ACK changes nothing.
        conn.local_settings = Settings(
            client=client_side,
            initial_values={
                SettingCodes.HEADER_TABLE_SIZE: limits.header_table_size,
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            },
        )
        _compact_settings(conn.local_settings)
        _compact_settings(conn.remote_settings)
        conn.max_inbound_frame_size = limits.max_frame_size
        # HPACK bomb: decoding stops (DenialOfServiceError -> GOAWAY
        # ENHANCE_YOUR_CALM) once the decoded list passes the hard cap.
        conn.decoder.max_header_list_size = limits.max_header_block_size
        conn.decoder.max_allowed_table_size = limits.header_table_size
        self._conn = conn
        self._initiated = False
        self._closed = False
        self._inbuf = bytearray()
        # Output waiting for data_to_send(): the chunks h2 produced, in order, and their
        # total. A list, not one bytearray: taking from the front of a multi-MiB
        # bytearray while appending at its back copied all of it again and again.
        self._outbuf: list[bytes] = []
        self._outlen = 0
        self._preface_left = b"" if client_side else PREFACE
        self._seen_settings = False
        self._block_size = 0
        self._backlog = 0
        self._streams: dict[int, _Stream] = {}
        self._sendable: dict[int, None] = {}  # ordered set: streams with DATA to frame
        self._pings = RateLimiter(limits.ping_rate, now)
        self._settings = RateLimiter(limits.settings_rate, now)
        self._resets = RateLimiter(limits.reset_rate, now)
        self._empty = RateLimiter(limits.empty_frame_rate, now)
        self._window_updates = RateLimiter(limits.window_update_rate, now)
        self._misc = RateLimiter(limits.misc_frame_rate, now)
        self._now = now

    # ----------------------------------------------------------- public surface

    def initiate(self) -> None:
        """Queue our side of the connection start (client: preface + SETTINGS; server: SETTINGS)."""
        if self._initiated:
            raise LocalProtocolError("initiate() was already called on this HTTP/2 role")
        self._initiated = True
        conn = self._conn
        conn.initiate_connection()
        # Lift h2's own stream cap (it raises TooManyStreamsError before the
        # header block is decoded, desynchronising HPACK). The value advertised
        # above stays what the peer must respect; the server role refuses the
        # excess itself (REFUSED_STREAM). Settings.acknowledge() applies the
        # change locally: nothing is sent.
        conn.local_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = _UNLIMITED_STREAMS
        conn.local_settings.acknowledge()
        extra = self.limits.connection_window_size - _H2_DEFAULT_WINDOW
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self._flush()

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes read from the peer; returns the events they caused (never raises on them)."""
        if not self._initiated:
            raise LocalProtocolError("call initiate() before receive_data()")
        if self._closed:
            return []
        self._now = now
        events: list[Event] = []
        buf = self._inbuf
        if self._preface_left:
            buf += data
            if not self._take_preface(events):
                return events
            data = bytes(buf)  # what followed the preface (once per connection)
            buf.clear()
        # Frames are cut straight out of ``data``; only a frame that straddles two reads is
        # assembled in ``_inbuf`` (one copy less per byte than buffering every read).
        with memoryview(data) as view:
            self._split(data, view, events)
        if not self._closed:
            self._pump()
        return events

    def _split(self, data: bytes, view: memoryview, events: list[Event]) -> None:
        """Feed the complete frames of ``_inbuf`` + ``data`` to h2; keep the incomplete rest."""
        buf = self._inbuf
        max_frame = self._conn.max_inbound_frame_size
        pos, size = 0, len(view)
        while not self._closed:
            if buf:  # finish the frame begun in an earlier read
                if len(buf) < _FRAME_HEADER:
                    take = min(_FRAME_HEADER - len(buf), size - pos)
                    buf += view[pos : pos + take]
                    pos += take
                    if len(buf) < _FRAME_HEADER:
                        return
                length = int.from_bytes(buf[0:3], "big")
                if length > max_frame:
                    self._frame_too_large(length, max_frame, events)
                    return
                take = min(_FRAME_HEADER + length - len(buf), size - pos)
                buf += view[pos : pos + take]
                pos += take
                if len(buf) < _FRAME_HEADER + length:
                    return
                frame = bytes(buf)
                buf.clear()  # an emptied bytearray gives its memory back
                self._receive_frame(frame, events)
                continue
            left = size - pos
            if left < _FRAME_HEADER:
                if left:
                    buf += view[pos:]
                return
            length = int.from_bytes(view[pos : pos + 3], "big")
            if length > max_frame:
                self._frame_too_large(length, max_frame, events)
                return
            end = pos + _FRAME_HEADER + length
            if end > size:
                buf += view[pos:]
                return
            if pos == 0 and end == size and type(data) is bytes:
                frame = data  # the read is exactly one frame: no copy
            else:
                frame = bytes(view[pos:end])
            pos = end
            self._receive_frame(frame, events)

    def _frame_too_large(self, length: int, max_frame: int, events: list[Event]) -> None:
        self._terminate(
            ErrorCodes.FRAME_SIZE_ERROR,
            f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE {max_frame}",
            events,
        )

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` (all when None) of the bytes waiting to be written."""
        buf = self._outbuf
        if max_bytes is None or max_bytes >= self._outlen:
            out = buf[0] if len(buf) == 1 else b"".join(buf)
            buf.clear()
            self._outlen = 0
        else:
            parts: list[bytes] = []
            need = max_bytes
            taken = 0
            while need:
                head = buf[taken]
                if len(head) <= need:
                    parts.append(head)
                    need -= len(head)
                    taken += 1
                else:
                    parts.append(head[:need])
                    buf[taken] = head[need:]
                    need = 0
            del buf[:taken]
            self._outlen -= max_bytes
            out = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._outlen <= self.limits.max_outbound_buffer:
            self._backlog = 0
        self._pump()
        return out

    def data_to_send_parts(self, max_bytes: int) -> list[bytes]:
        """Take waiting bytes as the chunks h2 produced them, without joining (no copy).

        Whole chunks are taken while their total stays within ``max_bytes``, but
        always at least one (a chunk is one DATA frame, or a few control frames).
        Writing the parts one by one saves the copy ``data_to_send`` makes to join
        them: one large allocation per write during a bulk transfer.
        """
        buf = self._outbuf
        taken = total = 0
        while taken < len(buf) and (not taken or total + len(buf[taken]) <= max_bytes):
            total += len(buf[taken])
            taken += 1
        parts = buf[:taken]
        del buf[:taken]
        self._outlen -= total
        if self._outlen <= self.limits.max_outbound_buffer:
            self._backlog = 0
        self._pump()
        return parts

    def ping(self, opaque: bytes) -> None:
        """Queue a PING with an 8-byte payload; :class:`PingAcknowledged` reports the answer."""
        self._require_open()
        if len(opaque) != 8:
            raise LocalProtocolError(f"a PING payload is exactly 8 bytes, got {len(opaque)}")
        self._conn.ping(bytes(opaque))
        self._flush()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Send GOAWAY and end the role; queued DATA is dropped, buffered bytes stay."""
        if self._closed or not self._initiated:
            self._closed = True
            return
        self._goaway(error_code, reason)

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        """Hand ``nbytes`` of flow-controlled data on ``stream_id`` back to the peer."""
        if nbytes < 0:
            raise LocalProtocolError("cannot acknowledge a negative number of bytes")
        st = self._streams.get(stream_id)
        if self._closed or st is None or nbytes == 0:
            return  # gone: its window was returned when it went
        if nbytes > st.unacked:
            raise LocalProtocolError(
                f"acknowledge({stream_id}, {nbytes}): only {st.unacked} bytes are unacknowledged"
            )
        st.unacked -= nbytes
        self._conn.acknowledge_received_data(nbytes, stream_id)
        self._flush()
        self._maybe_forget(stream_id)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue body bytes on ``stream_id``; framed as flow control and buffer room allow.

        Writes to a stream that is already gone (reset, or the connection
        closed) are dropped: a :class:`StreamReset` or
        :class:`ConnectionTerminated` has told the caller.
        """
        st = self._writable_stream(stream_id)
        if st is None:
            return
        if not st.headers_sent:
            raise LocalProtocolError(f"stream {stream_id}: send the headers before the body")
        if st.end_queued or st.local_closed:
            raise LocalProtocolError(f"stream {stream_id}: the body was already ended")
        self._queue(stream_id, st, data, end_stream)
        self._pump()

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> None:
        """Abort ``stream_id`` with RST_STREAM; a stream already gone is ignored."""
        st = self._writable_stream(stream_id)
        if st is None:
            return
        self._reset(stream_id, error_code)

    def queued_outbound(self, stream_id: int | None = None) -> int:
        """Bytes queued by ``send_data`` not yet framed (one stream, or all when None)."""
        if stream_id is None:
            return sum(st.queued for st in self._streams.values())
        st = self._streams.get(stream_id)
        return st.queued if st is not None else 0

    @property
    def outbound_pending(self) -> int:
        """Bytes produced and waiting for ``data_to_send``."""
        return self._outlen

    @property
    def inbound_pending(self) -> int:
        """Bytes of an incomplete frame held until the rest arrives."""
        return len(self._inbuf)

    @property
    def is_closed(self) -> bool:
        """True once a GOAWAY was sent or received."""
        return self._closed

    @property
    def open_streams(self) -> int:
        """Streams that count against MAX_CONCURRENT_STREAMS (h2's count)."""
        if self.client_side:
            return self._conn.open_outbound_streams
        return self._conn.open_inbound_streams

    # ------------------------------------------------------------- input path

    def _take_preface(self, events: list[Event]) -> bool:
        buf = self._inbuf
        n = min(len(self._preface_left), len(buf))
        if bytes(buf[:n]) != self._preface_left[:n]:
            self._terminate(
                ErrorCodes.PROTOCOL_ERROR, "the peer did not send the HTTP/2 client preface", events
            )
            return False
        del buf[:n]
        self._preface_left = self._preface_left[n:]
        if self._preface_left:
            return False
        self._conn.receive_data(PREFACE)
        return True

    def _receive_frame(self, frame: bytes, events: list[Event]) -> None:
        violation = self._admit(frame)
        if violation is not None:
            code, reason = violation
            self._terminate(code, reason, events)
            return
        before = self._outlen
        try:
            h2_events = self._conn.receive_data(frame)
        except h2.exceptions.ProtocolError as e:
            # h2 has queued GOAWAY with the matching error code already.
            self._flush()
            self._end(int(e.error_code), f"peer broke HTTP/2: {e}", events)
            return
        except (
            h2.exceptions.H2Error,
            HPACKError,
            HyperframeError,
            ValueError,
            IndexError,
            KeyError,
            AssertionError,
        ) as e:
            self._terminate(ErrorCodes.INTERNAL_ERROR, f"h2 failed on peer input: {e!r}", events)
            return
        self._flush()
        if frame[3] == _SETTINGS:
            _compact_settings(self._conn.remote_settings)
        for ev in h2_events:
            if self._closed:
                break
            self._translate(ev, events)
        if self._closed:
            return
        grown = self._outlen - before
        if grown > 0 and self._outlen > self.limits.max_outbound_buffer:
            self._backlog += grown
            if self._backlog > self.limits.max_control_backlog:
                self._terminate(
                    ErrorCodes.ENHANCE_YOUR_CALM,
                    "the peer provokes answers but does not read them",
                    events,
                )

    def _admit(self, frame: bytes) -> tuple[int, str] | None:
        """Count one frame against the limits; (error code, reason) when one is broken."""
        ftype, flags = frame[3], frame[4]
        length = len(frame) - _FRAME_HEADER
        now = self._now
        calm = ErrorCodes.ENHANCE_YOUR_CALM
        if not self._seen_settings:
            if ftype != _SETTINGS or flags & _FLAG_ACK:
                return ErrorCodes.PROTOCOL_ERROR, "the first frame from the peer must be SETTINGS"
            self._seen_settings = True
        if ftype == _DATA:
            payload = length
            if flags & _FLAG_PADDED and length:
                payload = length - 1 - frame[_FRAME_HEADER]
            if payload <= 0 and not flags & _FLAG_END_STREAM and not self._empty.allow(now):
                return calm, "flood of empty DATA frames"
        elif ftype in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
            if ftype == _CONTINUATION:
                self._block_size += length
            else:
                self._block_size = length
            if self._block_size > self.limits.max_header_block_size:
                return calm, (
                    f"header block over {self.limits.max_header_block_size} bytes "
                    "(CONTINUATION flood)"
                )
            payload = length
            if ftype == _HEADERS:
                if flags & _FLAG_PADDED and length:
                    payload -= 1 + frame[_FRAME_HEADER]
                if flags & _FLAG_PRIORITY:
                    payload -= 5
            if payload <= 0 and not self._empty.allow(now):
                return calm, "flood of HEADERS/CONTINUATION frames without a header block"
        elif ftype == _PING:
            if not self._pings.allow(now):
                return calm, "PING flood"
        elif ftype == _SETTINGS:
            if not self._settings.allow(now):
                return calm, "SETTINGS flood"
        elif ftype == _RST_STREAM:
            if not self._resets.allow(now):
                return calm, "RST_STREAM flood (rapid reset)"
        elif ftype == _WINDOW_UPDATE:
            if not self._window_updates.allow(now):
                return calm, "WINDOW_UPDATE flood"
        elif ftype != _GOAWAY and not self._misc.allow(now):
            return calm, "flood of PRIORITY or unknown frames"
        return None

    def _translate(self, ev: h2.events.Event, out: list[Event]) -> None:
        kind = _HEADER_BLOCKS.get(type(ev))
        if kind is not None:
            headers = ev.headers  # type: ignore[attr-defined]
            try:
                check_received(headers, response=kind == "response", trailer=kind == "trailer")
            except MalformedHeaders as e:
                self._terminate(ErrorCodes.PROTOCOL_ERROR, f"peer broke HTTP/2: {e}", out)
                return
        if isinstance(ev, h2.events.RequestReceived):
            self._on_request(ev.stream_id, ev.headers, ev.stream_ended is not None, out)
        elif isinstance(ev, h2.events.ResponseReceived):
            self._on_response(ev.stream_id, ev.headers, out)
        elif isinstance(ev, h2.events.DataReceived):
            self._on_data(ev, out)
        elif isinstance(ev, h2.events.TrailersReceived):
            if ev.stream_id in self._streams:
                out.append(
                    TrailersReceived(stream_id=ev.stream_id, headers=self._decode(ev.headers))
                )
        elif isinstance(ev, h2.events.StreamEnded):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st.remote_closed = True
                out.append(StreamEnded(stream_id=ev.stream_id))
                self._maybe_forget(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self._streams:
                self._forget(ev.stream_id)
                out.append(
                    StreamReset(stream_id=ev.stream_id, error_code=int(ev.error_code), remote=True)
                )
        elif isinstance(ev, h2.events.PingAckReceived):
            out.append(PingAcknowledged(opaque=ev.ping_data))
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            # The peer may allow a huge HPACK table; ours stays small (h2 would
            # grow it to whatever the peer offers). Same size: no-op in hpack.
            encoder = self._conn.encoder
            encoder.header_table_size = min(
                encoder.header_table_size, self.limits.header_table_size
            )
            changed = tuple(
                (int(code), int(c.new_value)) for code, c in ev.changed_settings.items()
            )
            out.append(RemoteSettingsChanged(changed=changed))
        elif isinstance(ev, h2.events.ConnectionTerminated):
            data = ev.additional_data or b""
            self._end(
                int(ev.error_code or 0),
                data[:_MAX_REASON].decode("utf-8", "replace"),
                out,
                local=False,
                last_stream_id=ev.last_stream_id,
            )
        # Other h2 events (PingReceived, SettingsAcknowledged, WindowUpdated,
        # PriorityUpdated, InformationalResponseReceived, UnknownFrameReceived,
        # AlternativeServiceAvailable) need nothing from the caller: h2 has
        # answered them and the pump runs after every read.

    def _on_data(self, ev: h2.events.DataReceived, out: list[Event]) -> None:
        sid, fcl = ev.stream_id, ev.flow_controlled_length
        st = self._streams.get(sid)
        if st is None or not ev.data:
            # Not for the caller (a stream it does not know, or padding only):
            # hand the window straight back.
            if fcl:
                self._conn.acknowledge_received_data(fcl, sid)
                self._flush()
            return
        st.received += len(ev.data)
        if st.received > self.limits.max_body_size:
            self._conn.acknowledge_received_data(fcl, sid)
            self._body_too_large(sid, st, ev.stream_ended is not None, out)
            return
        if self.auto_acknowledge:
            self._conn.acknowledge_received_data(fcl, sid)
            self._flush()
        else:
            st.unacked += fcl
        out.append(DataReceived(stream_id=sid, data=ev.data, flow_controlled_length=fcl))

    # Role hooks: the server role overrides _on_request, the client role
    # _on_response (h2 never delivers the other kind; if it did, end cleanly).
    def _on_request(
        self, stream_id: int, headers: list[Header], ended: bool, out: list[Event]
    ) -> None:
        self._terminate(ErrorCodes.PROTOCOL_ERROR, "a request sent to the client", out)

    def _on_response(self, stream_id: int, headers: list[Header], out: list[Event]) -> None:
        self._terminate(ErrorCodes.PROTOCOL_ERROR, "a response sent to the server", out)

    def _body_too_large(self, stream_id: int, st: _Stream, ended: bool, out: list[Event]) -> None:
        self._reset(stream_id, ErrorCodes.CANCEL)
        out.append(StreamReset(stream_id=stream_id, error_code=ErrorCodes.CANCEL, remote=False))

    # ----------------------------------------------------------- output path

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._outbuf.append(data)
            self._outlen += len(data)

    def _queue(self, stream_id: int, st: _Stream, data: bytes, end_stream: bool) -> None:
        if data:
            view = memoryview(data if isinstance(data, bytes) else bytes(data))
            st.chunks.append(view)
            st.queued += len(view)
        if end_stream:
            st.end_queued = True
        if st.queued or st.end_queued:
            self._sendable[stream_id] = None

    def _pump(self) -> None:
        """Frame queued data, round-robin, within flow-control windows and the buffer cap."""
        if self._closed or not self._sendable:
            return
        conn = self._conn
        cap = min(conn.max_outbound_frame_size, self.limits.max_frame_size)
        limit = self.limits.max_outbound_buffer
        progressed = True
        while progressed and self._sendable and self._outlen < limit:
            progressed = False
            for sid in list(self._sendable):
                if self._outlen >= limit:
                    break
                st = self._streams.get(sid)
                if st is None:
                    del self._sendable[sid]
                    continue
                try:
                    window = conn.local_flow_control_window(sid)
                except h2.exceptions.ProtocolError:
                    self._forget(sid)
                    continue
                n = min(window, cap, st.queued)
                if n <= 0 and (st.queued or not st.end_queued):
                    continue  # waiting for WINDOW_UPDATE
                chunk = st.take(n) if n > 0 else b""
                end = st.end_queued and not st.queued
                try:
                    conn.send_data(sid, chunk, end_stream=end)
                except h2.exceptions.ProtocolError:
                    self._forget(sid)
                    continue
                self._flush()
                # The peer may answer each DATA frame with two WINDOW_UPDATEs.
                self._window_updates.credit(2)
                progressed = True
                del self._sendable[sid]
                if end:
                    st.local_closed = True
                    self._maybe_forget(sid)
                elif st.queued:
                    self._sendable[sid] = None  # to the back of the round

    # ------------------------------------------------------------ bookkeeping

    def _require_open(self) -> None:
        if not self._initiated:
            raise LocalProtocolError("call initiate() first")
        if self._closed:
            raise LocalProtocolError(
                "the HTTP/2 connection is closed; open a new uplink connection"
            )

    def _writable_stream(self, stream_id: int) -> _Stream | None:
        """The stream's state; None when it is gone; raises when it never existed."""
        st = self._streams.get(stream_id)
        if st is not None and not self._closed:
            return st
        conn = self._conn
        if self._closed or stream_id <= max(
            conn.highest_inbound_stream_id, conn.highest_outbound_stream_id
        ):
            return None
        raise LocalProtocolError(f"stream {stream_id} was never opened on this connection")

    def _reset(self, stream_id: int, error_code: int) -> None:
        try:
            self._conn.reset_stream(stream_id, error_code)
        except h2.exceptions.ProtocolError:
            pass  # already closed in h2: nothing to tell the peer
        self._forget(stream_id)
        self._flush()

    def _forget(self, stream_id: int) -> None:
        """Drop a stream; return what the caller had not acknowledged to the connection."""
        st = self._streams.pop(stream_id, None)
        self._sendable.pop(stream_id, None)
        if st is not None and st.unacked:
            self._conn.acknowledge_received_data(st.unacked, stream_id)
            self._flush()

    def _maybe_forget(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st is not None and st.local_closed and st.remote_closed and not st.unacked:
            self._forget(stream_id)

    def _count_refusal(self, out: list[Event]) -> None:
        """A stream we refused counts like a peer reset (rapid-reset bound)."""
        if not self._resets.allow(self._now):
            self._terminate(ErrorCodes.ENHANCE_YOUR_CALM, "too many refused streams", out)

    def _decode(self, headers: Iterable[tuple[bytes | str, bytes | str]]) -> Headers:
        return [(_text(n), _text(v)) for n, v in headers]

    def _encode(
        self, headers: Iterable[tuple[str | bytes, str | bytes]], *, response: bool
    ) -> list[tuple[bytes, bytes]]:
        """Headers to bytes, normalised and checked as h2 would (:func:`~.headers.prepare_sent`; h2
        does not do it again: see ``__init__``); sensitive fields become ``NeverIndexedHeaderTuple``
        (never HPACK-indexed)."""
        encoded = [(_wire(n, "name"), _wire(v, "value")) for n, v in headers]
        try:
            return prepare_sent(encoded, response=response)
        except MalformedHeaders as e:
            raise LocalProtocolError(f"headers not allowed in HTTP/2: {e}") from e

    @staticmethod
    def _with_length(
        fields: list[tuple[str | bytes, str | bytes]], body: bytes | None, end_stream: bool
    ) -> list[tuple[str | bytes, str | bytes]]:
        """Add content-length for a complete body unless the caller gave one."""
        if body and end_stream and not any(_text(n).lower() == "content-length" for n, _ in fields):
            fields.append(("content-length", str(len(body))))
        return fields

    @staticmethod
    def _header_list_size(headers: Iterable[tuple[bytes | str, bytes | str]]) -> int:
        """RFC 7540 §6.5.2 size: name + value + 32 per field."""
        return sum(len(n) + len(v) + 32 for n, v in headers)

    def _goaway(self, error_code: int, reason: str) -> None:
        self._conn.close_connection(
            error_code=error_code, additional_data=reason.encode("utf-8")[:_MAX_REASON]
        )
        self._flush()
        self._shutdown()

    def _terminate(self, error_code: int, reason: str, out: list[Event]) -> None:
        """We end the connection: GOAWAY + ConnectionTerminated(local=True)."""
        self._goaway(error_code, reason)
        out.append(ConnectionTerminated(error_code=int(error_code), reason=reason, local=True))

    def _end(
        self,
        error_code: int,
        reason: str,
        out: list[Event],
        *,
        local: bool = True,
        last_stream_id: int | None = None,
    ) -> None:
        """The connection ended inside h2 (its GOAWAY is queued, or the peer's arrived)."""
        self._shutdown()
        out.append(
            ConnectionTerminated(
                error_code=error_code, reason=reason, local=local, last_stream_id=last_stream_id
            )
        )

    def _shutdown(self) -> None:
        self._closed = True
        self._inbuf.clear()
        self._streams.clear()
        self._sendable.clear()
