"""Layer 4 (cloud cluster): forward a proxy request to the node that holds the device (UPL-16).

When a request reaches a node's HTTP proxy (:mod:`..runtime.proxy`) for a device whose
uplink another node holds, :class:`NodeRouter` finds that node in the registry and
relays the request to the other node's *internal* listener: the same proxy application,
served over HTTP/2 on TLS that requires a client certificate from the cluster's node CA
(mutual TLS between nodes). The body streams both ways under HTTP/2 flow control (no
size cap beyond the proxy's own limits), so long bodies and streams cross nodes as they
cross one node; one HTTP/2 connection per peer node carries all requests (httpx).

The receiving node trusts the ``X-Forwarded-*`` headers of an authenticated node only
(the first node's view of the client), so addresses a device builds point at the node
the client used; so too ``x-iec62676-rtsp-base``, the first node's RTSP front, so that a
GetStreamUri relayed across nodes names the front the client asked through (STR-1). A
client's own copies of these headers are dropped before the hop.

The RTSP front relays sessions across nodes to the same internal listeners with the same
node certificate, each on a connection of its own (:meth:`NodeRouter.open_rtsp`,
:mod:`.node_rtsp` says why).

Failures say what happened in one line: a node that cannot be reached, or that breaks
off before answering, gives 502; a device no live node holds gives 404 (from the
proxy). Once the answer started, a failure aborts the client's connection, as on one
node: a truncated body is never passed off as complete.
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
from ..runtime.proxy import RTSP_BASE
from ..transport.base import ByteStream
from .node_rtsp import open_node_rtsp
from .records import NodeRecord
from .registry import ClusterRegistry

log = logging.getLogger(__name__)

__all__ = ["NodeRouter"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: RTSP sessions relayed to one other node at once. Each holds a connection to it and two of that
#: node's proxy request slots (``ProxyLimits.max_requests``, 64), so relayed requests keep room.
MAX_NODE_SESSIONS = 16

_DROP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te",
                   b"proxy-connection", b"http2-settings"})


class _Broken(OSError):
    """The answer broke off part-way: the client's connection is cut (ASGI servers expect an OSError)."""


class NodeRouter:
    """Relays requests for devices held by other nodes (module docstring)."""

    def __init__(self, registry: ClusterRegistry, client_context: ssl.SSLContext, *, timeout: float = 30.0) -> None:
        self.registry = registry
        self.timeout = timeout
        self._context = client_context
        self._client = httpx.AsyncClient(http2=True, verify=client_context, timeout=timeout,
                                         limits=httpx.Limits(max_connections=64, max_keepalive_connections=8))
        #: Ends of RTSP sessions to other nodes still being wound down (:mod:`.node_rtsp`).
        self._endings: set[asyncio.Task[None]] = set()
        #: RTSP sessions relayed now, by node (at most ``MAX_NODE_SESSIONS`` each).
        self._sessions: Counter[str] = Counter()

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
        name = node.node
        if self._sessions[name] >= MAX_NODE_SESSIONS:
            raise TransportError(f"node {name} carries {MAX_NODE_SESSIONS} RTSP sessions from this node already")
        self._sessions[name] += 1

        def ended() -> None:
            self._sessions[name] -= 1
            if not self._sessions[name]:
                del self._sessions[name]

        try:
            return await open_node_rtsp(self._context, name, url, device_id, token, endings=self._endings,
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
        query = scope.get("query_string") or b""
        raw_path = f"/devices/{quote(device_id, safe='')}{rest}".encode("latin-1") + (b"?" + query if query else b"")
        host, _, port = node.internal.rpartition(":")
        url = httpx.URL(scheme="https", host=host.strip("[]"), port=int(port), raw_path=raw_path)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROP and k.lower() != RTSP_BASE
                   and not k.lower().startswith(b"x-forwarded-")] + forwarded
        body = _body(receive) if _has_body(scope) else None
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            log.info("node %s unreachable for device %s: %s", node.node, device_id, exc)
            await _plain(send, 502, f"node {node.node} holding device {device_id!r} did not answer: "
                                    f"{type(exc).__name__}\n")
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _DROP]})
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
        """One request to ``node``'s internal listener on the node-to-node connection (for VMS calls,
        :mod:`.calls`); the answer streams: the caller reads it and closes it. httpx errors pass through."""
        host, _, port = node.internal.rpartition(":")
        url = httpx.URL(scheme="https", host=host.strip("[]"), port=int(port), raw_path=raw_path)
        request = self._client.build_request(method, url, headers=headers, content=body, timeout=timeout)
        return await self._client.send(request, stream=True)


def _has_body(scope: dict[str, Any]) -> bool:
    return any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Broken("the client disconnected")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
