"""Request bodies stream to the application with back-pressure, on the direct port (HTTP/1.1, h2c)
and on the uplink's HTTP/2 bridge: bodies many times larger than the budgets, read slowly, never
grow the server's own buffer counters past the budgets; the application starts before the body ends.

Memory is measured on the server's counters (``BodyBudget.used``/``peak``), never RSS."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from httpd_env import (
    Reader,
    SampleApp,
    connect,
    decode_headers,
    h2_open,
    h2_request,
    read_frames,
    running_server,
    wsgi,
)
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from iec62676_2_33.http2.client import H2ClientRole
from iec62676_2_33.http2.limits import H2Limits
from iec62676_2_33.http2.role import (
    PREFACE,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
)
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.exchange import Exchange
from iec62676_2_33.runtime.h2conn import H2Streams
from iec62676_2_33.runtime.h2driver import H2Driver
from iec62676_2_33.runtime.httpd import HttpSettings
from iec62676_2_33.runtime.wsgi_bridge import WsgiOnH2
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL
from iec62676_2_33.transport.memory import memory_pipe

KIB = 1024
MIB = 1024 * KIB
BUDGET = 256 * KIB
BODY = bytes(range(256)) * (16 * KIB)  # 4 MiB, 16 times the budget
DIGEST = b"%d %s" % (len(BODY), hashlib.sha256(BODY).hexdigest().encode())
#: What one read of the socket may add beyond the budget before the server checks it again:
#: one transport read (64 KiB) plus, for HTTP/2, the rest of a frame begun earlier (128 KiB).
OVERSHOOT = 64 * KIB + H2Limits().max_frame_size


def test_a_slowly_read_http1_body_stays_within_the_budget() -> None:
    """A 4 MiB body (Content-Length, then chunked) read 8 KiB at a time by a slow application: the
    server's in-flight body bytes never exceed one pipe's read-ahead (64 KiB), far below the body."""
    app = SampleApp()
    with running_server(wsgi(app), HttpSettings(body_budget=BUDGET)) as srv, connect(srv.port) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        assert reader.response().body == DIGEST
        chunked = b"".join(b"%x\r\n%s\r\n" % (100_000, BODY[i:i + 100_000]) for i in range(0, len(BODY), 100_000)
                           if len(BODY[i:i + 100_000]) == 100_000)
        rest = BODY[len(BODY) // 100_000 * 100_000:]
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
                     + b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        assert reader.response().body == DIGEST
        assert srv.server.budget.peak <= 64 * KIB
        assert srv.server.budget.used == 0


def test_many_slow_http1_uploads_share_the_server_budget() -> None:
    """Eight concurrent 4 MiB uploads to slow readers: the server-wide in-flight bytes stay within the
    budget plus one read per connection, though 32 MiB are on their way."""
    app = SampleApp(pause=0.002)
    with running_server(wsgi(app), HttpSettings(body_budget=BUDGET)) as srv:
        def upload() -> bytes:
            with connect(srv.port) as sock:
                sock.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
                return Reader(sock).response().body

        with ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(lambda _i: upload(), range(8)))
        assert answers == [DIGEST] * 8
        assert srv.server.budget.peak <= BUDGET + 8 * 64 * KIB
        assert srv.server.budget.used == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed (.ci/run installs it)")
def test_a_slowly_read_h2c_body_stays_within_the_budget(tmp_path: Path) -> None:
    """curl uploads 4 MiB over h2c (prior knowledge) to a slow reader: the connection stops reading its
    socket while the server budget is spent, so in-flight body bytes stay within the budget plus one
    read, though the stream window (1 MiB) and connection window (4 MiB) would allow more."""
    app = SampleApp()
    payload = tmp_path / "body.bin"
    payload.write_bytes(BODY)
    with running_server(wsgi(app), HttpSettings(body_budget=BUDGET)) as srv:
        done = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{payload}",
                               f"http://127.0.0.1:{srv.port}/slow"], capture_output=True, timeout=60, check=False)
        assert done.stdout == DIGEST, done.stderr
        assert srv.server.budget.peak <= BUDGET + OVERSHOOT
        assert srv.server.budget.used == 0


async def test_a_request_reset_in_the_same_read_never_runs() -> None:
    """HEADERS and RST_STREAM of stream 1 arrive in one read: its handler is never started (no work
    for a rapid-reset stream); stream 3 of the same read is served."""
    loop = asyncio.get_running_loop()
    role = H2ServerRole(now=loop.time())
    role.initiate()
    served: list[int] = []
    third = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        served.append(getattr(ex, "stream_id"))  # noqa: B009 - H2Exchange
        await ex.respond(204, [], b"")
        third.set()

    streams = H2Streams(role, handler, kick=lambda: None)
    encoder = Encoder()
    data = (PREFACE + SettingsFrame(0).serialize() + h2_request(1, encoder, "/").serialize()
            + RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize() + h2_request(3, encoder, "/").serialize())
    for event in role.receive_data(data, loop.time()):
        streams.on_event(event)
    await asyncio.wait_for(third.wait(), 10)
    assert served == [3]


# -- the uplink bridge --------------------------------------------------------------------------


class Uplink:
    """A device's HTTP/2 server role with the WSGI bridge and a cloud client role, over memory."""

    def __init__(self, app: Callable[..., Any], pool: ThreadPoolExecutor, limits: H2Limits) -> None:
        loop = asyncio.get_running_loop()
        device_end, cloud_end = memory_pipe(limit=256 * KIB)
        self.role = H2ServerRole(now=loop.time(), limits=limits)
        self.bridge = WsgiOnH2(self.role, app, executor=pool, user_level=["User"], peer="cloud.example:443",
                               kick=lambda: self.device.kick())
        self.device = H2Driver(device_end, self.role, self.bridge.on_event, on_progress=self.bridge.writable)
        self.cloud_role = H2ClientRole(now=loop.time())
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.cloud = H2Driver(cloud_end, self.cloud_role, self.events.put_nowait, name="cloud")
        self.tasks = [asyncio.create_task(self.device.run()), asyncio.create_task(self.cloud.run())]

    async def ready(self) -> None:
        """Wait for the device's SETTINGS (both roles are initiated then)."""
        while not isinstance(await asyncio.wait_for(self.events.get(), 10), RemoteSettingsChanged):
            pass

    async def response(self, stream_id: int) -> tuple[str, bytes]:
        status, body = "", b""
        while True:
            event = await asyncio.wait_for(self.events.get(), 30)
            if isinstance(event, ResponseReceived) and event.stream_id == stream_id:
                status = dict(event.headers)[":status"]
            elif isinstance(event, DataReceived) and event.stream_id == stream_id:
                body += event.data
                self.cloud_role.acknowledge(stream_id, event.flow_controlled_length)
                self.cloud.kick()
            elif isinstance(event, StreamEnded) and event.stream_id == stream_id:
                return status, body

    async def close(self) -> None:
        self.cloud.close("test over")
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)


