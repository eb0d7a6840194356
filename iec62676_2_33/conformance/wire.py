"""Conformance kit: what crossed the wire on one connection of the tool's cloud (UPL-2, UPL-3, UPL-7, UPL-8).

:class:`RecordingStream` wraps the :class:`~iec62676_2_33.transport.base.ByteStream`
the TLS server hands over and passes every byte through, unchanged, to the
cloud runtime above it, while :class:`Connection` keeps what a case needs to
judge the device on the wire: the first bytes each way (bounded), the request
head, when the ``101`` went out, when the device's end of stream came, and a
summary of every HTTP/2 frame the device sent after its upgrade request
(type, flags, stream, length and, for PING, the payload).

The frame scan reads only the 9-byte frame headers (RFC 9113 §4.1) and skips
payloads, so it holds at most one header and the first 8 payload bytes of a
PING, GOAWAY or RST_STREAM (the opaque data, the error codes): h2 itself
cannot be asked which frame came first or whether a PING ACK carried our
payload, and this scan keeps the tool independent of the state machine it
tests. ``muted`` makes the cloud fall silent: writes are dropped (counted),
the UPL-8 silence case uses it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..transport.base import ByteStream

#: Bytes of each direction a connection keeps for the evidence.
KEEP_BYTES = 16384
#: Frame summaries a connection keeps (the oldest are dropped).
KEEP_FRAMES = 512

FRAME_TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
               6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}
RST_STREAM, SETTINGS, PING, GOAWAY = 3, 4, 6, 7
ACK = 0x1
#: Payload bytes kept per frame type: PING's opaque data; GOAWAY's last stream and error code; RST_STREAM's code.
KEEP_PAYLOAD = {PING: 8, GOAWAY: 8, RST_STREAM: 4}
ERROR_CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
               9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY",
               13: "HTTP_1_1_REQUIRED"}
CLIENT_MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True)
class Frame:
    at: float
    type: int
    flags: int
    stream_id: int
    length: int
    payload: bytes = b""  # the start of a PING, GOAWAY or RST_STREAM payload (KEEP_PAYLOAD)

    @property
    def error_code(self) -> int | None:
        """The error code of a GOAWAY or RST_STREAM."""
        if self.type == GOAWAY and len(self.payload) == 8:
            return int.from_bytes(self.payload[4:8], "big")
        if self.type == RST_STREAM and len(self.payload) == 4:
            return int.from_bytes(self.payload, "big")
        return None

    def describe(self) -> str:
        name = FRAME_TYPES.get(self.type, f"type {self.type}")
        ack = " ACK" if self.type in (SETTINGS, PING) and self.flags & ACK else ""
        code = self.error_code
        if code is not None:
            extra = f" {ERROR_CODES.get(code, hex(code))}"
        else:
            extra = f" {self.payload.hex()}" if self.payload else ""
        return f"{name}{ack} stream {self.stream_id} length {self.length}{extra}"


class FrameScanner:
    """HTTP/2 frame headers out of a byte stream, payloads skipped (see the module docstring)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0
        self.frames: deque[Frame] = deque(maxlen=KEEP_FRAMES)

    def feed(self, data: bytes, now: float) -> None:
        view = memoryview(data)
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            view = view[n:]
        self._buf += view
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return
            if len(self._buf) < 9:
                return
            length = int.from_bytes(self._buf[0:3], "big")
            ftype, flags = self._buf[3], self._buf[4]
            stream_id = int.from_bytes(self._buf[5:9], "big") & 0x7FFFFFFF
            payload = b""
            keep = KEEP_PAYLOAD.get(ftype, 0)
            if keep and length >= keep:
                if len(self._buf) < 9 + keep:
                    return
                payload = bytes(self._buf[9:9 + keep])
            self.frames.append(Frame(now, ftype, flags, stream_id, length, payload))
            del self._buf[:9]
            self._skip = length


