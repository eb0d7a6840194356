"""Layer 4: the VSS's RTSP front — stream and replay URIs of lower systems made reachable (ANX-B-1, ANX-B-3, STR-1,
SEC-1).

Theory of operation
-------------------
A URI a lower system answers (GetStreamUri, GetReplayUri) points at
that system's RTSP server, which a client of the VSS may not reach. The
gateway hands each such ``rtsp://`` URI to :meth:`RelayTable.expose`, which
keeps it under a random id (the same URI of the same lower system keeps its
id, so asking twice gives one URI; another lower system answering that URI gets
an id of its own, so it never changes the account the first one's relay uses)
and answers ``rtsp://<front>/relay/<id>``. URIs that already point at this
front (a lower system on an uplink was told the front's address,
:data:`~..services.media2.RTSP_BASE_HEADER`) are kept. When the URI is on the
host of the lower system's URL, the VSS's account there goes with it
(:func:`account_for`): the relay logs in with it if that server (another
VSS's front) asks.

A VSS that is itself on an uplink (a site VSS, lower system of a regional
one) answers a request that came over the uplink the way a device does: the
cloud side (the regional VSS) sent its RTSP front's base for this uplink
(``rtsp://<regional front>/devices/<id>``), so the kept URI is answered as
``<that base>/<id>`` instead of on this VSS's own front, which the upper
system may not reach (NAT). The upper front tunnels the player's session
over the uplink to ``/onvif/rtsp/<id>`` here, where the uplink's RTSP relay
finds the id in the same table (:class:`RelayedSources`, the VSS's
``rtsp_sources``). So this VSS needs no RTSP front of its own for them
(``front_base`` ``None``).

:class:`VssRtspFront` serves one port for players (RTSP over TCP,
interleaved):

* ``/relay/<id>…`` — a TCP connection to the kept URI; the device relay's
  session (:meth:`~..runtime.rtsp_relay.RtspRelay.relay`) rewrites the URLs
  both ways, so the player only ever sees the front's URL.
* ``/devices/<id>/<token>…`` — a lower system on an uplink of the embedded
  cloud listener, through the cloud's front
  (:class:`~..runtime.rtsp_front.RtspFront`): the tunnel over the uplink.

A player first logs in with a user of the VSS (RTSP Digest, READ_MEDIA,
:mod:`.rtsp_auth`) unless the front runs open. The front reads the first
(authorized) request to choose (the device relay's
:func:`~..runtime.rtsp_relay.first_request`: bounded bytes, a deadline); the
bytes read are handed on (:class:`~..runtime.rtsp_relay.Replayed`), every
request without the player's ``Authorization``. :meth:`VssRtspFront.serve`
is the same without the login, for the sessions inside the VSS's RTSP-over-HTTP
tunnels, authorized on the HTTP side (:mod:`.rtsp_http`).
The front holds at most ``max_connections`` player connections
(:data:`~..runtime.slots.MAX_CONNECTIONS`; one more is closed at once, before
a byte is read), at most ``max_logins`` of them logging in, and at most
``max_sessions`` sessions (:data:`MAX_SESSIONS`, counted from the moment the
first authorized request is dispatched until the session ends; one more is
answered ``503``), all with :class:`~..runtime.slots.Slots`. A relayed session
ends when its player sends nothing for ``session_idle`` seconds
(:data:`~..runtime.rtsp_front.SESSION_IDLE`: keep-alives come every 30-60 s)
or takes nothing for ``stall_timeout`` (:data:`~..runtime.rtsp_front.STALL_TIMEOUT`)
(:class:`_Bounded`), so neither a silent nor a stalled player holds its slot and
the upstream connection for ever.
The table is bounded (:data:`MAX_RELAYS`, least recently exposed dropped
first) and lives in memory: after a restart clients ask GetStreamUri again,
as they must anyway when a URI stops working.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..domain.media import MediaBackend, MediaSource
from ..errors import TransportError
from ..runtime.rtsp_front import SESSION_IDLE, STALL_TIMEOUT
from ..runtime.rtsp_relay import Replayed, RtspRelay, first_request
from ..runtime.slots import MAX_CONNECTIONS, Slots
from ..sansio.rtsp_tunnel import RtspMessage, rtsp_response
from ..transport.base import ByteStream
from .lower import LowerSystem
from .rtsp_auth import MAX_ATTEMPTS, MAX_LOGINS, LoginBudget, RtspAuthenticator, RtspChallenge, WithoutCredentials

if TYPE_CHECKING:
    from ..runtime.rtsp_front import RtspFront

__all__ = ["DEVICES_PATH", "MAX_RELAYS", "MAX_SESSIONS", "RELAY_PATH", "NoSources", "RelayTable", "RelayedSources",
           "VssRtspFront", "account_for"]

log = logging.getLogger(__name__)

#: Upstream URIs kept at once.
MAX_RELAYS = 4096
#: Sessions relayed at once (each holds a player connection and one to the upstream server or a tunnel).
MAX_SESSIONS = 1024
RELAY_PATH = "/relay/"
#: Streams of lower systems on uplinks of the embedded cloud listener (its RTSP front's paths).
DEVICES_PATH = "/devices/"


class RelayTable:
    """Upstream ``rtsp://`` URIs under random ids (thread-safe: the gateway runs in worker threads).

    The id is 80 random bits, not derived from the upstream URI: a relay URI is only known to whoever was handed
    it by GetStreamUri (which access control decided), also where the front runs without authentication.
    The same upstream of the same lower system keeps its id while it stays in the table, with the VSS's account
    at the lower system when the upstream is on that system's host (:func:`account_for`). ``front_base`` is the
    VSS's RTSP front (``None``: it runs none, and only requests over an uplink that name an RTSP base get relayed
    URIs)."""

    def __init__(self, front_base: str | None, *, max_entries: int = MAX_RELAYS) -> None:
        self.front_base = None if front_base is None else front_base.rstrip("/")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, str, tuple[str, str] | None]] = OrderedDict()
        self._ids: dict[tuple[str, str], str] = {}  # (prefix, upstream) -> id

    def expose(self, upstream: str, prefix: str, account: tuple[str, str] | None = None, *,
               base: str | None = None) -> str:
        """The front's URI for ``upstream`` (a stream of lower system ``prefix``, played with ``account``);
        ``base``: the RTSP base of the uplink the request came over, answered ``<base>/<id>`` (module docstring)."""
        if self.front_base is not None and upstream.startswith(self.front_base + "/"):
            return upstream
        if base is None and self.front_base is None:
            raise ValueError("no RTSP front to relay on")
        with self._lock:
            relay_id = self._ids.get((prefix, upstream))
            if relay_id is None:
                relay_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
                self._ids[prefix, upstream] = relay_id
            self._entries[relay_id] = (upstream, prefix, account)
            self._entries.move_to_end(relay_id)
            while len(self._entries) > self.max_entries:
                _, (gone, owner, _) = self._entries.popitem(last=False)
                del self._ids[owner, gone]
        return f"{base}/{relay_id}" if base is not None else f"{self.front_base}{RELAY_PATH}{relay_id}"

    def source(self, relay_id: str) -> MediaSource | None:
        """The kept stream under ``relay_id``; ``None`` also when its URI names no server to connect to (a lower
        system's URI without a host, with a port out of range, a broken IPv6 literal): the player gets 404."""
        with self._lock:
            found = self._entries.get(relay_id)
        if found is None:
            return None
        upstream, prefix, account = found
        try:
            where = urlsplit(upstream)
            host, _ = where.hostname, where.port  # .port raises ValueError for a port out of range or not a number
            if not host:
                return None
        except ValueError:
            return None
        username, password = account if account is not None else (None, None)
        return MediaSource(token=relay_id, name=f"{prefix} stream", rtsp_url=upstream, username=username,
                           password=password)


def account_for(upstream: str, lower: LowerSystem) -> tuple[str, str] | None:
    """The VSS's account at ``lower`` for its RTSP URI ``upstream``: only on the host of the lower system's URL
    (its RTSP front, e.g. another VSS's, may ask for it), never offered to another server it names."""
    if lower.url is None or lower.username is None:
        return None
    try:
        same = urlsplit(upstream).hostname == urlsplit(lower.url).hostname
    except ValueError:
        return None
    return (lower.username, lower.password or "") if same else None


class VssRtspFront:
    """``rtsp://…/relay/<id>`` and ``rtsp://…/devices/<id>/<token>`` for players (module docstring);
    ``auth`` (:mod:`.rtsp_auth`) asks the players of a TCP connection for the VSS's users, ``None``: open."""

    def __init__(self, table: RelayTable, cloud_front: RtspFront | None = None,
                 auth: RtspAuthenticator | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.table = table
        self.cloud_front = cloud_front
        self.auth = auth
        self.relay = RtspRelay(NoSources(), ("User",))
        #: Player connections held now; of them logging in now (:mod:`.rtsp_auth`); sessions now (module docstring).
        self.connections = Slots(max_connections)
        self.login_slots = Slots(MAX_LOGINS)
        self.sessions = Slots(max_sessions)
        #: Seconds a relayed session's player may send nothing, and take nothing (module docstring).
        self.session_idle = SESSION_IDLE
        self.stall_timeout = STALL_TIMEOUT

    @property
    def logins(self) -> int:
        """Connections logging in now."""
        return self.login_slots.in_use

    @property
    def max_logins(self) -> int:
        return self.login_slots.limit

    @max_logins.setter
    def max_logins(self, value: int) -> None:
        self.login_slots.limit = value

    async def handle(self, player: ByteStream) -> None:
        """A player's TCP connection to the front (closed at once beyond ``max_connections``)."""
        if not self.connections.take():
            player.abort()
            return
        try:
            await self._connection(player)
        finally:
            self.connections.release()

    async def _connection(self, player: ByteStream) -> None:
        """Logged in first when the front authenticates."""
        auth = self.auth
        if auth is None:
            await self.serve(player)
            return
        if not self.login_slots.take():
            log.info("VSS RTSP front: %d players are logging in already; %s refused", self.logins, _peer(player))
            await player.write(rtsp_response(503, "Service Unavailable", None))
            return
        try:
            authorized = await self._login(player, auth)
        finally:
            self.login_slots.release()
        if authorized is not None:
            await self._dispatch(player, *authorized)

    async def _login(self, player: ByteStream, auth: RtspAuthenticator) -> tuple[bytes, RtspMessage] | None:
        """The bytes up to the player's first authorized request, and that request (``None``: refused, answered)."""
        state, pending, budget = RtspChallenge(), b"", LoginBudget(player)
        for _ in range(MAX_ATTEMPTS):
            received, first = await first_request(Replayed(pending, budget).read)
            if first is None or not received.lstrip(b"\r\n").startswith(first.start.encode("latin-1")):
                await self._no_request(player, received)
                return None
            loop = asyncio.get_running_loop()
            status, stale, why = await loop.run_in_executor(None, auth.decide, first, state)  # users: SQLite
            cseq = first.header("cseq")
            if status == 200:
                return received, first
            log.info("VSS RTSP front: %s refused to %s: %s", first.method, _peer(player), why)
            if status == 403:
                await player.write(rtsp_response(403, "Forbidden", cseq))
                return None
            values = auth.challenges(state, stale=stale)
            refusal = RtspMessage("RTSP/1.0 401 Unauthorized", [("CSeq", cseq)] if cseq else [])
            refusal.headers += [("WWW-Authenticate", v) for v in values] + [("Content-Length", "0")]
            await player.write(refusal.encode())
            head = received.lstrip(b"\r\n")
            pending = head[head.index(b"\r\n\r\n") + 4 + len(first.body):]
        log.info("VSS RTSP front: %s gave no accepted credentials in %d requests", _peer(player), MAX_ATTEMPTS)
        return None

    async def serve(self, player: ByteStream) -> None:
        """A player's session, by the path of its first request (also the sessions inside the VSS's RTSP-over-HTTP
        tunnels, :mod:`.rtsp_http`, which were authorized on the HTTP side)."""
        received, first = await first_request(player.read)
        if first is None:
            await self._no_request(player, received)
            return
        await self._dispatch(player, received, first)

    @staticmethod
    async def _no_request(player: ByteStream, received: bytes) -> None:
        if received:
            log.info("VSS RTSP front: no RTSP request came first")
            await player.write(rtsp_response(400, "Bad Request", None))

    async def _dispatch(self, player: ByteStream, received: bytes, first: RtspMessage) -> None:
        """To the stream ``first`` names, from the bytes ``received`` on, holding a session slot (``503`` beyond
        ``max_sessions``)."""
        if not self.sessions.take():
            log.info("VSS RTSP front: %d sessions run already; %s refused", self.sessions.in_use, _peer(player))
            await player.write(rtsp_response(503, "Service Unavailable", first.header("cseq")))
            return
        try:
            await self._session(player, received, first)
        finally:
            self.sessions.release()

    async def _session(self, player: ByteStream, received: bytes, first: RtspMessage) -> None:
        """To the stream ``first`` names, from the bytes ``received`` on (the player's credentials left out)."""
        replayed: Any = WithoutCredentials(Replayed(received, player))
        try:
            path = urlsplit(first.target).path
        except ValueError:
            path = ""
        if path.startswith(DEVICES_PATH) and self.cloud_front is not None:
            await self.cloud_front.handle(replayed)
            return
        source = None
        if path.startswith(RELAY_PATH):
            source = self.table.source(unquote(path[len(RELAY_PATH):].split("/", 1)[0]))
        if source is None:
            await player.write(rtsp_response(404, "Not Found", first.header("cseq")))
            return
        bounded = _Bounded(replayed, player, self.session_idle, self.stall_timeout)
        await self.relay.relay(source, bounded.read, bounded)


class _Bounded:
    """A relayed session's player with deadlines: a read waits at most ``idle`` seconds, a write ``stall`` seconds
    (then :class:`~..errors.TransportError`, which ends the session)."""

    def __init__(self, replayed: Any, player: ByteStream, idle: float, stall: float) -> None:
        self._replayed = replayed
        self._player = player
        self._idle = idle
        self._stall = stall

    async def read(self, max_bytes: int) -> bytes:
        try:
            async with asyncio.timeout(self._idle):
                data: bytes = await self._replayed.read(max_bytes)
        except TimeoutError:
            raise TransportError(f"the player sent nothing for {self._idle:g} s") from None
        return data

    async def write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self._stall):
                await self._player.write(data)
        except TimeoutError:
            raise TransportError(f"the player took nothing for {self._stall:g} s") from None

    async def close(self) -> None:
        await self._player.close()


def _peer(stream: ByteStream) -> str:
    peer = stream.extra("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class RelayedSources:
    """What the RTSP relay of the VSS's own uplinks reaches (a :class:`~..domain.media.MediaBackend`): its own
    sources (and replay server), then the relay ids it answered over an uplink (module docstring). An id is
    80 random bits, so it names no source of the VSS's own by chance."""

    def __init__(self, own: MediaBackend, table: RelayTable) -> None:
        self.own = own
        self.table = table

    def media_sources(self) -> list[MediaSource]:
        return self.own.media_sources()

    def media_source(self, token: str) -> MediaSource | None:
        return self.own.media_source(token) or self.table.source(token)


class NoSources:
    """The relay's media backend: sources come from the table, never by token lookup."""

    def media_sources(self) -> list[MediaSource]:
        return []

    def media_source(self, token: str) -> MediaSource | None:
        return None
