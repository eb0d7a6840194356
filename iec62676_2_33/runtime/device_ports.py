"""Layer 4: a listening port per device on the cloud's HTTP proxy (``cloud serve --device-ports START-END``).

A stock ONVIF client (onvif-zeep-async's ``ONVIFCamera(host, port, …)``) builds
``http://host:port/onvif/device_service`` itself. With a port per device it needs no
DNS name either: every request to that port goes to that device with its path
unchanged. The listeners run the proxy's own ASGI application
(:class:`~.proxy.UplinkProxy`), which names the device from the port the request
came in on (:meth:`DevicePorts.device_at`) exactly as it names it from a
``Host: <id>.<domain>``: one routing decision, one proxy, one set of budgets. The
device learns the address the client used (``X-Forwarded-Host``, no prefix), so every
XAddr, subscription address and stream URI it returns is on that port too.

Theory of operation
-------------------
* **Which port.** :class:`~..sansio.port_table.PortTable` gives a new id its home port
  or the next one never assigned, and never another id's port. The assignments are kept
  in the file the operator names (``--device-ports-file``, :class:`AssignmentsFile`):
  loaded before anything listens (a damaged file is a one-line startup error), written
  atomically with mode 0600 before a new device's port opens (a port whose assignment
  could not be written does not open), and locked while the cloud runs, so
  ``iec62676 cloud ports release`` (:func:`release_port`, the operator freeing one id's
  port) works on a stopped cloud only. The listeners bind the proxy's host, so the
  proxy's loopback rule covers them; the range may not hold the cloud's other ports.
* **When.** The device's ``connected`` event (a :attr:`~.cloud.CloudListener.observers`
  hook) binds the port at once -- before the event reaches anyone else, so a client
  that saw the device listed waits in the backlog at worst. A reconnect keeps the
  open listener. A port that cannot be bound (another program holds it) gives one
  error line naming the device and the port; the device stays reachable by path and
  host name, and the port is tried again when the device reconnects.
* **Until when.** After the device disconnects its listener stays open for
  :data:`LINGER` seconds (requests meanwhile get the proxy's 404 "not connected", as
  a camera that reboots would be unreachable), then closes: open listeners never
  exceed the devices connected plus those gone for less than ``LINGER``, and never the
  range size (:data:`~..sansio.port_table.MAX_PORTS` at most); each serves at most
  :data:`PORT_SETTINGS` ``max_connections`` clients at once. The assignment itself
  is kept (the table is bounded by the range), so a device gone for longer gets its
  port back when it returns.
* **In a cluster** :class:`~..cluster.node_ports.ClusterDevicePorts` keeps these
  listeners and rules, keeps the assignments in NATS instead of the file, and opens the
  ports of the devices other nodes hold too.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..domain.private_files import write_atomic
from ..errors import ConfigurationError
from ..sansio.port_table import MAX_FILE_BYTES, PortTable, dumps_assignments, loads_assignments, parse_port_range
from .asgi_handler import AsgiApp, AsgiHandler
from .cloud import CloudListener, DeviceEvent, UnknownDevice
from .http_server import bind_listen
from .httpd import KIB, HttpServer, HttpSettings, start_http_server

__all__ = ["LINGER", "PORT_SETTINGS", "AssignmentsFile", "DevicePorts", "device_port_range", "release_port"]

log = logging.getLogger(__name__)

#: Seconds a device's port stays open after the device disconnected (a reboot, a network change).
LINGER = 300.0
#: The server of each device port: a few clients per device (a VMS, a tool). The requests themselves
#: are admitted under the proxy's one budget (:class:`~.proxy.ProxyLimits`), whichever port they use.
PORT_SETTINGS = HttpSettings(max_connections=16, body_budget=256 * KIB)


def device_port_range(text: str, *, taken: tuple[int, ...]) -> range:
    """``--device-ports START-END`` checked against the cloud's other listening ports (``taken``)."""
    ports = parse_port_range(text)
    clash = sorted(p for p in set(taken) if p in ports)
    if clash:
        raise ConfigurationError(f"--device-ports {text}: the range holds port {clash[0]}, which the cloud "
                                 "listens on already (--listen, --proxy or --rtsp)")
    return ports


class AssignmentsFile:
    """The device-port assignments file (``--device-ports-file``): owner-only, replaced atomically, locked
    (``PATH.lock``, :func:`fcntl.flock`) by the one process that uses it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None

    def lock(self) -> None:
        """Take the file for this process; another process holding it is a one-line error."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"--device-ports-file {self.path}: cannot create {lock_path}: "
                                     f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigurationError(f"--device-ports-file {self.path}: a running cloud uses it (stop it first)") \
                from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def load(self) -> dict[str, int]:
        """The assignments kept (none when the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_mode & 0o077:
                    os.fchmod(f.fileno(), 0o600)
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(f"--device-ports-file {self.path}: {exc.strerror or exc}") from None
        try:
            return loads_assignments(data)
        except ConfigurationError as exc:
            raise ConfigurationError(f"--device-ports-file {self.path} is damaged: {exc}") from None

    def table(self, ports: range) -> PortTable:
        """The table of ``ports`` with the assignments kept (each in the range, no port twice)."""
        assigned = self.load()
        try:
            return PortTable(ports, assigned)
        except ConfigurationError as exc:
            raise ConfigurationError(f"--device-ports-file {self.path}: {exc}") from None

    def save(self, assigned: Mapping[str, int]) -> None:
        write_atomic(self.path, dumps_assignments(assigned), 0o600)


def release_port(path: Path, device_id: str) -> int:
    """``iec62676 cloud ports release``: free ``device_id``'s port in the (unused) file for another id."""
    store = AssignmentsFile(path)
    store.lock()
    try:
        assigned = store.load()
        port = assigned.pop(device_id, None)
        if port is None:
            raise ConfigurationError(f"{path}: device {device_id} has no port")
        store.save(assigned)
        return port
    finally:
        store.unlock()