async def test_the_uplink_app_starts_before_the_body_ends_and_reads_it_streaming_UPL_16_UPL_12() -> None:
    """UPL-16, UPL-12: over the uplink the WSGI app starts on the request head, while the cloud still
    holds back most of the body; it reads 4 MiB through ``wsgi.input`` 8 KiB at a time, with the
    uplink's UserLevel in its environ and no CONTENT_LENGTH (none declared). The bridge never holds
    more unread bytes than the stream's window (its per-stream budget), though the body is 4 times
    that."""
    started = threading.Event()
    seen: dict[str, Any] = {}

    def app(env: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        seen.update(level=env[ENVIRON_UPLINK_LEVEL], length=env.get("CONTENT_LENGTH"),
                    terminated=env["wsgi.input_terminated"], remote=env["REMOTE_ADDR"])
        digest = hashlib.sha256()
        first = env["wsgi.input"].read(8192)
        digest.update(first)
        total = len(first)
        started.set()
        while chunk := env["wsgi.input"].read(8192):
            digest.update(chunk)
            total += len(chunk)
            time.sleep(0.0005)
        body = b"%d %s" % (total, digest.hexdigest().encode())
        start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    limits = H2Limits()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(4) as pool:
        uplink = Uplink(app, pool, limits)
        try:
            await uplink.ready()
            stream_id = uplink.cloud_role.send_request("POST", "/onvif/x", [("content-type", "text/plain")],
                                                       BODY[:16384], authority="device", end_stream=False)
            uplink.cloud.kick()
            assert await loop.run_in_executor(None, started.wait, 10)  # the body has not ended yet
            uplink.cloud_role.send_data(stream_id, BODY[16384:], end_stream=True)
            uplink.cloud.kick()
            assert await uplink.response(stream_id) == ("200", DIGEST)
        finally:
            await uplink.close()
    assert seen == {"level": ["User"], "length": None, "terminated": True, "remote": "cloud.example:443"}
    assert 0 < uplink.bridge.budget.peak <= limits.initial_window_size
    assert uplink.bridge.budget.used == 0


def test_a_client_that_stops_sending_its_body_gets_408_on_both_protocols() -> None:
    """A body that stops arriving fails the application's read after body_timeout: 408 on HTTP/1.1
    (then the connection closes) and on HTTP/2 (then RST_STREAM NO_ERROR ends the upload); the
    worker thread is free again and nothing stays charged to the budget."""
    app = SampleApp()
    with running_server(wsgi(app), HttpSettings(body_timeout=0.3)) as srv:
        with connect(srv.port) as sock:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            reader = Reader(sock)
            got = reader.response()
            assert (got.status, got.headers["connection"]) == (408, "close")
            assert reader.at_eof()
        sock = h2_open(srv.port)
        encoder, decoder = Encoder(), Decoder()
        sock.sendall(h2_request(1, encoder, "/slow", "POST", end_stream=False).serialize()
                     + DataFrame(1, b"y" * 1000).serialize())
        frames = read_frames(sock, lambda fs: any(isinstance(f, RstStreamFrame) for f in fs))
        sock.close()
        head = next(f for f in frames if isinstance(f, HeadersFrame))
        assert decode_headers(head, decoder)[":status"] == "408"
        assert [f.error_code for f in frames if isinstance(f, RstStreamFrame)] == [ErrorCodes.NO_ERROR]
        assert srv.server.budget.used == 0
