"""Helpers for the HTTP server tests: a server in a background thread, raw HTTP/1.1 and HTTP/2
clients built by hand (no project client), and a small test WSGI application."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from hyperframe.frame import Frame, HeadersFrame, RstStreamFrame, SettingsFrame

from iec62676_2_33.http2.role import PREFACE
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.exchange import Handler
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.runtime.httpd import HttpServer, HttpSettings, start_http_server
from iec62676_2_33.runtime.wsgi_handler import WsgiHandler

TIMEOUT = 10.0


@dataclass
class Running:
    port: int
    server: HttpServer


@contextmanager
def running_server(make_handler: Callable[[ThreadPoolExecutor], Handler],
                   settings: HttpSettings | None = None) -> Iterator[Running]:
    """An :class:`HttpServer` on 127.0.0.1 in a background loop; stopped (bounded) on exit."""
    holder: dict[str, HttpServer] = {}
    pool = ThreadPoolExecutor(16, thread_name_prefix="test-app")

    async def service(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        sock = bind_listen("127.0.0.1", 0)
        server = await start_http_server(make_handler(pool), sock, settings=settings)
        holder["server"] = server
        announce(str(sock.getsockname()[1]))
        try:
            await stop.wait()
        finally:
            await server.aclose()

    background = BackgroundService(service, name="httpd").start()
    try:
        yield Running(port=int(background.messages[0]), server=holder["server"])
    finally:
        background.stop()
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class SampleApp:
    """A WSGI app with a few paths; ``calls`` records every path it ran."""

    calls: list[str] = field(default_factory=list)
    #: Set when the slow reader starts.
    slow_started: threading.Event = field(default_factory=threading.Event)
    #: Seconds the slow reader waits between 8 KiB reads.
    pause: float = 0.001

    def __call__(self, env: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        path = env["PATH_INFO"]
        self.calls.append(path)
        if path == "/echo":
            data = env["wsgi.input"].read()
            return self._answer(start, "200 OK", b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))
        if path == "/slow":
            self.slow_started.set()
            digest, total = hashlib.sha256(), 0
            while chunk := env["wsgi.input"].read(8192):
                digest.update(chunk)
                total += len(chunk)
                time.sleep(self.pause)
            return self._answer(start, "200 OK", b"%d %s" % (total, digest.hexdigest().encode()))
        if path.startswith("/status/"):
            return self._answer(start, f"{int(path[8:])} ", b"")  # no reason phrase: the server adds it
        if path == "/early":
            return self._answer(start, "413 Payload Too Large", b"not reading that\n")
        if path == "/environ":
            keys = ("CONTENT_LENGTH", "wsgi.input_terminated", "SERVER_PROTOCOL", "HTTP_X_TEST")
            return self._answer(start, "200 OK", repr({k: env.get(k) for k in keys}).encode())
        if path == "/fail":
            raise RuntimeError("the test app fails on purpose")
        return self._answer(start, "404 Not Found", b"no such path\n")

    @staticmethod
    def _answer(start: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
        start(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


def wsgi(app: SampleApp) -> Callable[[ThreadPoolExecutor], Handler]:
    return lambda pool: WsgiHandler(app, executor=pool)


# -- raw HTTP/1.1 --------------------------------------------------------------------------------

#: A second loopback address: a client that should count as another source than 127.0.0.1.
OTHER_SOURCE = "127.0.0.2"


def connect(port: int, source: str | None = None) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` (from the address ``source``, when given)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                    source_address=(source, 0) if source else None)
    sock.settimeout(TIMEOUT)
    return sock


@dataclass
class RawResponse:
    status_line: bytes
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ")[1])


class Reader:
    """Parses HTTP/1.1 responses off a raw socket (Content-Length or chunked bodies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}; got {self.buf[:200]!r}")
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self) -> bytes:
        """The next response head alone (for answers without a body, e.g. to HEAD)."""
        return self._until(b"\r\n\r\n")

    def response(self) -> RawResponse:
        head = self._until(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                body += self._exactly(size)
                self._exactly(2)
            self._until(b"\r\n")
        else:
            body = self._exactly(int(headers.get("content-length", "0")))
        return RawResponse(status_line, headers, body)

    def at_eof(self) -> bool:
        """True when the server closed the connection (no further bytes)."""
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True


def request(method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# -- raw HTTP/2 -------------------------------------------------------------------------------------

def h2_request(stream_id: int, encoder: Encoder, path: str = "/echo", method: str = "GET", *,
               end_stream: bool = True) -> HeadersFrame:
    fields = [(":method", method), (":scheme", "http"), (":authority", "test"), (":path", path)]
    flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
    return HeadersFrame(stream_id, data=encoder.encode(fields), flags=flags)


def h2_open(port: int, source: str | None = None) -> socket.socket:
    sock = connect(port, source)
    sock.sendall(PREFACE + SettingsFrame(0).serialize())
    return sock


def read_frames(sock: socket.socket, until: Callable[[list[Frame]], bool] | None = None) -> list[Frame]:
    """Frames the server sent, until ``until(frames)`` holds or the connection ends."""
    frames: list[Frame] = []
    buf = b""
    while until is None or not until(frames):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            frames.append(frame)
            buf = buf[9 + length:]
    return frames


def rapid_reset(port: int, pairs: int = 400, source: str = OTHER_SOURCE, *, path: str = "/status/204",
                method: str = "GET", end_stream: bool = True) -> list[Frame]:
    """One connection from ``source``: ``pairs`` HEADERS (``method`` ``path``, ``end_stream``)+RST_STREAM(CANCEL) in
    one write; the frames the server sent back (none when it refused the connection)."""
    try:
        sock = h2_open(port, source)
    except OSError:
        return []  # refused before the preface was written
    encoder = Encoder()
    burst = b"".join(h2_request(1 + 2 * i, encoder, path, method, end_stream=end_stream).serialize()
                     + RstStreamFrame(1 + 2 * i, error_code=ErrorCodes.CANCEL).serialize() for i in range(pairs))
    try:
        sock.sendall(burst)
    except OSError:
        pass  # the server may close before it read everything
    frames = read_frames(sock)
    sock.close()
    return frames


def decode_headers(frame: HeadersFrame, decoder: Decoder) -> dict[str, str]:
    return {str(n): str(v) for n, v in decoder.decode(frame.data)}


def h2load_summary(output: str) -> dict[str, int]:
    match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", output)
    assert match, output
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return dict(zip(keys, map(int, match.groups())))


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``target`` in a daemon thread; its result (or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out
