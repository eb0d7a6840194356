"""GEN-3, UPL-16: the cloud proxy's budgets on real loopback — a cloud listener (``run_cloud``)
with an :class:`UplinkProxy` of small limits in front, and a device running the real uplink
agent (TLS, upgrade, HTTP/2 server role, WSGI bridge) whose app records what arrives.

Request bodies are streamed to the device under HTTP/2 flow control while the proxy's own
bookkeeping (``ProxyStats``) stays within its byte budget; the concurrency cap answers 503;
a declared length over the limit is 413 before the device is contacted, a streamed one
resets the device's stream; and the proxy's ordinary behaviour holds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from iec62676_2_33.http2.limits import DEFAULT_LIMITS
from iec62676_2_33.http2.role import DataReceived, Event, RequestReceived
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.agent import UplinkAgent
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import CloudListener, DeviceChannel, DeviceInfo
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.runtime.h2driver import H2Driver
from iec62676_2_33.runtime.http_server import bind_listen, serve_asgi, wait_event
from iec62676_2_33.runtime.proxy import ProxyLimits, UplinkProxy
from iec62676_2_33.sansio.link import LinkMonitor
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import FAST, UplinkPki, seed_device, wait_until
from iec62676_2_33.transport.memory import memory_pipe

MIB = 1 << 20
DEVICE = "sink"


class Sink:
    """A WSGI app that reads each request body whole and answers what it got (length, digest,
    the X-Forwarded-* headers); every request it served is kept in ``seen``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        declared = environ.get("CONTENT_LENGTH")
        left = int(declared) if declared else 1 << 62  # without a length: up to the end of the input
        digest, length = hashlib.sha256(), 0
        while left > 0 and (chunk := stream.read(min(left, 65536))):
            digest.update(chunk)
            length += len(chunk)
            left -= len(chunk)
        record = {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                  "query": environ["QUERY_STRING"], "length": length, "sha256": digest.hexdigest(),
                  "forwarded": {k: v for k, v in environ.items() if k.startswith("HTTP_X_FORWARDED")}}
        self.seen.append(record)
        body = json.dumps(record).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


@dataclass
class ProxyEnv:
    cloud: BackgroundService
    listener: CloudListener
    proxy: UplinkProxy
    url: str
    sink: Sink

    def channel(self) -> DeviceChannel:
        return self.listener.channel(DEVICE)


@contextmanager
def proxy_env(tmp_path: Path, limits: ProxyLimits) -> Iterator[ProxyEnv]:
    """A cloud with the proxy (``limits``) and the sink device connected over its uplink."""
    certs = UplinkPki(tmp_path / "pki")
    options = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file])
    found: dict[str, Any] = {}

    async def cloud_service(stop: asyncio.Event, announce: Any) -> None:
        servers: list[asyncio.Task[None]] = []

        def ready(listener: CloudListener) -> None:
            sock = bind_listen("127.0.0.1", 0)
            found.update(listener=listener, proxy=UplinkProxy(listener, limits=limits),
                         url=f"http://127.0.0.1:{sock.getsockname()[1]}")
            servers.append(asyncio.get_running_loop().create_task(
                serve_asgi(found["proxy"], sock, lambda: wait_event(stop))))

        try:
            await run_cloud(options, stop, announce, ready=ready)
        finally:
            await asyncio.gather(*servers, return_exceptions=True)

    sink = Sink()

    async def device_service(stop: asyncio.Event, announce: Any) -> None:
        executor = ThreadPoolExecutor(8, thread_name_prefix="sink")
        with DeviceStore(tmp_path / "dev") as store:
            agent = UplinkAgent(store, sink, executor=executor, settings=FAST)
            announce("sink device running")
            try:
                await agent.run(stop)
            finally:
                executor.shutdown(wait=False, cancel_futures=True)

    cloud = BackgroundService(cloud_service, name="cloud").start()
    try:
        port = int(cloud.messages[0].split(":")[2].split("/")[0])
        seed_device(tmp_path / "dev", certs, DEVICE, [(f"https://localhost:{port}/uplink", ("User",))])
        device = BackgroundService(device_service, name="sink device").start()
        try:
            listener: CloudListener = found["listener"]
            cloud.call(lambda: listener.wait_for(DEVICE, timeout=15), 20)
            yield ProxyEnv(cloud, listener, found["proxy"], found["url"], sink)
        finally:
            device.stop()
    finally:
        cloud.stop()


