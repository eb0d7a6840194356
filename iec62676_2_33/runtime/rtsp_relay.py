"""Layer 4: the device's end of tunnelled RTSP on an uplink (STR-1 … STR-5, UPL-12).

The cloud reaches a media source's camera-side RTSP server through streams of the
uplink's HTTP/2 connection, on ``/onvif/rtsp/<media token>``:

* **RTSP over WebSocket** (STR-3): an RFC 8441 extended CONNECT (``:protocol
  websocket``, subprotocol ``rtsp.onvif.org``; the uplink role advertises
  SETTINGS_ENABLE_CONNECT_PROTOCOL). The ``200`` carries the upgrade, then the
  stream's DATA carries WebSocket frames (wsproto, no handshake) whose payload is
  the RTSP byte stream. A CONNECT on ``/onvif/rtsp/`` itself is the one URI Media2
  announces as RTSPWebSocketUri: the token is then the last path segment of the
  URL in the player's first request (read within a deadline, at most one message).
* **RTSP over HTTP** (STR-2): a GET with ``x-sessioncookie`` is the camera→player
  channel (``200 application/x-rtsp-tunnelled``, no content-length); a POST with the
  same cookie carries base64 player→camera bytes. The GET waits, bounded, for its
  POST in a bounded :class:`~..sansio.rtsp_tunnel.CookieTable`.

Theory of operation
-------------------
Each session opens one TCP connection to the camera and runs two pumps. Player →
camera: requests are cut out (:class:`~..sansio.rtsp_tunnel.RtspSplitter`), their
URLs rewritten to the camera's and the camera's credentials added
(:class:`~..sansio.rtsp_tunnel.UrlRewriter`); interleaved RTCP passes as is.
Camera → player: responses get the player's URLs back; interleaved RTP passes in
runs. Camera credentials (:class:`CameraAuth`): none until the camera answers 401; that
request is then resent with the scheme the camera asked for, Digest when offered, Basic only
when it is the one scheme offered (the 401 never reaches the player), and that scheme is used
from then on. A password is never sent in the clear to a camera that did not ask for it. Back-pressure, not buffers: the camera is read only after the previous
chunk was handed to the HTTP/2 stream, and that write returns only once the
stream holds at most ``SEND_LOW_WATER`` bytes (:mod:`.h2conn`), so a player that
stops reading stops the camera's socket (TCP does the rest); a stream the cloud
keeps shut is reset after ``send_timeout``. Per session the relay holds at most
one read of the camera (64 KiB), the asyncio reader's buffer (128 KiB) and one
unfinished RTSP message.

UserLevel (STR-4, UPL-12): tunnelled RTSP carries no credentials; the uplink's
configured level must allow READ_MEDIA, else every request is answered RTSP 401
(Anonymous) or 403 and the session ends. The player's ``Authorization`` is never
passed to the camera; the media source's own credentials are (never logged). READ_MEDIA
reads: a request that publishes (ANNOUNCE, RECORD) is answered 405 and ends the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from wsproto import ConnectionType
from wsproto.connection import Connection

from ..domain.media import MediaBackend, MediaSource
from ..errors import AuthenticationError, Iec62676Error, LocalProtocolError, TransportError
from ..sansio.rtsp_tunnel import (
    MAX_BODY,
    MAX_HEAD,
    SUBPROTOCOL,
    TUNNEL_CONTENT_TYPE,
    TUNNEL_PATH,
    Base64Decoder,
    CookieTable,
    Interleaved,
    RtspError,
    RtspMessage,
    RtspSplitter,
    UrlRewriter,
    basic_authorization,
    cookie_owner,
    rtsp_response,
)
from ..security.access import AccessClass, is_allowed
from ..security.httpdigest import parse_auth_header
from ..transport.websocket import WebSocketStream
from .body import BodyError
from .chunk_stream import ChunkStream
from .exchange import Exchange

__all__ = ["CameraAuth", "RelayStats", "Replayed", "RtspRelay", "first_request"]

log = logging.getLogger(__name__)

#: Seconds a session may stay silent in the player→camera direction (RTSP keep-alives
#: come every 30-60 s: a session's default timeout is 60 s).
SESSION_IDLE = 120.0
#: Seconds to reach the camera's RTSP server.
CONNECT_TIMEOUT = 10.0
#: Most bytes taken from the camera at once.
READ_CHUNK = 64 * 1024
#: Seconds a player at the single RTSP-over-WebSocket URI has to send its first request.
FIRST_REQUEST_TIMEOUT = 10.0


@dataclass
class RelayStats:
    """Live counters of one relay (tests and operators read them)."""

    sessions: int = 0  # running now
    opened: int = 0
    refused: int = 0  # unknown token, UserLevel, no POST partner, camera unreachable
    camera_bytes: int = 0  # camera -> player, in total
    peak_pending: int = 0  # most bytes read from the camera and not yet taken by a stream


@dataclass(eq=False)
class _Waiting:
    """A GET channel waiting for its POST."""

    post: asyncio.Future[Exchange]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _ExchangeStream(ChunkStream):
    """One HTTP/2 stream of the uplink as a byte stream: its request body in (read straight from the body,
    which buffers already), its response out (:class:`~.chunk_stream.ChunkStream`'s writes)."""

    def __init__(self, ex: Exchange) -> None:
        super().__init__()
        self._ex = ex
        ex.body.timeout = SESSION_IDLE

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._ex.body.read_async(max_bytes)
        except BodyError as exc:
            raise TransportError(f"tunnel stream: {exc}") from None

    async def _send(self, data: bytes) -> None:
        try:
            await self._ex.write(data)
        except LocalProtocolError as exc:  # the response already ended
            raise TransportError(f"tunnel stream: {exc}") from None

    async def close(self) -> None:
        if not self._ex.finished and not self._ex.gone:
            try:
                await self.drain()
                await self._ex.write(b"", end=True)
            except TransportError:
                pass

    def abort(self) -> None:
        if not self._ex.finished and not self._ex.gone:
            self._ex.abort()

    def extra(self, name: str, default: Any = None) -> Any:
        return self._ex.client if name == "peername" else default

    @property
    def at_eof(self) -> bool:
        return self._ex.body.complete and not self._ex.body.buffered


class _Base64Reader:
    """The POST channel of RTSP over HTTP, decoded."""

    def __init__(self, stream: _ExchangeStream) -> None:
        self._stream = stream
        self._decoder = Base64Decoder()

    async def read(self, max_bytes: int = 65536) -> bytes:
        while True:
            text = await self._stream.read(max_bytes)
            if not text:
                return b""
            data = self._decoder.feed(text)
            if data:
                return data


class _Writer(Protocol):
    """What a session writes the camera's bytes to (a WebSocket or the GET channel)."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


Reader = Callable[[int], Awaitable[bytes]]


class CameraAuth:
    """A media source's camera credentials on each request it is sent: none until the camera
    challenges, then Digest when the challenge offers it (RFC 7616, MD5 or SHA-256, with
    ``qop=auth`` or without, as RTSP servers commonly do), else Basic when that is the one scheme
    offered. Unsolicited Basic would hand the password in the clear to whoever answers on the
    camera's address; the cost is one 401 round trip per session. Never logged."""

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password
        self._basic: str | None = None
        self._digest: dict[str, str] | None = None
        self._nc = 0

    def __call__(self, msg: RtspMessage) -> str | None:
        d = self._digest
        if d is None:
            return self._basic
        algorithm = d.get("algorithm", "MD5").upper()
        name = _DIGESTS[algorithm]

        def h(text: str) -> str:
            return hashlib.new(name, text.encode("utf-8")).hexdigest()

        realm, nonce = d["realm"], d["nonce"]
        ha1 = h(f"{self._username}:{realm}:{self._password}")
        ha2 = h(f"{msg.method}:{msg.target}")
        fields = [f'username="{self._username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{msg.target}"']
        if "auth" in (q.strip() for q in d.get("qop", "").split(",")):
            self._nc += 1
            nc, cnonce = f"{self._nc:08x}", secrets.token_hex(8)
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            response = h(f"{ha1}:{nonce}:{ha2}")
            fields.append(f'response="{response}"')
        if "opaque" in d:
            fields.append(f'opaque="{d["opaque"]}"')
        if "algorithm" in d:
            fields.append(f"algorithm={d['algorithm']}")
        return "Digest " + ", ".join(fields)

    def challenged(self, response: RtspMessage) -> bool:
        """Learn a 401's challenge; True when a retry may succeed (a first challenge, a fresh
        Digest nonce, or ``stale=true``), False when these credentials were already refused."""
        basic_offered = False
        for value in (v for k, v in response.headers if k.lower() == "www-authenticate"):
            try:
                scheme, params = parse_auth_header(value)
            except AuthenticationError:
                continue
            if scheme.lower() == "basic":
                basic_offered = True
                continue
            if scheme.lower() != "digest" or "realm" not in params or "nonce" not in params or \
                    params.get("algorithm", "MD5").upper() not in _DIGESTS:
                continue
            old = self._digest
            self._digest, self._nc = params, 0
            return old is None or old["nonce"] != params["nonce"] or params.get("stale", "").lower() == "true"
        if basic_offered and self._digest is None and self._basic is None:
            self._basic = basic_authorization(self._username, self._password)
            return True
        return False


_DIGESTS = {"MD5": "md5", "SHA-256": "sha256"}
#: Methods that publish media to the server (RFC 2326 §10.3, §10.11): a player holds READ_MEDIA, so they never
#: reach the camera with its credentials; the player gets 405 and the session ends.
_PUBLISHING = frozenset({"ANNOUNCE", "RECORD"})
#: Requests kept per session for a retry after the camera's Digest challenge.
_KEPT_REQUESTS = 16


@dataclass(eq=False)
class _Session:
    """What the two pumps of one session share."""

    rewriter: UrlRewriter
    camera: asyncio.StreamWriter
    auth: CameraAuth | None
    sent: OrderedDict[str, RtspMessage] = field(default_factory=OrderedDict)  # by CSeq, for a retry

    def keep(self, msg: RtspMessage) -> None:
        cseq = msg.header("cseq")
        if self.auth is not None and cseq is not None:
            self.sent[cseq] = msg
            while len(self.sent) > _KEPT_REQUESTS:
                self.sent.popitem(last=False)

    def retried(self, response: RtspMessage) -> bool:
        """A 401 answered by resending its request with the credentials the camera asked for."""
        if self.auth is None or not response.start.startswith("RTSP/1.0 401"):
            return False
        request = self.sent.pop(response.header("cseq") or "", None)
        if request is None or not self.auth.challenged(response):
            return False
        credentials = self.auth(request)
        if credentials is None:
            return False
        request.set_header("Authorization", credentials)
        self.camera.write(request.encode())
        return True


class RtspRelay:
    """Serves the ``/onvif/rtsp/`` streams of one uplink (see the module docstring).

    ``media`` gives the media sources (a blocking call: it runs in ``executor``);
    ``user_level`` is the uplink's configured UserLevel.
    """

    def __init__(self, media: MediaBackend, user_level: Sequence[str], *, executor: Executor | None = None,
                 pair_timeout: float = 10.0, max_waiting: int = 64, max_waiting_per_owner: int | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.media = media
        self.user_level = list(user_level)
        self.executor = executor
        self.connect_timeout = connect_timeout
        self.stats = RelayStats()
        self._waiting: CookieTable[_Waiting] = CookieTable(max_entries=max_waiting, wait=pair_timeout,
                                                           max_per_owner=max_waiting_per_owner)

    @staticmethod
    def handles(ex: Exchange) -> bool:
        """The stream is tunnelled RTSP (or a CONNECT, which nothing else on the device serves)."""
        return ex.method == "CONNECT" or ex.path.startswith(TUNNEL_PATH)

    async def __call__(self, ex: Exchange) -> None:
        try:
            await self._serve(ex)
        except TransportError as exc:
            log.debug("%s: %s", ex.describe(), exc)
        except Exception:
            log.exception("the RTSP relay failed on %s", ex.describe())
        finally:
            if not ex.finished and not ex.gone:
                ex.abort()

    async def _serve(self, ex: Exchange) -> None:
        token = unquote(ex.path[len(TUNNEL_PATH):]) if ex.path.startswith(TUNNEL_PATH) else ""
        protocol = getattr(ex, "protocol", None)
        if ex.method == "CONNECT":
            offered = {p.strip() for v in _values(ex, "sec-websocket-protocol") for p in v.split(",")}
            if protocol != "websocket" or SUBPROTOCOL not in offered or not ex.path.startswith(TUNNEL_PATH):
                self.stats.refused += 1
                await ex.respond(400, [("content-type", "text/plain")],
                                 f"CONNECT needs :protocol websocket, subprotocol {SUBPROTOCOL} and a path "
                                 f"{TUNNEL_PATH}[<token>]\n".encode())
                return
            if not token:  # the one RTSPWebSocketUri (STR-3): the player's first request names the stream
                await self._by_first_request(ex)
                return
        elif ex.method not in ("GET", "POST") or not token:
            await ex.respond(405 if token else 404, [("content-type", "text/plain")],
                             b"RTSP over HTTP: GET and POST on /onvif/rtsp/<token>\n")
            return
        if ex.method == "POST":
            await self._post(ex)
            return
        source = await asyncio.get_running_loop().run_in_executor(self.executor, self.media.media_source, token)
        if source is None:
            self.stats.refused += 1
            await ex.respond(404, [("content-type", "text/plain")], f"no media source {token[:64]!r}\n".encode())
            return
        if ex.method == "CONNECT":
            ws = await _accept_websocket(ex)
            await self._session(source, ws.read, ws)
            return
        await self._get(ex, source)

    async def _by_first_request(self, ex: Exchange) -> None:
        """RTSP over WebSocket at ``TUNNEL_PATH`` itself, the single URI Media2 announces: the media token
        is the last path segment of the URL in the player's first request (a URL ending in ``/<token>``,
        as the stream URIs do); nothing reaches a camera before it is known."""
        ws = await _accept_websocket(ex)
        first, request = await first_request(ws.read)
        token = "" if request is None else unquote(urlsplit(request.target).path.rstrip("/").rpartition("/")[2])
        source = None
        if token:
            source = await asyncio.get_running_loop().run_in_executor(self.executor, self.media.media_source, token)
        replay = Replayed(first, ws)
        if source is None:
            self.stats.refused += 1
            await self._refuse(replay.read, ws, 404, "Not Found")
            return
        await self._session(source, replay.read, ws)

    # ------------------------------------------------------------------ RTSP over HTTP

    async def _get(self, ex: Exchange, source: MediaSource, owner: str = "") -> None:
        """The GET channel; ``owner`` has at most ``max_waiting_per_owner`` waiting: a VSS's user, or by default
        the client the cloud's proxy names before the cookie (:func:`~..sansio.rtsp_tunnel.cookie_owner`)."""
        cookie = next(iter(_values(ex, "x-sessioncookie")), "")
        owner = owner or cookie_owner(cookie)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(post=loop.create_future())
        if not cookie or not self._waiting.add(cookie, waiting, loop.time(), owner):
            self.stats.refused += 1
            await ex.respond(400 if not cookie else 503, [("content-type", "text/plain")],
                             b"RTSP over HTTP needs a fresh x-sessioncookie\n")
            return
        try:
            ex.start_response(200, [("content-type", TUNNEL_CONTENT_TYPE), ("cache-control", "no-store")])
            await ex.write(b"")
            try:
                post = await asyncio.wait_for(waiting.post, self._waiting.wait)
            except TimeoutError:
                self.stats.refused += 1
                log.info("%s: no POST channel came for the GET channel", ex.describe())
                await ex.write(b"", end=True)
                return
            out = _ExchangeStream(ex)
            await self._session(source, _Base64Reader(_ExchangeStream(post)).read, out)
        finally:
            self._waiting.remove(cookie, waiting)
            waiting.done.set()

    async def _post(self, ex: Exchange) -> None:
        cookie = next(iter(_values(ex, "x-sessioncookie")), "")
        waiting = self._waiting.take(cookie, asyncio.get_running_loop().time()) if cookie else None
        if waiting is None or waiting.post.done():
            self.stats.refused += 1
            await ex.respond(404, [("content-type", "text/plain")], b"no GET channel with this x-sessioncookie\n")
            return
        waiting.post.set_result(ex)
        await waiting.done.wait()
        if not ex.finished and not ex.gone:
            await ex.respond(204, [], b"")

    # ------------------------------------------------------------------ a session

    async def relay(self, source: MediaSource, read: Reader, player: _Writer) -> None:
        """One player's RTSP session (``read`` its bytes, ``player`` to answer) to ``source``'s server
        (a VSS's RTSP front relays the stream URIs of its lower systems this way, ANX-B-1)."""
        await self._session(source, read, player)

    async def _session(self, source: MediaSource, read: Reader, player: _Writer) -> None:
        if not is_allowed(self.user_level, AccessClass.READ_MEDIA):
            self.stats.refused += 1
            anonymous = all(level == "Anonymous" for level in self.user_level)
            await self._refuse(read, player, 401 if anonymous else 403, "Unauthorized" if anonymous else "Forbidden")
            return
        url = urlsplit(source.rtsp_url)
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(url.hostname, url.port or 554)
        except (OSError, TimeoutError) as exc:
            self.stats.refused += 1
            log.info("media source %s: cannot reach the camera: %s", source.token, exc or "timeout")
            await self._refuse(read, player, 503, "Service Unavailable")
            return
        auth = CameraAuth(source.username, source.password or "") if source.username else None
        # the player's URL names the token as stream URIs write it (Media2, the fronts): one path segment, quoted
        rewriter = UrlRewriter(quote(source.token, safe=""), source.rtsp_url, authorization=auth)
        peer = writer.get_extra_info("peername")
        if peer:  # a camera named by host name may write its address: hidden as well
            rewriter.add_alias(str(peer[0]))
        session = _Session(rewriter, writer, auth)
        self.stats.sessions += 1
        self.stats.opened += 1
        log.info("RTSP session to media source %s opened", source.token)
        up = asyncio.create_task(self._up(read, player, session))
        down = asyncio.create_task(self._down(reader, player, session))
        try:
            done, _ = await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if failure is not None and not isinstance(failure, Iec62676Error | OSError):
                    raise failure
                if failure is not None:
                    log.debug("RTSP session to %s: %s", source.token, failure)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            writer.close()
            self.stats.sessions -= 1
            log.info("RTSP session to media source %s closed", source.token)
            await player.close()

    async def _up(self, read: Reader, player: _Writer, session: _Session) -> None:
        """Player -> camera: requests rewritten, interleaved data as is."""
        splitter = RtspSplitter()
        camera = session.camera
        while data := await read(READ_CHUNK):
            try:
                units = splitter.feed(data)
            except RtspError as exc:
                await player.write(rtsp_response(exc.status_hint, "Bad Request", None))
                return
            out: list[bytes] = []
            for unit in units:
                if isinstance(unit, Interleaved):
                    out.append(unit.data)
                    continue
                if unit.method in _PUBLISHING:
                    await player.write(rtsp_response(405, "Method Not Allowed", unit.header("cseq")))
                    return
                try:
                    out.append(session.rewriter.request(unit).encode())
                    session.keep(unit)
                except RtspError as exc:
                    await player.write(rtsp_response(exc.status_hint, None, unit.header("cseq")))
                    return
            if out:
                camera.writelines(out)
                await camera.drain()

    async def _down(self, camera: asyncio.StreamReader, player: _Writer, session: _Session) -> None:
        """Camera -> player: responses with the player's URLs (a Digest challenge answered here
        when the camera's credentials are configured), interleaved data as is."""
        splitter = RtspSplitter()
        stats = self.stats
        rewriter = session.rewriter
        while data := await camera.read(READ_CHUNK):
            units = [u for u in splitter.feed(data) if isinstance(u, Interleaved) or not session.retried(u)]
            out = b"".join(u.data if isinstance(u, Interleaved) else rewriter.response(u).encode() for u in units)
            if out:
                stats.peak_pending = max(stats.peak_pending, len(out) + splitter.buffered)
                await player.write(out)
                stats.camera_bytes += len(out)

    @staticmethod
    async def _refuse(read: Reader, player: _Writer, status: int, reason: str) -> None:
        """Answer the player's first request with ``status`` and end the session; all within
        ``FIRST_REQUEST_TIMEOUT``, so interleaved frames without a request never keep a refused session."""
        splitter = RtspSplitter()
        try:
            async with asyncio.timeout(FIRST_REQUEST_TIMEOUT):
                try:
                    while data := await read(READ_CHUNK):
                        for unit in splitter.feed(data):
                            if not isinstance(unit, Interleaved):
                                await player.write(rtsp_response(status, reason, unit.header("cseq")))
                                return
                except RtspError as bad:
                    await player.write(rtsp_response(bad.status_hint, "Bad Request", None))
        except TimeoutError:
            log.info("refused RTSP session ended: not answered within %g s", FIRST_REQUEST_TIMEOUT)
        finally:
            await player.close()


async def _accept_websocket(ex: Exchange) -> WebSocketStream:
    """Answer an extended CONNECT with 200 and the subprotocol; the stream's DATA then carries WebSocket frames."""
    ex.start_response(200, [("sec-websocket-protocol", SUBPROTOCOL)])
    await ex.write(b"")
    return WebSocketStream(_ExchangeStream(ex), Connection(ConnectionType.SERVER), label=f"RTSP tunnel {ex.describe()}")


async def first_request(read: Reader) -> tuple[bytes, RtspMessage | None]:
    """The bytes read up to a player's first RTSP request, and that request; ``None`` when no request came
    within ``FIRST_REQUEST_TIMEOUT``, within ``MAX_HEAD + MAX_BODY`` bytes, or garbage came (the caller's
    refusal then answers it). The uplink's relay picks the media token from its URL, a VSS's RTSP front
    (:mod:`..vss.rtsp`) the lower system; both hand the bytes on with :class:`Replayed`."""
    splitter, got = RtspSplitter(), bytearray()
    try:
        async with asyncio.timeout(FIRST_REQUEST_TIMEOUT):
            while len(got) <= MAX_HEAD + MAX_BODY and (data := await read(READ_CHUNK)):
                got += data
                for unit in splitter.feed(data):
                    if isinstance(unit, RtspMessage) and unit.target:
                        return bytes(got), unit
    except (RtspError, TimeoutError):
        pass
    return bytes(got), None


class _Readable(Protocol):
    async def read(self, max_bytes: int = READ_CHUNK, /) -> bytes: ...


class Replayed:
    """``stream`` whose reads hand out ``first`` (bytes already read from it) before reading on; every other
    attribute is the stream's, so it stands in for a :class:`~..transport.base.ByteStream`."""

    def __init__(self, first: bytes, stream: _Readable) -> None:
        self._first = first
        self._stream = stream

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        if self._first:
            data, self._first = self._first[:max_bytes], self._first[max_bytes:]
            return data
        return await self._stream.read(max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _values(ex: Exchange, name: str) -> list[str]:
    return [v for k, v in ex.headers if k == name]
