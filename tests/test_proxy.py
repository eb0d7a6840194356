"""GEN-3, UPL-16: the cloud proxy's request mapping — device id and path taken from the raw path,
forwarded headers that cannot be spoofed, and the device's stream freed whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iec62676_2_33.cli import main
from iec62676_2_33.runtime import proxy
from iec62676_2_33.runtime.cloud import UnknownDevice
from iec62676_2_33.runtime.proxy import ProxyLimits, UplinkProxy


class FakeChannel:
    """The streaming calls of a DeviceChannel, recorded; the answer is 200 with ``chunks``."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None, takes: int | None = None) -> None:
        self.opened: list[tuple[str, str, list[tuple[str, str]], bool, int | None]] = []
        self.sent: list[tuple[bytes, bool]] = []
        self.cancelled: list[int] = []
        self.chunks = chunks
        self.fail_after = fail_after
        self.takes = takes  # body chunks the device takes before it answers early (None: all)
        self.window = asyncio.Event()  # send() waits for it, as for a device's flow-control window
        self.window.set()
        self.in_send = asyncio.Event()  # set once send() was called

    async def open_stream(self, method: str, target: str, headers: Any, *, end_stream: bool,
                          content_length: int | None, timeout: float) -> int:
        self.opened.append((method, target, list(headers), end_stream, content_length))
        return 7

    async def send(self, stream_id: int, data: bytes, *, end_stream: bool, timeout: float) -> bool:
        self.sent.append((data, end_stream))
        self.in_send.set()
        await self.window.wait()
        return self.takes is None or len(self.sent) < self.takes

    async def response(self, stream_id: int, *, timeout: float) -> Any:
        return 200, [("content-type", "text/plain")]

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
               query: bytes = b"", *, method: str = "GET", body: list[bytes] = (),
               client: str = "127.0.0.1") -> tuple[int, bytes]:
    """One request from ``client`` through the ASGI app; ``body`` is delivered in these chunks. (status, body)."""
    from urllib.parse import unquote_to_bytes

    scope = {"type": "http", "method": method, "path": unquote_to_bytes(raw_path).decode("latin-1"),
             "raw_path": raw_path, "query_string": query, "headers": [(b"host", b"cloud:8081"), *headers],
             "scheme": "http", "client": (client, 5000)}
    sent: list[dict[str, Any]] = []
    chunks = list(body) or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

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
    [(method, target, headers, end_stream, _)] = channel.opened
    assert (method, target, end_stream) == ("GET", "/onvif/a%2Fb%25c?x=1", True)
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
    [(_, _, headers, _, _)] = channel.opened
    assert [v for k, v in headers if "forwarded" in k.replace("_", "-")] == [
        "127.0.0.1", "cloud:8081", "http", "/devices/cam"]
    assert ("x-custom", "kept") in headers


async def test_dot_segments_are_refused_sec_1() -> None:
    """SEC-1, GEN-3: a path with ``.`` or ``..`` segments, written or percent-encoded, is 400 and reaches no
    device (before, ``/devices/other/../cam/x`` went to device ``other`` while a front that normalises paths
    took it for ``cam``'s)."""
    channel = FakeChannel([b"ok"])
    app = UplinkProxy(FakeCloud({"cam": channel, "other": channel}))  # type: ignore[arg-type]
    for path in (b"/devices/other/../cam/onvif/x", b"/devices/other/%2e%2E/cam/x", b"/devices/cam/./x",
                 b"/devices/cam/onvif/%2E"):
        assert (await call(app, path))[0] == 400, path
    assert channel.opened == []
    assert (await call(app, b"/devices/cam/onvif/a..b"))[0] == 200  # ".." inside a segment is a name