def count_opened_streams(env: ProxyEnv) -> list[str]:
    """Record every request stream the proxy opens to the sink (wraps that channel's ``open_stream``)."""
    channel = env.channel()
    opened: list[str] = []
    original = channel.open_stream

    async def open_stream(method: str, path: str, *args: Any, **kwargs: Any) -> int:
        opened.append(f"{method} {path}")
        return await original(method, path, *args, **kwargs)

    channel.open_stream = open_stream  # type: ignore[method-assign]
    return opened


async def raw_request(url: str, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in lines[1:] if line)
    return int(lines[0].split(" ")[1]), {k.strip().lower(): v.strip() for k, v in fields.items()}


class HoldingDevice:
    """The device end of an in-memory uplink that keeps what arrives unacknowledged until told,
    so the cloud sees the device's flow-control window close."""

    def __init__(self, stream: Any) -> None:
        self.role = H2ServerRole(now=asyncio.get_running_loop().time())
        self.driver = H2Driver(stream, self.role, self.on_event, name="holding device")
        self.streams: list[int] = []
        self.unacked = 0
        self.window_full = asyncio.Event()  # a whole stream window (1 MiB) arrived unacknowledged

    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self.streams.append(event.stream_id)
        elif isinstance(event, DataReceived):
            self.unacked += event.flow_controlled_length
            if self.unacked >= DEFAULT_LIMITS.initial_window_size:
                self.window_full.set()

    def acknowledge(self) -> None:
        self.role.acknowledge(self.streams[-1], self.unacked)
        self.unacked = 0
        self.driver.kick()


@asynccontextmanager
async def in_memory_uplink() -> AsyncIterator[tuple[DeviceChannel, HoldingDevice]]:
    """A DeviceChannel and a HoldingDevice on the two ends of an in-memory pipe, both running."""
    cloud_end, device_end = memory_pipe(limit=256 * 1024)
    loop = asyncio.get_running_loop()
    info = DeviceInfo(device_id="held", peer="memory", connected_since=0.0, auth_mode="test")
    channel = DeviceChannel(info, cloud_end, limits=DEFAULT_LIMITS,
                            monitor=LinkMonitor(loop.time(), idle_ping_after=60, dead_after=120))
    device = HoldingDevice(device_end)
    tasks = [loop.create_task(channel.run(b"")), loop.create_task(device.driver.run())]
    try:
        yield channel, device
    finally:
        channel.close("test over")
        device.driver.close("test over")
        await asyncio.wait(tasks, timeout=10)


async def test_channel_send_waits_for_the_device_window_upl_15() -> None:
    """UPL-15, UPL-16: ``DeviceChannel.send`` of 2 MiB frames the device's 1 MiB stream window and
    then waits, the rest still queued and not framed, until the device acknowledges what it took."""
    async with in_memory_uplink() as (channel, device):
        async with asyncio.timeout(15):
            await channel.settings_seen.wait()
            stream_id = await channel.open_stream("POST", "/upload", content_length=2 * MIB)
            sending = asyncio.ensure_future(channel.send(stream_id, b"z" * (2 * MIB), end_stream=True))
            await device.window_full.wait()
            assert not sending.done()
            assert channel.role.queued_outbound(stream_id) == 2 * MIB - DEFAULT_LIMITS.initial_window_size
            device.acknowledge()
            assert await sending is True
            assert channel.role.queued_outbound(stream_id) == 0


async def test_channel_send_stops_when_the_device_answers_early_upl_16() -> None:
    """UPL-16: a device that answers before the body is complete and resets the stream with
    NO_ERROR (RFC 9113 §8.1) ends the cloud's waiting ``send`` with False; its answer is kept."""
    async with in_memory_uplink() as (channel, device):
        async with asyncio.timeout(15):
            await channel.settings_seen.wait()
            stream_id = await channel.open_stream("POST", "/upload")
            sending = asyncio.ensure_future(channel.send(stream_id, b"z" * (2 * MIB)))
            await device.window_full.wait()
            device.role.send_response(stream_id, 413, [("content-type", "text/plain")], b"too large\n")
            device.role.reset_stream(stream_id, 0)  # NO_ERROR
            device.driver.kick()
            assert await sending is False
            status, _headers = await channel.response(stream_id)
            assert status == 413
            assert b"".join([chunk async for chunk in channel.body(stream_id)]) == b"too large\n"
            assert await channel.send(stream_id, b"more") is False


