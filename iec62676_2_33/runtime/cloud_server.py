"""Layer 4: the cloud process — the uplink listener and, optionally, the HTTP proxy
front and the RTSP front (STR-1), on one event loop (``iec62676 cloud serve``).

Authentication (UPL-13, UPL-14): with ``client_cas`` only, a client
certificate is required (mTLS); with the ``jwt_*`` options only, an access
token is required (no client certificate is asked for); with both, either
one is accepted (:class:`~.cloud.EitherAuthenticator`, client certificates
asked for but optional). The listener takes native and WebSocket upgrades
(UPL-2, UPL-4) on the same port. Admission (:mod:`..sansio.admission`) counts a
connection until its device authenticated, not only during its TLS handshake
(``until_authenticated``): a source cannot hold more connections that finished
TLS and say nothing than it may hold handshakes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..pki import load_certs_pem
from ..transport.contexts import server_context
from ..transport.tls import start_tls_server
from .cloud import (
    Authenticator,
    CloudListener,
    EitherAuthenticator,
    ListenerSettings,
    MtlsAuthenticator,
)
from .http_server import bind_listen, parse_listen, serve_asgi, wait_event

if TYPE_CHECKING:
    from ..cluster.node import ClusterOptions
    from ..cluster.router import NodeRouter


@dataclass
class CloudOptions:
    listen: str
    cert: Path
    key: Path
    client_cas: Sequence[Path]
    identity: str = "cn"
    proxy: str | None = None
    proxy_allow_remote: bool = False
    #: The proxy also routes ``Host: <device id>.<device_domain>`` to that device (``--device-domain``).
    device_domain: str | None = None
    #: A listening port per device in this range, ``START-END``, on the proxy's host (``--device-ports``).
    device_ports: str | None = None
    #: Where the device-port assignments are kept across restarts (``--device-ports-file``, needed with them).
    device_ports_file: Path | None = None
    rtsp: str | None = None
    rtsp_allow_remote: bool = False
    path: str | None = None
    jwt_issuers: Sequence[str] = ()
    jwt_audience: str | None = None
    jwt_keys: str | None = None
    jwt_keys_ca: Sequence[Path] = ()
    jwt_identity_claim: str = "sub"
    #: Balancer addresses/CIDRs whose connections open with a PROXY protocol v2 header.
    proxy_protocol_from: Sequence[str] = ()
    #: Join a cluster of cloud nodes on NATS (``--nats``); ``None``: the single node.
    cluster: ClusterOptions | None = None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read(path: Path) -> bytes:
    return Path(path).read_bytes()


def _pems(paths: Sequence[Path]) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.PEM) for path in paths for c in load_certs_pem(path)]


def build_authenticator(options: CloudOptions) -> Authenticator:
    """mTLS, access token (JWT) or either, from the options (UPL-13, UPL-14)."""
    mtls = MtlsAuthenticator(options.identity) if options.client_cas else None
    token = None
    if options.jwt_keys or options.jwt_issuers or options.jwt_audience:
        if not (options.jwt_keys and options.jwt_issuers and options.jwt_audience):
            raise ConfigurationError(
                "access-token mode needs --jwt-keys, --jwt-issuer and --jwt-audience together")
        from ..security.jwt_auth import TokenAuthenticator, jwks_source

        keys = jwks_source(options.jwt_keys, cafile_pems=_pems(options.jwt_keys_ca) or None)
        token = TokenAuthenticator(keys, issuers=options.jwt_issuers, audience=options.jwt_audience,
                                   identity_claim=options.jwt_identity_claim)
    if mtls is not None and token is not None:
        return EitherAuthenticator(mtls, token)
    if token is not None:
        return token
    if mtls is not None:
        return mtls
    raise ConfigurationError("give --client-ca (mTLS) or the --jwt-* options (access tokens), or both")


async def run_cloud(options: CloudOptions, stop: asyncio.Event, announce: Callable[[str], None] = lambda _t: None,
                    *, settings: ListenerSettings | None = None,
                    ready: Callable[[CloudListener], None] | None = None) -> None:
    """Run until ``stop`` is set."""
    authenticator = build_authenticator(options)
    cas = _pems(options.client_cas)
    context = server_context(_read(options.cert), _read(options.key), client_ca_pems=cas or None,
                             require_client_cert=bool(cas) and not options.jwt_keys)
    host, port = parse_listen(options.listen)
    proxy_at = None if options.proxy is None else parse_listen(options.proxy)
    if proxy_at is not None and not options.proxy_allow_remote and not _loopback(proxy_at[0]):
        raise ConfigurationError(
            f"--proxy {options.proxy}: the proxy gives whoever reaches it each device's uplink UserLevel; "
            "bind it to loopback (e.g. 127.0.0.1:8081) or, behind your own authentication, add --proxy-allow-remote")
    rtsp_at = None if options.rtsp is None else parse_listen(options.rtsp)
    if rtsp_at is not None and not options.rtsp_allow_remote and not _loopback(rtsp_at[0]):
        raise ConfigurationError(
            f"--rtsp {options.rtsp}: the RTSP front plays each device's cameras with its uplink UserLevel; "
            "bind it to loopback (e.g. 127.0.0.1:8554) or, behind your own authentication, add --rtsp-allow-remote")
    port_range = port_table = port_store = port_assignments = None
    if options.cluster is not None and options.device_ports_file is not None:
        raise ConfigurationError("--device-ports-file: in a cluster (--nats) the device ports are kept in NATS, "
                                 "for every node alike; drop the file")
    if (options.device_ports is None) != (options.device_ports_file is None) and options.cluster is None:
        raise ConfigurationError("--device-ports and --device-ports-file go together (the file keeps the "
                                 "assignments, so a port never passes to another device)")
    if options.device_ports is not None:
        from .device_ports import AssignmentsFile, device_port_range

        if proxy_at is None:
            raise ConfigurationError("--device-ports needs --proxy (the device ports are the proxy's)")
        taken = tuple(at[1] for at in ((host, port), proxy_at, rtsp_at) if at is not None)
        port_range = device_port_range(options.device_ports, taken=taken)
    if port_range is not None and options.device_ports_file is not None:
        port_store = AssignmentsFile(options.device_ports_file)
        port_store.lock()
        try:
            port_table = port_store.table(port_range)
            port_store.save(port_table.assignments())  # the file exists and can be written, from the start
        except BaseException:
            port_store.unlock()
            raise
    sockets: list[socket.socket] = []
    rtsp_sock: socket.socket | None = None
    cluster: AbstractAsyncContextManager[NodeRouter] | None = None
    router: NodeRouter | None = None
    try:
        sockets.append(sock := bind_listen(host, port))
        if proxy_at is not None:
            sockets.append(bind_listen(*proxy_at))
        if rtsp_at is not None:
            sockets.append(rtsp_sock := bind_listen(*rtsp_at))
        cloud = CloudListener(authenticator, settings=settings, path=options.path)
        if options.cluster is not None:  # NATS is needed only here (the optional extra "cluster")
            from ..cluster.node import join_cluster

            cluster = join_cluster(cloud, options.cluster, device_cas=cas)
            router = await cluster.__aenter__()
            if port_range is not None:  # one assignment per device for the whole cluster
                from ..cluster.port_assignments import ClusterPortAssignments

                port_assignments = await ClusterPortAssignments.open(router.registry.nc, port_range)
        server = await start_tls_server(cloud.handle, sock, context,
                                        handshake_timeout=cloud.settings.handshake_timeout,
                                        first_byte_timeout=cloud.settings.first_byte_timeout,
                                        admission=cloud.settings.admission,
                                        proxy_protocol_from=options.proxy_protocol_from,
                                        until_authenticated=True)
    except BaseException:
        for s in sockets:
            s.close()
        if port_store is not None:
            port_store.unlock()
        if port_assignments is not None:
            await port_assignments.aclose()
        if router is not None and cluster is not None:
            await cluster.__aexit__(None, None, None)
        raise
    proxy_sock = sockets[1] if proxy_at is not None else None
    if ready is not None:
        ready(cloud)
    bound = server.sockets[0].getsockname()
    announce(f"cloud listening for uplinks on https://{bound[0]}:{bound[1]}{options.path or '/'}"
             f" (and wss://{bound[0]}:{bound[1]}{options.path or '/'})")
    tasks = []
    device_ports = None
    rtsp_server = None
    rtsp_base = None
    if rtsp_sock is not None:  # STR-1: live video for stock players
        from ..transport.tcp import start_tcp_server
        from .rtsp_front import RtspFront

        rbound = rtsp_sock.getsockname()
        rtsp_base = f"rtsp://{_url_host(rbound[0])}:{rbound[1]}"
        rtsp_server = await start_tcp_server(RtspFront(cloud, router=router).handle, rtsp_sock)
        announce(f"cloud RTSP front on {rtsp_base}/devices/<id>/<media token>")
    if proxy_sock is not None:
        from .proxy import UplinkProxy

        pbound = proxy_sock.getsockname()
        announce(f"cloud proxy on http://{pbound[0]}:{pbound[1]}/devices")
        proxy = UplinkProxy(cloud, rtsp_base=rtsp_base, router=router, device_domain=options.device_domain)
        if port_table is not None and port_store is not None:
            from .device_ports import DevicePorts

            proxy.device_ports = device_ports = DevicePorts(cloud, proxy, pbound[0], port_table, port_store)
            announce(f"cloud device ports {port_table.ports.start}-{port_table.ports.stop - 1} on {pbound[0]} "
                     f"(GET /devices lists each device's; kept in {port_store.path})")
        elif port_assignments is not None and router is not None:
            from ..cluster.node_ports import ClusterDevicePorts

            proxy.device_ports = device_ports = ClusterDevicePorts(cloud, proxy, pbound[0], port_assignments,
                                                                   router.registry)
            announce(f"cloud device ports {port_assignments.table.ports.start}-"
                     f"{port_assignments.table.ports.stop - 1} on {pbound[0]} for every device of the cluster "
                     "(GET /devices lists each device's; kept in NATS)")
        tasks.append(asyncio.create_task(serve_asgi(proxy, proxy_sock, lambda: wait_event(stop))))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopped}:
            task.result()  # the proxy ended on its own: say why
            raise ConfigurationError("the proxy stopped unexpectedly")
    finally:
        stopped.cancel()
        stop.set()
        server.close()
        cloud.close_all()
        if rtsp_server is not None:
            await rtsp_server.aclose()
        if device_ports is not None:
            await device_ports.aclose()
        if port_store is not None:
            port_store.unlock()
        await server.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)
        if cluster is not None:
            await cluster.__aexit__(None, None, None)
