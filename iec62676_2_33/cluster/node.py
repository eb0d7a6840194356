"""Layer 4 (cloud cluster): make one cloud process a node of a cluster (UPL-16).

:func:`join_cluster` wraps a running :class:`~..runtime.cloud.CloudListener`: it
connects to NATS (reconnecting for ever; a reconnect resyncs the registry), reports
every device connect/disconnect of the listener to the :class:`~.registry.ClusterRegistry`,
closes a local uplink when the device reconnected at another node, serves the node's
*internal* listener (the proxy application over HTTP/2 on mutual TLS, for requests other
nodes relay here) and yields the :class:`~.router.NodeRouter` the node's own proxy uses
for devices held elsewhere. The single node (no ``--nats``) never imports this package.

The internal listener admits nodes only. Its TLS handshake requires a client certificate
issued by ``--internal-ca``, and the proxy behind it trusts the ``X-Forwarded-*`` headers
of its clients (they are the first node's view of the VMS). A CA that also issues device
certificates would so let a device in with forged headers; therefore every request on
the internal listener must come with a certificate naming serverAuth in its extended key
usage (:func:`is_node_certificate`), as a node certificate does (a node serves the
internal listener with the certificate it relays with, so it needs serverAuth and
clientAuth). A device certificate (clientAuth only) gets 403 and the proxy never sees
the request. A node's own certificate without serverAuth is refused at start-up, and so
is an internal address other nodes could not dial: every address (``0.0.0.0``, ``::``)
without ``--internal-advertise``, or a host that is no host name or IP address (the
others would refuse its heartbeat record and take the node for dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from ..errors import ConfigurationError, shown_url
from ..runtime.asgi_handler import AsgiApp, Scope
from ..runtime.cloud import CloudListener, DeviceEvent, UnknownDevice
from ..runtime.http_server import bind_listen, parse_listen, serve_asgi, wait_event
from ..runtime.proxy import Receive, Send, UplinkProxy
from ..transport.contexts import client_context, server_context
from .records import DeviceRecord, NodeRecord, RecordError, check_node_id
from .registry import DEFAULT_TTL, ClusterRegistry
from .router import NodeRouter

log = logging.getLogger(__name__)

__all__ = ["ClusterOptions", "is_node_certificate", "join_cluster"]


@dataclass(frozen=True)
class ClusterOptions:
    """How a node joins: NATS URL, its id, its internal listener and the node PKI."""

    nats: str
    node_id: str
    internal: str
    #: The node's certificate (serverAuth and clientAuth) and key, and the CA that issues node certificates.
    cert: Path
    key: Path
    ca: Path
    ttl: float = DEFAULT_TTL
    #: ``host:port`` other nodes use to reach the internal listener (default: where it listens).
    advertise: str | None = None


def _record(event: DeviceEvent, node: str) -> DeviceRecord:
    d = event.device
    return DeviceRecord(id=d.device_id, node=node, peer=d.peer, connected_since=d.connected_since,
                        auth_mode=d.auth_mode)


def is_node_certificate(cert: x509.Certificate) -> bool:
    """Whether a certificate (verified against the node CA) is a node's: its extended key usage names
    serverAuth (module docstring)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usages


class NodesOnly:
    """ASGI: pass on the requests of peers whose client certificate is a node's; answer others 403."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._from_node(scope):
            body = b"the internal listener serves cluster nodes only (a node certificate names serverAuth)\n"
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _from_node(scope: Scope) -> bool:
        chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
        return bool(chain) and _node_pem(chain[0])


@functools.lru_cache(maxsize=64)
def _node_pem(pem: str) -> bool:
    """:func:`is_node_certificate` of a peer's PEM, remembered: a handful of nodes, a request each time."""
    return is_node_certificate(x509.load_pem_x509_certificate(pem.encode("ascii")))


#: Seconds the first connection to NATS may take (its retries included); reconnects are not bounded.
FIRST_CONNECT = 30.0


def _fingerprints(pem: bytes) -> set[bytes]:
    """SHA-256 of every certificate in ``pem`` (none when it holds none that parse)."""
    try:
        return {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(pem)}
    except ValueError:
        return set()


def _check_advertised(options: ClusterOptions) -> None:
    """The address other nodes are told must be one they dial: ``HOST:PORT`` as they decode it (else they
    would take this node for dead), and not every address (``0.0.0.0``, ``::``: a node would dial itself)."""
    flag, text = ("--internal-advertise", options.advertise) if options.advertise else ("--internal", options.internal)
    host, port = parse_listen(text)
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        unspecified = False
    if unspecified:
        raise ConfigurationError(f"{flag} {text}: other nodes cannot reach this node at {host} (every address); "
                                 "give --internal-advertise HOST:PORT")
    try:
        NodeRecord.decode(NodeRecord(node=options.node_id, internal=f"{host}:{port or 1}", started=0.0).encode())
    except RecordError:
        raise ConfigurationError(f"{flag} {text}: {host!r} is not a host name or IP address") from None


