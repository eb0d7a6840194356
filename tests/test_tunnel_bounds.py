"""SEC-1, STR-2, UPL-16: what the RTSP-over-HTTP exemptions cannot be used for.

* The whole-body deadline spares only RTSP over HTTP's POST channel -- a POST on the tunnel path, the path the
  cloud proxy's per-client tunnel cap counts -- never a request that merely claims
  ``content-type: application/x-rtsp-tunnelled``: a slow POST to a SOAP service with that type is answered 408
  and its request slot given back, while a slow POST channel on the tunnel path runs past the deadline and
  holds one of its client's tunnel slots.
* The VSS's HTTP port serves RTSP over HTTP on its own paths (``/relay/<id>``): there the whole-body deadline is
  lifted only for a POST channel its access control admitted, which then outlives the deadline.
* A refused RTSP session on the device (no READ_MEDIA right, camera unreachable) that sends only interleaved
  frames ends at the first-request deadline instead of holding a device stream for ever.

In process: the proxy's ASGI app with a recorded device channel (tests/test_proxy.py), the VSS's tunnel handler
on the library's HTTP server on loopback, the device relay with an in-memory player. Deadlines are configured short; no test measures a duration, every wait is bounded."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from test_proxy import FakeChannel, FakeCloud, call

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.runtime import proxy, rtsp_relay
from iec62676_2_33.runtime.body import body_deadline, tunnel_channel
from iec62676_2_33.runtime.exchange import Exchange
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.runtime.httpd import HttpSettings, start_http_server
from iec62676_2_33.runtime.proxy import ProxyLimits, UplinkProxy
from iec62676_2_33.runtime.rtsp_relay import RtspRelay
from iec62676_2_33.security.httpdigest import DigestAuthenticator
from iec62676_2_33.vss.rtsp import RelayTable, VssRtspFront
from iec62676_2_33.vss.rtsp_http import HttpTunnels

TUNNELLED = (b"content-type", b"application/x-rtsp-tunnelled")
PACE = 0.05  # seconds between trickled body bytes
WAIT = 10.0  # the bound of every wait here


def test_only_a_post_on_the_tunnel_path_has_no_body_deadline_sec_1_str_2() -> None:
    """SEC-1, STR-2: method and path decide, the content type does not; the path test is the tunnel cap's."""
    assert body_deadline("POST", "/onvif/rtsp/tok", 60.0) is None
    assert body_deadline("POST", "/onvif/device_service", 60.0) == 60.0
    assert body_deadline("PUT", "/onvif/rtsp/tok", 60.0) == 60.0
    assert body_deadline("POST", "/devices/cam/onvif/rtsp/tok", 60.0) == 60.0  # the proxy passes the rest
    assert body_deadline("POST", "/onvif/device_service", None) is None  # no deadline configured
    assert tunnel_channel("/onvif/rtsp/tok") and not tunnel_channel("/onvif/device_service")


async def trickled(app: UplinkProxy, path: bytes, drips: int, *, client: str = "198.51.100.7") -> tuple[int, bytes]:
    """A POST claiming the tunnel content type whose body comes a byte every PACE seconds, ``drips`` bytes."""
    scope = {"type": "http", "method": "POST", "path": path.decode(), "raw_path": path, "query_string": b"",
             "headers": [(b"host", b"cloud"), TUNNELLED], "scheme": "http", "client": (client, 5000)}
    sent: list[dict[str, Any]] = []
    given = 0

    async def receive() -> dict[str, Any]:
        nonlocal given
        await asyncio.sleep(PACE)
        given += 1
        return {"type": "http.request", "body": b"<", "more_body": given < drips}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), WAIT)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_tunnel_content_type_elsewhere_gets_408_at_the_proxy_sec_1() -> None:
    """SEC-1, UPL-16: a slow POST to a SOAP service claiming the tunnel content type is the proxy's 408 at the
    body deadline and gives its request slot back (before, it was exempt and uncounted: one client held every
    request slot of the proxy, and a WSGI worker of the device)."""
    channel = FakeChannel([b""])
    app = UplinkProxy(FakeCloud({"cam": channel}), limits=ProxyLimits(body_deadline=0.3, timeout=5.0))  # type: ignore[arg-type]
    status, body = await trickled(app, b"/devices/cam/onvif/device_service", drips=1000)
    assert (status, body) == (408, b"the request body was not complete within 0.3 s\n")
    assert 7 in channel.cancelled  # the device's stream is reset
    assert app.stats.active == 0