async def test_hop_by_hop_fields_named_by_the_client_stay_here_sec_1() -> None:
    """SEC-1, UPL-16: the fields the client's Connection header names, and its Proxy-Authorization, are not
    forwarded to the device (before, ``Connection: close, x-custom`` still sent ``x-custom``)."""
    channel = FakeChannel([b""])
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    await call(app, b"/devices/cam/onvif/device_service", [
        (b"connection", b"close, X-Custom"), (b"x-custom", b"dropped"), (b"proxy-authorization", b"Basic eA=="),
        (b"x-kept", b"kept")])
    [(_, _, headers, _, _)] = channel.opened
    names = [k for k, _ in headers]
    assert "x-custom" not in names and "proxy-authorization" not in names and ("x-kept", "kept") in headers


async def test_device_answers_are_contained_under_the_clouds_origin_sec_1() -> None:
    """SEC-1: a device's answer reaches the client without its Set-Cookie and with ``nosniff`` and a sandbox
    policy in place of its own, so a hostile device can neither set cookies for the cloud's origin, which
    every device shares, nor serve a page that runs there."""

    class Hostile(FakeChannel):
        async def response(self, stream_id: int, *, timeout: float) -> Any:
            return 200, [("content-type", "text/html"), ("set-cookie", "session=x; Path=/"),
                         ("content-security-policy", "default-src *"), ("x-content-type-options", "sniff")]

    app = UplinkProxy(FakeCloud({"cam": Hostile([b"<script>alert(1)</script>"])}))  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/devices/cam/x", "raw_path": b"/devices/cam/x",
             "query_string": b"", "headers": [(b"host", b"cloud:8081")], "scheme": "http", "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    assert start["headers"] == [(b"content-type", b"text/html"), (b"x-content-type-options", b"nosniff"),
                                (b"content-security-policy", b"sandbox")]


async def test_device_stream_freed_when_the_response_breaks_off_upl_16() -> None:
    """UPL-16: a response cut short (client gone, task cancelled) still frees the device's stream."""
    channel = FakeChannel([b"a", b"b"], fail_after=1)
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await call(app, b"/devices/cam/big")
    assert channel.cancelled == [7]


async def test_body_streamed_in_the_clients_chunks_upl_16() -> None:
    """UPL-16: each chunk the ASGI server delivers goes to the device as it comes, the last one
    ending the stream; a body complete in its first chunk declares its length."""
    channel = FakeChannel([b"done"])
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    status, _ = await call(app, b"/devices/cam/up", method="POST", body=[b"ab", b"", b"cd", b""])
    assert status == 200
    assert channel.sent == [(b"ab", False), (b"", False), (b"cd", False), (b"", True)]
    assert channel.opened[0][3:] == (False, None)  # not ended with the head, length unknown
    single = FakeChannel([b"done"])
    app = UplinkProxy(FakeCloud({"cam": single}))  # type: ignore[arg-type]
    await call(app, b"/devices/cam/up", method="POST", body=[b"whole"])
    assert single.opened[0][3:] == (False, 5)
    assert single.sent == [(b"whole", True)]
    assert app.stats.body_bytes == 5 and app.stats.in_flight == 0


async def test_early_answer_stops_the_upload_upl_16() -> None:
    """UPL-16: once the device takes no more of the body (it answered early), the proxy reads no
    more of the client's body and forwards the device's answer."""
    channel = FakeChannel([b"early"], takes=2)
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    status, body = await call(app, b"/devices/cam/up", method="POST", body=[b"1", b"2", b"3", b"4"])
    assert (status, body) == (200, b"early")
    assert [data for data, _ in channel.sent] == [b"1", b"2"]


async def test_body_contradicting_its_length_resets_the_stream_upl_16() -> None:
    """UPL-16: a body longer than its content-length never reaches the device past that length:
    the stream is reset and the client gets 400; a malformed content-length is 400 at once."""
    channel = FakeChannel([b"never"])
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    status, _ = await call(app, b"/devices/cam/up", [(b"content-length", b"3")], method="POST",
                           body=[b"ab", b"cd"])
    assert status == 400
    assert channel.sent == [(b"ab", False)]
    assert channel.cancelled == [7, 7]  # reset at once, and again (a no-op) when the request ends
    status, body = await call(app, b"/devices/cam/up", [(b"content-length", b"-1")], method="POST", body=[b"x"])
    assert (status, body) == (400, b"a request needs one content-length, a decimal number\n")
    assert len(channel.opened) == 1


