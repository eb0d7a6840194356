"""Test scaffolding: certificates made at test time, our cloud and device running on loopback in
background threads, bounded waits (TEST-1, UPL-1, UPL-13, GEN-3).

The parts behind the pytest fixtures of :mod:`.plugin` and of the library's
own test suite, usable without pytest too:

* :func:`wait_until` — poll a condition with a deadline;
* :class:`UplinkPki` — a CA, the cloud's server certificate and device
  certificates (objects, or files with :meth:`UplinkPki.device_files`);
* :class:`RunningCloud` — ``run_cloud`` on loopback (TLS listener, mTLS, the
  HTTP proxy unless ``proxy=False``; any other :class:`CloudOptions` field
  passes through, e.g. ``device_domain``), with ``request()``, ``transport()``
  and the listener's ``loop`` for clients of its own;
* :func:`seed_device` — a device store with the administrator and, given the
  PKI, a client certificate, a trust policy and uplinks;
* :class:`RunningDevice` — ``run_device`` on loopback (``listen=False``: the
  uplink agent alone, no direct address).

Each runtime runs on its own event loop in a
:class:`~iec62676_2_33.runtime.background.BackgroundService` thread, so test
code stays synchronous; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import pki
from ..errors import Iec62676Error
from ..runtime.agent import AgentSettings
from ..runtime.background import BackgroundService
from ..runtime.cloud import CloudListener, DeviceInfo, HttpResponse, ListenerSettings
from ..runtime.cloud_server import CloudOptions, run_cloud
from ..runtime.device import run_device
from ..store import DeviceStore
from ..uplinkconfig import UplinkConfiguration

T = TypeVar("T")

#: The administrator every running device gets.
ADMIN = ("admin", "admin-pw")
#: Device timers for tests: reconnection within half a second (UPL-9), so restarts cost little.
FAST = AgentSettings(backoff_first=(0.05, 0.3), backoff_cap=0.5, stable_after=0.5)


def wait_until(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition") -> T:
    """Poll ``condition`` every ``interval`` seconds until it is truthy and return its value;
    :class:`Iec62676Error` naming ``what`` (and the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Iec62676Error(f"timed out after {timeout:g} s waiting for {what} (last: {repr(value)[:200]})")
        time.sleep(interval)


class UplinkPki:
    """A CA (``ca``, given or made), the cloud's server certificate (localhost, 127.0.0.1: ``cert``, ``key``) and
    device certificates, written to ``folder`` (kept as ``dir``; ``ca_file`` is the CA's certificate there)."""

    def __init__(self, folder: Path, ca: pki.CertKey | None = None) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = ca or pki.make_ca("iec62676 test CA")
        self.ca_file, _ = self.ca.write(folder, "ca")
        self.server = pki.make_leaf(self.ca, "cloud", kind="server", sans=["localhost", "127.0.0.1"])
        self.cert, self.key = self.server.write(folder, "cloud")

    def device(self, cn: str) -> pki.CertKey:
        """A client certificate with CN ``cn`` (the cloud's device identity, UPL-13)."""
        return pki.make_leaf(self.ca, cn, kind="client")

    def device_files(self, cn: str) -> tuple[Path, Path]:
        """A client certificate with CN ``cn`` written to ``dir``: (certificate file, key file)."""
        return self.device(cn).write(self.dir, cn)


class RunningCloud:
    """``run_cloud`` (TLS listener, mTLS with the PKI's CA or ``client_cas``, the HTTP proxy unless ``proxy`` is
    false) on loopback in a background thread; ``options`` are further :class:`CloudOptions` fields."""

    def __init__(self, certs: UplinkPki, *, port: int = 0, settings: ListenerSettings | None = None,
                 client_cas: Sequence[Path] | None = None, proxy: bool = True, **options: Any) -> None:
        self.listener: CloudListener | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        cloud_options = CloudOptions(listen=f"127.0.0.1:{port}", cert=certs.cert, key=certs.key,
                                     client_cas=list(client_cas or [certs.ca_file]),
                                     proxy="127.0.0.1:0" if proxy else None, **options)

        def ready(cloud: CloudListener) -> None:
            self.listener = cloud
            self.loop = asyncio.get_running_loop()

        self.service = BackgroundService(
            lambda stop, announce: run_cloud(cloud_options, stop, announce, settings=settings, ready=ready),
            name="cloud").start()
        messages = self.service.messages
        self.port = int(re.search(r":(\d+)/", messages[0]).group(1))  # type: ignore[union-attr]
        self.proxy_url: str | None = None
        if proxy:
            found = wait_until(lambda: next((m for m in list(messages) if re.search(r"http://\S+/devices", m)), None),
                               15, what="the cloud's proxy announcement")
            self.proxy_url = re.search(r"(http://\S+)/devices", str(found)).group(1)  # type: ignore[union-attr]

    def uplink_url(self, path: str = "/uplink") -> str:
        return f"https://localhost:{self.port}{path}"

    @property
    def cloud(self) -> CloudListener:
        assert self.listener is not None
        return self.listener

    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.cloud.devices()]

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run a coroutine function on the cloud's loop (bounded)."""
        return self.service.call(fn, timeout)

    def devices(self) -> list[DeviceInfo]:
        return self.cloud.devices()

    def wait_for(self, device_id: str, timeout: float = 15.0) -> DeviceInfo:
        info: DeviceInfo = self.call(lambda: self.cloud.wait_for(device_id, timeout=timeout), timeout + 5)
        return info

    def request(self, device_id: str, method: str, path: str, headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"", timeout: float = 30.0) -> HttpResponse:
        """Call the device over its uplink (UPL-16)."""
        response: HttpResponse = self.call(
            lambda: self.cloud.request(device_id, method, path, headers, body, timeout=timeout), timeout + 5)
        return response

    def transport(self, device_id: str, timeout: float = 30.0) -> Any:
        """A synchronous zeep transport reaching ``device_id`` through its uplink (GEN-2)."""
        from ..runtime.zeep_transport import UplinkTransport

        return UplinkTransport(self.cloud, device_id, self.service.loop, timeout=timeout)

    def stop(self) -> None:
        self.service.stop()


