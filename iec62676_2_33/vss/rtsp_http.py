"""Layer 4: RTSP over HTTP on the VSS's own HTTP port — the RtspOverHttp stream URIs of lower systems
(STR-2, ANX-B-1, SEC-1).

Theory of operation
-------------------
A lower system's RtspOverHttp URI points at *its* HTTP server (or, for a
device reached directly, does not exist: a device relays RTSP over HTTP on
its uplinks only). So the VSS does not forward the protocol: the gateway asks
the lower system for its ``rtsp://`` URI instead (:func:`ask_rtsp`), the
VSS's RTSP relay keeps it like any stream URI (:mod:`.rtsp`: ``/relay/<id>``,
or ``/devices/<id>/<token>`` for a lower system on an uplink), and
:func:`tunnel_uris` answers the same path on the VSS's HTTP port:
``http://<vss>/relay/<id>``. A player tunnels RTSP there (the Apple / ONVIF
scheme: a GET with ``x-sessioncookie`` carries the camera's bytes to the
player, a POST with the same cookie the player's bytes, base64), and the
session inside is handed to the RTSP front's own dispatch
(:meth:`.rtsp.VssRtspFront.serve`), so the two ways in share one relay
table, one relay and the cloud's front for uplinks.

:class:`HttpTunnels` wraps the HTTP port's exchange handler: requests on
those paths are tunnels, everything else goes to the WSGI application. The
channel pairing, its bounds and back-pressure are the device relay's
(:class:`~..runtime.rtsp_relay.RtspRelay`: a bounded
:class:`~..sansio.rtsp_tunnel.CookieTable`, a deadline for the POST partner,
the camera read only after the GET stream took the previous chunk); only the
end of the session differs (the front's dispatch instead of a TCP
connection to a media source).

*Access* is the VSS's own, decided for the GET and for the POST alike,
before anything is relayed: HTTP Digest of the VSS's users (its
:class:`~..security.httpdigest.DigestAuthenticator`: signed, expiring nonces
and a bounded nonce-count memory), level READ_MEDIA, like the snapshot route.
No credentials is 401 with Digest challenges, refused ones 401 (``stale=true``
for an expired nonce), too low a level 403. A POST joins only a GET channel
of the same user (``x-sessioncookie`` is looked up per user): another user who
learns or guesses the cookie cannot drive the session, and one user has at most
``max_waiting_per_user`` (8) GET channels waiting for their POST, so one user cannot
hold every waiting slot (64) for the pairing deadline. The RTSP inside an authorized
tunnel is not asked again; the player's ``Authorization`` never goes upstream
(the relay strips it). At most ``max_sessions`` tunnels run at once (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from lxml import etree

from ..domain.media import MediaSource
from ..runtime.exchange import Exchange, Handler
from ..runtime.rtsp_relay import Reader, RtspRelay
from ..runtime.slots import Slots
from ..security.access import AccessClass, CredentialRejected, is_allowed
from ..security.httpdigest import DigestAuthenticator, StaleNonce
from ..services.media2 import TR2
from .rtsp import DEVICES_PATH, RELAY_PATH, NoSources, VssRtspFront

__all__ = ["MAX_TUNNELS", "HttpTunnels", "ask_rtsp", "tunnel_uris"]

log = logging.getLogger(__name__)

#: Tunnels relayed at once by one VSS (each holds two HTTP streams and one relay session).
MAX_TUNNELS = 256
_GET_STREAM_URI = f"{{{TR2}}}GetStreamUri"
_OVER_HTTP = "RtspOverHttp"


def _protocol(operation: etree._Element) -> etree._Element | None:
    return operation.find(f"{{{TR2}}}Protocol") if operation.tag == _GET_STREAM_URI else None


def ask_rtsp(operation: etree._Element) -> bool:
    """A GetStreamUri for RtspOverHttp asks the lower system for RTSP instead (True when it did)."""
    protocol = _protocol(operation)
    if protocol is None or (protocol.text or "").strip() != _OVER_HTTP:
        return False
    protocol.text = "RTSP"
    return True


def tunnel_uris(request: etree._Element, answer: etree._Element, base: str, front_base: str | None) -> None:
    """The relayed ``rtsp://<front>/…`` URI of an RtspOverHttp request as ``<base>/…`` (the VSS's HTTP port)."""
    protocol = _protocol(request)
    if front_base is None or protocol is None or (protocol.text or "").strip() != _OVER_HTTP:
        return
    for uri in answer.iter("{*}Uri"):
        text = (uri.text or "").strip()
        if text.startswith(front_base + "/"):
            uri.text = base + text[len(front_base):]


