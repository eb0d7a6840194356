"""Layer 4 (cloud cluster): forward a proxy request to the node that holds the device (UPL-16).

When a request reaches a node's HTTP proxy (:mod:`..runtime.proxy`) for a device whose
uplink another node holds, :class:`NodeRouter` finds that node in the registry and
relays the request to the other node's *internal* listener: the same proxy application,
served on TLS that requires a client certificate from the cluster's node CA (mutual TLS
between nodes). The body streams both ways (no size cap beyond the proxy's own limits),
so long bodies and streams cross nodes as they cross one node.

Theory of operation: a connection per request in flight
-------------------------------------------------------
Relayed requests go out on a pool of HTTP/1.1 keep-alive connections (httpx), not on
one shared HTTP/2 connection per node. Each request holds a connection of its own while
it runs and gives it back to the pool when its answer has been read, so the next request
to that node reuses it without a TLS handshake. What one answer does -- trickle, stay
silent for minutes (an RTSP-over-HTTP GET channel before PLAY, a long poll), never end,
or wait for a client that reads slowly -- happens on its connection only: there is no
shared read lock, and the TCP window of its connection is that answer's back-pressure.

Why not one HTTP/2 connection (httpcore, the previous design): one task at a time reads
the connection, and a task whose answer another task has read already still queues for
the read lock behind the readers of silent answers, each blocked on the socket until
some frame comes; the frames of a small answer let it pass a few of them. Measured with
twelve silent RTSP-over-HTTP GET channels relayed through a node: a SOAP call to another
device behind the same node was answered after 9.95 s, when the device gave the channels
up (``tests/test_cluster_router.py`` fails so on that design). A reader task of our own
per HTTP/2 connection (the uplinks' role, :mod:`..runtime.h2driver`) avoids that too, but
would need a second copy of the proxy's relay loop over it; the maintained HTTP/1.1
client needs none, and the relayed rate did not drop (``bench/bench_cluster.py``,
docs/benchmarks.md: relayed / local 0.58-0.67 at concurrency 1 against 0.52-0.57
before, about equal at concurrency 8). The price is a connection, not a stream, per
request in flight, hence the bounds below.

An answer without ``content-length`` (a stream) has its head passed on at once, before
any body, as the proxy does for a local device: a player waits for the 200 of its
RTSP-over-HTTP GET channel before it opens the POST channel, and the device sends no
body before that POST (without this, ffmpeg's ``-rtsp_transport http`` through one node
to a device at another got nothing until the device gave the GET up, 10 s later).

Bounds: at most :data:`MAX_CONNECTIONS` connections to other nodes at once (all nodes
together; a request that finds none free waits for one at most ``timeout``), at most
:data:`MAX_NODE_REQUESTS` requests in flight to one node (beyond: 503, or
:class:`~..errors.TransportError` for :meth:`NodeRouter.send_to`, at once), and at most
:data:`MAX_IDLE` idle connections kept (httpx closes them after 5 s unused). An answer
that breaks off, or that the client does not take within ``timeout``, closes its
connection, which the other node's proxy sees as its client gone (it resets the device's
stream).

The receiving node trusts the ``X-Forwarded-*`` headers of an authenticated node only
(the first node's view of the client), so addresses a device builds point at the node
the client used; so too ``x-iec62676-rtsp-base``, the first node's RTSP front, so that a
GetStreamUri relayed across nodes names the front the client asked through (STR-1). A
client's own copies of these headers are dropped before the hop.

The device sees the request as it would at the first node: the hop adds no header of
its own (:func:`~.node_rtsp.node_client`), and the fields the client's ``Connection``
names go no further than the first node, as the proxy drops them for a local device.
Whether a request has a body, the client's first ASGI message says (an HTTP/2 client
may send one with neither ``content-length`` nor ``transfer-encoding``), as it does for
a local device. A request target that is no path (``OPTIONS *`` to a device named by
its host or port) is refused with 400: after ``/devices/<id>`` it would name another
device.

The RTSP front relays sessions across nodes to the same internal listeners with the same
node certificate, each on an HTTP/2 connection of its own (:meth:`NodeRouter.open_rtsp`,
:mod:`.node_rtsp` says why).

Failures say what happened in one line: a node that cannot be reached, or that breaks
off before answering, gives 502; a node already carrying ``MAX_NODE_REQUESTS`` requests
from here 503; a device no live node holds gives 404 (from the proxy). Once the answer
started, a failure aborts the client's connection, as on one node: a truncated body is
never passed off as complete.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import TransportError
from ..runtime.proxy import HOP_BY_HOP, PROXY_ANSWER, RTSP_BASE, connection_named
from ..transport.base import ByteStream
from .node_rtsp import node_client, open_node_rtsp
from .records import NodeRecord
from .registry import ClusterRegistry

log = logging.getLogger(__name__)

__all__ = ["NodeRouter"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: RTSP sessions relayed to one other node at once. Each holds a connection to it and two of that
#: node's proxy request slots (``ProxyLimits.max_requests``, 64), so relayed requests keep room.
MAX_NODE_SESSIONS = 16
#: Connections to other nodes for relayed requests at once, all nodes together (a node's proxy
#: admits ``ProxyLimits.max_requests``, 64, requests at once).
MAX_CONNECTIONS = 64
#: Requests relayed to one other node at once: one slow node leaves connections for the others.
MAX_NODE_REQUESTS = 32
#: Idle keep-alive connections kept for the next relayed requests, all nodes together.
MAX_IDLE = 16

#: What the hop drops: the proxy's hop-by-hop fields, but the body's length goes on (the next node reads by it).
_DROP = HOP_BY_HOP - {b"content-length"}


class _Broken(OSError):
    """The answer broke off part-way: the client's connection is cut (ASGI servers expect an OSError)."""