@dataclass
class Connection:
    """One TLS connection a device made to an endpoint of the tool's cloud."""

    endpoint: str
    peer: str
    opened_at: float
    tls_version: str | None = None
    inbound: bytearray = field(default_factory=bytearray)
    outbound: bytearray = field(default_factory=bytearray)
    head: bytes | None = None  # the device's request head, through the blank line
    identity: str | None = None  # the client certificate's identity, once authenticated
    request: Any = None  # the UpgradeRequest, once parsed
    refused: bool = False
    switched_at: float | None = None  # when the 101 went out
    last_write_at: float | None = None  # the last byte the cloud really sent
    eof_at: float | None = None  # the device's end of stream (or a read error)
    closed_at: float | None = None
    muted: bool = False
    dropped_bytes: int = 0
    scanner: FrameScanner = field(default_factory=FrameScanner)
    _pending_head: bytearray = field(default_factory=bytearray)

    @property
    def frames(self) -> list[Frame]:
        return list(self.scanner.frames)

    @property
    def path(self) -> str | None:
        if self.head is None:
            return None
        parts = self.head.split(b"\r\n", 1)[0].split(b" ")
        return parts[1].decode("latin-1").split("?", 1)[0] if len(parts) >= 2 else None

    def received(self, data: bytes, now: float) -> None:
        if len(self.inbound) < KEEP_BYTES:
            self.inbound += data[:KEEP_BYTES - len(self.inbound)]
        if self.head is not None:
            self.scanner.feed(data, now)
            return
        self._pending_head += data
        end = self._pending_head.find(b"\r\n\r\n")
        if end >= 0:
            self.head = bytes(self._pending_head[:end + 4])
            rest = bytes(self._pending_head[end + 4:])
            self._pending_head.clear()
            if rest:
                self.scanner.feed(rest, now)
        elif len(self._pending_head) > KEEP_BYTES:
            self._pending_head = self._pending_head[:KEEP_BYTES]

    def sent(self, data: bytes, now: float) -> None:
        if self.switched_at is None and data.startswith(b"HTTP/1.1 101"):
            self.switched_at = now
        if len(self.outbound) < KEEP_BYTES:
            self.outbound += data[:KEEP_BYTES - len(self.outbound)]
        self.last_write_at = now

    def first_bytes(self, n: int = 160) -> str:
        """The start of what the device sent, printable."""
        return repr(bytes(self.inbound[:n]))

    def answer_line(self) -> str:
        return bytes(self.outbound.split(b"\r\n", 1)[0][:200]).decode("latin-1") if self.outbound else "(nothing)"


class RecordingStream:
    """A :class:`ByteStream` that records into a :class:`Connection` and passes everything through."""

    def __init__(self, inner: ByteStream, conn: Connection) -> None:
        self.inner = inner
        self.conn = conn

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self.inner.read(max_bytes)
        except BaseException:
            self.conn.eof_at = self.conn.eof_at or time.monotonic()
            raise
        if data:
            self.conn.received(data, time.monotonic())
        else:
            self.conn.eof_at = self.conn.eof_at or time.monotonic()
        return data

    def _out(self, data: bytes) -> bool:
        if self.conn.muted:
            self.conn.dropped_bytes += len(data)
            return False
        self.conn.sent(bytes(data), time.monotonic())
        return True

    async def write(self, data: bytes) -> None:
        if self._out(data):
            await self.inner.write(data)

    def write_nowait(self, data: bytes) -> None:
        if self._out(data):
            self.inner.write_nowait(data)

    def writelines(self, parts: Sequence[bytes]) -> None:
        joined = b"".join(parts)
        if self._out(joined):
            self.inner.writelines(parts)

    async def drain(self) -> None:
        await self.inner.drain()

    async def close(self) -> None:
        self.conn.closed_at = self.conn.closed_at or time.monotonic()
        await self.inner.close()

    def abort(self) -> None:
        self.conn.closed_at = self.conn.closed_at or time.monotonic()
        self.inner.abort()

    def extra(self, name: str, default: Any = None) -> Any:
        return self.inner.extra(name, default)

    @property
    def at_eof(self) -> bool:
        return self.inner.at_eof
