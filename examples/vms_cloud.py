"""What VMS code does with the library, on one machine: ``python examples/vms_cloud.py``.

1. accept devices (``serve_cloud``), 2. list them, 3. call a device with zeep
over its uplink, 4. stream devices coming and going, 5. shut down. A camera is
simulated by a device started from a temporary folder (``camera()``), so the
script is complete on its own.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import zeep
from zeep.proxy import AsyncServiceProxy

from iec62676_2_33 import DeviceStore, UplinkConfiguration, pki, serve_cloud, serve_device
from iec62676_2_33.schemas import wsdl_path

DEVICE_ID = "camera-7"
DEVICE_BINDING = "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding"


async def vms(certs: Path, camera_data: Path) -> None:
    # 1. Accept devices: TLS with the cloud's certificate; devices show a client certificate of the CA.
    async with serve_cloud((certs / "cloud.pem", certs / "cloud.key"), client_cas=[certs / "ca.pem"]) as cloud:
        print(f"cloud listening on {cloud.url}")

        # 4. Stream devices coming and going (runs beside everything else).
        left = asyncio.Event()

        async def watch() -> None:
            async for event in cloud.listener.events():
                print(f"event: {event.device.device_id} {event.kind}")
                if event.kind == "disconnected":
                    left.set()

        watcher = asyncio.create_task(watch())
        async with camera(camera_data, certs, cloud.url):
            await cloud.listener.wait_for(DEVICE_ID, timeout=30)

            # 2. List the connected devices.
            for info in cloud.listener.devices():
                print(f"connected: {info.device_id} ({info.auth_mode})")

            # 3. Call the device with zeep: the device's WSDL, requests carried by the uplink.
            client = zeep.AsyncClient(str(wsdl_path("devicemgmt")), transport=cloud.transport(DEVICE_ID))
            service = AsyncServiceProxy(client, client.wsdl.bindings[DEVICE_BINDING],
                                        address="http://device/onvif/device_service")
            answer = await service.GetDeviceInformation()
            print(f"device information: {answer.Manufacturer} {answer.Model}")
        await asyncio.wait_for(left.wait(), 30)
        watcher.cancel()
    # 5. Shut down: leaving the block closed the listener and every uplink.
    print("cloud stopped")


@asynccontextmanager
async def camera(data: Path, certs: Path, cloud_url: str) -> AsyncIterator[None]:
    """A device with one uplink to the cloud (what ``iec62676 device …`` commands set up)."""
    with DeviceStore(data) as store:
        store.put_certificate("device-cert", (certs / "device.pem").read_bytes(), (certs / "device.key").read_bytes())
        store.put_policy("cloud-ca", [(certs / "ca.pem").read_bytes()])
    async with serve_device(data, listen=None) as device:
        device.set_uplink(UplinkConfiguration(remote_address=cloud_url, user_level=("Administrator",),
                                              certificate_id="device-cert", cert_path_validation_policy_id="cloud-ca"))
        yield


def make_certificates(folder: Path) -> None:
    """A CA, the cloud's server certificate (localhost) and the camera's client certificate."""
    ca = pki.make_ca("example CA")
    ca.write(folder, "ca")
    pki.make_leaf(ca, "localhost", kind="server", sans=["DNS:localhost", "IP:127.0.0.1"]).write(folder, "cloud")
    pki.make_leaf(ca, DEVICE_ID, kind="client").write(folder, "device")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        certs.mkdir()
        make_certificates(certs)
        await vms(certs, Path(tmp) / "camera")


if __name__ == "__main__":
    asyncio.run(main())
