"""Layer 4: the library's own HTTP server: HTTP/1.1 and h2c with prior knowledge on one port
(UPL-16; issue 8: the device's direct port, the cloud's proxy front, the test auth server).

Serves a :data:`~.exchange.Handler` -- a WSGI application through
:class:`~.wsgi_handler.WsgiHandler` or an ASGI ``http`` application through
:class:`~.asgi_handler.AsgiHandler` -- on a listening socket that the caller
bound, in plain TCP (:mod:`..transport.tcp`) or TLS (:mod:`..transport.tls`)::

    server = await start_http_server(WsgiHandler(app, executor=pool), sock)
    ...
    await server.aclose()            # stop accepting, finish or cut what runs

    await serve(AsgiHandler(app), sock, stop.wait)   # the same, until stop.wait() returns

Theory of operation
-------------------
Each accepted connection (at most ``max_connections`` at once per listener;
one more is closed at once and counted in ``stats["refused"]``) has
``header_timeout`` seconds to show what it speaks: the 24-byte HTTP/2 client
preface (``PRI * HTTP/2.0...``, RFC 9113 §3.3, prior knowledge; over TLS the
same, whatever ALPN said) makes it an HTTP/2 connection served by the
project's hardened :class:`~..http2.server.H2ServerRole` with ``h2_limits``
(the uplink's limits: rapid reset, PING/SETTINGS/empty-frame floods,
CONTINUATION floods, header and body sizes; see :mod:`.h2conn`); anything
else is HTTP/1.1 on h11 (:mod:`.h1conn`). ``Upgrade: h2c`` is declined: the
request is answered on HTTP/1.1.

**Flooders wait.** A source (IPv4 address, IPv6 /64) whose HTTP/2
connection the role cut off for flooding (GOAWAY ENHANCE_YOUR_CALM: rapid
reset and the other flood limits) has its next connections refused at once,
before any HTTP/2 work, for ``flood_penalty.first`` seconds, doubling per
further offence up to ``flood_penalty.cap`` (:mod:`..sansio.penalty`): the
limits bound what one connection costs, the penalty what reconnecting costs
(``bench/bench_rapid_reset.py``). Over TLS the handshake is made before the
check.

Request bodies stream to the application with back-pressure; all
connections of one server share one in-flight body budget
(``body_budget`` bytes received and not yet read by an application, see
:mod:`.body`), and their HTTP/2 connections one answer budget
(``answer_budget`` bytes of answers waiting for clients that take nothing; new
HTTP/2 requests are refused while it is spent, on connections holding at least
their share of it, see :mod:`.h2conn`).
``budget``, ``answers`` and ``stats`` are live counters.

Stopping: :meth:`HttpServer.aclose` stops accepting, closes idle
connections, lets running requests finish for ``grace`` seconds (HTTP/1.1
answers carry ``Connection: close``, HTTP/2 connections get GOAWAY when their
last request ends), then aborts whatever remains.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, TransportError
from ..http2.limits import DEFAULT_LIMITS, H2Limits
from ..http2.role import PREFACE
from ..sansio.penalty import DEFAULT_PENALTY, PenaltyBox, PenaltyLimits
from ..transport.base import ByteStream
from ..transport.tcp import TcpServer, start_tcp_server
from ..transport.tls import TlsServer, start_tls_server
from .body import BODY_DEADLINE, BodyBudget
from .exchange import Handler, format_addr
from .h1conn import H1Connection
from .h2conn import H2cConnection

if TYPE_CHECKING:
    from typing import Self

__all__ = ["HttpServer", "HttpSettings", "serve", "start_http_server"]

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    """Every bound of one :class:`HttpServer` (seconds and bytes)."""

    #: Connections served at once per listener.
    max_connections: int = 1024
    #: HTTP/1.1 request line + header fields (h11's ``max_incomplete_event_size``).
    max_head_size: int = 32 * KIB
    #: HTTP/1.1 request line (method, target, version).
    max_request_line: int = 8 * KIB
    #: HTTP/1.1 header fields per request.
    max_header_count: int = 100
    #: Request-body bytes received and not yet read by an application, over all connections.
    body_budget: int = 32 * MIB
    #: HTTP/2 answer bytes waiting for clients that take nothing (windows shut, socket unread), over
    #: all connections; while spent, new HTTP/2 requests on a connection holding at least its share
    #: (``answer_budget / max_connections``) are refused (RST_STREAM REFUSED_STREAM).
    answer_budget: int = 64 * MIB
    #: Seconds to send the first bytes (HTTP/2 preface or a complete HTTP/1.1 head).
    header_timeout: float = 10.0
    #: Seconds a connection may wait for its next request (HTTP/1.1 keep-alive, HTTP/2 GOAWAY).
    idle_timeout: float = 30.0
    #: Seconds an application may wait for the next request-body bytes (then its read fails: 408).
    body_timeout: float = 30.0
    #: Seconds a whole request body may take (then the application's read fails: 408; a client
    #: trickling a byte every few seconds is cut off); ``None``: no limit. RTSP over HTTP's POST
    #: channel has none (:func:`~.body.body_deadline`).
    body_deadline: float | None = BODY_DEADLINE
    #: Seconds the client may take nothing of what we write (disconnect; HTTP/2: the stream is reset).
    send_timeout: float = 30.0
    #: The HTTP/2 limits (the uplink's); ``max_body_size`` also bounds HTTP/1.1 bodies.
    h2_limits: H2Limits = DEFAULT_LIMITS
    #: How long a source whose HTTP/2 connection was cut off for flooding is refused.
    flood_penalty: PenaltyLimits = DEFAULT_PENALTY

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not value > 0:
                raise ConfigurationError(f"HttpSettings.{f.name} must be positive, got {value!r}")
        if self.max_request_line > self.max_head_size:
            raise ConfigurationError("HttpSettings.max_request_line must not exceed max_head_size")

    @property
    def max_body_size(self) -> int:
        return self.h2_limits.max_body_size


class HttpServer:
    """One listening HTTP server (see the module docstring); made by :func:`start_http_server`.

    ``stats``: ``accepted``, ``refused`` (over ``max_connections``), ``http1``,
    ``h2`` (connections by protocol), ``active`` (connections now),
    ``flooded`` (HTTP/2 connections cut off for flooding), ``penalized``
    (connections refused because their source flooded).
    """

    def __init__(self, handler: Handler, settings: HttpSettings, *, scheme: str) -> None:
        self.handler = handler
        self.settings = settings
        self.scheme = scheme
        self.budget = BodyBudget(settings.body_budget)
        self.answers = BodyBudget(settings.answer_budget)
        self.stats: dict[str, int] = {"accepted": 0, "refused": 0, "http1": 0, "h2": 0, "active": 0, "flooded": 0,
                                      "penalized": 0}
        self.penalties = PenaltyBox(settings.flood_penalty)
        self._transport: TcpServer | TlsServer | None = None
        self._connections: set[H1Connection | H2cConnection] = set()
        self._closing = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._transport.sockets if self._transport is not None else ()

    async def _connection(self, stream: ByteStream) -> None:
        self.stats["accepted"] += 1
        peer = _address(stream.extra("peername"))
        source = self.penalties.source_key(peer[0] if peer else None)
        if self.penalties.blocked(source, asyncio.get_running_loop().time()):
            self.stats["penalized"] += 1
            stream.abort()
            return
        if self._closing or self.stats["active"] >= self.settings.max_connections:
            self.stats["refused"] += 1
            log.debug("refused %s: %d connections already", stream.extra("peername"), self.stats["active"])
            stream.abort()
            return
        self.stats["active"] += 1
        try:
            await self._serve(stream, peer, source)
        finally:
            self.stats["active"] -= 1

    async def _serve(self, stream: ByteStream, peer: tuple[str, int] | None, source: str) -> None:
        head_due = asyncio.get_running_loop().time() + self.settings.header_timeout
        initial = await self._first_bytes(stream, head_due)
        if not initial:
            return
        settings = self.settings
        own = _address(stream.extra("sockname"))
        chain = _peercert_chain(stream) if self.scheme == "https" else None
        conn: H1Connection | H2cConnection
        if initial.startswith(PREFACE):
            self.stats["h2"] += 1
            conn = H2cConnection(stream, self.handler, limits=settings.h2_limits, budget=self.budget,
                                 answers=self.answers, answer_share=max(1, settings.answer_budget // settings.max_connections),
                                 idle_timeout=settings.idle_timeout, send_timeout=settings.send_timeout,
                                 body_timeout=settings.body_timeout, body_deadline=settings.body_deadline,
                                 client=peer, server=own, scheme=self.scheme, peercert_chain=chain)
        else:
            self.stats["http1"] += 1
            conn = H1Connection(stream, self.handler, settings=settings, budget=self.budget, client=peer,
                                server=own, scheme=self.scheme, peercert_chain=chain)
        self._connections.add(conn)
        try:
            if isinstance(conn, H2cConnection):
                reason = await conn.run(initial)
                log.debug("h2c %s ended: %s", format_addr(peer), reason)
                if conn.flooded:
                    self.stats["flooded"] += 1
                    block = self.penalties.strike(source, asyncio.get_running_loop().time())
                    log.info("h2c %s cut off for flooding (%s); source %s refused for %g s",
                             format_addr(peer), reason, source, block)
            else:
                await conn.run(initial, head_due)  # one header_timeout for the first head, however it came
        finally:
            self._connections.discard(conn)

    async def _first_bytes(self, stream: ByteStream, deadline: float) -> bytes:
        """Read until the bytes are, or cannot be, the HTTP/2 preface (``b""``: nothing came by the loop time
        ``deadline``)."""
        data = b""
        loop = asyncio.get_running_loop()
        try:
            while len(data) < len(PREFACE) and PREFACE.startswith(data):
                chunk = await asyncio.wait_for(stream.read(64 * KIB), max(0.0, deadline - loop.time()))
                if not chunk:
                    return b""
                data += chunk
        except (TimeoutError, TransportError):
            return b""
        return data

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop accepting; connections keep running."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop: close idle connections, let requests finish for ``grace`` seconds, abort the rest."""
        self.close()
        for conn in list(self._connections):
            conn.drain()
        if self._transport is None:
            return
        try:
            await asyncio.wait_for(self._transport.wait_closed(), grace)
        except TimeoutError:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def start_http_server(handler: Handler, sock: socket.socket, *, settings: HttpSettings | None = None,
                            ssl_context: ssl.SSLContext | None = None) -> HttpServer:
    """Serve ``handler`` on the listening ``sock`` (TLS with ``ssl_context``) until ``aclose()``."""
    settings = settings or HttpSettings()
    server = HttpServer(handler, settings, scheme="https" if ssl_context is not None else "http")
    if ssl_context is None:
        server._transport = await start_tcp_server(server._connection, sock)
    else:
        server._transport = await start_tls_server(server._connection, sock, ssl_context,
                                                   handshake_timeout=settings.header_timeout,
                                                   max_pending_handshakes=settings.max_connections)
    return server


async def serve(handler: Handler, sock: socket.socket, shutdown: Callable[[], Awaitable[Any]], *,
                settings: HttpSettings | None = None, ssl_context: ssl.SSLContext | None = None,
                grace: float = 1.0) -> None:
    """Serve ``handler`` on ``sock`` until ``shutdown()`` returns (e.g. ``stop.wait``), then stop."""
    server = await start_http_server(handler, sock, settings=settings, ssl_context=ssl_context)
    try:
        await shutdown()
    finally:
        await server.aclose(grace)


def _peercert_chain(stream: ByteStream) -> tuple[bytes, ...]:
    """The client's verified certificate chain (DER, its own first), or its certificate alone where the TLS
    library cannot give the chain; empty without a client certificate."""
    chain = stream.extra("peercert_chain")
    if chain:
        return tuple(chain)
    leaf = stream.extra("peercert")
    return (leaf,) if leaf else ()


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
