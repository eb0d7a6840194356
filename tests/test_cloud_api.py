"""UPL-13, UPL-16, GEN-3: the cloud API for VMS code — device identity taken from the certificate
(cn, serial or san) and the stream of connect/disconnect events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iec62676_2_33 import pki
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import CloudListener, DeviceEvent
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until


@pytest.mark.parametrize("identity", ["cn", "serial", "san"])
def test_device_identity_from_the_certificate_upl_13(tmp_path: Path, identity: str) -> None:
    """UPL-13: ``--identity cn|serial|san`` names the device by that field of its client certificate,
    and connect/disconnect arrive as events (UPL-16 API for VMS code)."""
    certs = UplinkPki(tmp_path / "pki")
    leaf = pki.make_leaf(certs.ca, "camera-7", kind="client", sans=["DNS:cam7.site.example"], serial=0x1A2B3C)
    expected = {"cn": "camera-7", "serial": "1a2b3c", "san": "cam7.site.example"}[identity]
    listeners: list[CloudListener] = []
    events: list[DeviceEvent] = []
    options = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file],
                           identity=identity)

    async def cloud_service(stop: asyncio.Event, announce) -> None:  # type: ignore[no-untyped-def]
        async def collect(listener: CloudListener) -> None:
            async for event in listener.events():
                events.append(event)

        collectors: list[asyncio.Task[None]] = []

        def ready(listener: CloudListener) -> None:
            listeners.append(listener)
            collectors.append(asyncio.get_running_loop().create_task(collect(listener)))

        try:
            await run_cloud(options, stop, announce, ready=ready)
        finally:
            for task in collectors:
                task.cancel()

    cloud = BackgroundService(cloud_service, name="cloud").start()
    try:
        port = int(cloud.messages[0].split(":")[2].split("/")[0])
        seed_device(tmp_path / "dev", certs, "camera-7", [(f"https://localhost:{port}/uplink", ("User",))],
                    client=leaf)
        device = RunningDevice(tmp_path / "dev", listen=False)
        try:
            wait_until(lambda: [e.kind for e in events] == ["connected"], what="the connected event")
            assert events[0].device.device_id == expected
            assert events[0].device.auth_mode == "mTLS"
            response = cloud.call(lambda: listeners[0].request(expected, "GET", "/onvif/uplink_service"))
            assert response.status == 405  # the device answered: SOAP endpoints take POST only
        finally:
            device.stop()
        wait_until(lambda: [e.kind for e in events] == ["connected", "disconnected"],
                   what="the disconnected event")
        assert events[1].device.device_id == expected
        assert events[1].reason
    finally:
        cloud.stop()
