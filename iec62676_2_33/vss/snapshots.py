"""Layer 5: snapshot URIs of lower systems, relayed by the VSS's own snapshot route (ANX-B-1, B.2).

A lower system's GetSnapshotUri answers an ``http(s)://`` URI on *its* HTTP
server, which a client of the VSS may not reach (and which would need the
lower system's credentials). The gateway therefore rewrites the ``Uri`` of a
forwarded GetSnapshotUriResponse into a URI on the VSS's own snapshot route
(:data:`~..services.snapshot.SNAPSHOT_PATH`), under the request's base URL
like every address the VSS hands out, with a token of the lower system's
prefix: ``<prefix>:snapshot-<hash of the upstream URI>``.

:class:`SnapshotTable` remembers those tokens (at most :data:`MAX_SNAPSHOTS`,
least recently exposed dropped first) with the upstream URI and the VSS's
account at the lower system; :class:`VssMedia` puts them behind the VSS's
:class:`~..services.snapshot.SnapshotRelay` as media sources of their own.
So the client's GET is decided by the VSS's access control exactly as for
its own snapshots (READ_MEDIA), and the relay fetches the image from the
lower system with the VSS's account (HTTP Digest), within the relay's
deadline and size budget. A lower system's own prefix cannot name a media
source of the VSS (the token rule, clause 6), so the two never collide.

Only lower systems reached by URL are relayed so, and only URIs on the server
of that URL (same scheme, host and port): the VSS's account is never offered
to another server a lower system names. Other URIs, and those of a lower
system on an uplink (its HTTP server is not reachable by URL), stay as the
lower system wrote them.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from urllib.parse import urlsplit

from lxml import etree

from ..domain.media import MediaBackend, MediaSource
from ..services.snapshot import snapshot_uri
from .lower import LowerSystem

__all__ = ["MAX_SNAPSHOTS", "SnapshotTable", "VssMedia"]

#: Snapshot URIs of lower systems the VSS remembers at once.
MAX_SNAPSHOTS = 4096


class SnapshotTable:
    """Tokens of relayed snapshot URIs (thread-safe: the gateway runs in worker threads)."""

    def __init__(self, *, max_entries: int = MAX_SNAPSHOTS) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, MediaSource] = OrderedDict()

    def rewrite(self, answer: etree._Element, lower: LowerSystem, base: str) -> None:
        """Rewrite the ``Uri`` of a GetSnapshotUriResponse from ``lower`` (reached by URL) to the VSS's route."""
        if lower.url is None or etree.QName(answer).localname != "GetSnapshotUriResponse":
            return
        own = urlsplit(lower.url)
        for uri in answer.iter("{*}Uri"):
            upstream = (uri.text or "").strip()
            try:
                where = urlsplit(upstream)
                same_server = (where.scheme, where.hostname, where.port) == (own.scheme, own.hostname, own.port)
            except ValueError:
                same_server = False
            if same_server:
                uri.text = snapshot_uri(base, self._expose(upstream, lower))

    def _expose(self, upstream: str, lower: LowerSystem) -> str:
        digest = base64.b32encode(hashlib.sha256(upstream.encode()).digest()[:10]).decode("ascii").lower()
        token = f"{lower.prefix}:snapshot-{digest.rstrip('=')}"
        source = MediaSource(token=token, name=f"{lower.prefix} snapshot", rtsp_url="", snapshot_url=upstream,
                             username=lower.username, password=lower.password)
        with self._lock:
            self._entries[token] = source
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return token

    def source(self, token: str) -> MediaSource | None:
        with self._lock:
            return self._entries.get(token)


class VssMedia:
    """The VSS's own media sources, then the relayed snapshots (a :class:`~..domain.media.MediaBackend`)."""

    def __init__(self, own: MediaBackend, snapshots: SnapshotTable) -> None:
        self.own = own
        self.snapshots = snapshots

    def media_sources(self) -> list[MediaSource]:
        return self.own.media_sources()

    def media_source(self, token: str) -> MediaSource | None:
        return self.own.media_source(token) or self.snapshots.source(token)
