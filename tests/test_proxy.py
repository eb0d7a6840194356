"""GEN-3, UPL-16: the cloud proxy's request mapping — device id and path taken from the raw path,
forwarded headers that cannot be spoofed, and the device's stream freed whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iec62676_2_33.cli import main
from iec62676_2_33.runtime.cloud import UnknownDevice
from iec62676_2_33.runtime.proxy import UplinkProxy


class FakeChannel:
    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.opened: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.cancelled: list[int] = []
        self.chunks = chunks
        self.fail_after = fail_after

    async def open(self, method: str, target: str, headers: Any, body: bytes, *, timeout: float) -> Any:
        self.opened.append((method, target, list(headers), body))
        return 7, 200, [("content-type", "text/plain")]

    async def body(self, stream_id: int, *, timeout: float) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i >= self.fail_after:
                raise asyncio.CancelledError
            yield chunk

    def cancel(self, stream_id: int) -> None:
        self.cancelled.append(stream_id)


class FakeCloud:
    def __init__(self, channels: dict[str, FakeChannel]) -> None:
        self.channels = channels

    def channel(self, device_id: str) -> FakeChannel:
        if device_id not in self.channels:
            raise UnknownDevice(f"device {device_id!r} is not connected")
        return self.channels[device_id]

    def devices(self) -> list[Any]:
        return []


async def call(app: UplinkProxy, raw_path: bytes, headers: list[tuple[bytes, bytes]] = (),
               query: bytes = b"") -> tuple[int, bytes]:
    from urllib.parse import unquote_to_bytes

    scope = {"type": "http", "method": "GET", "path": unquote_to_bytes(raw_path).decode("latin-1"),
             "raw_path": raw_path, "query_string": query, "headers": [(b"host", b"cloud:8081"), *headers],
             "scheme": "http", "client": ("127.0.0.1", 5000)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_device_id_and_path_come_from_the_raw_path_gen_3() -> None:
    """GEN-3: an encoded "/" stays inside the device id; the rest of the path is forwarded as sent."""
    channel = FakeChannel([b"ok"])
    app = UplinkProxy(FakeCloud({"spiffe://cam/1": channel}))  # type: ignore[arg-type]
    status, body = await call(app, b"/devices/spiffe:%2F%2Fcam%2F1/onvif/a%2Fb%25c", query=b"x=1")
    assert (status, body) == (200, b"ok")
    [(method, target, headers, _)] = channel.opened
    assert (method, target) == ("GET", "/onvif/a%2Fb%25c?x=1")
    assert ("x-forwarded-prefix", "/devices/spiffe%3A%2F%2Fcam%2F1") in headers
    status, body = await call(app, b"/devices/a%252Fb/x")
    assert status == 404
    assert body == b"device 'a%2Fb' is not connected; GET /devices lists the connected ones\n"


async def test_forwarded_headers_cannot_be_spoofed_upl_16() -> None:
    """UPL-16: client X-Forwarded-* headers, and look-alikes with "_", never reach the device."""
    channel = FakeChannel([b""])
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    await call(app, b"/devices/cam/onvif/device_service",
               [(b"x-forwarded-host", b"evil"), (b"x_forwarded_host", b"evil"), (b"x-custom", b"kept")])
    [(_, _, headers, _)] = channel.opened
    assert [v for k, v in headers if "forwarded" in k.replace("_", "-")] == [
        "127.0.0.1", "cloud:8081", "http", "/devices/cam"]
    assert ("x-custom", "kept") in headers


async def test_device_stream_freed_when_the_response_breaks_off_upl_16() -> None:
    """UPL-16: a response cut short (client gone, task cancelled) still frees the device's stream."""
    channel = FakeChannel([b"a", b"b"], fail_after=1)
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await call(app, b"/devices/cam/big")
    assert channel.cancelled == [7]


def test_proxy_refuses_a_public_address_without_opt_in_gen_3(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Any) -> None:
    """GEN-3: the proxy acts with each device's UserLevel, so it binds loopback unless told otherwise."""
    from iec62676_2_33 import pki

    ca = pki.make_ca("proxy CA")
    ca_file, _ = ca.write(tmp_path, "ca")
    cert, key = pki.make_leaf(ca, "cloud", kind="server", sans=["localhost"]).write(tmp_path, "cloud")
    code = main(["cloud", "serve", "--listen", "127.0.0.1:0", "--cert", str(cert), "--key", str(key),
                 "--client-ca", str(ca_file), "--proxy", "0.0.0.0:0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ("iec62676: error: --proxy 0.0.0.0:0: the proxy gives whoever reaches it each device's uplink "
                   "UserLevel; bind it to loopback (e.g. 127.0.0.1:8081) or, behind your own authentication, "
                   "add --proxy-allow-remote")
