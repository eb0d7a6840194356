"""The library's entry points for application code: ``serve_cloud`` and ``serve_device``.

Each is an async context manager that starts one side on the running event
loop, returns a handle once it accepts connections, and on leaving the block
shuts down in order (listeners closed, uplinks ended, stores closed)::

    async with serve_cloud(("cloud.pem", "cloud.key"), client_cas=["devices-ca.pem"]) as cloud:
        info = await cloud.wait_for("camera-7")
        ...

    async with serve_device("device-data", listen="127.0.0.1:8080") as device:
        print(device.url, device.uplinks())

The cloud handle is the library's :class:`~.runtime.cloud.CloudListener`
(devices, events, requests over an uplink) plus the bound address, a request
call and a factory for zeep transports. With ``cluster=ClusterOptions(...)``
the cloud runs as a node of a cluster on NATS, joined exactly as
``cloud serve --nats`` joins (:func:`~.cluster.node.join_cluster`); the
handle's request call and transports then reach a device at any live node:
directly on its uplink when this node holds it, else over the node-to-node
HTTP/2 mTLS connection (:mod:`~.cluster.calls`).

The device handle shows each uplink's live Status and Error and changes
configurations through the same validation as SetUplink (:func:`~.uplinkconfig.validate`). Errors are
:class:`~.errors.Iec62676Error` subclasses whose text names parameters of
these functions, never command-line flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigurationError
from .runtime.agent import AgentSettings
from .runtime.cloud import (
    Authenticator,
    CloudListener,
    HttpResponse,
    ListenerSettings,
    MtlsAuthenticator,
    UnknownDevice,
)
from .runtime.zeep_transport import AsyncUplinkTransport
from .services.uplink import UplinkServiceContext
from .store import DB_NAME
from .uplinkconfig import UplinkConfiguration

if TYPE_CHECKING:
    from .cluster.node import ClusterOptions
    from .cluster.router import NodeRouter

__all__ = ["Cloud", "Device", "has_device_store", "serve_cloud", "serve_device"]

#: Seconds a cluster node waits, on joining, for the registry's current state (it fills in later if
#: NATS is slower): calls made at once then find the devices other nodes hold.
REGISTRY_SYNC = 10.0

#: A server certificate (chain) and its key as PEM file paths, or a ready server-side SSLContext.
TlsServerConfig = ssl.SSLContext | tuple[str | Path, str | Path]


@dataclass(frozen=True)
class Cloud:
    """A running cloud: ``listener`` (devices, events, requests) and where it listens; in a
    cluster, ``router`` (the registry of the cluster's devices, and calls to other nodes)."""

    listener: CloudListener
    host: str
    port: int
    router: NodeRouter | None = None

    @property
    def url(self) -> str:
        """The uplink address devices dial (``https://HOST:PORT/``)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{shown}:{self.port}{self.listener.path or '/'}"

    async def request(self, device_id: str, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", *, timeout: float = 30.0, max_body: int | None = None) -> HttpResponse:
        """Call the device (UPL-16) over its uplink here or, in a cluster, at the node holding it;
        ``timeout`` and ``max_body`` as in :meth:`~.runtime.cloud.CloudListener.request`."""
        try:
            channel = self.listener.channel(device_id)
        except UnknownDevice:
            if self.router is None:
                raise
            from .cluster.calls import request_at_node

            return await request_at_node(self.router, device_id, method, path, headers, body, timeout=timeout,
                                         max_body=max_body)
        return await channel.request(method, path, headers, body, timeout=timeout, max_body=max_body)

    def transport(self, device_id: str, *, timeout: float = 30.0) -> AsyncUplinkTransport:
        """A zeep ``AsyncTransport`` whose requests go to ``device_id`` (see :meth:`request`)."""
        return AsyncUplinkTransport(self, device_id, timeout=timeout)


@dataclass(frozen=True)
class Device:
    """A running device: its data folder, the URL of its direct services and its uplinks."""

    data_dir: Path
    url: str | None
    _context: UplinkServiceContext

    def uplinks(self) -> list[UplinkConfiguration]:
        """Every uplink configuration with its live Status and Error (CFG-2)."""
        return self._context.uplinks()

    def set_uplink(self, cfg: UplinkConfiguration) -> UplinkConfiguration:
        """Validate and store a configuration, as SetUplink does (CFG-3); the uplink starts at once."""
        return self._context.set_uplink(cfg)

    def delete_uplink(self, remote_address: str) -> None:
        """Remove the configuration of ``remote_address``, as DeleteUplink does (CFG-4)."""
        self._context.delete_uplink(remote_address)


def _server_context(tls: TlsServerConfig, client_cas: Sequence[str | Path], require_client_cert: bool,
                    ) -> ssl.SSLContext:
    if isinstance(tls, ssl.SSLContext):
        return tls
    from cryptography.hazmat.primitives.serialization import Encoding

    from .pki import load_certs_pem
    from .transport.contexts import server_context

    cert, key = (Path(p) for p in tls)
    cas = [c.public_bytes(Encoding.PEM) for path in client_cas for c in load_certs_pem(Path(path))]
    return server_context(cert.read_bytes(), key.read_bytes(), client_ca_pems=cas or None,
                          require_client_cert=require_client_cert)


@contextlib.asynccontextmanager
async def serve_cloud(tls: TlsServerConfig, *, listen: tuple[str, int] = ("127.0.0.1", 0),
                      client_cas: Sequence[str | Path] = (), identity: str = "cn",
                      authenticator: Authenticator | None = None, path: str | None = None,
                      settings: ListenerSettings | None = None,
                      cluster: ClusterOptions | None = None) -> AsyncIterator[Cloud]:
    """Accept device uplinks on ``listen`` (port 0: a free port) until the block ends.

    ``tls`` is ``(cert_path, key_path)`` or an ``SSLContext``. Devices are
    authenticated by ``authenticator`` or, by default, by their client
    certificate issued by one of ``client_cas`` (named by its ``identity``
    field: ``cn``, ``serial`` or ``san``; UPL-13). With ``cluster`` the cloud
    is a node of a cluster on NATS (needs the extra ``cluster``; UPL-16).
    """
    from .runtime.http_server import bind_listen
    from .transport.tls import start_tls_server

    if authenticator is None:
        if not client_cas and not isinstance(tls, ssl.SSLContext):
            raise ConfigurationError("serve_cloud needs client_cas (mTLS devices) or an authenticator")
        authenticator = MtlsAuthenticator(identity)
    context = _server_context(tls, client_cas, require_client_cert=isinstance(authenticator, MtlsAuthenticator))
    sock = bind_listen(*listen)
    listener = CloudListener(authenticator, settings=settings, path=path)
    async with contextlib.AsyncExitStack() as stack:
        router = None
        try:
            if cluster is not None:  # NATS is needed only here (the optional extra "cluster")
                from .cluster.node import join_cluster

                device_cas = [Path(ca).read_bytes() for ca in client_cas]
                router = await stack.enter_async_context(join_cluster(listener, cluster, device_cas=device_cas))
                with contextlib.suppress(TimeoutError):  # know the cluster's devices before the first call
                    async with asyncio.timeout(REGISTRY_SYNC):
                        await router.registry.synced.wait()
            server = await start_tls_server(listener.handle, sock, context,
                                            handshake_timeout=listener.settings.handshake_timeout,
                                            first_byte_timeout=listener.settings.first_byte_timeout,
                                            admission=listener.settings.admission, until_authenticated=True)
        except BaseException:
            sock.close()
            raise
        host, port = server.sockets[0].getsockname()[:2]
        try:
            yield Cloud(listener, host, port, router)
        finally:
            server.close()
            listener.close_all()
            await server.wait_closed()


def has_device_store(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` holds a device (its ``device.db``)."""
    return (Path(data_dir) / DB_NAME).is_file()


@contextlib.asynccontextmanager
async def serve_device(data_dir: str | Path, *, listen: str | None = "127.0.0.1:0", create: bool = False,
                       settings: AgentSettings | None = None, uplinks: bool = True,
                       replay_listen: str = "127.0.0.1:0") -> AsyncIterator[Device]:
    """Run the device kept in ``data_dir`` until the block ends.

    ``listen`` (``HOST:PORT``, port 0: a free port; ``None``: no direct
    services) is where the web services answer directly; every stored uplink
    is kept connected unless ``uplinks`` is false. ``data_dir`` must hold a
    device unless ``create`` is true. Recordings configured in ``data_dir``
    are replayed over RTSP on ``replay_listen`` (``HOST:PORT``, port 0: a free port).
    """
    from .runtime.device import run_device

    if not create and not has_device_store(data_dir):
        raise ConfigurationError(f"{data_dir} holds no device ({DB_NAME}); pass create=True to start an empty one")
    stop = asyncio.Event()
    started: asyncio.Future[Device] = asyncio.get_running_loop().create_future()

    def ready(context: UplinkServiceContext, url: str | None) -> None:
        started.set_result(Device(Path(data_dir), url, context))

    task = asyncio.create_task(run_device(data_dir, listen, stop, settings=settings, uplinks=uplinks, ready=ready,
                                          replay_listen=replay_listen),
                               name=f"device {data_dir}")
    try:
        await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        if not started.done():
            task.result()  # the reason it could not start
            raise ConfigurationError(f"the device in {data_dir} stopped while starting")
        yield started.result()
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        started.cancel()
