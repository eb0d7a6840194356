"""Conformance kit: batches of hostile HTTP/2 frames, and the cloud endpoint that plays them to a device
(UPL-3, UPL-15, UPL-16).

After the 101 the device is an HTTP/2 server on a connection it opened
itself: whatever the cloud sends it must parse, bound and survive, exactly as
a web server must survive its clients. Each :class:`Batch` is what a broken or
hostile cloud may send on one connection, built by hand (the frame header of
RFC 9113 §4.1, header blocks from ``hpack``), because no HTTP/2 library would
send it:

* *malformed frames*, each a connection error the device must answer by
  ending the connection (RFC 9113 §5.4.1): DATA on stream 0, a SETTINGS frame
  whose length is not a multiple of 6, HEADERS on an even (server-initiated)
  stream;
* *an oversized header block*: one request whose header block (HEADERS and
  CONTINUATION frames) is 1 MiB;
* *floods*: 20,000 SETTINGS frames, 20,000 PINGs, and the rapid reset of
  CVE-2023-44487 (2,000 requests each cancelled at once).

For the floods and the oversized block a device may answer as it likes
(refuse the stream, GOAWAY, close) as long as it stays bounded and keeps
serving everybody else; that is judged by the case, not here.

:class:`HostilePlayer` is the handler of an endpoint of the tool's cloud
(:mod:`.toolcloud`): it reads the upgrade request, answers ``101``, sends the
client preface and an empty SETTINGS, then the batch the request path names,
and reads what comes back for ``window`` seconds or until the device closes
(the frames are recorded by :mod:`.wire`). Every write and read is bounded in
time; what is sent is bounded by the batch (at most about 1.1 MiB).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from hpack import Encoder

from ..errors import Iec62676Error
from ..sansio.upgrade import UpgradeServer
from .toolcloud import read_head
from .wire import CLIENT_MAGIC, Connection, RecordingStream

#: Bytes written per write call.
CHUNK = 64 * 1024
#: Frame types and flags used here (RFC 9113 §6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, CONTINUATION = 0, 1, 3, 4, 6, 9
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL = 0x8
#: The largest frame the tool sends (the RFC's initial SETTINGS_MAX_FRAME_SIZE, valid for every device).
MAX_FRAME = 16384


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame, header and payload, exactly as given (no checks: that is the point)."""
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream_id.to_bytes(4, "big") + payload


def _request_block(encoder: Encoder, path: str = "/", extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", "device"), (":path", path)]
    block: bytes = encoder.encode(headers + (extra or []), huffman=False)
    return block


def _oversized_headers() -> bytes:
    """One request whose header block is 1 MiB: HEADERS, then CONTINUATION frames of 16 KiB."""
    block = _request_block(Encoder(), extra=[("x-conformance-filler", "a" * (1024 * 1024))])
    pieces = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)]
    out = [frame(HEADERS, END_STREAM, 1, pieces[0])]
    out += [frame(CONTINUATION, END_HEADERS if i == len(pieces) - 1 else 0, 1, piece)
            for i, piece in enumerate(pieces[1:], 1)]
    return b"".join(out)


def _rapid_reset(count: int = 2000) -> bytes:
    """``count`` GET requests, each reset (CANCEL) right after its HEADERS (CVE-2023-44487)."""
    encoder = Encoder()
    out = bytearray()
    for n in range(count):
        stream_id = 2 * n + 1
        out += frame(HEADERS, END_STREAM | END_HEADERS, stream_id, _request_block(encoder, "/onvif/device_service"))
        out += frame(RST_STREAM, 0, stream_id, CANCEL.to_bytes(4, "big"))
    return bytes(out)


@dataclass(frozen=True)
class Batch:
    """What a hostile cloud sends on one connection; ``must_close``: a connection error (RFC 9113 §5.4.1)."""

    name: str
    build: Callable[[], bytes]
    must_close: bool


BATCHES: tuple[Batch, ...] = (
    Batch("DATA on stream 0", lambda: frame(DATA, 0, 0, b"x"), must_close=True),
    Batch("SETTINGS of 5 bytes", lambda: frame(SETTINGS, 0, 0, b"\0" * 5), must_close=True),
    Batch("HEADERS on an even stream",
          lambda: frame(HEADERS, END_STREAM | END_HEADERS, 2, _request_block(Encoder())), must_close=True),
    Batch("a header block of 1 MiB", _oversized_headers, must_close=False),
    Batch("20,000 SETTINGS frames", lambda: frame(SETTINGS, 0, 0) * 20000, must_close=False),
    Batch("20,000 PING frames", lambda: frame(PING, 0, 0, b"hostile!") * 20000, must_close=False),
    Batch("rapid reset of 2,000 streams", _rapid_reset, must_close=False),
)


@dataclass
class Played:
    """One batch played on one connection."""

    batch: Batch
    conn: Connection
    sent: int = 0  # bytes of the batch written
    device_closed: bool = False  # the device ended the connection within the window
    finished: bool = False


class HostilePlayer:
    """The handler of the hostile endpoint: the path ``<prefix><n>`` plays ``BATCHES[n]`` (see the module
    docstring); ``played`` keeps the first connection of each path."""

    def __init__(self, prefix: str = "/hostile-", window: float = 3.0) -> None:
        self.prefix = prefix
        self.window = window
        self.played: dict[str, Played] = {}

    def path(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def _batch(self, path: str | None) -> Batch | None:
        if path is None or not path.startswith(self.prefix) or not path[len(self.prefix):].isdigit():
            return None
        n = int(path[len(self.prefix):])
        return BATCHES[n] if n < len(BATCHES) else None

    async def handle(self, stream: RecordingStream, conn: Connection) -> None:
        head = await read_head(stream)
        batch = self._batch(conn.path) if head is not None else None
        if head is None or batch is None:
            return
        upgrade = UpgradeServer()
        try:
            upgrade.receive_data(head)
            switched = upgrade.accept()
        except Iec62676Error:
            return
        played = self.played.setdefault(conn.path or "", Played(batch, conn))
        if played.conn is not conn:  # a later reconnection on the same path: play again, record nothing
            played = Played(batch, conn)
        deadline = time.monotonic() + self.window
        try:
            async with asyncio.timeout(self.window):
                await stream.write(switched + CLIENT_MAGIC + frame(SETTINGS, 0, 0))
                data = batch.build()
                for start in range(0, len(data), CHUNK):
                    await stream.write(data[start:start + CHUNK])
                    played.sent = start + len(data[start:start + CHUNK])
        except (TimeoutError, Iec62676Error, OSError):
            pass  # the device stopped reading or closed: what it did is on the record
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while await stream.read(65536):
                    pass
            played.device_closed = True
        except (TimeoutError, Iec62676Error, OSError):
            played.device_closed = conn.eof_at is not None
        finally:
            played.finished = True