def seed_device(data: Path, certs: UplinkPki | None = None, cn: str = "device-1",
                uplinks: Sequence[tuple[str, Sequence[str]]] = (), *, anchors: Sequence[bytes] | None = None,
                client: pki.CertKey | None = None) -> None:
    """A device store with the administrator and, with ``certs``, a client certificate (``cert``: ``client``, or
    one for ``cn``), a trust policy (``policy``: ``anchors``, default the PKI's CA) and the given
    (RemoteAddress, UserLevel) uplinks."""
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        if certs is None:
            return
        leaf = client or certs.device(cn)
        store.put_certificate("cert", leaf.cert_pem(), leaf.key_pem())
        store.put_policy("policy", list(anchors) if anchors is not None else [certs.ca.cert_pem()])
        for address, levels in uplinks:
            store.put_uplink(UplinkConfiguration(remote_address=address, user_level=tuple(levels),
                                                 certificate_id="cert", cert_path_validation_policy_id="policy"),
                             max_uplinks=8)


class RunningDevice:
    """``run_device`` (direct HTTP and the uplink agent) on loopback in a background thread; with ``listen``
    false the uplink agent alone (``url`` and ``device_service`` are then None)."""

    def __init__(self, data: Path, *, settings: AgentSettings | None = FAST, listen: bool = True) -> None:
        self.data = data

        async def serve(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
            await run_device(data, "127.0.0.1:0" if listen else None, stop, announce, settings=settings)

        self.service = BackgroundService(serve, name=f"device {data.name}").start()
        self.url: str | None = None
        self.device_service: str | None = None
        if listen:
            self.url = re.search(r"(http://\S+)", self.service.messages[0]).group(1)  # type: ignore[union-attr]
            self.device_service = self.url.rsplit("/onvif/", 1)[0] + "/onvif/device_service"
        self.username, self.password = ADMIN

    def stop(self) -> None:
        self.service.stop()


class Uplinked:
    """A device connected to a cloud: ``device``, ``cloud``, ``device_id``."""

    def __init__(self, device: RunningDevice, cloud: RunningCloud, device_id: str) -> None:
        self.device = device
        self.cloud = cloud
        self.device_id = device_id

    def request(self, method: str, path: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                timeout: float = 30.0) -> HttpResponse:
        return self.cloud.request(self.device_id, method, path, headers, body, timeout)

    def transport(self, timeout: float = 30.0) -> Any:
        return self.cloud.transport(self.device_id, timeout)
