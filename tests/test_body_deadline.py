"""UPL-16, GEN-3: a client that trickles its request body (a byte every fraction of the per-read
timeout, so that no single wait ever times out) hits the whole-body deadline: 408 with a clear
line, and the stream or connection is freed -- on the device's direct HTTP/1.1 and h2c port
(``HttpSettings.body_deadline``) and on the cloud's HTTP proxy (``ProxyLimits.body_deadline``,
whose device stream is reset). RTSP over HTTP's POST channel (STR-2), a POST on the tunnel path, is
exempt; the tunnel content type elsewhere exempts nothing (SEC-1).

The deadlines are configured short here; no test measures a duration."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from httpd_env import (
    RawResponse,
    Reader,
    SampleApp,
    connect,
    decode_headers,
    h2_open,
    h2_request,
    read_frames,
    request,
    running_server,
    wsgi,
)
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame
from test_proxy_budgets import DEVICE, count_opened_streams, proxy_env, raw_request, read_head

from iec62676_2_33.runtime.httpd import HttpSettings
from iec62676_2_33.runtime.proxy import ProxyLimits
from iec62676_2_33.sansio.rtsp_tunnel import TUNNEL_PATH
from iec62676_2_33.testing.harness import wait_until

#: Direct port: 5 s per read (never reached by the trickle), 0.6 s for the whole body.
SETTINGS = HttpSettings(body_timeout=5.0, body_deadline=0.6)
PACE = 0.1  # seconds between trickled bytes
MAX_DRIPS = 300  # the trickle gives up after this many bytes (the deadline ends it long before)


def trickle(send: Callable[[bytes], object], stop: threading.Event, piece: bytes = b"x") -> threading.Thread:
    """Send ``piece`` every PACE seconds until ``stop`` is set or sending fails."""

    def run() -> None:
        for _ in range(MAX_DRIPS):
            if stop.wait(PACE):
                return
            try:
                send(piece)
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_trickled_http1_body_gets_408_at_the_body_deadline() -> None:
    """HTTP/1.1: the application's read fails with 408 ("not complete within"), the connection closes,
    and nothing stays charged to the server's body budget."""
    with running_server(wsgi(SampleApp()), SETTINGS) as srv:
        got = _trickled(srv.port, b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        assert (got.status, got.headers["connection"]) == (408, "close")
        assert b"not complete within 0.6 s" in got.body
        assert srv.server.budget.used == 0


def _trickled(port: int, head: bytes) -> RawResponse:
    """The answer to a request whose body trickles in after ``head`` until the server answers."""
    with connect(port) as sock:
        sock.sendall(head)
        stop = threading.Event()
        dripping = trickle(sock.sendall, stop)
        try:
            return Reader(sock).response()
        finally:
            stop.set()
            dripping.join(5)


def test_a_trickled_h2c_body_gets_408_and_its_stream_is_reset() -> None:
    """h2c: 408 on the stream, then RST_STREAM NO_ERROR ends the upload; the connection stays usable."""
    with running_server(wsgi(SampleApp()), SETTINGS) as srv:
        sock = h2_open(srv.port)
        encoder, decoder = Encoder(), Decoder()
        sock.sendall(h2_request(1, encoder, "/slow", "POST", end_stream=False).serialize())
        stop = threading.Event()
        dripping = trickle(lambda piece: sock.sendall(DataFrame(1, piece).serialize()), stop)
        try:
            frames = read_frames(sock, lambda fs: any(isinstance(f, RstStreamFrame) for f in fs))
        finally:
            stop.set()
            dripping.join(5)
        head = next(f for f in frames if isinstance(f, HeadersFrame))
        assert decode_headers(head, decoder)[":status"] == "408"
        body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
        assert b"not complete within 0.6 s" in body
        resets = [f.error_code for f in frames if isinstance(f, RstStreamFrame)]
        # NO_ERROR ends the upload; a drip already on its way may meet STREAM_CLOSED (RFC 9113 §5.1)
        assert resets[0] == ErrorCodes.NO_ERROR and set(resets[1:]) <= {ErrorCodes.STREAM_CLOSED}, resets
        sock.sendall(h2_request(3, encoder, "/echo").serialize())  # the connection serves the next request
        frames = read_frames(sock, lambda fs: any(isinstance(f, HeadersFrame) and f.stream_id == 3 for f in fs))
        sock.close()
        head = next(f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 3)
        assert decode_headers(head, decoder)[":status"] == "200"
        assert srv.server.budget.used == 0


class TunnelEchoApp(SampleApp):
    """The sample app, whose ``/echo`` also answers on the tunnel path (where the device's relay reads a POST
    channel)."""

    def __call__(self, env: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        if env["PATH_INFO"].startswith(TUNNEL_PATH):
            env = {**env, "PATH_INFO": "/echo"}
        return super().__call__(env, start)


def test_an_rtsp_tunnel_post_has_no_body_deadline_str_2() -> None:
    """STR-2: the same trickle as an RTSP-over-HTTP POST channel (a POST on the tunnel path) is read to
    its end, well past the body deadline (its session decides how long it lasts)."""
    pieces = 12  # 12 * PACE = twice the deadline
    with running_server(wsgi(TunnelEchoApp()), SETTINGS) as srv, connect(srv.port) as sock:
        sock.sendall(request("POST", f"{TUNNEL_PATH}tok", headers={"Content-Type": "application/x-rtsp-tunnelled",
                                                       "Content-Length": str(pieces)}))
        sent = 0

        def send(piece: bytes) -> None:
            nonlocal sent
            if sent < pieces:
                sock.sendall(piece)
                sent += 1

        stop = threading.Event()
        dripping = trickle(send, stop)
        try:
            got = Reader(sock).response()
        finally:
            stop.set()
            dripping.join(5)
        assert got.status == 200
        assert got.body.startswith(b"12 ")


def test_the_tunnel_content_type_elsewhere_gets_408_sec_1() -> None:
    """SEC-1: a trickled POST to another path that claims the tunnel content type gets 408 at the body deadline
    like any other (before, the content type alone exempted it, and it held a worker thread for ever)."""
    with running_server(wsgi(TunnelEchoApp()), SETTINGS) as srv:
        got = _trickled(srv.port, b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-rtsp-tunnelled\r\n"
                                  b"Content-Length: 1000\r\n\r\n")
        assert got.status == 408
        assert b"not complete within 0.6 s" in got.body


async def test_proxy_trickled_body_gets_408_and_the_device_stream_is_freed(tmp_path: Path) -> None:
    """GEN-3, UPL-16: through the cloud proxy the trickled body is answered 408 by the proxy, its request slot
    is given back and the device's stream reset; the device's application never completes the request."""
    limits = ProxyLimits(body_deadline=0.6, timeout=20)
    with proxy_env(tmp_path, limits) as env:
        opened = count_opened_streams(env)
        reader, writer = await raw_request(
            env.url, f"POST /devices/{DEVICE}/trickle HTTP/1.1\r\nHost: cloud\r\nContent-Length: 1000\r\n\r\n"
            .encode())
        async def drip() -> None:
            for _ in range(MAX_DRIPS):
                await asyncio.sleep(PACE)
                writer.write(b"x")
                await writer.drain()

        dripping = asyncio.create_task(drip())
        try:
            status, headers = await read_head(reader)
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        finally:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
            writer.close()
        assert status == 408
        assert body == b"the request body was not complete within 0.6 s\n"
        stats = env.proxy.stats
        await asyncio.to_thread(wait_until, lambda: stats.active == 0 and env.channel().role.open_streams == 0,
                                what="the request slot and the device stream to be freed")
        assert opened == ["POST /trickle"]
        assert env.sink.seen == []
        assert stats.in_flight == 0