class _Tunnel:
    """The player's side of a tunnel as a byte stream: the POST channel's bytes in, the GET channel out."""

    def __init__(self, read: Reader, out: Any) -> None:
        self._read = read
        self._out = out

    async def read(self, max_bytes: int = 65536) -> bytes:
        return await self._read(max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


class HttpTunnels(RtspRelay):
    """The VSS HTTP port's exchange handler: RTSP over HTTP on the front's paths, the rest to ``inner``."""

    def __init__(self, inner: Handler, front: VssRtspFront, digest: DigestAuthenticator, *,
                 clock: Callable[[], float] = time.time, max_sessions: int = MAX_TUNNELS,
                 pair_timeout: float = 10.0, max_waiting: int = 64, max_waiting_per_user: int = 8) -> None:
        super().__init__(NoSources(), ("User",), pair_timeout=pair_timeout, max_waiting=max_waiting,
                         max_waiting_per_owner=max_waiting_per_user)
        self.inner = inner
        self.front = front
        self.digest = digest
        self.clock = clock
        self.sessions = Slots(max_sessions)

    @staticmethod
    def tunnels(ex: Exchange) -> bool:
        return ex.method in ("GET", "POST") and ex.path.startswith((RELAY_PATH, DEVICES_PATH))

    async def __call__(self, ex: Exchange) -> None:
        await (super().__call__(ex) if self.tunnels(ex) else self.inner(ex))

    async def _serve(self, ex: Exchange) -> None:
        user = await self._allowed(ex)
        if user is None:
            return
        # A POST joins only a GET of the same user: the cookie is looked up in that user's name space.
        ex.headers = [(k, f"{len(user)}:{user}:{v}" if k == "x-sessioncookie" else v) for k, v in ex.headers]
        if ex.method == "POST":
            ex.body.lift_deadline()  # an admitted POST channel lasts as long as its session (STR-2)
            await self._post(ex)
            return
        if not self.sessions.take():
            self.stats.refused += 1
            await _text(ex, 503, f"at most {self.sessions.limit} RTSP-over-HTTP sessions at once")
            return
        try:
            await self._get(ex, MediaSource(token=ex.path, name="RTSP over HTTP", rtsp_url=""), owner=user)
        finally:
            self.sessions.release()

    async def _session(self, source: MediaSource, read: Reader, player: Any) -> None:
        """The paired channels' session goes to the RTSP front's dispatch (not to a media source's server)."""
        await self.front.serve(_Tunnel(read, player))

    async def _allowed(self, ex: Exchange) -> str | None:
        """HTTP Digest of the VSS's users, READ_MEDIA (module docstring): the user's name, ``None`` when answered
        with a refusal."""
        header = next((v for k, v in ex.headers if k == "authorization"), None)
        target = f"{ex.path}?{ex.query}" if ex.query else ex.path
        user, level, stale = "", "Anonymous", False
        if header is not None:
            now = self.clock()
            try:
                user, level = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.digest.verify(ex.method, header, now, request_uri=target))
            except CredentialRejected as exc:
                log.info("RTSP over HTTP refused to %s: %s", ex.describe(), exc)
                level, stale = "", isinstance(exc, StaleNonce)
        if is_allowed([level], AccessClass.READ_MEDIA):
            return user
        self.stats.refused += 1
        if level in ("", "Anonymous"):
            await _text(ex, 401, "credentials needed (HTTP Digest)",
                        [("www-authenticate", v) for v in self.digest.challenges(self.clock(), stale=stale)])
        else:
            await _text(ex, 403, "this user level may not read media (READ_MEDIA)")
        return None


async def _text(ex: Exchange, status: int, text: str, extra: list[tuple[str, str]] | None = None) -> None:
    body = f"{text}\n".encode()
    await ex.respond(status, [("content-type", "text/plain; charset=utf-8"), *(extra or [])], body)
