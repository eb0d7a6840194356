"""Layer 4: the VSS's RTSP front — stream and replay URIs of lower systems made reachable (ANX-B-1, ANX-B-3, STR-1).

Theory of operation
-------------------
A URI a lower system answers (GetStreamUri, GetReplayUri) points at
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

The front reads the first request to choose (the device relay's
:func:`~..runtime.rtsp_relay.first_request`: bounded bytes, a deadline); the
bytes read are handed on unchanged (:class:`~..runtime.rtsp_relay.Replayed`).
The table is bounded (:data:`MAX_RELAYS`, least recently exposed dropped
first) and lives in
memory: after a restart clients ask GetStreamUri again, as they must anyway
when a URI stops working.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..domain.media import MediaSource
from ..runtime.rtsp_relay import Replayed, RtspRelay, first_request
from ..sansio.rtsp_tunnel import rtsp_response
from ..transport.base import ByteStream

if TYPE_CHECKING:
    from ..runtime.rtsp_front import RtspFront

__all__ = ["MAX_RELAYS", "RelayTable", "VssRtspFront"]

log = logging.getLogger(__name__)

#: Upstream URIs kept at once.
MAX_RELAYS = 4096
RELAY_PATH = "/relay/"


class RelayTable:
    """Upstream ``rtsp://`` URIs under random ids (thread-safe: the gateway runs in worker threads).

    The id is 80 random bits, not derived from the upstream URI: the front has no authentication of its own,
    so a relay URI is only known to whoever was handed it by GetStreamUri (which access control decided).
    The same upstream keeps its id while it stays in the table."""

    def __init__(self, front_base: str, *, max_entries: int = MAX_RELAYS) -> None:
        self.front_base = front_base.rstrip("/")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._ids: dict[str, str] = {}

    def expose(self, upstream: str, prefix: str) -> str:
        """The front's URI for ``upstream`` (a stream of lower system ``prefix``)."""
        if upstream.startswith(self.front_base + "/"):
            return upstream
        with self._lock:
            relay_id = self._ids.get(upstream)
            if relay_id is None:
                relay_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
                self._ids[upstream] = relay_id
            self._entries[relay_id] = (upstream, prefix)
            self._entries.move_to_end(relay_id)
            while len(self._entries) > self.max_entries:
                _, (gone, _) = self._entries.popitem(last=False)
                del self._ids[gone]
        return f"{self.front_base}{RELAY_PATH}{relay_id}"

    def source(self, relay_id: str) -> MediaSource | None:
        with self._lock:
            found = self._entries.get(relay_id)
        if found is None:
            return None
        upstream, prefix = found
        return MediaSource(token=relay_id, name=f"{prefix} stream", rtsp_url=upstream)


class VssRtspFront:
    """``rtsp://…/relay/<id>`` and ``rtsp://…/devices/<id>/<token>`` for players (module docstring)."""

    def __init__(self, table: RelayTable, cloud_front: RtspFront | None = None) -> None:
        self.table = table
        self.cloud_front = cloud_front
        self.relay = RtspRelay(_NoSources(), ("User",))

    async def handle(self, player: ByteStream) -> None:
        received, first = await first_request(player.read)
        if first is None:
            if received:
                log.info("VSS RTSP front: no RTSP request came first")
                await player.write(rtsp_response(400, "Bad Request", None))
            return
        replayed: Any = Replayed(received, player)
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


class _NoSources:
    """The relay's media backend: sources come from the table, never by token lookup."""

    def media_sources(self) -> list[MediaSource]:
        return []

    def media_source(self, token: str) -> MediaSource | None:
        return None
