"""Layer 4: the cloud's HTTP front for unmodified clients (GEN-2, GEN-3, UPL-16).

``GET /devices`` lists the connected devices as JSON; any request under
``/devices/<id>/…`` is forwarded to that device over its uplink and the answer
streamed back (flow control follows the slow side). The device learns where
the client came from through ``X-Forwarded-For/-Host/-Proto/-Prefix`` so it can
build addresses that point back through the proxy. The app speaks ASGI only and
knows nothing of the server that ``run_cloud`` runs it on.

Host-based routing (``device_domain``, ``cloud serve --device-domain``) gives each
device an address a stock ONVIF client uses as it is: a request whose ``Host``
is ``<device id>.<device domain>[:port]`` goes to that device with its path
unchanged and no ``X-Forwarded-Prefix``, so the addresses the device returns
(GetServices XAddrs, subscription references, stream URIs) are on that host
too. onvif-zeep-async's ``ONVIFCamera(host, port)`` then needs nothing more
than a DNS name (a wildcard record for the domain). Only device ids that are
DNS labels (letters, digits, ``-``) can be reached so; the label is compared
as sent, then without case when exactly one connected device matches.
An RTSP front that listens on every address (``--rtsp 0.0.0.0:PORT``) has no
host a player could dial, so the front the device is told of
(``x-iec62676-rtsp-base``, its GetStreamUri) then takes the host the client named:
``rtsp://<id>.<domain>:PORT/devices/<id>`` for a host-named device, which the same
wildcard record resolves to the cloud.

A port per device (``device_ports``, ``cloud serve --device-ports``,
:mod:`.device_ports`) is the same routing by the port the request came in on: that
port's listeners run this application, every request there goes to its device the
way a host name does, and ``GET /devices`` lists each device's ``port``.

RTSP over HTTP (STR-2) passes as two requests the device pairs by ``x-sessioncookie``;
the proxy sends the cookie prefixed with the client's address, so a POST joins only a
GET channel opened from the same address (the first node's view of it in a cluster). Such
channels last as long as their session, so one client source (an IPv4 address, an IPv6
/64, as :func:`~..sansio.admission.source_key` counts them) has at most
:data:`MAX_TUNNELS_PER_CLIENT` open at once (503 beyond), and the device keeps at most 8
GET channels of one source waiting for their POST. In a cluster, a source has at most
half of a node-to-node relay's slots (:data:`~..cluster.router.MAX_NODE_REQUESTS` // 2,
16) with channels routed to that node (503 beyond): each holds a relay slot for its whole
session, and 32 from one client would leave none for the node's other clients. (The cap per
client stays :data:`MAX_TUNNELS_PER_CLIENT`: a node's internal listener takes 16 sessions x
2 channels from another node's RTSP front, all from that node's address.) So silent
channels of one client cannot take every request slot of the proxy, of a node-to-node relay
or of the device. A client with many IPv4 addresses still can; the global caps bound what it takes.

Theory of operation: budgets and back-pressure
----------------------------------------------
The proxy asks for no credentials (it binds loopback unless
``--proxy-allow-remote``), so everything a request can make it spend is
bounded by :class:`ProxyLimits`, and every wait has a deadline:

* **Refused early, never queued.** A declared ``Content-Length`` over
  ``max_body`` is answered 413 before the device is contacted. A forwarded
  request is then admitted only while fewer than ``max_requests`` are being
  forwarded and the in-flight bytes (below) are under ``max_in_flight``;
  otherwise it gets 503 with ``Retry-After`` at once. ``GET /devices`` and
  404s are not counted.
* **Request bodies are streamed.** The first ASGI message is read before the
  device's stream is opened: a request without a body ends with its HEADERS,
  one whose body fits in that message declares its length. Each chunk from
  ``receive()`` then goes to :meth:`DeviceChannel.send`, which returns only
  once the HTTP/2 role has framed it -- when the device's stream and
  connection windows and the uplink's outbound buffer had room -- and only
  then is the next chunk read. So a request holds one chunk at a time, and a
  device that reads slowly slows the client through the ASGI server's own
  flow control (TCP, or the client's HTTP/2 windows) instead of filling memory.
* **In-flight budget.** :attr:`ProxyStats.in_flight` counts body bytes taken
  from ``receive()`` and not yet framed, over all requests. A request reads
  its next chunk only while ``in_flight < max_in_flight`` (else it waits,
  bounded, for others to drain), so ``in_flight`` stays below
  ``max_in_flight`` plus one chunk per request reading at that moment, and
  never exceeds ``max_requests`` chunks. The ASGI server sets the chunk size
  (the library's server and hypercorn: at most 64 KiB); a client that is slow to send
  holds nothing while the proxy waits for it. :class:`ProxyStats` keeps the
  peaks for tests and operators.
  Beyond the proxy, each uplink frames at most ``H2Limits.max_outbound_buffer``
  ahead of its socket, whatever the number of requests.
* **Size.** A body that grows past ``max_body`` resets the device's stream and
  is answered 413. A body longer or shorter than its declared length resets the
  stream and is answered 400: the device never sees DATA that contradicts a
  ``content-length`` (h2 would end the whole uplink with PROTOCOL_ERROR).
* **Early answers.** A device may answer before the body is complete (RFC 9113
  §8.1: a complete response, then RST_STREAM NO_ERROR); the proxy stops
  reading the client and forwards that answer.
* **Deadlines.** The whole request body must arrive within ``body_deadline``
  of the request (408, the device's stream reset): a client trickling a byte
  every few seconds never misses a per-chunk deadline but would hold a request
  slot and a device stream for ever. RTSP over HTTP's POST channel (a POST on
  the device's ``/onvif/rtsp/``, :func:`~.body.body_deadline`) is exempt: it lasts
  as long as its session, and the device answers a POST that has no GET channel
  at once. The exemption goes by method and path, never by content type, and
  that path is the one the per-client tunnel cap counts, so an exempt body
  always holds one of its client's tunnel slots.
  Each wait -- for a chunk from the client (408), for budget
  (503), for the device to take a chunk or to answer (502), for each chunk of
  the answer and for the client to take it -- is bounded by ``timeout``.
  Once the response has started, a missed deadline or a broken uplink aborts
  the client's connection: a truncated body is never passed off as complete.
* **Responses** are streamed as before: the device's DATA is acknowledged
  (its window reopened) only as the client takes each chunk. An answer without
  ``content-length`` (a stream: the GET channel of RTSP over HTTP) has its head
  sent at once, before any body bytes exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..errors import ConfigurationError, Iec62676Error, TransportError
from ..sansio.admission import source_key
from .body import BODY_DEADLINE, body_deadline, tunnel_channel
from .cloud import CloudListener, DeviceChannel, UnknownDevice

if TYPE_CHECKING:
    from ..cluster.router import NodeRouter
    from .device_ports import DevicePorts

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

#: Fields of one hop (and the body's framing): never copied from one connection to the next.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
                        b"te", b"host", b"http2-settings", b"content-length"})

#: Where the cloud's RTSP front serves this device: set by the proxy, and on a node's internal listener
#: kept as the first node sent it (the front the client asked through), like ``X-Forwarded-*``.
RTSP_BASE = b"x-iec62676-rtsp-base"
#: Marks an answer the proxy gave itself (a refusal, a 404 for a device not connected, a 502), not
#: a device's: a node relaying a Python API call (:mod:`..cluster.calls`) tells them apart by it.
#: A device's answer never carries it (the proxy drops the device's copy).
PROXY_ANSWER = b"x-iec62676-proxy-answer"
#: Headers of a device's answer the proxy never passes on: its own PROXY_ANSWER, and what _CONTAINED governs.
_NOT_FROM_DEVICES = frozenset({PROXY_ANSWER, b"set-cookie", b"set-cookie2", b"x-content-type-options",
                               b"content-security-policy"})
#: Added to every device answer: a hostile device cannot serve script or set cookies for the cloud's origin.
_CONTAINED: RawHeaders = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", b"sandbox")]
#: An RTSP front on every address (``--rtsp 0.0.0.0:PORT``): no host a player could dial.
_RTSP_ANY_HOST = re.compile(r"rtsp://(?:0\.0\.0\.0|\[::\]):(\d+)")
#: A device id that can be the first label of a host name (host-based routing).
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

MIB = 1 << 20
#: The largest request body forwarded (the device's own HTTP/2 limit is 16 MiB too).
MAX_BODY = 16 * MIB
#: Requests forwarded at once: half the 128 streams a device allows by default (H2Limits),
#: so one busy proxy never takes all of a device's streams.
MAX_REQUESTS = 64
#: Request-body bytes held at once over all requests: MAX_REQUESTS chunks of 64 KiB (what the
#: ASGI servers here deliver; 60 concurrent 15 MiB uploads peaked at 3.2-3.75 MiB in
#: bench_proxy_memory.py). It bites when a server delivers larger chunks; SOAP requests are
#: far smaller anyway.
MAX_IN_FLIGHT = 4 * MIB
TIMEOUT = 30.0
#: RTSP-over-HTTP channels (GET or POST on a device's ``/onvif/rtsp/``) one client address has open at once:
#: they last as long as their session, so one client may hold at most half the request slots with them
#: (16 sessions: as many as the RTSP front relays to one other node).
MAX_TUNNELS_PER_CLIENT = MAX_REQUESTS // 2


@dataclass(frozen=True)
class ProxyLimits:
    """What one proxy may spend on its clients (see the module docstring)."""

    max_body: int = MAX_BODY
    max_requests: int = MAX_REQUESTS
    max_in_flight: int = MAX_IN_FLIGHT
    timeout: float = TIMEOUT
    #: Seconds the whole request body may take (see the module docstring).
    body_deadline: float = BODY_DEADLINE
    #: Seconds a 503 asks the client to wait (``Retry-After``).
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in ("max_body", "max_requests", "max_in_flight", "retry_after"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"ProxyLimits.{name} must be at least 1")
        if not (self.timeout > 0 and self.body_deadline > 0):
            raise ConfigurationError("ProxyLimits.timeout and body_deadline must be positive (seconds)")


@dataclass
class ProxyStats:
    """The proxy's bookkeeping, live: read it, the proxy writes it."""

    active: int = 0  # requests being forwarded now
    peak_active: int = 0
    in_flight: int = 0  # body bytes taken from clients and not yet framed for a device
    peak_in_flight: int = 0
    largest_chunk: int = 0  # the largest body chunk the ASGI server delivered
    body_bytes: int = 0  # request-body bytes handed to devices, in total
    refused_busy: int = 0  # 503s: max_requests or max_in_flight reached
    refused_too_large: int = 0  # 413s: declared or streamed body over max_body


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The field names a request's ``Connection`` header lists: hop-by-hop by the client's say (RFC 9110
    §7.6.1), so they go no further than this hop."""
    return {token.strip().lower() for k, v in headers if k.lower() == b"connection" for token in v.split(b",")}


class _Answer(Iec62676Error):
    """The proxy answers the client itself instead of forwarding (a limit, a bad body, a deadline)."""

    def __init__(self, status: int, text: str, headers: RawHeaders | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.headers = headers or []


class _ClientGone(Iec62676Error):
    """The client disconnected: there is nobody to answer."""


class _Aborted(TransportError, OSError):
    """A response broke off part-way (device or client side): the client's connection is cut.
    An ``OSError``, as ASGI servers expect from an application whose peer failed."""


class _Budget:
    """Admission (``max_requests``) and the in-flight byte budget (``max_in_flight``) of one proxy."""

    def __init__(self, limits: ProxyLimits, stats: ProxyStats) -> None:
        self.limits = limits
        self.stats = stats
        self._freed = asyncio.Event()

    def admit(self) -> bool:
        stats = self.stats
        if stats.active >= self.limits.max_requests or stats.in_flight >= self.limits.max_in_flight:
            stats.refused_busy += 1
            return False
        stats.active += 1
        stats.peak_active = max(stats.peak_active, stats.active)
        return True

    def leave(self) -> None:
        self.stats.active -= 1

    async def room(self) -> None:
        """Until the in-flight bytes are under budget (the caller bounds the wait)."""
        while self.stats.in_flight >= self.limits.max_in_flight:
            self._freed.clear()
            await self._freed.wait()

    def hold(self, n: int) -> None:
        stats = self.stats
        stats.in_flight += n
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        stats.largest_chunk = max(stats.largest_chunk, n)

    def free(self, n: int) -> None:
        if n:
            self.stats.in_flight -= n
            self._freed.set()


class _Body:
    """One request body, read from ``receive()`` a chunk at a time under the budget and limits."""

    def __init__(self, receive: Receive, budget: _Budget, declared: int | None, deadline: float | None) -> None:
        self.receive = receive
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.due = self.loop.time() + (deadline if deadline is not None else float("inf"))
        self.budget = budget
        self.declared = declared
        self.received = 0
        self.held = 0  # bytes of the current chunk counted in the budget
        self.more = True

    async def next(self) -> bytes:
        """The next chunk, counted in the budget until :meth:`release`."""
        limits = self.budget.limits
        # The budget is checked before a wait is armed: an asyncio.timeout costs ~3 us of the
        # ~740 us of cloud CPU a proxied call takes, and a request under budget never waits.
        if self.budget.stats.in_flight >= limits.max_in_flight:
            try:
                async with asyncio.timeout(limits.timeout):
                    await self.budget.room()
            except TimeoutError:
                self.budget.stats.refused_busy += 1
                raise _Answer(503, "the proxy is busy; retry later\n", _retry_after(limits)) from None
        now = self.loop.time()
        try:
            if now >= self.due:
                raise TimeoutError
            async with asyncio.timeout(min(limits.timeout, self.due - now)):
                message = await self.receive()
        except TimeoutError:
            if self.loop.time() >= self.due:
                raise _Answer(408, f"the request body was not complete within {self.deadline:g} s\n") from None
            raise _Answer(408, f"no request body arrived for {limits.timeout:g} s\n") from None
        if message["type"] == "http.disconnect":
            raise _ClientGone("the client disconnected")
        chunk: bytes = message.get("body", b"")
        # An HTTP/2 client ends its body with an empty END_STREAM frame after the last bytes: once the
        # declared length is in, the body is complete (the device would answer first and reset the stream).
        self.more = bool(message.get("more_body")) and self.received + len(chunk) != self.declared
        self.received += len(chunk)
        self.budget.hold(len(chunk))
        self.held += len(chunk)
        if self.received > limits.max_body:
            self.budget.stats.refused_too_large += 1
            raise _Answer(413, f"request body over {limits.max_body} bytes\n")
        if self.declared is not None and (self.received > self.declared or
                                          (not self.more and self.received < self.declared)):
            raise _Answer(400, f"the request body does not match its content-length ({self.declared})\n")
        return chunk

    def release(self) -> None:
        self.budget.free(self.held)
        self.held = 0


@contextmanager
def _holding(counter: Counter[Any], key: object | None) -> Iterator[None]:
    """``key`` counted once more in ``counter`` while the block runs (``None``: nothing counted); a key
    back at zero is dropped, so a counter holds only the clients with something open."""
    if key is None:
        yield
        return
    counter[key] += 1
    try:
        yield
    finally:
        counter[key] -= 1
        if not counter[key]:
            del counter[key]


def _dot_segments(raw_path: bytes) -> bool:
    """Whether the path names a ``.`` or ``..`` segment, written or percent-encoded."""
    return any(segment in (".", "..") for segment in unquote(raw_path.partition(b"?")[0].decode("latin-1")).split("/"))


def _retry_after(limits: ProxyLimits) -> RawHeaders:
    return [(b"retry-after", str(limits.retry_after).encode())]


def _host_name(host: str) -> str:
    """A ``Host`` value without its port (``[::1]:80`` → ``[::1]``)."""
    return host.rsplit(":", 1)[0] if not host.endswith("]") else host


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    values = {v.strip() for k, v in headers if k.lower() == b"content-length"}
    if not values:
        return None
    value = values.pop()
    if values or not value.isdigit():
        raise _Answer(400, "a request needs one content-length, a decimal number\n")
    return int(value)


async def _plain(send: Send, status: int, text: str, content_type: bytes = b"text/plain; charset=utf-8",
                 headers: RawHeaders | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (PROXY_ANSWER, b"1"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class UplinkProxy:
    """ASGI application forwarding ``/devices/<id>/…`` to the devices of a :class:`CloudListener`."""

    def __init__(self, cloud: CloudListener, *, limits: ProxyLimits | None = None,
                 rtsp_base: str | None = None, router: NodeRouter | None = None,
                 trust_forwarded: bool = False, device_domain: str | None = None) -> None:
        self.cloud = cloud
        #: ``Host: <device id>.<device_domain>`` routes to that device (module docstring).
        self.device_domain = device_domain.strip(".").lower() if device_domain else None
        #: A listening port per device (:mod:`.device_ports`), set by whoever opens them.
        self.device_ports: DevicePorts | None = None
        #: In a cluster: relays requests for devices held by other nodes (:mod:`..cluster.router`).
        self.router = router
        #: Keep the ``X-Forwarded-*`` a client sent: only on a node's internal listener, whose
        #: clients are other nodes authenticated by mTLS.
        self.trust_forwarded = trust_forwarded
        #: ``rtsp://HOST:PORT`` of the cloud's RTSP front, told to devices (``x-iec62676-rtsp-base``)
        #: so that their Media2 GetStreamUri points players at it (STR-1).
        self.rtsp_base = rtsp_base
        #: The front's port when it listens on every address: its URIs then take the host the client named.
        self._rtsp_any_port = (m.group(1) if rtsp_base and (m := _RTSP_ANY_HOST.fullmatch(rtsp_base)) else None)
        self.limits = limits or ProxyLimits()
        self.stats = ProxyStats()
        self._budget = _Budget(self.limits, self.stats)
        #: RTSP-over-HTTP channels open now, by client source (IPv4 address, IPv6 /64; at most
        #: ``MAX_TUNNELS_PER_CLIENT`` each).
        self._tunnels: Counter[str] = Counter()
        #: Of those, the channels routed to another node, by (client source, node): at most
        #: ``MAX_NODE_REQUESTS // 2`` each (:mod:`..cluster.router`).
        self._routed_tunnels: Counter[tuple[str, str]] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if _dot_segments(scope.get("raw_path") or path.encode("utf-8")):
            # a front that normalises paths would route /devices/a/../b/ to b; this proxy would reach a
            await _plain(send, 400, "no '.' or '..' path segments through the proxy\n")
            return
        named = self._named_device(scope)
        if named is not None:
            await self._forward(scope, receive, send, named, (scope.get("raw_path") or path.encode("utf-8"))
                                .decode("latin-1"), prefix="")
            return
        if path in ("/devices", "/devices/"):
            if scope["method"] not in ("GET", "HEAD"):
                await _plain(send, 405, "only GET lists the devices\n")
                return
            devices = self.router.devices() if self.router is not None else [d.as_json() for d in self.cloud.devices()]
            if self.device_ports is not None:
                for entry in devices:
                    if (port := self.device_ports.port_of(str(entry["id"]))) is not None:
                        entry["port"] = port
            listing = json.dumps(devices, indent=2) + "\n"
            await _plain(send, 200, listing, b"application/json")
            return
        if not path.startswith("/devices/"):
            await _plain(send, 404, "not found: use GET /devices or /devices/<id>/<path>\n")
            return
        # Split the path as the client sent it: an encoded "/" in the id stays in the id, and the
        # rest is forwarded exactly as received (decoding and re-encoding would change its meaning).
        raw: bytes = scope.get("raw_path") or path.encode("utf-8")
        encoded_id, _, rest = raw[len(b"/devices/"):].partition(b"/")
        device_id = unquote(encoded_id.decode("latin-1"))
        await self._forward(scope, receive, send, device_id, "/" + rest.decode("latin-1"))

    def _named_device(self, scope: Scope) -> str | None:
        """The device the address the client used names -- its port (``device_ports``) or a ``Host:
        <id>.<device_domain>`` -- or ``None`` (the ``/devices`` front)."""
        if self.device_ports is not None and (server := scope.get("server")) is not None:
            by_port = self.device_ports.device_at(server[1])
            if by_port is not None:
                return by_port
        if self.device_domain is None:
            return None
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() in (b"host", b":authority")), "")
        label, dot, domain = _host_name(host).partition(".")
        if not dot or domain.rstrip(".").lower() != self.device_domain or not _LABEL.fullmatch(label):
            return None
        if self.router is None:
            known = [d.device_id for d in self.cloud.devices()]
            if label not in known:
                folded = [d for d in known if d.lower() == label.lower()]
                return folded[0] if len(folded) == 1 else label
        return label

    async def _forward(self, scope: Scope, receive: Receive, send: Send, device_id: str, rest: str, *,
                       prefix: str | None = None) -> None:
        """Forward to ``device_id``; ``prefix``: the X-Forwarded-Prefix the device gets (default
        ``/devices/<id>``; ``""`` when the device was named by the host). An RTSP-over-HTTP channel takes
        one of its client's ``MAX_TUNNELS_PER_CLIENT`` tunnel slots for as long as it lasts."""
        if not tunnel_channel(rest):
            await self._forward_admitted(scope, receive, send, device_id, rest, prefix, None)
            return
        client = source_key(dict(self._forwarded(scope, device_id, prefix))["x-forwarded-for"])
        if self._tunnels[client] >= MAX_TUNNELS_PER_CLIENT:
            await _plain(send, 503, f"at most {MAX_TUNNELS_PER_CLIENT} RTSP-over-HTTP channels per client at once\n",
                         headers=_retry_after(self.limits))
            return
        with _holding(self._tunnels, client):
            await self._forward_admitted(scope, receive, send, device_id, rest, prefix, client)

    async def _forward_admitted(self, scope: Scope, receive: Receive, send: Send, device_id: str, rest: str,
                                prefix: str | None, tunnel_client: str | None) -> None:
        """``tunnel_client``: the source of an RTSP-over-HTTP channel's client, ``None`` for other requests.
        A malformed content-length or a body declared over ``max_body`` is refused first, wherever the device
        is (this node or another)."""
        try:
            declared = _content_length(scope["headers"])
            if declared is not None and declared > self.limits.max_body:
                self.stats.refused_too_large += 1
                raise _Answer(413, f"request body of {declared} bytes is over the limit of {self.limits.max_body}\n")
        except _Answer as answer:
            log.debug("proxy refused %s %s for device %s: %s", scope["method"], rest, device_id, answer.status)
            await _plain(send, answer.status, str(answer), headers=answer.headers)
            return
        try:
            channel = self.cloud.channel(device_id)
        except UnknownDevice:
            if self.router is not None and self.router.holds(device_id):
                await self._route(scope, receive, send, device_id, rest, prefix, tunnel_client)
                return
            await _plain(send, 404, f"device {device_id!r} is not connected; GET /devices lists the connected ones\n")
            return
        if not self._budget.admit():
            log.debug("proxy refused %s %s for device %s: 503 (busy)", scope["method"], rest, device_id)
            await _plain(send, 503, "the proxy is busy; retry later\n", headers=_retry_after(self.limits))
            return
        try:
            body = _Body(receive, self._budget, declared,
                         body_deadline(scope["method"], rest, self.limits.body_deadline))
            await self._relay(scope, body, send, channel, device_id, rest, prefix)
        finally:
            self._budget.leave()

    async def _route(self, scope: Scope, receive: Receive, send: Send, device_id: str, rest: str,
                     prefix: str | None, tunnel_client: str | None) -> None:
        """A device at another node of the cluster: relayed there under this proxy's admission. An
        RTSP-over-HTTP channel (``tunnel_client``: its client's source) also takes one of that client's
        ``MAX_NODE_REQUESTS // 2`` channels to that node for as long as it lasts (module docstring)."""
        from ..cluster.router import MAX_NODE_REQUESTS  # not at the top: the router imports this module

        assert self.router is not None
        node = self.router.registry.locate(device_id) if tunnel_client is not None else None
        routed = (tunnel_client, node.node) if tunnel_client is not None and node is not None else None
        if routed is not None and self._routed_tunnels[routed] >= MAX_NODE_REQUESTS // 2:
            await _plain(send, 503, f"at most {MAX_NODE_REQUESTS // 2} RTSP-over-HTTP channels per client to one "
                                    f"node at once\n", headers=_retry_after(self.limits))
            return
        if not self._budget.admit():
            await _plain(send, 503, "the proxy is busy; retry later\n", headers=_retry_after(self.limits))
            return
        try:
            with _holding(self._routed_tunnels, routed):
                ours = self._forwarded(scope, device_id, prefix)
                if (front := self._rtsp_front(scope, device_id, ours)) is not None:
                    ours.append((RTSP_BASE.decode(), front))
                forwarded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ours]
                await self.router.forward(scope, receive, send, device_id, rest, forwarded)
        finally:
            self._budget.leave()

    def _forwarded(self, scope: Scope, device_id: str, prefix: str | None) -> list[tuple[str, str]]:
        """The ``X-Forwarded-*`` headers the device gets: this proxy's view of the client, or on an
        internal listener (``trust_forwarded``) the first node's."""
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() in (b"host", b":authority")), "")
        client = scope.get("client") or ("", 0)
        ours = {"x-forwarded-for": str(client[0]), "x-forwarded-host": host,
                "x-forwarded-proto": scope.get("scheme", "http"),
                "x-forwarded-prefix": f"/devices/{quote(device_id, safe='')}" if prefix is None else prefix}
        if self.trust_forwarded:
            ours.update({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                         if k.decode("latin-1").lower() in ours})
        return list(ours.items())

    def _request_head(self, scope: Scope, device_id: str, rest: str,
                      prefix: str | None) -> tuple[str, list[tuple[str, str]]]:
        """The target and headers sent to the device: hop-by-hop and client X-Forwarded-* dropped, ours added."""
        target = rest + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        # Names with "_" are dropped: WSGI maps x_forwarded_host and x-forwarded-host to one key.
        # Also dropped: the fields the client's Connection names (hop-by-hop by its say, RFC 9110 §7.6.1) and
        # its credentials for this proxy.
        named = connection_named(scope["headers"])
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.lower() not in HOP_BY_HOP and not k.lower().startswith(b"x-forwarded-") and b"_" not in k
                   and k.lower() != RTSP_BASE and k.lower() != b"proxy-authorization" and k.lower() not in named]
        forwarded = self._forwarded(scope, device_id, prefix)
        # RTSP over HTTP: a POST joins only a GET channel of the same client address, so a player elsewhere
        # that learns a cookie cannot drive or end another's session (the device pairs by cookie alone).
        client = dict(forwarded)["x-forwarded-for"]
        headers = [(k, f"{client} {v}" if k == "x-sessioncookie" else v) for k, v in headers]
        headers += forwarded
        if (front := self._rtsp_front(scope, device_id, forwarded)) is not None:
            headers.append((RTSP_BASE.decode(), front))
        return target, headers

    def _rtsp_front(self, scope: Scope, device_id: str, forwarded: list[tuple[str, str]]) -> str | None:
        """Where the RTSP front the client asked through serves the device (``x-iec62676-rtsp-base``):
        this proxy's front, or on an internal listener (``trust_forwarded``) the first node's; ``None``
        without a front."""
        if self.trust_forwarded:
            sent: str | None = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == RTSP_BASE),
                                    None)
            if sent is not None:
                return sent
        if self.rtsp_base is None:
            return None
        front = self.rtsp_base
        if self._rtsp_any_port is not None:  # where the client reached us (the device ignores a bad name)
            front = f"rtsp://{_host_name(dict(forwarded)['x-forwarded-host'])}:{self._rtsp_any_port}"
        return f"{front}/devices/{quote(device_id, safe='')}"

    async def _relay(self, scope: Scope, body: _Body, send: Send, channel: DeviceChannel, device_id: str,
                     rest: str, prefix: str | None) -> None:
        timeout = self.limits.timeout
        stream_id: int | None = None
        try:
            try:
                chunk = await body.next()
                target, headers = self._request_head(scope, device_id, rest, prefix)
                length = body.declared if body.declared is not None else (None if body.more else len(chunk))
                has_body = bool(chunk) or body.more
                stream_id = await channel.open_stream(scope["method"], target, headers, end_stream=not has_body,
                                                      content_length=length or None, timeout=timeout)
                while has_body:
                    taken = await channel.send(stream_id, chunk, end_stream=not body.more, timeout=timeout)
                    body.release()
                    if not taken:
                        break  # the device answered without the rest
                    self.stats.body_bytes += len(chunk)
                    if not body.more:
                        break
                    chunk = await body.next()
                status, head = await channel.response(stream_id, timeout=timeout)
            except _Answer as answer:
                log.debug("proxy answered %s for device %s: %s", answer.status, device_id, str(answer).strip())
                if stream_id is not None:
                    channel.cancel(stream_id)
                await _plain(send, answer.status, str(answer), headers=answer.headers)
                return
            except _ClientGone:
                return
            except (Iec62676Error, TimeoutError) as exc:
                await _plain(send, 502, f"device {device_id!r} did not answer: {exc or 'timeout'}\n")
                return
            finally:
                body.release()
            await self._respond(send, channel, device_id, stream_id, status, head)
        finally:
            if stream_id is not None:
                channel.cancel(stream_id)  # the client went away or sending failed: free the device's stream

    async def _respond(self, send: Send, channel: DeviceChannel, device_id: str, stream_id: int, status: int,
                       head: list[tuple[str, str]]) -> None:
        """Stream the device's answer to the client; a failure part-way aborts the client's connection."""
        timeout = self.limits.timeout
        # A device's own PROXY_ANSWER is dropped: only this proxy marks its answers so. The answer is served
        # under the cloud's origin, shared by every device: a device sets no cookie there, and what it sends
        # is neither sniffed into another type nor run as a page (_CONTAINED).
        out_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head
                       if (k.encode() not in HOP_BY_HOP or k == "content-length")
                       and k.lower().encode("latin-1") not in _NOT_FROM_DEVICES] + _CONTAINED

        async def to_client(message: dict[str, Any]) -> None:
            try:
                async with asyncio.timeout(timeout):
                    await send(message)
            except (OSError, TransportError) as exc:  # gone, or not reading (TimeoutError is an OSError)
                raise _Aborted(f"the client did not take the answer: {exc or 'timeout'}") from exc

        try:
            await to_client({"type": "http.response.start", "status": status, "headers": out_headers})
            if not any(k == "content-length" for k, _ in head):  # a stream (RTSP over HTTP): the head now
                await to_client({"type": "http.response.body", "body": b"", "more_body": True})
            async for chunk in channel.body(stream_id, timeout=timeout):
                await to_client({"type": "http.response.body", "body": chunk, "more_body": True})
            await to_client({"type": "http.response.body", "body": b"", "more_body": False})
        except _Aborted:
            raise
        except (TransportError, TimeoutError) as exc:
            # Never pass a truncated body off as complete: abort the client's connection.
            log.info("answer of device %s broken off: %s", device_id, exc or "timeout")
            raise _Aborted(f"device {device_id!r} broke off its answer: {exc or 'timeout'}") from exc
