"""Layer 4 (cloud cluster): an RTSP session to a device whose uplink another node holds
(STR-1, STR-2, UPL-16).

A player asks node A's RTSP front (:mod:`..runtime.rtsp_front`) for a device whose uplink
node B holds. A opens RTSP over HTTP (STR-2) to the device *through B's internal
listener*: ``GET /devices/<id>/onvif/rtsp/<token>`` carries the camera's bytes, a ``POST``
on the same path with the same ``x-sessioncookie`` the player's, base64. Both are
ordinary HTTP/2 requests on mutual TLS with A's node certificate, the context
:class:`~.router.NodeRouter` relays requests with; B's internal listener is B's proxy
application, which relays them to the device's uplink as it relays any client's (the
POST channel exempt from the body deadline, under B's admission and budgets), and the
device's relay (:mod:`..runtime.rtsp_relay`) pairs them by cookie and rewrites URLs as
the player sent them. So no new port, no new route and no new protocol: the front sees
the same :class:`~..transport.base.ByteStream` as for a local uplink.

Theory of operation
-------------------
* **A connection per session**, not the router's pooled HTTP/1.1 ones (a session's two
  channels must stay open together): in httpcore one task at a time reads an HTTP/2
  connection, and a task that finds its own frame already read still queues behind a
  reader blocked on the socket. A session's GET waits for video that may not come for long
  (before PLAY, while paused): on one shared connection the third of three sessions opened
  before PLAY got its answer only after 10 s (then the device gave up its unpaired GET).
  So each session has its own HTTP/2 connection (an ``httpx.AsyncClient`` with the same
  TLS context: one TLS handshake more per session; a first DESCRIBE through two nodes took
  10-50 ms here, handshake included), read by its GET only, and
  closing it ends the session at B at once: B's proxy sees the client gone on both
  streams and resets the device's, and the device's relay ends the session.
* **Back-pressure.** A pump task reads the GET's body into a one-chunk queue; httpcore
  acknowledges a DATA frame (reopens B's window) when the pump asks for the next one, so
  between nodes a session holds at most one HTTP/2 stream window (httpcore's default,
  64 KiB) plus two chunks, and a player that reads slowly stops B's proxy from reading
  the device's stream, which stops the camera. Player bytes go into a one-chunk queue the
  POST's body iterator takes from; httpcore sends each under B's window. The POST
  declares no ``content-length`` (HTTP/2 delimits it by END_STREAM); B's proxy bounds it
  by ``max_body`` (16 MiB, what a player's POST declares).
* **A quiet player.** B's HTTP server and proxy wait at most 30 s for the next bytes of a
  request body (then 408, and the device ends the session); a player may send nothing for
  longer (no RTCP, no keep-alive while playing). After :data:`KEEPALIVE` seconds of silence
  the POST carries ``CRLF``, which base64 ignores (the device's decoder skips whitespace).
* **Refusals.** B answers the GET before any video: 200 opens the session; 404 (the
  device left B, or no such media token) becomes :class:`~..runtime.rtsp_front.TunnelRefused`
  with that status (RTSP 404), anything else RTSP 503 at the front; a node that does not
  answer within ``OPEN_TIMEOUT`` is a :class:`~..errors.TransportError` (RTSP 503). The
  body of a refusal is not read (it is the device's, of any length): the connection closes,
  as the front cancels a local device's refused stream.
* **Only the session's headers.** The client sends no header of its own (httpx's
  ``Accept``, ``Accept-Encoding``, ``User-Agent``: :func:`node_client`), so the device
  sees what the front sends a local device; the router relays requests on such a client too.
* **A node that dies** mid-session breaks the connection: the pump's read fails, one
  INFO line names the node and the device, the next read raises ``TransportError`` and
  the front closes the player's connection. A read waits at most ``SESSION_IDLE``
  (httpx's read timeout), so nothing hangs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import TransportError
from ..runtime.chunk_stream import ChunkStream
from ..runtime.rtsp_front import OPEN_TIMEOUT, SESSION_IDLE, TunnelRefused
from ..sansio.rtsp_tunnel import TUNNEL_CONTENT_TYPE, TUNNEL_PATH

__all__ = ["KEEPALIVE", "node_client", "open_node_rtsp"]

log = logging.getLogger(__name__)

#: Seconds of player silence after which the POST channel carries a line break (whitespace in
#: base64), well inside the other node's 30 s wait for the next body bytes.
KEEPALIVE = 10.0

#: What the pump hands the reader: a chunk, ``b""`` at the end, or why the node broke off.
_Item = bytes | Exception
#: Sends the POST with the given body and returns its answer.
_SendPost = Callable[[AsyncIterator[bytes]], Awaitable[httpx.Response]]


def node_client(context: ssl.SSLContext, **options: Any) -> httpx.AsyncClient:
    """An httpx client on the node TLS ``context`` that adds no header of its own to a request (module
    docstring): what goes to the other node is what the caller gives, plus ``Host`` and the body's framing."""
    client = httpx.AsyncClient(verify=context, **options)
    for name in list(client.headers):
        del client.headers[name]
    return client


