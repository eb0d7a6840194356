"""Layer 2 (byte transports): the TLS server — admission, PROXY protocol v2, a handler per connection (UPL-1, UPL-13).

The server side (:func:`start_tls_server`) runs the handshake inside the
engine, under a deadline, before it creates anything else; a peer that
never finishes it costs a socket and its engine object until then. Which
connections may start a handshake at all is decided at accept, before any
TLS work, by the sans-IO :class:`~iec62676_2_33.sansio.admission.Admission`
policy (per-source rate and handshakes in progress, a global cap with a
reserve for sources that recently authenticated, eviction of the heaviest
source's oldest handshake instead of refusing another source): a refused
connection is closed at once, an evicted one is aborted, both only counted
in :attr:`TlsServer.stats` and summed up in at most one INFO line per
:data:`ADMISSION_LOG_INTERVAL`, together with the failed handshakes (anyone
can fail one at will, so each gets only a DEBUG line). The cloud calls
:func:`~.tls_engine.report_authenticated` once a device authenticated. An optional
first-byte deadline closes a connection that sends nothing (no ClientHello)
sooner than the handshake deadline. With ``until_authenticated`` (the cloud)
a connection keeps its admission slot past its handshake until the handler
reports that its peer authenticated, so the same per-source and global
limits bound connections that finished TLS and then say nothing (or trickle
their upgrade request) until the upgrade deadline; such a connection is
evicted like a handshake (:meth:`~.tls_engine.TlsEngine.drop`).

Behind a TCP balancer (``proxy_protocol_from``), a connection from a balancer
address opens with a PROXY protocol v2 header, read under the first-byte
deadline before admission and TLS (:mod:`iec62676_2_33.sansio.proxy_protocol`);
its client address becomes the connection's ``peername`` and admission source.
A ``LOCAL`` header (the balancer's own connection) keeps the balancer's address;
closed before any TLS byte, it was the balancer's health check: counted in
``stats["health_checks"]``, not as a failed handshake.

Each connection is a :class:`~.tls_engine.TlsEngine`; the server is its
:class:`~.tls_engine.TlsAcceptor` and acts on it only through its public members.
Listening and the handler tasks are :class:`~.serving.HandlerServer`'s, shared
with the plain TCP server; a :class:`~iec62676_2_33.errors.TransportError`
escaping a handler is, here, the peer's doing (``_peer_failures``).
The server logs under the TLS transport's name, ``iec62676_2_33.transport.tls``
(the name operators configure), not under this module's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import ConfigurationError, TransportError
from ..sansio.admission import Admission, AdmissionLimits, peer_ip
from .base import TlsHandshakeError
from .connection import format_addr
from .serving import HandlerServer
from .tls_engine import TlsEngine, TlsStream

__all__ = ["ADMISSION_LOG_INTERVAL", "TlsServer", "start_tls_server"]

logger = logging.getLogger(f"{__package__}.tls")

#: A server sums up refused and evicted connections and failed handshakes in at most one INFO
#: line per this many seconds (a flood must not write a line per connection).
ADMISSION_LOG_INTERVAL = 10.0


class TlsServer(HandlerServer[TlsStream]):
    """A listening TLS server made by :func:`start_tls_server`.

    ``stats`` counts ``accepted`` TCP connections; ``rejected`` ones, closed
    at once before any TLS work, and among them by the admission rule that
    refused them (:class:`~iec62676_2_33.sansio.admission.Refusal`):
    ``refused_rate``, ``refused_source``, ``refused_full`` (a connection that
    arrives while the server closes is only ``rejected``); ``evicted``
    handshakes (and, with ``until_authenticated``, connections not
    authenticated yet), closed to make room for another source's;
    ``first_byte_timeout`` (the client sent nothing before the first-byte
    deadline), ``handshake_timeout``, ``handshake_failed``,
    ``handler_failed`` (handlers that raised), ``active`` (handlers
    running), ``refused_proxy`` (balancer connections without a valid
    PROXY v2 header, see :func:`start_tls_server`) and ``health_checks``
    (balancer connections that sent a PROXY ``LOCAL`` header and closed
    before any TLS byte: the balancer's health checks, not failed handshakes).

    Its public methods below ``sockets`` and ``admission`` are the hooks its
    engines call (:class:`~.tls_engine.TlsAcceptor`), not for applications.
    """

    _logger = logger
    _peer_failures = (TransportError,)

    def __init__(
        self,
        handler: Callable[[TlsStream], Awaitable[None]],
        ssl_context: ssl.SSLContext,
        *,
        handshake_timeout: float,
        first_byte_timeout: float | None,
        admission: AdmissionLimits,
        proxy_protocol_from: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        until_authenticated: bool = False,
    ) -> None:
        super().__init__(handler)
        self._until_authenticated = until_authenticated
        #: Established connections still holding their admission slot until they authenticate.
        self._unauthenticated: set[TlsEngine] = set()
        self._balancers = tuple(proxy_protocol_from)
        #: Balancer connections whose PROXY header is still due (at most admission.max_pending).
        self._awaiting_header: set[TlsEngine] = set()
        self._ctx = ssl_context
        self._handshake_timeout = handshake_timeout
        self._first_byte_timeout = first_byte_timeout
        self._admission: Admission[TlsEngine] = Admission(admission)
        self._loop = asyncio.get_running_loop()
        self._summary: asyncio.TimerHandle | None = None
        self._last_failure = ""
        self.stats: dict[str, int] = {
            "accepted": 0,
            "rejected": 0,
            "refused_rate": 0,
            "refused_source": 0,
            "refused_full": 0,
            "evicted": 0,
            "first_byte_timeout": 0,
            "handshake_failed": 0,
            "handshake_timeout": 0,
            "handler_failed": 0,
            "active": 0,
            "refused_proxy": 0,
            "health_checks": 0,
        }
        self._summed_up = dict(self.stats)  # the counters at the last summary line

    def _protocol(self) -> TlsEngine:
        return TlsEngine(self._ctx, server_side=True, acceptor=self)

    @property
    def admission(self) -> Admission[Any]:
        """The admission policy and its state (handshakes in progress, known sources)."""
        return self._admission

    # ------------------------------------------------------------------ the engine's hooks (TlsAcceptor)

    def _source(self, peer: Any) -> str:
        """The admission source of a peer address: the socket's, or behind a balancer the
        client address of its PROXY header (admission waits for the header)."""
        host = peer[0] if isinstance(peer, tuple) and peer else None
        return self._admission.source_key(host if isinstance(host, str) else None)

    def expects_proxy_header(self, peer: Any) -> bool:
        """A connection from a configured balancer must open with a PROXY v2 header: wait
        for it (bounded in count and time) before admission and TLS. Anyone else speaks TLS
        at once; a PROXY header from them fails as a bad ClientHello."""
        if not self._balancers:
            return False
        # a balancer reaching a dual-stack listener over IPv4 is its IPv4 address, as for admission
        address = peer_ip(str(peer[0])) if isinstance(peer, tuple) and peer else None
        return address is not None and any(address in net for net in self._balancers)

    def proxy_header_wait(self, engine: TlsEngine) -> float | None:
        """The PROXY header's deadline (the first-byte one, else the handshake's); ``None`` when as many
        balancer connections as handshakes may be pending already wait for theirs."""
        if self._closed or len(self._awaiting_header) >= self._admission.limits.max_pending:
            self.stats["accepted"] += 1
            self.stats["rejected"] += 1
            self.stats["refused_full"] += 1
            return None
        self._awaiting_header.add(engine)
        return self._first_byte_timeout or self._handshake_timeout

    def proxy_refused(self, engine: TlsEngine, reason: str) -> None:
        self._awaiting_header.discard(engine)
        self.stats["accepted"] += 1
        self.stats["rejected"] += 1
        self.stats["refused_proxy"] += 1
        self._last_failure = f"{engine.label}: {reason}"
        logger.debug("refused %s: %s", engine.label, reason)
        self._sum_up_later()

    def admit(self, engine: TlsEngine) -> tuple[float, float | None] | None:
        """Admit a new connection (its PROXY header, if any, is in) to its handshake: its deadlines;
        ``None``: refused."""
        self._awaiting_header.discard(engine)
        self.stats["accepted"] += 1
        if self._closed:
            self.stats["rejected"] += 1
            return None
        now = self._loop.time()
        verdict = self._admission.admit(engine, self._source(engine.peer), now)
        if verdict.refusal is not None:
            self.stats["rejected"] += 1
            self.stats[f"refused_{verdict.refusal.value}"] += 1
            self._sum_up_later()
            return None
        if verdict.evict is not None:
            victim = verdict.evict
            if victim in self._unauthenticated:  # past its handshake, not authenticated yet
                self._unauthenticated.discard(victim)
                victim.drop("evicted before it authenticated, to make room for another source")
                self.stats["evicted"] += 1
            elif victim.abandon_handshake("evicted to make room for another source", "evicted"):
                self.stats["evicted"] += 1
            self._sum_up_later()
        first = self._first_byte_timeout
        first_at = now + first if first is not None and first < self._handshake_timeout else None
        return now + self._handshake_timeout, first_at

    def timed_out(self, engine: TlsEngine, counter: str) -> None:
        self.stats[counter] += 1

    def _sum_up_later(self) -> None:
        if self._summary is None and not self._closed:
            self._summary = self._loop.call_later(ADMISSION_LOG_INTERVAL, self._sum_up)

    def _sum_up(self) -> None:
        """One INFO line for the refusals, evictions and failed handshakes since the last one."""
        self._summary = None
        stats, last = self.stats, self._summed_up
        self._summed_up = dict(stats)
        since = {name: stats[name] - last[name] for name in stats}
        parts = []
        if since["rejected"]:
            parts.append(
                f"refused {since['rejected']} connections (per-source rate {since['refused_rate']}, "
                f"per-source handshakes {since['refused_source']}, server full {since['refused_full']})"
            )
        if since["evicted"]:
            parts.append(f"evicted {since['evicted']} handshakes")
        if since["refused_proxy"]:
            parts.append(f"{since['refused_proxy']} balancer connections without a valid PROXY header")
        if since["handshake_failed"]:
            parts.append(f"{since['handshake_failed']} handshakes failed (last: {self._last_failure})")
        if not parts:
            return
        busiest = self._admission.busiest()
        logger.info(
            "TLS server, since the last report: %s; %d handshakes in progress%s",
            "; ".join(parts),
            self._admission.pending,
            "" if busiest is None else f", most from {busiest[0]} ({busiest[1]})",
        )

    def forget(self, engine: TlsEngine) -> None:
        self._awaiting_header.discard(engine)
        self._unauthenticated.discard(engine)
        self._admission.release(engine)

    def authenticated(self, engine: TlsEngine) -> None:
        self._unauthenticated.discard(engine)
        self._admission.release(engine)
        if engine.peer is not None:
            self._admission.authenticated(self._source(engine.peer), self._loop.time())

    def handshake_failed(self, engine: TlsEngine, error: TlsHandshakeError) -> None:
        # Anyone can fail a handshake at will (a scanner, a flood): one DEBUG line each, and
        # the INFO summary names the count and the last reason (a misconfigured device).
        self._admission.release(engine)
        self.stats["handshake_failed"] += 1
        self._last_failure = str(error)
        logger.debug("%s", error)
        self._sum_up_later()

    def health_checked(self, engine: TlsEngine) -> None:
        # PROXY v2 (section 2.2): LOCAL is a connection "established on purpose by the proxy
        # without being relayed", such as its health check. HAProxy's TCP check sends LOCAL and
        # closes: the node is up, nothing failed. Counted, one DEBUG line, no summary.
        self._admission.release(engine)
        self.stats["health_checks"] += 1
        logger.debug("health check from balancer %s (PROXY LOCAL, closed before TLS)",
                     format_addr(engine.peer))

    def established(self, engine: TlsEngine) -> None:
        if self._until_authenticated:  # the slot is held until the handler reports the peer authenticated
            self._unauthenticated.add(engine)
        else:
            self._admission.release(engine)
        self._serve(TlsStream(engine), self._loop)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop accepting and drop connections still in their handshake.

        Established connections keep running: :meth:`abort_connections` ends
        them, :meth:`aclose` does everything.
        """
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._summary is not None:
            self._summary.cancel()
            self._sum_up()
        for engine in self._admission.connections():
            engine.abandon_handshake("aborted: the server is closing", "server closing")
        for engine in list(self._awaiting_header):
            engine.refuse_proxy("the server is closing")


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _balancer_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A ``--proxy-protocol-from`` network as a peer's address is compared with it: IPv4-mapped IPv6
    networks (``::ffff:10.0.0.5``, the form a dual-stack listener once needed) as their IPv4 network."""
    net = ipaddress.ip_network(cidr, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


async def start_tls_server(
    handler: Callable[[TlsStream], Awaitable[None]],
    sock: socket.socket | tuple[str, int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    *,
    host: str | None = None,
    port: int = 0,
    handshake_timeout: float = 10.0,
    first_byte_timeout: float | None = None,
    max_pending_handshakes: int | None = None,
    admission: AdmissionLimits | None = None,
    backlog: int = 1024,
    proxy_protocol_from: Sequence[str] = (),
    until_authenticated: bool = False,
) -> TlsServer:
    """Accept TLS connections and run ``handler(stream)`` for each, as its own task.

    Listen on *sock* (a bound, listening socket), a ``(host, port)`` tuple, or
    *host*/*port*. The handshake runs before the handler, under
    *handshake_timeout* seconds; a peer that does not finish it in time is
    disconnected (``stats["handshake_timeout"]``); with *first_byte_timeout*
    (shorter), a peer that sends nothing at all is disconnected after that
    many seconds (``stats["first_byte_timeout"]``).

    Which connections may start a handshake: *admission* (see
    :mod:`iec62676_2_33.sansio.admission`; the cloud passes
    ``ListenerSettings.admission``, limits for the open internet); without
    it only a global cap of *max_pending_handshakes* (default 1024)
    connections in their handshake, with eviction between sources but no
    per-source limits — for servers that face no strangers. Give one of the two, not both. Refused
    connections are closed at once (``stats["rejected"]``).

    *proxy_protocol_from*: the balancers' addresses or CIDRs. A connection
    from one of them must open with a PROXY protocol v2 header
    (:mod:`iec62676_2_33.sansio.proxy_protocol`, under the first-byte deadline),
    else it is refused (``stats["refused_proxy"]``); the header's client
    address then is the connection's ``peername`` and its admission source.
    Connections from other addresses speak TLS at once (a PROXY header from
    them fails the handshake). Empty (the default): no PROXY protocol at all.

    *until_authenticated*: a connection keeps its admission slot after its
    handshake, until the handler calls
    :func:`~.tls_engine.report_authenticated` on its stream (or it ends), so
    the per-source and global limits also bound connections that finished TLS
    and have not authenticated yet (the cloud's upgrade and authentication
    phase: without it, one source could hold ``rate`` connections a second
    for the whole upgrade deadline each); such a connection can be evicted
    like a handshake. For handlers that report authentication (the cloud).

    A handler's exception is logged and counted; it never stops the server.
    A :class:`~iec62676_2_33.errors.TransportError` that escapes a handler (the
    peer closed or broke the connection under it, e.g. right after sending its
    upgrade request) is one INFO line, not a failure. The stream is closed
    when the handler returns.
    """
    if ssl_context is None:
        raise ConfigurationError(
            "start_tls_server needs an ssl_context: build one with server_context()"
        )
    if admission is not None and max_pending_handshakes is not None:
        raise ConfigurationError(
            "give start_tls_server either admission or max_pending_handshakes, not both: "
            "the global cap is admission.max_pending"
        )
    if admission is None:
        admission = AdmissionLimits.global_cap(1024 if max_pending_handshakes is None else max_pending_handshakes)
    try:
        balancers = [_balancer_network(cidr) for cidr in proxy_protocol_from]
    except ValueError as exc:
        raise ConfigurationError(f"PROXY protocol balancer address: {exc}") from None
    if isinstance(sock, tuple):
        host, port = sock
        sock = None
    server = TlsServer(
        handler,
        ssl_context,
        handshake_timeout=handshake_timeout,
        first_byte_timeout=first_byte_timeout,
        admission=admission,
        proxy_protocol_from=balancers,
        until_authenticated=until_authenticated,
    )
    await server._listen(sock, host, port, backlog=backlog)
    return server
