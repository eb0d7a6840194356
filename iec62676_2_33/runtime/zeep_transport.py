"""Layer 4: zeep transports that call a device through its uplink (GEN-2, GEN-3, UPL-16).

``zeep.Client(wsdl, transport=UplinkTransport(cloud, device_id, loop))`` (sync,
from any thread but the cloud's loop) or
``zeep.AsyncClient(wsdl, transport=AsyncUplinkTransport(cloud, device_id))``
(async, on the cloud's loop) reach the device's services with the same client
code as a direct connection: the service address's path and query are sent
over the device's HTTP/2 uplink; its host part is ignored.

Either transport calls any :class:`DeviceCaller`: a :class:`~.cloud.CloudListener`
(devices connected to this process) or the :class:`~..api.Cloud` handle of
``serve_cloud``, which in a cluster also reaches devices held by other nodes
(:mod:`..cluster.calls`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import requests
from requests.structures import CaseInsensitiveDict
from zeep.transports import AsyncTransport, Transport

from .cloud import HttpResponse


class DeviceCaller(Protocol):
    """Whatever calls a device by its id: :meth:`~.cloud.CloudListener.request`'s signature."""

    async def request(self, device_id: str, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", *, timeout: float = 30.0, max_body: int | None = None) -> HttpResponse: ...


def _target(address: str) -> str:
    parts = urlsplit(address)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _headers(headers: dict[str, str], body: bytes) -> list[tuple[str, str]]:
    out = [(k.lower(), str(v)) for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    out.append(("content-length", str(len(body))))
    return out


class UplinkTransport(Transport):
    """Synchronous zeep transport over an uplink; the cloud runs on ``loop`` in another thread."""

    def __init__(self, cloud: DeviceCaller, device_id: str, loop: asyncio.AbstractEventLoop, *,
                 timeout: float = 30.0) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout)  # type: ignore[no-untyped-call]
        self.cloud = cloud
        self.device_id = device_id
        self.loop = loop
        self.timeout = timeout

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        call = self.cloud.request(self.device_id, "POST", _target(address), _headers(headers, message), message,
                                  timeout=self.timeout)
        future = asyncio.run_coroutine_threadsafe(call, self.loop)
        try:
            result: HttpResponse = future.result(self.timeout + 5)
        except BaseException:
            future.cancel()  # do not leave the request running on the cloud's loop
            raise
        response = requests.Response()
        response.status_code = result.status
        response.headers = CaseInsensitiveDict(result.headers)
        response._content = result.body
        response.url = address
        response.encoding = "utf-8"
        return response


class AsyncUplinkTransport(AsyncTransport):
    """asyncio zeep transport over an uplink (use it on the cloud's event loop)."""

    def __init__(self, cloud: DeviceCaller, device_id: str, *, timeout: float = 30.0) -> None:
        super().__init__(timeout=timeout)  # type: ignore[no-untyped-call]
        self.cloud = cloud
        self.device_id = device_id
        self.timeout = timeout

    async def post(self, address: str, message: bytes, headers: dict[str, str]) -> Any:
        result = await self.cloud.request(self.device_id, "POST", _target(address), _headers(headers, message),
                                          message, timeout=self.timeout)
        return httpx.Response(result.status, headers=result.headers, content=result.body,
                              request=httpx.Request("POST", address))