class NodeRouter:
    """Relays requests for devices held by other nodes (module docstring)."""

    def __init__(self, registry: ClusterRegistry, client_context: ssl.SSLContext, *, timeout: float = 30.0) -> None:
        self.registry = registry
        self.timeout = timeout
        self._context = client_context
        # HTTP/1.1 only: a connection per request in flight (module docstring).
        self._client = node_client(client_context, http1=True, http2=False, timeout=timeout,
                                   limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                                       max_keepalive_connections=MAX_IDLE))
        #: Ends of RTSP sessions to other nodes still being wound down (:mod:`.node_rtsp`).
        self._endings: set[asyncio.Task[None]] = set()
        #: RTSP sessions relayed now, by node (at most ``MAX_NODE_SESSIONS`` each).
        self._sessions: Counter[str] = Counter()
        #: Requests relayed now, by node (at most ``MAX_NODE_REQUESTS`` each).
        self._requests: Counter[str] = Counter()

    def devices(self) -> list[dict[str, object]]:
        """The cluster's devices for ``GET /devices`` (each with its node)."""
        from ..runtime.cloud import DeviceInfo

        return [{**DeviceInfo(device_id=r.id, peer=r.peer, connected_since=r.connected_since,
                              auth_mode=r.auth_mode).as_json(), "node": r.node}
                for r in self.registry.devices()]

    def holds(self, device_id: str) -> bool:
        """Whether another live node holds the device."""
        node = self.registry.locate(device_id)
        return node is not None and node.node != self.registry.node.node

    async def aclose(self) -> None:
        for task in self._endings:
            task.cancel()
        await asyncio.gather(*self._endings, return_exceptions=True)
        await self._client.aclose()

    async def open_rtsp(self, device_id: str, token: str) -> ByteStream:
        """An RTSP session to media source ``token`` of a device another node holds, as
        :func:`~..runtime.rtsp_front.open_rtsp_stream` opens one on a local uplink (:mod:`.node_rtsp`).

        Raises :class:`~..runtime.cloud.UnknownDevice` (no other node holds it),
        :class:`~..runtime.rtsp_front.TunnelRefused` (404: no such device or media token there) or
        :class:`~..errors.TransportError` (the node did not answer, or carries ``MAX_NODE_SESSIONS``
        sessions from here already)."""
        from ..runtime.cloud import UnknownDevice

        node = self.registry.locate(device_id)
        if node is None or node.node == self.registry.node.node:
            raise UnknownDevice(f"device {device_id!r} is not connected to another node")
        host, _, port = node.internal.rpartition(":")
        url = httpx.URL(scheme="https", host=host.strip("[]"), port=int(port),
                        raw_path=f"/devices/{quote(device_id, safe='')}".encode("latin-1"))
        ended = _take(self._sessions, node.node, MAX_NODE_SESSIONS, "RTSP sessions")
        try:
            return await open_node_rtsp(self._context, node.node, url, device_id, token, endings=self._endings,
                                        on_end=ended)
        except BaseException:
            ended()
            raise

    async def forward(self, scope: dict[str, Any], receive: Receive, send: Send, device_id: str, rest: str,
                      forwarded: list[tuple[bytes, bytes]]) -> None:
        """Relay one request to the node holding ``device_id``; ``rest`` is the raw path after the id,
        ``forwarded`` the ``X-Forwarded-*`` headers this node would give the device."""
        node = self.registry.locate(device_id)
        if node is None:
            await _plain(send, 404, f"device {device_id!r} is not connected to the cluster\n")
            return
        if not rest.startswith("/"):
            await _plain(send, 400, f"the request target {rest[:20]!r} is no path: it cannot be relayed to "
                                    f"another node\n")
            return
        query = scope.get("query_string") or b""
        raw_path = f"/devices/{quote(device_id, safe='')}{rest}".encode("latin-1") + (b"?" + query if query else b"")
        host, _, port = node.internal.rpartition(":")
        url = httpx.URL(scheme="https", host=host.strip("[]"), port=int(port), raw_path=raw_path)
        # the fields the client's Connection names, but not the body's framing: the next node reads the body by it
        named = connection_named(scope["headers"]) - {b"content-length"}
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROP and k.lower() not in named
                   and k.lower() != RTSP_BASE and not k.lower().startswith(b"x-forwarded-")] + forwarded
        # Whether there is a body, the client's first message says, as for a local device: an HTTP/2
        # request may carry one without content-length or transfer-encoding.
        try:
            async with asyncio.timeout(self.timeout):
                first = await receive()
        except TimeoutError:
            await _plain(send, 408, f"no request body arrived for {self.timeout:g} s\n")
            return
        if first["type"] == "http.disconnect":
            return
        body = _body(receive, first) if first.get("body") or first.get("more_body") else None
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._send(node, request)
        except TransportError as exc:  # MAX_NODE_REQUESTS
            await _plain(send, 503, f"{exc}; retry later\n")
            return
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            log.info("node %s unreachable for device %s: %s", node.node, device_id, exc)
            await _plain(send, 502, f"node {node.node} holding device {device_id!r} did not answer: "
                                    f"{type(exc).__name__}\n")
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _DROP]})
            if "content-length" not in response.headers:  # a stream (RTSP over HTTP): the head now
                await send({"type": "http.response.body", "body": b"", "more_body": True})
            try:
                async for chunk in response.aiter_raw():
                    async with asyncio.timeout(self.timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (httpx.HTTPError, TimeoutError) as exc:
                raise _Broken(f"node {node.node} broke off the answer of device {device_id!r}: "
                              f"{type(exc).__name__}") from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def send_to(self, node: NodeRecord, method: str, raw_path: bytes, headers: list[tuple[str, str]],
                      body: bytes, *, timeout: float) -> httpx.Response:
        """One request to ``node``'s internal listener on a node-to-node connection (for VMS calls,
        :mod:`.calls`); the answer streams: the caller reads it and closes it. httpx errors pass through;
        :class:`~..errors.TransportError` when ``MAX_NODE_REQUESTS`` are in flight to ``node``."""
        host, _, port = node.internal.rpartition(":")
        url = httpx.URL(scheme="https", host=host.strip("[]"), port=int(port), raw_path=raw_path)
        request = self._client.build_request(method, url, headers=headers, content=body, timeout=timeout)
        return await self._send(node, request)

    async def _send(self, node: NodeRecord, request: httpx.Request) -> httpx.Response:
        """Send on a pooled connection under the node's request bound; closing the answer frees its slot."""
        release = _take(self._requests, node.node, MAX_NODE_REQUESTS, "requests")
        try:
            response = await self._client.send(request, stream=True)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Held(response.stream, release)
        return response


def _take(counter: Counter[str], node: str, limit: int, what: str) -> Callable[[], None]:
    """One of ``limit`` slots of ``node`` in ``counter`` (TransportError when none is free); returns
    the call that gives it back (once)."""
    if counter[node] >= limit:
        raise TransportError(f"node {node} carries {limit} {what} from this node already")
    counter[node] += 1
    taken = True

    def release() -> None:
        nonlocal taken
        if taken:
            taken = False
            counter[node] -= 1
            if not counter[node]:
                del counter[node]

    return release


class _Held(httpx.AsyncByteStream):
    """An answer's body that gives its node's request slot back when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._release()


async def _body(receive: Receive, first: dict[str, Any]) -> AsyncIterator[bytes]:
    """The request body, from the client's ``first`` message on."""
    message = first
    while True:
        yield message.get("body", b"")
        if not message.get("more_body"):
            return
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Broken("the client disconnected")


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (PROXY_ANSWER, b"1")]})
    await send({"type": "http.response.body", "body": body})