async def test_a_slow_post_channel_on_the_tunnel_path_runs_and_is_counted_str_2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """STR-2, SEC-1: the POST channel on the tunnel path runs past the body deadline (its session decides how long
    it lasts) and holds its client's tunnel slot meanwhile: with one slot per client, a GET channel of the same
    client is the proxy's 503 until the POST ends."""
    monkeypatch.setattr(proxy, "MAX_TUNNELS_PER_CLIENT", 1)
    channel = FakeChannel([b""])
    app = UplinkProxy(FakeCloud({"cam": channel}), limits=ProxyLimits(body_deadline=0.3, timeout=5.0))  # type: ignore[arg-type]
    post = asyncio.create_task(trickled(app, b"/devices/cam/onvif/rtsp/tok", drips=12))  # 12 * PACE: 2x the deadline
    async with asyncio.timeout(WAIT):
        while not channel.opened:
            await asyncio.sleep(0.01)
    assert await asyncio.wait_for(call(app, b"/devices/cam/onvif/rtsp/tok", client="198.51.100.7"), WAIT) == (
        503, b"at most 1 RTSP-over-HTTP channels per client at once\n")
    assert await post == (200, b"")
    assert [data for data, _ in channel.sent] == [b"<"] * 12


async def _not_here(ex: Exchange) -> None:
    await ex.respond(404, [("content-type", "text/plain")], b"not here\n")


async def test_an_admitted_vss_post_channel_outlives_the_body_deadline_str_2() -> None:
    """STR-2, ANX-B-1: on the VSS's HTTP port (body deadline 0.6 s here) a user's POST channel on ``/relay/<id>``
    that sends only base64 whitespace for twice the deadline, then an RTSP request, still carries it: the answer
    comes on the GET channel (the content type exempts nothing any more; the tunnel handler lifts the deadline for
    the POST it admitted)."""
    handler = HttpTunnels(_not_here, VssRtspFront(RelayTable("rtsp://127.0.0.1:9")),
                          DigestAuthenticator({"alice": ("alice-pw", "User")}.get, "vss"))
    sock = bind_listen("127.0.0.1", 0)
    server = await start_http_server(handler, sock, settings=HttpSettings(body_timeout=5.0, body_deadline=0.6))
    uri = f"http://127.0.0.1:{sock.getsockname()[1]}/relay/abc"
    head = {"x-sessioncookie": "c", "content-type": "application/x-rtsp-tunnelled"}
    answered = asyncio.Event()

    async def player() -> AsyncIterator[bytes]:
        for _ in range(12):  # 12 * 0.1 s: twice the deadline
            await asyncio.sleep(0.1)
            yield b"\n"
        yield base64.b64encode(b"OPTIONS rtsp://vss/relay/abc RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        await asyncio.wait_for(answered.wait(), WAIT)

    try:
        async with httpx.AsyncClient(auth=httpx.DigestAuth("alice", "alice-pw"), timeout=WAIT) as alice, \
                alice.stream("GET", uri, headers=head) as channel:
            assert channel.status_code == 200
            # The digest challenge is known now: the streamed POST is sent once, with credentials.
            post = asyncio.create_task(alice.post(uri, content=player(), headers=head))
            got = b""
            async with asyncio.timeout(WAIT):
                async for chunk in channel.aiter_bytes():
                    got += chunk
                    if b"\r\n\r\n" in got:
                        break
            answered.set()
            await asyncio.wait_for(post, WAIT)
        assert got.startswith(b"RTSP/1.0 ") and b"CSeq: 1\r\n" in got, got
    finally:
        answered.set()
        await server.aclose()


class _Player:
    """The player's side of a session: what the relay writes, and whether it closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def close(self) -> None:
        self.closed = True


def frames_then(last: bytes | None) -> rtsp_relay.Reader:
    """A player that sends an empty interleaved frame every few ms; after 5 of them ``last`` (``None``: frames for
    ever)."""
    sent = 0

    async def read(_: int) -> bytes:
        nonlocal sent
        await asyncio.sleep(0.01)
        sent += 1
        return last if last is not None and sent > 5 else b"$\0\0\0"

    return read


SOURCE = MediaSource(token="tok", name="cam", rtsp_url="rtsp://127.0.0.1:9/stream")


async def test_a_refused_session_of_interleaved_frames_ends_at_the_deadline_sec_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-1, STR-4: a session refused for want of READ_MEDIA whose player sends only interleaved frames is ended
    at the first-request deadline, unanswered (before, it held the device's stream for as long as frames came)."""
    monkeypatch.setattr(rtsp_relay, "FIRST_REQUEST_TIMEOUT", 0.3)
    relay, player = RtspRelay(None, ["Anonymous"]), _Player()  # type: ignore[arg-type]
    await asyncio.wait_for(relay.relay(SOURCE, frames_then(None), player), WAIT)
    assert player.closed and player.written == []
    assert relay.stats.refused == 1


async def test_a_refused_sessions_request_after_frames_is_answered_sec_1() -> None:
    """SEC-1, STR-4: within the deadline, the first request after interleaved frames still gets the refusal."""
    relay, player = RtspRelay(None, ["Anonymous"]), _Player()  # type: ignore[arg-type]
    options = b"OPTIONS rtsp://cloud/devices/cam/tok RTSP/1.0\r\nCSeq: 3\r\n\r\n"
    await asyncio.wait_for(relay.relay(SOURCE, frames_then(options), player), WAIT)
    assert player.written == [b"RTSP/1.0 401 Unauthorized\r\nCSeq: 3\r\nContent-Length: 0\r\n\r\n"]
    assert player.closed
