"""Layer 4: the cloud's RTSP front for stock players, and RTSP sessions through an uplink
(STR-1 … STR-3, UPL-16).

``rtsp://HOST:PORT/devices/<id>/<media token>`` is served to any player that speaks
RTSP over TCP with interleaved RTP (``RTP/AVP/TCP``: ffmpeg ``-rtsp_transport tcp``,
GStreamer, VLC). Per player connection :func:`open_rtsp_stream` opens a tunnel to the
device over its uplink and the front relays bytes both ways; the device's relay
(:mod:`.rtsp_relay`) rewrites the URLs (it learns the player's URL from the requests),
so the front parses only the first request, to know where to go.

Theory of operation
-------------------
* **Which tunnel.** RTSP over WebSocket (STR-3: an RFC 8441 extended CONNECT,
  ``:protocol websocket``, subprotocol ``rtsp.onvif.org``; one HTTP/2 stream, WebSocket
  frames inside) when the device's SETTINGS carried ENABLE_CONNECT_PROTOCOL = 1; else
  RTSP over HTTP (STR-2: a GET stream device→player, a POST stream player→device whose
  content-length, :data:`~..sansio.rtsp_tunnel.POST_CONTENT_LENGTH`, lasts the session,
  base64 inside, joined by ``x-sessioncookie``). Either is a :class:`ByteStream`.
* **Back-pressure.** A chunk from the device is acknowledged (its HTTP/2 window
  reopened) only when the front has written it to the player and the player's socket
  took it (``drain``); so a player that stops reading holds at most one stream window
  (``H2Limits.initial_window_size``) in the cloud, the device stops reading its camera,
  and the other streams of the uplink keep flowing within the connection window. A
  player that takes nothing for ``stall_timeout`` seconds loses its session: stalled
  streams give their share of the connection window back soon.
  Player→device bytes are read only after the previous chunk was framed.
* **Refusals.** The first request must arrive within ``head_timeout`` and its head be
  at most 64 KiB of RTSP; garbage gets ``400`` and the connection is closed. An unknown
  device or media token gets ``404``, a refused or failed tunnel ``503``. When the uplink
  drops, the tunnel's read fails and the player's connection is closed: the player sees
  the end of the session, never a hang.
* **A device at another node** (``router``: a cluster node, :mod:`..cluster`): when no local
  uplink has the device and the registry shows it at another live node, the session is RTSP
  over HTTP through that node's internal listener (:mod:`..cluster.node_rtsp`); the relay
  here is the same, and so are the refusals (404 when the node knows no such device or
  token, 503 when it fails) and the end of a session when that node dies.
* **Limits** (:class:`~.slots.Slots`). At most ``max_connections`` player connections at once
  (:data:`~.slots.MAX_CONNECTIONS`): one more is closed at once, before a byte is read or
  written. At most ``max_sessions`` sessions (:data:`MAX_SESSIONS`), counted from the moment a
  session's tunnel starts to open (the slot is given back when the open fails or the session
  ends), so players opening at the same time cannot pass the bound together; one more is
  answered ``503``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from wsproto import ConnectionType
from wsproto.connection import Connection

from ..errors import Iec62676Error, TransportError
from ..sansio.rtsp_tunnel import (
    POST_CONTENT_LENGTH,
    SUBPROTOCOL,
    TUNNEL_CONTENT_TYPE,
    TUNNEL_PATH,
    RtspError,
    RtspMessage,
    RtspSplitter,
    rtsp_response,
)
from ..transport.base import ByteStream
from ..transport.websocket import WebSocketStream
from .chunk_stream import ChunkStream
from .cloud import UnknownDevice
from .slots import MAX_CONNECTIONS, Slots

if TYPE_CHECKING:
    from ..cluster.router import NodeRouter
    from .cloud import CloudListener, DeviceChannel

__all__ = ["FrontStats", "RtspFront", "TunnelRefused", "open_rtsp_stream"]

log = logging.getLogger(__name__)

#: Seconds a tunnel may bring nothing from the device (live video never pauses that long).
SESSION_IDLE = 120.0
#: Seconds to open a tunnel (stream head and the device's answer).
OPEN_TIMEOUT = 15.0
READ_CHUNK = 64 * 1024
#: Seconds a player may take nothing before its session ends. A stalled stream holds its HTTP/2
#: window (1 MiB) of the uplink's connection window (4 MiB): the bound keeps a few stalled
#: players from holding up every other stream of their uplink for long (the device's own
#: limit is its send timeout, 30 s). A paused player sends PAUSE and stalls nothing.
STALL_TIMEOUT = 10.0
#: Sessions relayed at once by one front (each holds one or two HTTP/2 streams of an uplink and at
#: most one stream window of memory; a device allows 128 streams per uplink by default).
MAX_SESSIONS = 1024


class TunnelRefused(TransportError):
    """The device answered the tunnel's request with ``status`` (404: no such media token)."""

    def __init__(self, msg: str, *, status: int) -> None:
        super().__init__(msg)
        self.status = status


