"""Conformance kit: the cloud the device under test dials (UPL-1 … UPL-3, UPL-8 … UPL-11, UPL-13).

The tool runs our own cloud runtime (:class:`~iec62676_2_33.runtime.cloud.CloudListener`)
behind one or more TLS *endpoints* on its own event loop, in a background
thread, so cases written as plain sequential code can drive the device's
configuration over ONVIF and watch the uplink at the same time. Each endpoint
records every connection on the wire (:mod:`.wire`) and can, per request
path, *refuse* upgrades with ``503`` (the reconnection cases) or *mute* a
live connection (the silence case). An endpoint without a listener only
records who completed a TLS handshake and what they sent: the cases that
offer the device a bad cloud certificate use those, and count the handshakes
the device broke off (``handshake_failures``). An endpoint may instead carry a
*handler* that plays the whole connection itself (the hostile-frames case), or
an authenticator of its own (the access-token endpoint, UPL-14). The tool's
authorization server (:mod:`.toolauth`) is served on the same loop
(:meth:`ToolCloud.serve_https`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..errors import Iec62676Error
from ..runtime.asgi_handler import AsgiApp
from ..runtime.background import BackgroundService
from ..runtime.cloud import (
    Authenticator,
    CloudListener,
    DeviceChannel,
    ListenerSettings,
    MtlsAuthenticator,
    UnknownDevice,
)
from ..runtime.http_server import bind_listen, serve_asgi, wait_event
from ..sansio.upgrade import UpgradeRequest, UpgradeServer
from ..transport.base import ByteStream
from ..transport.tls import TlsServer, start_tls_server
from .wire import Connection, RecordingStream

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Connections one endpoint remembers.
KEEP_CONNECTIONS = 200
#: How long a refused device may take to send its request head.
REFUSE_READ_TIMEOUT = 5.0
#: How long an HTTPS service of the tool (the authorization server) may take to stop.
HTTPS_STOP_TIMEOUT = 5.0


#: A handler that plays a whole connection itself (after TLS), given the recording stream and its record.
Handler = Callable[[RecordingStream, Connection], Awaitable[None]]


class _RecordingAuthenticator:
    """The endpoint's authenticator (default: mTLS identity, UPL-13), with the request and identity noted
    on the connection."""

    def __init__(self, inner: Authenticator | None = None) -> None:
        self.inner = inner or MtlsAuthenticator("cn")

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        conn: Connection | None = getattr(stream, "conn", None)
        if conn is not None:
            conn.request = request
        device_id, mode = await self.inner.authenticate(stream, request)
        if conn is not None:
            conn.identity = device_id
        return device_id, mode


class Endpoint:
    """One listening TLS socket of the tool's cloud."""

    def __init__(self, name: str, url_host: str, context: ssl.SSLContext, *, serve: bool,
                 settings: ListenerSettings | None = None, authenticator: Authenticator | None = None,
                 handler: Handler | None = None) -> None:
        self.name = name
        self.url_host = url_host
        self.context = context
        self.handler = handler
        serve = serve and handler is None
        self.listener = CloudListener(_RecordingAuthenticator(authenticator), settings=settings) if serve else None
        self.connections: deque[Connection] = deque(maxlen=KEEP_CONNECTIONS)
        self.refuse_paths: set[str] = set()
        self.server: TlsServer | None = None
        self.port = 0

    async def start(self, host: str, port: int = 0) -> None:
        self.server = await start_tls_server(self.handle, (host, port), self.context, handshake_timeout=10.0,
                                             max_pending_handshakes=64)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def handshake_failures(self) -> int:
        return int(self.server.stats.get("handshake_failed", 0)) if self.server is not None else 0

    def url(self, path: str = "/uplink") -> str:
        host = f"[{self.url_host}]" if ":" in self.url_host else self.url_host
        return f"https://{host}:{self.port}{path}"

    async def handle(self, stream: ByteStream) -> None:
        peer = stream.extra("peername")
        conn = Connection(self.name, f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
                          time.monotonic(), tls_version=stream.extra("version"))
        self.connections.append(conn)
        recording = RecordingStream(stream, conn)
        try:
            if self.handler is not None:
                await self.handler(recording, conn)
                return
            if self.listener is None:  # a bad-certificate endpoint: note what got through, then close
                await read_head(recording)
                return
            if self.refuse_paths and await self._refused(recording, conn):
                return
            await self.listener.handle(recording)
        finally:
            conn.closed_at = conn.closed_at or time.monotonic()

    async def _refused(self, stream: RecordingStream, conn: Connection) -> bool:
        """Read the head first; a refused path (or a listener-less endpoint) gets 503 and the close."""
        # The head is read here, so the listener must not read it again: it is replayed.
        data = await read_head(stream)
        if data is None:
            await stream.close()
            return True
        if conn.path in self.refuse_paths:
            conn.refused = True
            await stream.write(UpgradeServer().reject(503, "refused by the conformance tool",
                                                      body=b"refused by the conformance tool\n"))
            await stream.close()
            return True
        assert self.listener is not None
        await self.listener.handle(_Replay(stream, bytes(data)))
        return True

    def live(self) -> list[Connection]:
        """Connections switched to HTTP/2 and not closed yet."""
        return [c for c in self.connections if c.switched_at is not None and c.closed_at is None
                and c.eof_at is None]


