"""Layer 4: the cloud's HTTP front for unmodified clients (GEN-2, GEN-3, UPL-16).

``GET /devices`` lists the connected devices as JSON; any request under
``/devices/<id>/…`` is forwarded to that device over its uplink and the answer
streamed back (flow control follows the slow side). The device learns where
the client came from through ``X-Forwarded-For/-Host/-Proto/-Prefix`` so it can
build addresses that point back through the proxy. Served by hypercorn
(HTTP/1.1, h2c by upgrade or prior knowledge, and HTTP/2 over TLS with ALPN).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from ..errors import Iec62676Error, TransportError
from .cloud import CloudListener, UnknownDevice

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
                         b"te", b"host", b"http2-settings", b"content-length"})

MAX_BODY = 16 << 20
TIMEOUT = 30.0


async def _plain(send: Send, status: int, text: str, content_type: bytes = b"text/plain; charset=utf-8") -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class UplinkProxy:
    """ASGI application forwarding ``/devices/<id>/…`` to the devices of a :class:`CloudListener`."""

    def __init__(self, cloud: CloudListener, *, max_body: int = MAX_BODY, timeout: float = TIMEOUT) -> None:
        self.cloud = cloud
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path in ("/devices", "/devices/"):
            if scope["method"] not in ("GET", "HEAD"):
                await _plain(send, 405, "only GET lists the devices\n")
                return
            listing = json.dumps([d.as_json() for d in self.cloud.devices()], indent=2) + "\n"
            await _plain(send, 200, listing, b"application/json")
            return
        if not path.startswith("/devices/"):
            await _plain(send, 404, "not found: use GET /devices or /devices/<id>/<path>\n")
            return
        # Split the path as the client sent it: an encoded "/" in the id stays in the id, and the
        # rest is forwarded exactly as received (decoding and re-encoding would change its meaning).
        raw: bytes = scope.get("raw_path") or path.encode("utf-8")
        encoded_id, _, rest = raw[len(b"/devices/"):].partition(b"/")
        device_id = unquote(encoded_id.decode("latin-1"))
        await self._forward(scope, receive, send, device_id, "/" + rest.decode("latin-1"))

    async def _read_body(self, receive: Receive) -> bytes | None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return None
            if not message.get("more_body"):
                return bytes(body)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, device_id: str, rest: str) -> None:
        try:
            channel = self.cloud.channel(device_id)
        except UnknownDevice:
            await _plain(send, 404, f"device {device_id!r} is not connected; GET /devices lists the connected ones\n")
            return
        body = await self._read_body(receive)
        if body is None:
            await _plain(send, 413, f"request body over {self.max_body} bytes\n")
            return
        target = rest + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        # Names with "_" are dropped: WSGI maps x_forwarded_host and x-forwarded-host to one key.
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.lower() not in _HOP_BY_HOP and not k.lower().startswith(b"x-forwarded-") and b"_" not in k]
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() in (b"host", b":authority")), "")
        client = scope.get("client") or ("", 0)
        headers += [("x-forwarded-for", str(client[0])), ("x-forwarded-host", host),
                    ("x-forwarded-proto", scope.get("scheme", "http")),
                    ("x-forwarded-prefix", f"/devices/{quote(device_id, safe='')}")]
        if body:
            headers.append(("content-length", str(len(body))))
        try:
            stream_id, status, head = await channel.open(scope["method"], target, headers, body, timeout=self.timeout)
        except (Iec62676Error, TimeoutError) as exc:
            await _plain(send, 502, f"device {device_id!r} did not answer: {exc or 'timeout'}\n")
            return
        try:
            out_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head
                           if k.encode() not in _HOP_BY_HOP or k == "content-length"]
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            try:
                async for chunk in channel.body(stream_id, timeout=self.timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (TransportError, TimeoutError) as exc:
                # Never pass a truncated body off as complete: abort the client's connection.
                log.info("device %s broke off a response: %s", device_id, exc or "timeout")
                raise
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            channel.cancel(stream_id)  # the client went away or sending failed: free the device's stream
