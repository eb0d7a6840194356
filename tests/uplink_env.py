"""Test helpers for the uplink runtime and interop tests (GEN-3, UPL-1, UPL-13): certificates
made at test time, a cloud and devices running in background threads on loopback, and
bounded polling."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from iec62676_2_33 import pki
from iec62676_2_33.runtime.agent import AgentSettings
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import CloudListener, ListenerSettings
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.runtime.device import run_device
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import ADMIN, FAST
from iec62676_2_33.uplinkconfig import UplinkConfiguration

__all__ = ["ADMIN", "FAST", "Cloud", "Device", "Pki", "seed_device", "wait_until"]

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition") -> T:
    """Poll an observable condition until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


@dataclass
class Pki:
    """A CA, the cloud's server certificate (localhost, 127.0.0.1) and device certificates."""

    dir: Path
    ca: pki.CertKey = field(default_factory=lambda: pki.make_ca("uplink test CA"))

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.server = pki.make_leaf(self.ca, "cloud", kind="server", sans=["localhost", "127.0.0.1"])
        self.cert, self.key = self.server.write(self.dir, "cloud")
        self.ca_file, _ = self.ca.write(self.dir, "ca")

    def device(self, cn: str) -> pki.CertKey:
        return pki.make_leaf(self.ca, cn, kind="client")

    def device_files(self, cn: str) -> tuple[Path, Path]:
        return self.device(cn).write(self.dir, cn)


class Cloud:
    """``run_cloud`` (TLS listener + HTTP proxy) in a background thread."""

    def __init__(self, certs: Pki, *, port: int = 0, settings: ListenerSettings | None = None,
                 client_cas: Sequence[Path] | None = None, proxy: bool = True,
                 device_domain: str | None = None) -> None:
        self._ready = threading.Event()
        self.listener: CloudListener | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        options = CloudOptions(listen=f"127.0.0.1:{port}", cert=certs.cert, key=certs.key,
                               client_cas=list(client_cas or [certs.ca_file]),
                               proxy="127.0.0.1:0" if proxy else None, device_domain=device_domain)

        def ready(cloud: CloudListener) -> None:
            self.listener = cloud
            self.loop = asyncio.get_running_loop()
            self._ready.set()

        self.service = BackgroundService(
            lambda stop, announce: run_cloud(options, stop, announce, settings=settings, ready=ready), name="cloud")
        self.service.start()
        if not self._ready.wait(15):
            raise AssertionError(f"cloud did not get ready: {self.service.messages}")
        messages = self.service.messages
        wait_until(lambda: len(messages) >= (2 if proxy else 1), 15, what="the cloud's announcements")
        self.port = int(re.search(r":(\d+)/", self.service.messages[0]).group(1))  # type: ignore[union-attr]
        self.proxy_url = None
        if proxy:
            self.proxy_url = re.search(r"(http://\S+)/devices", self.service.messages[1]).group(1)  # type: ignore[union-attr]

    @property
    def cloud(self) -> CloudListener:
        assert self.listener is not None
        return self.listener

    def uplink_url(self, path: str = "/uplink") -> str:
        return f"https://localhost:{self.port}{path}"

    def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run a coroutine function on the cloud's loop (bounded)."""
        return self.service.call(fn, timeout)

    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.cloud.devices()]

    def wait_for(self, device_id: str, timeout: float = 15.0) -> None:
        self.call(lambda: self.cloud.wait_for(device_id, timeout=timeout), timeout + 5)

    def stop(self) -> None:
        self.service.stop()


def seed_device(data: Path, certs: Pki, cn: str, uplinks: Sequence[tuple[str, tuple[str, ...]]] = (), *,
                anchors: Sequence[bytes] | None = None, client: pki.CertKey | None = None) -> None:
    """A device store with an admin user, its certificate (``cert``), the trust policy
    (``policy``) and the given (RemoteAddress, UserLevel) uplinks."""
    leaf = client or certs.device(cn)
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        store.put_certificate("cert", leaf.cert_pem(), leaf.key_pem())
        store.put_policy("policy", list(anchors) if anchors is not None else [certs.ca.cert_pem()])
        for address, level in uplinks:
            store.put_uplink(UplinkConfiguration(remote_address=address, user_level=level, certificate_id="cert",
                                                 cert_path_validation_policy_id="policy"), max_uplinks=8)


class Device:
    """``run_device`` (direct HTTP + the uplink agent) in a background thread."""

    def __init__(self, data: Path, *, settings: AgentSettings | None = FAST, listen: bool = True) -> None:
        self.service = BackgroundService(
            lambda stop, announce: run_device(data, "127.0.0.1:0" if listen else None, stop, announce,
                                              settings=settings), name=f"device {data.name}")
        self.service.start()
        self.url = None
        if listen:
            self.url = re.search(r"(http://\S+)", self.service.messages[0]).group(1)  # type: ignore[union-attr]

    def stop(self) -> None:
        self.service.stop()