async def read_head(stream: RecordingStream) -> bytes | None:
    """Up to the end of the request head (bounded in size and time); None when the device failed to send it."""
    data = bytearray()
    try:
        async with asyncio.timeout(REFUSE_READ_TIMEOUT):
            while b"\r\n\r\n" not in data and len(data) <= 16384:
                chunk = await stream.read(16384)
                if not chunk:
                    break
                data += chunk
    except (TimeoutError, Iec62676Error):
        return None
    return bytes(data)


class _Replay:
    """A stream whose first read returns bytes already read (the refusal check's head)."""

    def __init__(self, inner: RecordingStream, first: bytes) -> None:
        self.inner = inner
        self.conn = inner.conn
        self._first = first

    async def read(self, max_bytes: int = 65536) -> bytes:
        if self._first:
            data, self._first = self._first[:max_bytes], self._first[max_bytes:]
            return data
        return await self.inner.read(max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ToolCloud:
    """The tool's cloud in a background thread: endpoints on ``host``, cases call in with :meth:`call`."""

    def __init__(self, host: str, url_host: str) -> None:
        self.host = host
        self.url_host = url_host
        self.endpoints: list[Endpoint] = []
        self._https: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
        self.service = BackgroundService(self._run, name="conformance cloud").start()

    async def _run(self, stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        announce("ready")
        try:
            await stop.wait()
        finally:
            for done, task in self._https:
                done.set()
                await asyncio.wait([task], timeout=HTTPS_STOP_TIMEOUT)
                task.cancel()
            for endpoint in self.endpoints:
                if endpoint.listener is not None:
                    endpoint.listener.close_all("conformance run over")
                if endpoint.server is not None:
                    endpoint.server.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.service.loop

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        """Run a coroutine function on the cloud's loop (bounded)."""
        result: T = self.service.call(fn, timeout)
        return result

    def bind(self) -> socket.socket:
        """A listening socket on the tool's host, any free port (for :meth:`serve_https`)."""
        return bind_listen(self.host, 0)

    def serve_https(self, app: AsgiApp, sock: socket.socket, context: ssl.SSLContext) -> None:
        """Serve an ASGI ``app`` over TLS on ``sock`` until the run ends."""
        async def start() -> None:
            done = asyncio.Event()
            task = asyncio.get_running_loop().create_task(
                serve_asgi(app, sock, lambda: wait_event(done), ssl_context=context), name="conformance https")
            self._https.append((done, task))

        self.call(start)

    def add_endpoint(self, name: str, context: ssl.SSLContext, *, serve: bool = True, port: int = 0,
                     settings: ListenerSettings | None = None, authenticator: Authenticator | None = None,
                     handler: Handler | None = None) -> Endpoint:
        endpoint = Endpoint(name, self.url_host, context, serve=serve, settings=settings,
                            authenticator=authenticator, handler=handler)

        async def start() -> None:
            await endpoint.start(self.host, port)

        self.call(start)
        self.endpoints.append(endpoint)
        return endpoint

    def remove_endpoint(self, endpoint: Endpoint) -> None:
        async def stop() -> None:
            if endpoint.listener is not None:
                endpoint.listener.close_all("endpoint removed")
            if endpoint.server is not None:
                endpoint.server.close()

        self.call(stop)
        self.endpoints.remove(endpoint)

    def channel(self, endpoint: Endpoint, device_id: str) -> DeviceChannel | None:
        assert endpoint.listener is not None
        try:
            return endpoint.listener.channel(device_id)
        except UnknownDevice:
            return None

    def stop(self) -> None:
        self.service.stop()
