"""Shared fixtures: the network is forbidden except loopback (GEN-3 tests dial loopback only)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real):  # type: ignore[no-untyped-def]
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise OSError(f"tests may not reach the network: {address!r}")
        return real(self, address)

    return connect


_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_local((name, 0)):
        raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", _getaddrinfo)


# -- a running device (direct HTTP access) ------------------------------------
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iec62676_2_33 import pki
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.device import run_device
from iec62676_2_33.store import DeviceStore

ADMIN = ("admin", "admin-pw")
OPERATOR = ("operator", "operator-pw")
USER = ("viewer", "viewer-pw")


@dataclass
class RunningDevice:
    data: Path
    url: str
    ca: pki.CertKey

    @property
    def base(self) -> str:
        return self.url.rsplit("/onvif/", 1)[0]


def seed_device(data: Path) -> pki.CertKey:
    """Users of every level, one keystore certificate (cert-1) and one policy (policy-1)."""
    ca = pki.make_ca("test CA")
    leaf = pki.make_leaf(ca, "device-1", kind="client")
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        store.put_user(*OPERATOR, "Operator")
        store.put_user(*USER, "User")
        store.put_certificate("cert-1", leaf.cert_pem(), leaf.key_pem())
        store.put_policy("policy-1", [ca.cert_pem()])
    return ca


@pytest.fixture
def device(tmp_path: Path) -> Iterator[RunningDevice]:
    data = tmp_path / "device"
    ca = seed_device(data)
    # The configuration service alone: its tests store addresses nobody should dial.
    service = BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce, uplinks=False),
                                name="device").start()
    try:
        match = re.search(r"(http://\S+)", service.messages[0])
        assert match, service.messages
        yield RunningDevice(data=data, url=match.group(1), ca=ca)
    finally:
        service.stop()
