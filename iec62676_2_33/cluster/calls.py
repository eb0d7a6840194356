"""Layer 4 (cloud cluster): a VMS call to a device whose uplink another node holds (UPL-16).

VMS code on a node calls devices through :meth:`~..api.Cloud.request` or the zeep
transport of :meth:`~..api.Cloud.transport`. A device connected to this node is called
directly on its uplink (:meth:`~..runtime.cloud.CloudListener.request`); for any other,
:func:`request_at_node` finds the live node holding it in the registry and sends the
request over the node-to-node HTTP/2 connection on mutual TLS
(:meth:`~.router.NodeRouter.send_to`) to that node's internal listener -- the route the
HTTP proxy relays on, where the holding node's proxy forwards it over the uplink under its
own admission and budgets.

The answer is the device's as a local call gives it: the request carries
``X-Forwarded-Host: <device id>``, ``-Proto: https`` and an empty ``-Prefix``, so the
addresses the device builds (GetServices XAddrs, subscription references) are the ones a
local call sees, and a zeep client following them stays on this transport. The caller's
budgets hold as on one node: ``timeout`` bounds the whole answer, head and body, and an
answer longer than ``max_body`` is cut off (the stream reset) with
:class:`~..runtime.cloud.AnswerTooLarge`.

Failures are one line: no live node holds the device, or its node answers that the device
is not connected there (the proxy's own 404, marked with
:data:`~..runtime.proxy.PROXY_ANSWER`), raise :class:`~..runtime.cloud.UnknownDevice`; a
node that cannot be reached, breaks off or stays silent past ``timeout``, and any other
answer the holding node's proxy gives itself (502: the device did not answer; 503: busy),
raise :class:`~..errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from urllib.parse import quote

import httpx

from ..errors import TransportError
from ..runtime.cloud import AnswerTooLarge, HttpResponse, UnknownDevice
from ..runtime.proxy import PROXY_ANSWER
from .router import NodeRouter

__all__ = ["request_at_node"]

#: Request headers not relayed: hop-by-hop, the target's, and the ``X-Forwarded-*`` this module sets.
_DROP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "proxy-connection",
                   "http2-settings", "content-length"})
#: Longest excerpt of a node's own answer quoted in an error.
_EXCERPT = 200


def _headers(device_id: str, headers: Iterable[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
    out = [(k.lower(), v) for k, v in headers
           if k.lower() not in _DROP and not k.lower().startswith("x-forwarded-")]
    return [*out, ("content-length", str(len(body))), ("x-forwarded-host", device_id),
            ("x-forwarded-proto", "https"), ("x-forwarded-prefix", "")]


async def request_at_node(router: NodeRouter, device_id: str, method: str, path: str,
                          headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *, timeout: float = 30.0,
                          max_body: int | None = None) -> HttpResponse:
    """Call a device held by another live node (module docstring); ``path`` is the device's own
    (``/onvif/device_service``, with its query if any)."""
    node = router.registry.locate(device_id)
    if node is None or node.node == router.registry.node.node:
        raise UnknownDevice(f"device {device_id!r} is not connected to the cluster")
    target = path if path.startswith("/") else "/" + path
    raw_path = f"/devices/{quote(device_id, safe='')}{target}".encode()
    where = f"node {node.node} holding device {device_id!r}"
    try:
        async with asyncio.timeout(timeout):  # the whole answer, head and body, as on one node
            response = await router.send_to(node, method, raw_path, _headers(device_id, headers, body), body,
                                            timeout=timeout)
            try:
                parts, size = [], 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if max_body is not None and size > max_body:
                        raise AnswerTooLarge(f"the device's answer to {method} {target[:120]} exceeded {max_body} "
                                             "bytes")
                    parts.append(chunk)
            finally:
                await response.aclose()
    except TimeoutError:
        raise TransportError(f"{where} did not answer within {timeout:g} s") from None
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        raise TransportError(f"{where} did not answer: {type(exc).__name__}: {str(exc)[:_EXCERPT]}") from None
    content = b"".join(parts)
    if PROXY_ANSWER.decode() in response.headers:  # the holding node's proxy answered, not the device
        text = content[:_EXCERPT].decode("utf-8", "replace").strip()
        if response.status_code == 404:
            raise UnknownDevice(f"device {device_id!r} is not connected (node {node.node}: {text})")
        raise TransportError(f"{where} answered {response.status_code}: {text}")
    return HttpResponse(status=response.status_code, headers=[(k.decode("latin-1").lower(), v.decode("latin-1"))
                                                              for k, v in response.headers.raw], body=content)
