"""Layer 4: the VSS's RTSP front — stream URIs of lower systems made reachable (ANX-B-1, STR-1).

Theory of operation
-------------------
A URI a lower system answers (GetStreamUri, and later GetReplayUri) points at
that system's RTSP server, which a client of the VSS may not reach. The
gateway hands each such ``rtsp://`` URI to :meth:`RelayTable.expose`, which
keeps it under a short deterministic id (the same URI gives the same id, so
asking twice gives one URI) and answers ``rtsp://<front>/relay/<id>``. URIs
that already point at this front (a lower system on an uplink was told the
front's address, :data:`~..services.media2.RTSP_BASE_HEADER`) are kept.

:class:`VssRtspFront` serves one port for players (RTSP over TCP,
interleaved):

* ``/relay/<id>…`` — a TCP connection to the kept URI; the device relay's
  session (:meth:`~..runtime.rtsp_relay.RtspRelay.relay`) rewrites the URLs
  both ways, so the player only ever sees the front's URL.
* ``/devices/<id>/<token>…`` — a lower system on an uplink of the embedded
  cloud listener, through the cloud's front
  (:class:`~..runtime.rtsp_front.RtspFront`): the tunnel over the uplink.

The front reads the first request itself (bounded head, deadline) to choose;
the bytes read are handed on unchanged. The table is bounded
(:data:`MAX_RELAYS`, least recently exposed dropped first) and lives in
memory: after a restart clients ask GetStreamUri again, as they must anyway
when a URI stops working.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..domain.media import MediaSource
from ..runtime.rtsp_relay import READ_CHUNK, RtspRelay
from ..sansio.rtsp_tunnel import RtspError, RtspMessage, RtspSplitter, rtsp_response
from ..transport.base import ByteStream

if TYPE_CHECKING:
    from ..runtime.rtsp_front import RtspFront

__all__ = ["MAX_RELAYS", "RelayTable", "VssRtspFront"]

log = logging.getLogger(__name__)

#: Upstream URIs kept at once.
MAX_RELAYS = 4096
RELAY_PATH = "/relay/"
#: Seconds a player has to send its first request.
HEAD_TIMEOUT = 10.0


class RelayTable:
    """Upstream ``rtsp://`` URIs under short ids (thread-safe: the gateway runs in worker threads)."""

    def __init__(self, front_base: str, *, max_entries: int = MAX_RELAYS) -> None:
        self.front_base = front_base.rstrip("/")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def expose(self, upstream: str, prefix: str) -> str:
        """The front's URI for ``upstream`` (a stream of lower system ``prefix``)."""
        if upstream.startswith(self.front_base + "/"):
            return upstream
        digest = hashlib.sha256(upstream.encode()).digest()[:10]
        relay_id = base64.b32encode(digest).decode("ascii").rstrip("=").lower()
        with self._lock:
            self._entries[relay_id] = (upstream, prefix)
            self._entries.move_to_end(relay_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return f"{self.front_base}{RELAY_PATH}{relay_id}"

    def source(self, relay_id: str) -> MediaSource | None:
        with self._lock:
            found = self._entries.get(relay_id)
        if found is None:
            return None
        upstream, prefix = found
        return MediaSource(token=relay_id, name=f"{prefix} stream", rtsp_url=upstream)


class _Replayed:
    """A byte stream whose first read gives back the bytes already read from it."""

    def __init__(self, stream: ByteStream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    async def read(self, max_bytes: int = 65536) -> bytes:
        if self._head:
            data, self._head = self._head[:max_bytes], self._head[max_bytes:]
            return data
        return await self._stream.read(max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class VssRtspFront:
    """``rtsp://…/relay/<id>`` and ``rtsp://…/devices/<id>/<token>`` for players (module docstring)."""

    def __init__(self, table: RelayTable, cloud_front: RtspFront | None = None) -> None:
        self.table = table
        self.cloud_front = cloud_front
        self.relay = RtspRelay(_NoSources(), ("User",))

    async def handle(self, player: ByteStream) -> None:
        received = bytearray()
        try:
            first = await self._first_request(player, received)
        except (RtspError, TimeoutError) as exc:
            log.info("VSS RTSP front: bad first request: %s", exc or "too slow")
            await player.write(rtsp_response(400, "Bad Request", None))
            return
        if first is None:
            return
        replayed: Any = _Replayed(player, bytes(received))
        try:
            path = urlsplit(first.target).path
        except ValueError:
            path = ""
        if path.startswith("/devices/") and self.cloud_front is not None:
            await self.cloud_front.handle(replayed)
            return
        source = None
        if path.startswith(RELAY_PATH):
            source = self.table.source(unquote(path[len(RELAY_PATH):].split("/", 1)[0]))
        if source is None:
            await player.write(rtsp_response(404, "Not Found", first.header("cseq")))
            return
        await self.relay.relay(source, replayed.read, player)

    async def _first_request(self, player: ByteStream, received: bytearray) -> RtspMessage | None:
        splitter = RtspSplitter()
        async with asyncio.timeout(HEAD_TIMEOUT):
            while True:
                data = await player.read(READ_CHUNK)
                if not data:
                    return None
                received += data
                for unit in splitter.feed(data):
                    if isinstance(unit, RtspMessage) and not unit.is_response:
                        return unit
                    raise RtspError("a session must start with an RTSP request", status_hint=400)


class _NoSources:
    """The relay's media backend: sources come from the table, never by token lookup."""

    def media_sources(self) -> list[MediaSource]:
        return []

    def media_source(self, token: str) -> MediaSource | None:
        return None