async def open_node_rtsp(context: ssl.SSLContext, node: str, device_url: httpx.URL, device_id: str, token: str,
                         *, endings: set[asyncio.Task[None]], on_end: Callable[[], None]) -> _NodeTunnel:
    """RTSP over HTTP to media source ``token`` of ``device_id`` through ``node``'s internal listener
    (``device_url``: ``https://<internal>/devices/<id>``) on a connection of its own made with the
    node TLS ``context``; ``endings`` keeps the tasks that close sessions (module docstring),
    ``on_end`` is called once the session is closed."""
    client = node_client(context, http2=True, limits=httpx.Limits(max_connections=1))
    try:
        return await _open(client, node, device_url, device_id, token, endings, on_end)
    except BaseException:
        await client.aclose()
        raise


async def _open(client: httpx.AsyncClient, node: str, device_url: httpx.URL, device_id: str, token: str,
                endings: set[asyncio.Task[None]], on_end: Callable[[], None]) -> _NodeTunnel:
    url = device_url.copy_with(raw_path=device_url.raw_path + (TUNNEL_PATH + quote(token, safe="")).encode("ascii"))
    timeout = httpx.Timeout(OPEN_TIMEOUT, read=SESSION_IDLE)
    cookie = secrets.token_urlsafe(18)
    get = client.build_request("GET", url, headers=[("x-sessioncookie", cookie), ("accept", TUNNEL_CONTENT_TYPE)],
                               timeout=timeout)
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            response = await client.send(get, stream=True)
            if response.status_code != 200:
                await response.aclose()
    except (httpx.HTTPError, TimeoutError) as exc:
        raise TransportError(f"node {node} holding device {device_id!r} did not open the RTSP tunnel: "
                             f"{type(exc).__name__}") from None
    if response.status_code != 200:
        raise TunnelRefused(f"node {node} refused the RTSP tunnel to device {device_id!r} with HTTP "
                            f"{response.status_code}", status=response.status_code)
    # No content-length: END_STREAM delimits the POST (module docstring).
    post = [("x-sessioncookie", cookie), ("content-type", TUNNEL_CONTENT_TYPE)]
    return _NodeTunnel(client, node, device_id, response, endings, on_end,
                       lambda body: client.send(client.build_request("POST", url, headers=post, content=body,
                                                                     timeout=timeout)))


class _NodeTunnel(ChunkStream):
    """The GET/POST pair of one session as a byte stream (module docstring)."""

    def __init__(self, client: httpx.AsyncClient, node: str, device_id: str, response: httpx.Response,
                 endings: set[asyncio.Task[None]], on_end: Callable[[], None], send_post: _SendPost) -> None:
        super().__init__()
        self._client = client
        self._node = node
        self._device_id = device_id
        self._response = response
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue(maxsize=1)
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._closing = False
        self._endings = endings
        self._on_end = on_end
        self._ending: asyncio.Task[None] | None = None
        self._pump = asyncio.create_task(self._read_get())
        self._post = asyncio.create_task(self._send_post(send_post))

    async def _outgoing(self) -> AsyncIterator[bytes]:
        """The POST's body: what the player sent, base64, a chunk at a time until the session ends;
        a line break after ``KEEPALIVE`` seconds of silence (module docstring)."""
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    data = await self._outbox.get()
            except TimeoutError:
                yield b"\r\n"
                continue
            if data is None:
                return
            yield data

    def _what(self) -> str:
        return f"RTSP session of device {self._device_id!r} through node {self._node}"

    async def _read_get(self) -> None:
        item: _Item = b""
        try:
            async for chunk in self._response.aiter_raw():
                await self._inbox.put(chunk)
        except Exception as exc:  # noqa: BLE001 -- whatever ends the GET must reach the reader, or it waits
            if not self._closing:
                log.info("%s broken off: %s: %s", self._what(), type(exc).__name__, str(exc)[:120] or "no detail")
            item = exc
        await self._inbox.put(item)

    async def _send_post(self, send_post: _SendPost) -> None:
        try:
            answer = await send_post(self._outgoing())
            log.debug("%s: the POST channel ended with HTTP %s", self._what(), answer.status_code)
        except httpx.HTTPError as exc:
            log.debug("%s: the POST channel failed: %s", self._what(), type(exc).__name__)

    async def _next_chunk(self) -> bytes:
        item = await self._inbox.get()
        if isinstance(item, Exception):
            raise TransportError(f"{self._what()} broken off: {type(item).__name__}")
        return item

    async def _send(self, data: bytes) -> None:
        if self._closing or self._post.done():
            raise TransportError(f"{self._what()}: the node takes no more of the player's bytes")
        put = asyncio.ensure_future(self._outbox.put(base64.b64encode(data)))
        try:
            await asyncio.wait([put, self._post], timeout=SESSION_IDLE, return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
        if put.cancelled() or put.exception() is not None:
            raise TransportError(f"{self._what()}: the node takes no more of the player's bytes")

    def abort(self) -> None:
        if self._ending is None:
            self._closing = True
            self._ending = asyncio.get_running_loop().create_task(self._end())
            self._endings.add(self._ending)
            self._ending.add_done_callback(self._endings.discard)

    async def close(self) -> None:
        self.abort()
        assert self._ending is not None
        await asyncio.shield(self._ending)

    async def _end(self) -> None:
        """Close the session's connection: B's proxy resets both streams at the device."""
        try:
            for task in (self._pump, self._post):
                task.cancel()
            await asyncio.gather(self._pump, self._post, return_exceptions=True)
            await self._client.aclose()
        finally:
            self._on_end()