async def test_streamed_body_over_the_limit_is_413_upl_16() -> None:
    """UPL-16: a body without a declared length that grows past max_body is answered 413 and its
    device stream reset; what was over the limit is never sent."""
    channel = FakeChannel([b"never"])
    app = UplinkProxy(FakeCloud({"cam": channel}), limits=ProxyLimits(max_body=5))  # type: ignore[arg-type]
    status, _ = await call(app, b"/devices/cam/up", method="POST", body=[b"abc", b"def", b"g"])
    assert status == 413
    assert channel.sent == [(b"abc", False)]
    assert channel.cancelled[0] == 7
    assert (app.stats.refused_too_large, app.stats.in_flight, app.stats.active) == (1, 0, 0)


async def test_full_budget_answers_503_at_once_upl_16() -> None:
    """UPL-16: while the in-flight bytes are at the budget a new request is refused with 503 and
    Retry-After before anything is read or sent; it is admitted again once bytes drain."""
    channel = FakeChannel([b"ok"])
    app = UplinkProxy(FakeCloud({"cam": channel}), limits=ProxyLimits(max_in_flight=4))  # type: ignore[arg-type]
    channel.window.clear()  # the device takes nothing: the first request holds its 4 bytes
    first = asyncio.ensure_future(call(app, b"/devices/cam/x", method="POST", body=[b"abcd", b"e"]))
    await asyncio.wait_for(channel.in_send.wait(), 5)
    assert app.stats.in_flight == 4
    sent: list[dict[str, Any]] = []

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    async def nothing() -> dict[str, Any]:
        raise AssertionError("a refused request must not be read")

    scope = {"type": "http", "method": "POST", "path": "/devices/cam/x", "raw_path": b"/devices/cam/x",
             "query_string": b"", "headers": [], "scheme": "http", "client": ("127.0.0.1", 1)}
    await app(scope, nothing, record)
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    assert len(channel.opened) == 1 and app.stats.refused_busy == 1
    channel.window.set()
    assert (await first)[0] == 200
    status, _ = await call(app, b"/devices/cam/x", method="POST", body=[b"abc"])
    assert status == 200
    assert app.stats.peak_in_flight == 4 and app.stats.in_flight == 0


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


class HeldChannel(FakeChannel):
    """A device that answers only once ``release`` is set, as an RTSP-over-HTTP GET channel stays open."""

    def __init__(self) -> None:
        super().__init__([b""])
        self.release = asyncio.Event()

    async def response(self, stream_id: int, *, timeout: float) -> Any:
        await self.release.wait()
        return await super().response(stream_id, timeout=timeout)


async def test_tunnel_channels_count_per_ipv6_64_sec_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-1, STR-2: the proxy counts a client's RTSP-over-HTTP channels by its source, as admission does: with
    ``MAX_TUNNELS_PER_CLIENT`` 2, a third channel from another address of the same IPv6 /64 is the proxy's 503
    and never reaches the device (before, every address counted alone, so a client with a /64 took every request
    slot); an address of another /64 is served. The device gets the client's own address before the cookie."""
    monkeypatch.setattr(proxy, "MAX_TUNNELS_PER_CLIENT", 2)
    channel = HeldChannel()
    app = UplinkProxy(FakeCloud({"cam": channel}))  # type: ignore[arg-type]
    path = b"/devices/cam/onvif/rtsp/tok"
    cookie = [(b"x-sessioncookie", b"c")]

    async def opened(count: int) -> None:
        async with asyncio.timeout(5):
            while len(channel.opened) < count:
                await asyncio.sleep(0.01)

    held = [asyncio.create_task(call(app, path, cookie, client=f"2001:db8::{n}")) for n in (1, 2)]
    try:
        await opened(2)
        assert await asyncio.wait_for(call(app, path, cookie, client="2001:db8::ffff:3"), 5) == (
            503, b"at most 2 RTSP-over-HTTP channels per client at once\n")
        held.append(asyncio.create_task(call(app, path, cookie, client="2001:db8:0:1::1")))
        await opened(3)
    finally:
        channel.release.set()
        answers = await asyncio.gather(*held, return_exceptions=True)
    assert [answer[0] for answer in answers] == [200, 200, 200]  # type: ignore[index]
    assert [dict(headers)["x-sessioncookie"] for _, _, headers, _, _ in channel.opened] == [
        "2001:db8::1 c", "2001:db8::2 c", "2001:db8:0:1::1 c"]