class _StreamTunnel(ChunkStream):
    """One HTTP/2 stream of a :class:`DeviceChannel` as a byte stream: response body in,
    request body out (see the module docstring for the back-pressure)."""

    def __init__(self, channel: DeviceChannel, stream_id: int) -> None:
        super().__init__()
        self._channel = channel
        self._stream_id = stream_id
        self._body = channel.body(stream_id, timeout=SESSION_IDLE)

    async def _next_chunk(self) -> bytes:
        try:
            while not (chunk := await anext(self._body)):
                pass  # an empty DATA frame is not the end
            return chunk
        except StopAsyncIteration:
            return b""
        except TimeoutError:
            raise TransportError(f"device {self._channel.device_id} sent nothing for {SESSION_IDLE:g} s") from None

    async def _send(self, data: bytes) -> None:
        if not await self._channel.send(self._stream_id, data, timeout=SESSION_IDLE):
            raise TransportError(f"device {self._channel.device_id} takes no more on the tunnel")

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        self._channel.cancel(self._stream_id)


class _HttpTunnel(_StreamTunnel):
    """RTSP over HTTP: reads the GET stream, writes base64 on the POST stream."""

    def __init__(self, channel: DeviceChannel, get_id: int, post: _StreamTunnel) -> None:
        super().__init__(channel, get_id)
        self._post = post

    async def _send(self, data: bytes) -> None:
        await self._post.write(base64.b64encode(data))

    def abort(self) -> None:
        super().abort()
        self._post.abort()


async def open_rtsp_stream(channel: DeviceChannel, token: str, *, timeout: float = OPEN_TIMEOUT) -> ByteStream:
    """An RTSP session to media source ``token`` of the device on ``channel``: the player's
    bytes go in with ``write``, the camera's come out of ``read`` (module docstring).

    Raises :class:`TunnelRefused` when the device refuses (404: no such token),
    :class:`~..errors.TransportError` when the uplink fails.
    """
    path = TUNNEL_PATH + quote(token, safe="")
    if channel.role.peer_accepts_connect_protocol:
        sid = await channel.open_stream("CONNECT", path, [("sec-websocket-protocol", SUBPROTOCOL),
                                                          ("sec-websocket-version", "13")],
                                        protocol="websocket", timeout=timeout)
        await _accepted(channel, sid, timeout)
        return WebSocketStream(_StreamTunnel(channel, sid), Connection(ConnectionType.CLIENT),
                               label=f"RTSP tunnel to device {channel.device_id}")
    cookie = secrets.token_urlsafe(18)
    get_id = await channel.open_stream("GET", path, [("x-sessioncookie", cookie), ("accept", TUNNEL_CONTENT_TYPE)],
                                       end_stream=True, timeout=timeout)
    await _accepted(channel, get_id, timeout)
    try:
        post_id = await channel.open_stream("POST", path, [("x-sessioncookie", cookie),
                                                           ("content-type", TUNNEL_CONTENT_TYPE)],
                                            content_length=POST_CONTENT_LENGTH, timeout=timeout)
    except BaseException:
        channel.cancel(get_id)
        raise
    return _HttpTunnel(channel, get_id, _StreamTunnel(channel, post_id))


async def _accepted(channel: DeviceChannel, stream_id: int, timeout: float) -> None:
    status, _ = await channel.response(stream_id, timeout=timeout)
    if status != 200:
        channel.cancel(stream_id)
        raise TunnelRefused(f"device {channel.device_id} refused the RTSP tunnel with HTTP {status}", status=status)


@dataclass
class FrontStats:
    """Live counters of the front."""

    sessions: int = 0  # relaying now
    opened: int = 0
    bad_requests: int = 0  # garbage, oversized or slow first requests: 400
    not_found: int = 0  # unknown device or media token: 404
    failed: int = 0  # tunnel refused or broken before it opened, or max_sessions reached: 503


