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
(devices, events, requests over an uplink) plus the bound address and a
factory for zeep transports. The device handle shows each uplink's live
Status and Error and changes configurations through the same validation as
SetUplink (:func:`~.uplinkconfig.validate`). Errors are
:class:`~.errors.Iec62676Error` subclasses whose text names parameters of
these functions, never command-line flags.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError
from .runtime.agent import AgentSettings
from .runtime.cloud import Authenticator, CloudListener, ListenerSettings, MtlsAuthenticator
from .runtime.zeep_transport import AsyncUplinkTransport
from .services.uplink import UplinkServiceContext
from .store import DB_NAME
from .uplinkconfig import UplinkConfiguration

__all__ = ["Cloud", "Device", "has_device_store", "serve_cloud", "serve_device"]

#: A server certificate (chain) and its key as PEM file paths, or a ready server-side SSLContext.
TlsServerConfig = ssl.SSLContext | tuple[str | Path, str | Path]


@dataclass(frozen=True)
class Cloud:
    """A running cloud: ``listener`` (devices, events, requests) and where it listens."""

    listener: CloudListener
    host: str
    port: int

    @property
    def url(self) -> str:
        """The uplink address devices dial (``https://HOST:PORT/``)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{shown}:{self.port}{self.listener.path or '/'}"

    def transport(self, device_id: str, *, timeout: float = 30.0) -> AsyncUplinkTransport:
        """A zeep ``AsyncTransport`` whose requests go to ``device_id`` over its uplink."""
        return AsyncUplinkTransport(self.listener, device_id, timeout=timeout)


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


@asynccontextmanager
async def serve_cloud(tls: TlsServerConfig, *, listen: tuple[str, int] = ("127.0.0.1", 0),
                      client_cas: Sequence[str | Path] = (), identity: str = "cn",
                      authenticator: Authenticator | None = None, path: str | None = None,
                      settings: ListenerSettings | None = None) -> AsyncIterator[Cloud]:
    """Accept device uplinks on ``listen`` (port 0: a free port) until the block ends.

    ``tls`` is ``(cert_path, key_path)`` or an ``SSLContext``. Devices are
    authenticated by ``authenticator`` or, by default, by their client
    certificate issued by one of ``client_cas`` (named by its ``identity``
    field: ``cn``, ``serial`` or ``san``; UPL-13).
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
    try:
        server = await start_tls_server(listener.handle, sock, context,
                                        handshake_timeout=listener.settings.handshake_timeout,
                                        first_byte_timeout=listener.settings.first_byte_timeout,
                                        admission=listener.settings.admission)
    except BaseException:
        sock.close()
        raise
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield Cloud(listener, host, port)
    finally:
        server.close()
        listener.close_all()
        await server.wait_closed()


def has_device_store(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` holds a device (its ``device.db``)."""
    return (Path(data_dir) / DB_NAME).is_file()


@asynccontextmanager
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