class HeldRouter:
    """A NodeRouter stand-in: ``nodes`` maps device ids to the other node holding each; every relayed request is
    recorded and answered 200 once ``release`` is set (as an RTSP-over-HTTP channel stays open)."""

    def __init__(self, nodes: dict[str, str]) -> None:
        self.nodes = nodes
        self.registry = self  # locate() is the registry's
        self.forwarded: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    def holds(self, device_id: str) -> bool:
        return device_id in self.nodes

    def locate(self, device_id: str) -> Any:
        node = self.nodes.get(device_id)
        return None if node is None else type("NodeRecord", (), {"node": node})()

    async def forward(self, scope: dict[str, Any], receive: Any, send: Any, device_id: str, rest: str,
                      forwarded: list[tuple[bytes, bytes]]) -> None:
        self.forwarded.append((device_id, rest))
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_routed_tunnel_channels_per_client_and_node_sec_1() -> None:
    """SEC-1, STR-2: RTSP-over-HTTP channels routed to another node hold a slot of that node's relay for their whole
    session, so one client has at most half of them (``MAX_NODE_REQUESTS // 2``) to one node: one more is the
    proxy's 503 and is never relayed, while the same client's channel to another node, another client's channel to
    that node and the client's other requests to it are relayed; a closed channel gives its slot back. (Before, one
    client's 32 channels filled the relay and every other client of the node got 503 for that node.)"""
    from iec62676_2_33.cluster.router import MAX_NODE_REQUESTS

    cap = MAX_NODE_REQUESTS // 2
    router = HeldRouter({"b1": "node-b", "b2": "node-b", "c1": "node-c"})
    app = UplinkProxy(FakeCloud({}), router=router)  # type: ignore[arg-type]

    def tunnel(device: str, client: str = "198.51.100.7") -> asyncio.Task[tuple[int, bytes]]:
        return asyncio.create_task(call(app, f"/devices/{device}/onvif/rtsp/tok".encode(),
                                        [(b"x-sessioncookie", b"c")], client=client))

    async def relayed(count: int) -> None:
        async with asyncio.timeout(5):
            while len(router.forwarded) < count:
                await asyncio.sleep(0.01)

    held = [tunnel("b1" if n % 2 else "b2") for n in range(cap)]
    try:
        await relayed(cap)
        assert await asyncio.wait_for(call(app, b"/devices/b1/onvif/rtsp/tok", client="198.51.100.7"), 5) == (
            503, f"at most {cap} RTSP-over-HTTP channels per client to one node at once\n".encode())
        held += [tunnel("c1"), tunnel("b1", client="203.0.113.9"),
                 asyncio.create_task(call(app, b"/devices/b1/onvif/device_service", client="198.51.100.7"))]
        await relayed(cap + 3)
    finally:
        router.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*held, return_exceptions=True), 5)
    assert [answer[0] for answer in answers] == [200] * (cap + 3)  # type: ignore[index]
    assert router.forwarded[cap:] == [("c1", "/onvif/rtsp/tok"), ("b1", "/onvif/rtsp/tok"),
                                      ("b1", "/onvif/device_service")]
    assert await asyncio.wait_for(call(app, b"/devices/b2/onvif/rtsp/tok", client="198.51.100.7"), 5) == (200, b"")
