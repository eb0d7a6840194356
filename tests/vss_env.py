"""Test helper for hierarchies (GEN-1): devices and VSSs (``run_vss``) on loopback in background
threads, raw SOAP 1.2 calls with WS-Security, every wait bounded."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import soap_post
from lxml import etree
from served_app import body_of as answer
from served_app import envelope

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry
from iec62676_2_33.domain.resources import GeoLocation, Resource
from iec62676_2_33.namespaces import SOAP_ENV, TT
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.device import run_device
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.vss.lower import LowerStore, LowerSystem
from iec62676_2_33.vss.runtime import VssOptions, run_vss

ADMIN = ("admin", "admin-pw")
NS = {"env": SOAP_ENV, "tr2": TR2, "tt": TT}
#: A point and resources around it (the 7.8.1 example: cameras within 100 m).
HERE = GeoLocation(8.5417, 47.3769)
NEAR = GeoLocation(8.5420, 47.3770)  # ~25 m away
FAR = GeoLocation(8.5600, 47.3900)  # ~2 km away


def seed(data: Path, *, sources: tuple[MediaSource, ...] = (), resources: tuple[Resource, ...] = ()) -> None:
    """A data folder with the admin user, media sources and registry resources."""
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        for source in sources:
            store.put_media_source(source)
    if resources:
        with ResourceRegistry(data / REGISTRY_FILE) as registry:
            registry.upsert_many(resources)


def add_lower(data: Path, lower: LowerSystem) -> None:
    with LowerStore(data) as store:
        store.put(lower)


def start_device(data: Path, port: int = 0) -> tuple[BackgroundService, str]:
    """``run_device`` (direct services only); (service, base URL http://host:port)."""
    service = BackgroundService(lambda stop, announce: run_device(data, f"127.0.0.1:{port}", stop, announce,
                                                                  uplinks=False), name=f"device {data.name}").start()
    return service, _base(service.messages)


def start_vss(data: Path, options: VssOptions | None = None, *, ready_after: int = 1) -> tuple[BackgroundService, str]:
    """``run_vss`` on an ephemeral port; (service, base URL)."""
    service = BackgroundService(lambda stop, announce: run_vss(data, "127.0.0.1:0", stop, announce, options=options),
                                name=f"vss {data.name}", ready_after=ready_after).start()
    return service, _base(service.messages)


def _base(messages: list[str]) -> str:
    def found() -> str | None:
        return next((m.group(1) for text in list(messages)
                     if (m := re.search(r"device serving (http://[^/\s]+)", text))), None)

    return wait_until(found, 15, what="the announced URL")


def soap(base: str, path: str, body: str, *, user: tuple[str, str] | None = ADMIN,
         timeout: float = 30.0) -> tuple[int, etree._Element]:
    """POST one operation (``body``: its XML, namespaces tr2/tt/tev/wsnt declared); (status, envelope)."""
    return soap_post(base + path, envelope(body, NS, user), timeout=timeout)


def snapshot_uri(base: str, token: str) -> str:
    """The tr2:Uri GetSnapshotUri answers for ``token``."""
    status, root = soap(base, "/onvif/media2_service",
                        f"<tr2:GetSnapshotUri><tr2:ProfileToken>{token}</tr2:ProfileToken></tr2:GetSnapshotUri>")
    assert status == 200, root
    uri = answer(root).findtext("tr2:Uri", namespaces=NS)
    assert uri is not None
    return uri


def stream_uri(base: str, token: str, protocol: str = "RTSP") -> tuple[int, etree._Element]:
    return soap(base, "/onvif/media2_service", f"<tr2:GetStreamUri><tr2:Protocol>{protocol}</tr2:Protocol>"
                                               f"<tr2:ProfileToken>{token}</tr2:ProfileToken></tr2:GetStreamUri>")