@dataclass
class _Listener:
    port: int
    sock: socket.socket
    starting: asyncio.Task[HttpServer]
    expiry: asyncio.TimerHandle | None = field(default=None)

    def close(self) -> asyncio.Task[None] | None:
        """Stop accepting now (the port is free when this returns); running requests finish in the
        returned task."""
        if self.expiry is not None:
            self.expiry.cancel()
        if self.starting.done() and not self.starting.cancelled() and self.starting.exception() is None:
            server = self.starting.result()
            server.close()
            return asyncio.ensure_future(server.aclose())
        self.starting.cancel()
        self.sock.close()
        return None


class DevicePorts:
    """The per-device listeners of one proxy (module docstring): made on the running loop, it opens
    the ports of the devices connected already and watches ``cloud`` for the others; :meth:`aclose`
    at the end. ``table`` holds the assignments loaded from ``store``, which keeps every new one
    (``None``: a subclass keeps them, :class:`~..cluster.node_ports.ClusterDevicePorts`)."""

    def __init__(self, cloud: CloudListener, app: AsgiApp, host: str, table: PortTable,
                 store: AssignmentsFile | None) -> None:
        self.cloud = cloud
        self.host = host
        self.table = table
        self.store = store
        self.linger = LINGER
        self._handler = AsgiHandler(app)
        self._open: dict[str, _Listener] = {}
        self._at: dict[int, str] = {}  # port -> device, of the open listeners
        self._closing: set[asyncio.Task[None]] = set()
        cloud.observers.append(self.observe)
        for device in cloud.devices():
            self._connected(device.device_id)

    def port_of(self, device_id: str) -> int | None:
        """The device's port while its listener is open."""
        listener = self._open.get(device_id)
        return None if listener is None else listener.port

    def device_at(self, port: int) -> str | None:
        """The device a request that came in on ``port`` goes to (``None``: not a device port)."""
        return self._at.get(port)

    def observe(self, event: DeviceEvent) -> None:
        device_id = event.device.device_id
        if event.kind == "connected":
            self._connected(device_id)
        elif not self._present(device_id):  # not the old channel of a device that has reconnected
            self._linger(device_id)

    def _linger(self, device_id: str) -> None:
        """The device is gone: close its listener after :attr:`linger` seconds unless it comes back."""
        listener = self._open.get(device_id)
        if listener is not None and listener.expiry is None:
            listener.expiry = asyncio.get_running_loop().call_later(self.linger, self._expire, device_id)

    async def aclose(self) -> None:
        if self.observe in self.cloud.observers:
            self.cloud.observers.remove(self.observe)
        for device_id in list(self._open):
            self._close(device_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _present(self, device_id: str) -> bool:
        try:
            self.cloud.channel(device_id)
        except UnknownDevice:
            return False
        return True

    def _connected(self, device_id: str) -> None:
        if not self._stay(device_id):
            port = self._assign(device_id)
            if port is not None:
                self._listen(device_id, port)

    def _stay(self, device_id: str) -> bool:
        """Keep the device's listener open (a reconnect): whether it has one."""
        listener = self._open.get(device_id)
        if listener is not None and listener.expiry is not None:
            listener.expiry.cancel()
            listener.expiry = None
        return listener is not None

    def _assign(self, device_id: str) -> int | None:
        """The device's port, kept in the file before it opens (module docstring); ``None``: none."""
        new = self.table.port(device_id) is None
        port = self.table.assign(device_id)
        if port is None:
            self._no_port(device_id)
            return None
        if new and self.store is not None:
            try:
                self.store.save(self.table.assignments())
            except ConfigurationError as exc:  # not kept: another id could get the port after a restart
                self.table.release(device_id)
                log.error("device %s: its port is not open: %s", device_id, exc)
                return None
        return port

    def _no_port(self, device_id: str) -> None:
        log.warning("device %s: no port left in %d-%d (every one is assigned to another device; "
                    "iec62676 cloud ports release frees one)", device_id, self.table.ports.start,
                    self.table.ports.stop - 1)

    def _listen(self, device_id: str, port: int) -> None:
        """Open the device's listener on ``port`` (one error line when the port cannot be bound)."""
        try:
            sock = bind_listen(self.host, port)
        except ConfigurationError as exc:
            log.error("device %s: its port is not open: %s", device_id, exc)
            return
        starting = asyncio.ensure_future(start_http_server(self._handler, sock, settings=PORT_SETTINGS))
        starting.add_done_callback(lambda task: self._started(device_id, task))
        self._open[device_id] = _Listener(port, sock, starting)
        self._at[port] = device_id
        log.info("device %s on port %d", device_id, port)

    def _started(self, device_id: str, task: asyncio.Task[HttpServer]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("device %s: its port is not served: %s", device_id, task.exception())
            listener = self._open.get(device_id)
            if listener is not None and listener.starting is task:
                self._close(device_id)

    def _expire(self, device_id: str) -> None:
        listener = self._open.get(device_id)
        if listener is not None:
            listener.expiry = None
        if not self._present(device_id):
            self._close(device_id)

    def _close(self, device_id: str) -> None:
        listener = self._open.pop(device_id, None)
        if listener is None:
            return
        del self._at[listener.port]
        task = listener.close()
        if task is not None:
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