async def upload_until_answered(url: str, head: bytes, piece: bytes, pieces: int) -> int:
    """Send ``head`` and up to ``pieces`` copies of ``piece`` while reading the answer; its status.

    Plain socket calls, not streams: a server that answers early and closes while body bytes
    are still arriving resets the connection, and a stream transport would then drop the
    answer already received; ``recv`` still returns it."""
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, int(port))), 10)
        await loop.sock_sendall(sock, head)
        received = bytearray()

        async def answer() -> None:
            while b"\r\n" not in received and (data := await loop.sock_recv(sock, 65536)):
                received.extend(data)

        reading = asyncio.ensure_future(answer())
        try:
            for _ in range(pieces):
                if reading.done():
                    break
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, piece), 15)
                except ConnectionError:
                    break  # the server answered and closed the connection
            await asyncio.wait_for(reading, 15)
        finally:
            reading.cancel()
    return int(received.split(b" ", 2)[1])


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_large_bodies_are_streamed_within_the_budget_upl_16(tmp_path: Path) -> None:
    """UPL-16, GEN-3: three concurrent 12 MiB POSTs through the proxy reach the device whole
    (length and SHA-256 as the device read them), while the body bytes the proxy held at
    once never exceeded its 128 KiB budget plus one ASGI chunk per admitted request."""
    limits = ProxyLimits(max_in_flight=128 * 1024, max_requests=4, timeout=20)
    bodies = [payload(i, 12 * MIB) for i in range(3)]
    with proxy_env(tmp_path, limits) as env:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(*(client.post(f"{env.url}/devices/{DEVICE}/upload?n={i}", content=body)
                                             for i, body in enumerate(bodies)))
        for i, (answer, body) in enumerate(zip(answers, bodies)):
            assert answer.status_code == 200, answer.text
            got = answer.json()
            assert (got["method"], got["path"], got["query"]) == ("POST", "/upload", f"n={i}")
            assert (got["length"], got["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
        stats = env.proxy.stats
        assert stats.body_bytes == 3 * 12 * MIB
        assert stats.peak_active == 3
        assert 0 < stats.largest_chunk <= 1 * MIB
        assert stats.peak_in_flight <= limits.max_in_flight + limits.max_requests * stats.largest_chunk
        assert stats.peak_in_flight < 12 * MIB // 8  # streamed: never a whole body, nor a large part of one
        wait_until(lambda: (stats.active, stats.in_flight) == (0, 0), what="the proxy's bookkeeping to drain")
        assert stats.refused_busy == stats.refused_too_large == 0


async def test_concurrency_cap_answers_503_upl_16(tmp_path: Path) -> None:
    """UPL-16, GEN-3: with two uploads in progress (head and a first part sent, then silence) a
    proxy capped at two requests answers a third at once with 503 and Retry-After, without
    queueing it; once the clients are gone their device streams are reset and requests pass again."""
    limits = ProxyLimits(max_requests=2, timeout=20, retry_after=3)
    with proxy_env(tmp_path, limits) as env:
        opened = count_opened_streams(env)
        stalled = []
        for i in range(2):
            head = (f"POST /devices/{DEVICE}/slow/{i} HTTP/1.1\r\nHost: cloud\r\n"
                    f"Content-Length: {MIB}\r\n\r\n").encode() + b"x" * 1024
            stalled.append(await raw_request(env.url, head))
        stats = env.proxy.stats
        await asyncio.to_thread(wait_until, lambda: stats.active == 2 and env.channel().role.open_streams == 2,
                                what="two uploads in progress at the device")
        async with httpx.AsyncClient(timeout=20) as client:
            busy = await client.post(f"{env.url}/devices/{DEVICE}/third", content=b"hello")
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "3"
            assert stats.refused_busy == 1
            assert opened == [f"POST /slow/{i}" for i in range(2)]  # the third never reached the device
            for _reader, writer in stalled:
                writer.close()
            await asyncio.to_thread(wait_until, lambda: stats.active == 0 and env.channel().role.open_streams == 0,
                                    what="the abandoned uploads to be reset")
            again = await client.post(f"{env.url}/devices/{DEVICE}/third", content=b"hello")
        assert again.status_code == 200
        assert [(r["path"], r["length"]) for r in env.sink.seen] == [("/third", 5)]
        assert stats.in_flight == 0


async def test_declared_length_over_the_limit_is_413_without_the_device_upl_16(tmp_path: Path) -> None:
    """UPL-16, GEN-3: a Content-Length over ``max_body`` is answered 413 from the head alone —
    no body byte read, no stream opened to the device, no request slot taken."""
    limits = ProxyLimits(max_body=4 * MIB, timeout=20)
    with proxy_env(tmp_path, limits) as env:
        opened = count_opened_streams(env)
        reader, writer = await raw_request(
            env.url, (f"POST /devices/{DEVICE}/onvif/device_service HTTP/1.1\r\nHost: cloud\r\n"
                      f"Content-Length: {4 * MIB + 1}\r\n\r\n").encode())
        try:
            status, _headers = await read_head(reader)
        finally:
            writer.close()
        assert status == 413
        stats = env.proxy.stats
        assert (stats.refused_too_large, stats.peak_active, stats.body_bytes) == (1, 0, 0)
        assert opened == []
        assert env.sink.seen == []


async def test_streamed_body_over_the_limit_resets_the_device_stream_upl_16(tmp_path: Path) -> None:
    """UPL-16, GEN-3: a chunked body (no declared length) that grows past ``max_body`` is
    answered 413 and its device stream is reset; the device's app never runs for it."""
    limits = ProxyLimits(max_body=1 * MIB, timeout=20)
    with proxy_env(tmp_path, limits) as env:
        opened = count_opened_streams(env)
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"y" * 64 * 1024)
        status = await upload_until_answered(
            env.url, f"POST /devices/{DEVICE}/grow HTTP/1.1\r\nHost: cloud\r\nTransfer-Encoding: chunked\r\n\r\n"
                     .encode(), piece, 2 * MIB // len(piece))  # twice the limit, unless the answer comes first
        stats = env.proxy.stats
        assert status == 413
        assert stats.refused_too_large == 1
        assert opened == ["POST /grow"]  # the body was being streamed to the device ...
        await asyncio.to_thread(wait_until, lambda: env.channel().role.open_streams == 0,
                                what="the device stream to be reset")
        assert env.sink.seen == []  # ... and its stream reset before it was complete
        # everything up to the chunk that crossed the limit went to the device, nothing after it
        assert limits.max_body - stats.largest_chunk < stats.body_bytes <= limits.max_body


async def test_listing_forwarding_and_404_still_hold_gen_3(tmp_path: Path) -> None:
    """GEN-3, UPL-16: with budgets in force the proxy still lists devices, forwards method,
    path, query and body, sets X-Forwarded-* itself (client-sent ones never pass), answers a
    bodiless GET, and answers 404 for an unknown device."""
    with proxy_env(tmp_path, ProxyLimits(max_requests=2, max_in_flight=64 * 1024, timeout=20)) as env:
        async with httpx.AsyncClient(timeout=20) as client:
            listing = await client.get(f"{env.url}/devices")
            assert listing.status_code == 200
            assert [d["id"] for d in listing.json()] == [DEVICE]
            got = await client.put(f"{env.url}/devices/{DEVICE}/a%2Fb/c?x=1&y=2", content=b"small body",
                                   headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "10.6.6.6"})
            assert got.status_code == 200
            record = got.json()
            assert (record["method"], record["path"], record["query"]) == ("PUT", "/a/b/c", "x=1&y=2")
            assert (record["length"], record["sha256"]) == (10, hashlib.sha256(b"small body").hexdigest())
            host = env.url.removeprefix("http://")
            assert record["forwarded"] == {"HTTP_X_FORWARDED_FOR": "127.0.0.1", "HTTP_X_FORWARDED_HOST": host,
                                           "HTTP_X_FORWARDED_PROTO": "http",
                                           "HTTP_X_FORWARDED_PREFIX": f"/devices/{DEVICE}"}
            bare = await client.get(f"{env.url}/devices/{DEVICE}/status")
            assert bare.status_code == 200 and bare.json()["length"] == 0
            unknown = await client.post(f"{env.url}/devices/nobody/onvif/device_service", content=b"x")
            assert unknown.status_code == 404
            assert unknown.text == "device 'nobody' is not connected; GET /devices lists the connected ones\n"
        assert [r["path"] for r in env.sink.seen] == ["/a/b/c", "/status"]
        assert env.proxy.stats.refused_busy == 0