class RtspFront:
    """Serves ``rtsp://…/devices/<id>/<token>`` to players (``handle`` each TCP connection)."""

    def __init__(self, cloud: CloudListener, *, head_timeout: float = 10.0, stall_timeout: float = STALL_TIMEOUT,
                 max_sessions: int = MAX_SESSIONS, max_connections: int = MAX_CONNECTIONS,
                 router: NodeRouter | None = None) -> None:
        self.cloud = cloud
        #: In a cluster: opens sessions to devices held by other nodes.
        self.router = router
        self.head_timeout = head_timeout
        self.stall_timeout = stall_timeout
        #: Player connections held now; sessions opening or relaying now (module docstring).
        self.connections = Slots(max_connections)
        self.sessions = Slots(max_sessions)
        self.stats = FrontStats()

    async def handle(self, player: ByteStream) -> None:
        """One player connection (closed at once beyond ``max_connections``)."""
        if not self.connections.take():
            player.abort()
            return
        try:
            await self._handle(player)
        finally:
            self.connections.release()

    async def _handle(self, player: ByteStream) -> None:
        received = bytearray()
        try:
            first = await self._first_request(player, received)
        except (RtspError, TimeoutError) as exc:
            self.stats.bad_requests += 1
            log.info("RTSP front: bad first request from %s: %s", _peer(player), exc or "too slow")
            await _answer(player, rtsp_response(400, "Bad Request", None))
            return
        if first is None:
            return
        cseq = first.header("cseq")
        where = _device_and_token(first.target)
        if where is None:
            self.stats.not_found += 1
            await _answer(player, rtsp_response(404, "Not Found", cseq))
            return
        device_id, token = where
        if not self.sessions.take():
            self.stats.failed += 1
            log.info("RTSP front: %d sessions run already; %s refused", self.sessions.in_use, _peer(player))
            await _answer(player, rtsp_response(503, "Service Unavailable", cseq))
            return
        try:
            await self._session(player, bytes(received), cseq, device_id, token)
        finally:
            self.sessions.release()

    async def _session(self, player: ByteStream, received: bytes, cseq: str | None, device_id: str,
                       token: str) -> None:
        """Open the tunnel to ``token`` of ``device_id`` and relay (the caller holds the session's slot)."""
        try:
            tunnel = await self._open(device_id, token)
        except (UnknownDevice, TunnelRefused) as exc:
            found = isinstance(exc, TunnelRefused) and exc.status != 404
            self.stats.failed += found
            self.stats.not_found += not found
            await _answer(player, rtsp_response(503, "Service Unavailable", cseq) if found
                          else rtsp_response(404, "Not Found", cseq))
            return
        except (Iec62676Error, TimeoutError) as exc:
            self.stats.failed += 1
            log.info("RTSP front: no tunnel to device %s: %s", device_id, exc or "timeout")
            await _answer(player, rtsp_response(503, "Service Unavailable", cseq))
            return
        self.stats.opened += 1
        self.stats.sessions += 1
        try:
            await tunnel.write(received)
            await _relay(player, tunnel, self.stall_timeout)
        finally:
            self.stats.sessions -= 1
            tunnel.abort()
            await player.close()

    async def _open(self, device_id: str, token: str) -> ByteStream:
        """A session on the device's uplink here, or through the node that holds it."""
        try:
            channel = self.cloud.channel(device_id)
        except UnknownDevice:
            if self.router is None or not self.router.holds(device_id):
                raise
            return await self.router.open_rtsp(device_id, token)
        return await open_rtsp_stream(channel, token)

    async def _first_request(self, player: ByteStream, received: bytearray) -> RtspMessage | None:
        splitter = RtspSplitter()
        async with asyncio.timeout(self.head_timeout):
            while True:
                data = await player.read(READ_CHUNK)
                if not data:
                    return None
                received += data
                for unit in splitter.feed(data):
                    if isinstance(unit, RtspMessage) and not unit.is_response:
                        return unit
                    raise RtspError("a session must start with an RTSP request", status_hint=400)


async def _relay(player: ByteStream, tunnel: ByteStream, stall_timeout: float) -> None:
    """Both directions until either side ends or the player takes nothing for ``stall_timeout``."""

    async def up() -> None:
        while data := await player.read(READ_CHUNK):
            await tunnel.write(data)

    async def down() -> None:
        while data := await tunnel.read(READ_CHUNK):
            try:
                async with asyncio.timeout(stall_timeout):
                    await player.write(data)
            except TimeoutError:
                raise TransportError(f"the player took nothing for {stall_timeout:g} s") from None

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = task.exception()
            if failure is not None and not isinstance(failure, Iec62676Error | OSError):
                raise failure
            if failure is not None:
                log.debug("RTSP session from %s ended: %s", _peer(player), failure)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _device_and_token(target: str) -> tuple[str, str] | None:
    """``rtsp://host/devices/<id>/<token>[/…]`` -> (id, token)."""
    try:
        path = urlsplit(target).path
    except ValueError:
        return None
    parts = path.split("/")
    if len(parts) < 4 or parts[1] != "devices" or not parts[2] or not parts[3]:
        return None
    return unquote(parts[2]), unquote(parts[3])


async def _answer(player: ByteStream, data: bytes) -> None:
    try:
        await player.write(data)
    except TransportError:
        pass


def _peer(stream: ByteStream) -> str:
    peer = stream.extra("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