@contextlib.asynccontextmanager
async def join_cluster(cloud: CloudListener, options: ClusterOptions,
                       device_cas: Sequence[bytes] = ()) -> AsyncIterator[NodeRouter]:
    """Run this cloud as a cluster node until the block ends (module docstring); ``device_cas``: the PEM
    certificates of the CAs that issue device certificates, none of which may be the node CA."""
    node_id = check_node_id(options.node_id)
    _check_advertised(options)
    cert, key, ca = (Path(p).read_bytes() for p in (options.cert, options.key, options.ca))
    if _fingerprints(ca) & {f for pem in device_cas for f in _fingerprints(pem)}:
        raise ConfigurationError(f"--internal-ca {options.ca}: this CA also issues device certificates (--client-ca); "
                                 "the node CA must issue node certificates only")
    try:
        own = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ConfigurationError(f"--internal-cert {options.cert}: not a PEM certificate") from None
    if not is_node_certificate(own):
        raise ConfigurationError(f"--internal-cert {options.cert}: a node certificate must name serverAuth "
                                 "(and clientAuth) in its extended key usage")
    registry_box: list[ClusterRegistry] = []

    async def reconnected() -> None:
        log.info("node %s: NATS connection back; resyncing the registry", node_id)
        if registry_box:
            registry_box[0].resync()

    async def disconnected() -> None:
        log.info("node %s: NATS connection lost; reconnecting", node_id)

    async def error(exc: Exception) -> None:
        log.debug("node %s: NATS: %s", node_id, exc)

    # Reconnects go on for ever (a NATS restart must not end the node), but the first connection has a
    # deadline: nats-py retries that one for ever too, and a wrong --nats would hang the node silently.
    nc = NatsClient()
    try:
        async with asyncio.timeout(FIRST_CONNECT):
            await nc.connect(options.nats, name=f"iec62676 node {node_id}", connect_timeout=5,
                             max_reconnect_attempts=-1, allow_reconnect=True,
                             reconnect_time_wait=0.5,  # type: ignore[arg-type]  # a float sleep; nats-py says int
                             reconnected_cb=reconnected, disconnected_cb=disconnected, error_cb=error)
    except (NatsError, OSError, TimeoutError) as exc:
        await nc.close()
        reason = f"no connection within {FIRST_CONNECT:g} s" if isinstance(exc, TimeoutError) else str(exc)
        raise ConfigurationError(f"--nats {shown_url(options.nats)}: cannot connect ({reason or type(exc).__name__})") \
            from None
    sock = bind_listen(*parse_listen(options.internal))
    bound = sock.getsockname()
    advertise = options.advertise or f"{parse_listen(options.internal)[0]}:{bound[1]}"

    def superseded(record: DeviceRecord) -> None:
        with contextlib.suppress(UnknownDevice):
            cloud.channel(record.id).close(f"the device reconnected at node {record.node}")

    registry = ClusterRegistry(nc, node_id=node_id, internal=advertise, ttl=options.ttl, on_superseded=superseded)
    registry_box.append(registry)

    def observe(event: DeviceEvent) -> None:
        record = _record(event, node_id)
        (registry.connected if event.kind == "connected" else registry.disconnected)(record)

    internal_ctx = server_context(cert, key, client_ca_pems=[ca], require_client_cert=True,
                                  alpn_protocols=["h2", "http/1.1"])
    router = NodeRouter(registry, client_context(cafile_pems=[ca], certfile_pem=cert, keyfile_pem=key,
                                                 alpn_protocols=["h2"]))
    stop = asyncio.Event()
    serving: asyncio.Task[Any] | None = None
    try:
        cloud.observers.append(observe)
        for info in cloud.devices():
            observe(DeviceEvent("connected", info))
        await registry.start()
        serving = asyncio.create_task(serve_asgi(NodesOnly(UplinkProxy(cloud, trust_forwarded=True)), sock,
                                                 lambda: wait_event(stop), ssl_context=internal_ctx))
        log.info("node %s joined the cluster at %s; internal listener on %s", node_id, options.nats, advertise)
        yield router
    finally:
        stop.set()
        with contextlib.suppress(ValueError):
            cloud.observers.remove(observe)
        if serving is not None:
            await asyncio.gather(serving, return_exceptions=True)
        else:
            sock.close()
        await router.aclose()
        await registry.close()
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.close()
