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

A lower system reached by URL is relayed so only for URIs on the server of
that URL (same scheme, host and port, the default port written or not): the VSS's
account is never offered to another server a lower system names; other URIs stay as
it wrote them.

A lower system on an uplink of the VSS's embedded cloud listener has no HTTP
server the VSS can reach by URL, but the uplink carries HTTP: its snapshot URI
(built from the forwarded request, so on the VSS's host) names its own
snapshot route, and :class:`UplinkSnapshotRelay` fetches that path over the
uplink channel (:meth:`~..runtime.cloud.CloudListener.request`; the uplink's
UserLevel decides there, no account is sent) with the relay's budget: at most
``max_bytes`` (the stream is reset beyond), within ``deadline``, status 200 and
an ``image/*`` or the client gets 502/504. Only URIs whose path is on that
route are taken; others stay as the lower system wrote them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lxml import etree

from ..domain.media import MediaBackend, MediaSource
from ..errors import Iec62676Error
from ..runtime.cloud import AnswerTooLarge
from ..sansio.rtsp_tunnel import stream_key
from ..services.snapshot import SNAPSHOT_PATH, SnapshotFailed, SnapshotRelay, snapshot_uri
from .lower import LowerSystem

if TYPE_CHECKING:
    from ..runtime.cloud import CloudListener

__all__ = ["MAX_SNAPSHOTS", "SnapshotTable", "UplinkSnapshotRelay", "VssMedia"]

#: Snapshot URIs of lower systems the VSS remembers at once.
MAX_SNAPSHOTS = 4096


class SnapshotTable:
    """Tokens of relayed snapshot URIs (thread-safe: the gateway runs in worker threads)."""

    def __init__(self, *, max_entries: int = MAX_SNAPSHOTS) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[MediaSource, str | None]] = OrderedDict()  # the uplink's device ID

    def rewrite(self, answer: etree._Element, lower: LowerSystem, base: str) -> None:
        """Rewrite the ``Uri`` of a GetSnapshotUriResponse from ``lower`` to the VSS's route (module docstring)."""
        if etree.QName(answer).localname != "GetSnapshotUriResponse":
            return
        own = stream_key(lower.url) if lower.url is not None else None
        for uri in answer.iter("{*}Uri"):
            upstream = (uri.text or "").strip()
            try:
                where = urlsplit(upstream)
                if lower.url is not None:  # the same server, however written (the default port, the host's case)
                    key = stream_key(upstream)
                    taken = own is not None and key is not None and key[0] == own[0]
                else:
                    taken = where.path.startswith(SNAPSHOT_PATH) and len(where.path) > len(SNAPSHOT_PATH) \
                        and not where.query and "/" not in where.path[len(SNAPSHOT_PATH):]
            except ValueError:
                taken = False
            if taken:
                uri.text = snapshot_uri(base, self._expose(upstream, lower))

    def _expose(self, upstream: str, lower: LowerSystem) -> str:
        digest = base64.b32encode(hashlib.sha256(upstream.encode()).digest()[:10]).decode("ascii").lower()
        token = f"{lower.prefix}:snapshot-{digest.rstrip('=')}"
        source = MediaSource(token=token, name=f"{lower.prefix} snapshot", rtsp_url="", snapshot_url=upstream,
                             username=lower.username, password=lower.password)
        with self._lock:
            self._entries[token] = (source, lower.uplink)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return token

    def uplink(self, token: str) -> tuple[str, str] | None:
        """(device ID, path) when ``token`` is a snapshot of a lower system on an uplink."""
        with self._lock:
            found = self._entries.get(token)
        if found is None or found[1] is None or found[0].snapshot_url is None:
            return None
        return found[1], urlsplit(found[0].snapshot_url).path

    def source(self, token: str) -> MediaSource | None:
        with self._lock:
            found = self._entries.get(token)
        return None if found is None else found[0]


class VssMedia:
    """The VSS's own media sources, then the relayed snapshots (a :class:`~..domain.media.MediaBackend`)."""

    def __init__(self, own: MediaBackend, snapshots: SnapshotTable) -> None:
        self.own = own
        self.snapshots = snapshots

    def media_sources(self) -> list[MediaSource]:
        return self.own.media_sources()

    def media_source(self, token: str) -> MediaSource | None:
        return self.own.media_source(token) or self.snapshots.source(token)


@dataclass
class UplinkSnapshotRelay(SnapshotRelay):
    """The VSS's snapshot route: images of lower systems on an uplink come over the uplink (module docstring),
    all others as :class:`~..services.snapshot.SnapshotRelay` fetches them."""

    snapshots: SnapshotTable = field(default_factory=SnapshotTable)
    #: The embedded cloud listener (``None`` until it runs) and the loop it runs on.
    cloud: Callable[[], CloudListener | None] = lambda: None
    loop: asyncio.AbstractEventLoop | None = None

    def fetch(self, source: MediaSource) -> tuple[str, bytes]:
        where = self.snapshots.uplink(source.token)
        if where is None:
            return super().fetch(source)
        device_id, path = where
        cloud, loop = self.cloud(), self.loop
        if cloud is None or loop is None:
            raise SnapshotFailed(502, "the uplink listener of this VSS is not running")
        call = cloud.request(device_id, "GET", path, [("accept", "image/*")],
                             timeout=self.timeout, max_body=self.max_bytes)
        future = asyncio.run_coroutine_threadsafe(call, loop)
        try:
            answer = future.result(self.deadline)
        except (FutureTimeout, TimeoutError):
            future.cancel()
            raise SnapshotFailed(504, f"the lower system took longer than {self.deadline:g} s for the snapshot") from None
        except AnswerTooLarge:
            raise SnapshotFailed(502, f"the lower system's snapshot is larger than {self.max_bytes} bytes") from None
        except Iec62676Error as exc:
            raise SnapshotFailed(502, f"cannot fetch the snapshot over the lower system's uplink ({type(exc).__name__})") \
                from None
        if answer.status != 200:
            raise SnapshotFailed(502, f"the lower system answered {answer.status} to the snapshot request")
        content_type = (answer.header("content-type") or "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise SnapshotFailed(502, "the lower system's snapshot is not an image")
        return content_type, answer.body
