"""Layer 7: ``iec62676 demo`` — an end-to-end run on loopback that a newcomer can read.

Part 1 drives a device's uplink configuration service directly with the zeep
client: capabilities, SetUplink, GetUplinks, the faults a vendor must handle
and access control. Part 2 is the cloud uplink: a cloud and two devices with
their own certificates; the devices dial out, the cloud calls their services
*through the uplink* with the same zeep client, the HTTP proxy lists them,
then the cloud is killed and restarted and the devices come back on their
own. Every step prints what it shows; the run exits 0 only when every step
behaved as the standard says.
"""

from __future__ import annotations

import json
import re
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import pki
from .client import UplinkClient
from .errors import Iec62676Error
from .runtime.background import BackgroundService
from .runtime.cloud import CloudListener
from .runtime.cloud_server import CloudOptions, run_cloud
from .runtime.device import run_device
from .runtime.zeep_transport import UplinkTransport
from .soap.fault import SoapFault
from .store import DeviceStore
from .uplinkconfig import UplinkConfiguration

Print = Callable[[str], None]

DEVICES = ("camera-0001", "camera-0002")
ADMIN = ("admin", "admin-password")
VIEWER = ("viewer", "viewer-password")


class DemoFailure(Iec62676Error):
    """A demo step did not behave as expected."""


def _expect_fault(call: Callable[[], object], subcodes: tuple[str, ...], out: Print) -> None:
    try:
        call()
    except SoapFault as fault:
        if tuple(fault.subcodes) != subcodes:
            raise DemoFailure(f"expected {subcodes}, got {fault}") from None
        out(f"    fault as expected: {fault}")
        return
    raise DemoFailure(f"expected the fault {'/'.join(subcodes)}, the call succeeded")


def _url(messages: list[str], pattern: str) -> str:
    for message in messages:
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    raise DemoFailure(f"no address matching {pattern!r} in {messages!r}")


@dataclass
class Material:
    ca: pki.CertKey
    folder: Path


def _pki(folder: Path) -> Material:
    ca = pki.make_ca("demo CA")
    ca.write(folder, "ca")
    pki.make_leaf(ca, "cloud.localhost", kind="server", sans=["localhost", "127.0.0.1"]).write(folder, "cloud")
    return Material(ca=ca, folder=folder)


def _seed_device(data: Path, name: str, material: Material, cloud_port: int | None) -> None:
    cert = pki.make_leaf(material.ca, name, kind="client")
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        store.put_user(*VIEWER, "User")
        store.put_certificate(name, cert.cert_pem(), cert.key_pem())
        store.put_policy("cloud-ca", [material.ca.cert_pem()])
        if cloud_port is not None:
            store.put_uplink(UplinkConfiguration(
                remote_address=f"https://localhost:{cloud_port}/uplink", user_level=("Operator",),
                certificate_id=name, cert_path_validation_policy_id="cloud-ca"), max_uplinks=8)


def _start_device(data: Path, name: str) -> BackgroundService:
    return BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce),
                             name=name).start()


def _start_cloud(material: Material, listen: str, proxy: str) -> tuple[BackgroundService, CloudListener]:
    ready: list[CloudListener] = []
    options = CloudOptions(listen=listen, cert=material.folder / "cloud.pem", key=material.folder / "cloud.key",
                           client_cas=[material.folder / "ca.pem"], proxy=proxy)
    service = BackgroundService(lambda stop, announce: run_cloud(options, stop, announce, ready=ready.append),
                                name="cloud", ready_after=2).start()
    return service, ready[0]


def part_configuration(material: Material, tmp: Path, out: Print) -> None:
    out("Part 1 — the uplink configuration service, called directly")
    data = tmp / "standalone"
    _seed_device(data, "camera-0000", material, None)
    device = _start_device(data, "camera-0000")
    try:
        url = _url(device.messages, r"(http://\S+)")
        out(f"  {device.messages[0]}")
        admin = UplinkClient(url, username=ADMIN[0], password=ADMIN[1])
        caps = admin.get_service_capabilities()
        out(f"  GetServiceCapabilities: MaxUplinks={caps.max_uplinks} Protocols={' '.join(caps.protocols)}"
            f" AuthorizationModes={' '.join(caps.authorization_modes)}")
        remote = "https://127.0.0.1:9/uplink"
        admin.set_uplink(UplinkConfiguration(remote_address=remote, user_level=("Operator",),
                                             certificate_id="camera-0000", cert_path_validation_policy_id="cloud-ca",
                                             status="Connected"))
        for cfg in admin.get_uplinks():
            out(f"  GetUplinks: {cfg.remote_address} cert={cfg.certificate_id} level={' '.join(cfg.user_level)}"
                f" status={cfg.status} (the Status a client sends is ignored)")
        out("  Faults a client must handle (CFG-3, CFG-4):")
        _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
            remote_address="https://cloud.example.com/x", user_level=("User",), certificate_id="nope")),
            ("InvalidArgVal", "CertificateID"), out)
        _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
            remote_address="ftp://cloud.example.com/x", user_level=("User",), certificate_id="camera-0000")),
            ("InvalidArgs", "ProtocolNotSupported"), out)
        _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
            remote_address="https://cloud.example.com/x", user_level=("User",))),
            ("InvalidArgs", "MissingAuthentication"), out)
        _expect_fault(lambda: admin.delete_uplink("https://unknown.example.com/"), ("InvalidArgVal", "Address"), out)
        out("  Access control (SEC-1): a User may read but not write")
        viewer = UplinkClient(url, username=VIEWER[0], password=VIEWER[1])
        out(f"    viewer sees {len(viewer.get_uplinks())} uplink(s)")
        _expect_fault(lambda: viewer.delete_uplink(remote), ("NotAuthorized",), out)
        admin.delete_uplink(remote)
        out(f"  DeleteUplink: {len(admin.get_uplinks())} uplink(s) left")
    finally:
        device.stop()


def _show_through_uplink(cloud: CloudListener, service: BackgroundService, out: Print) -> None:
    for name in DEVICES:
        client = UplinkClient(f"http://{name}/onvif/uplink_service",
                              transport=UplinkTransport(cloud, name, service.loop))
        caps = client.get_service_capabilities()
        [cfg] = client.get_uplinks()
        out(f"  {name} via its uplink: MaxUplinks={caps.max_uplinks}, uplink {cfg.remote_address} is {cfg.status}")
        if cfg.status != "Connected":
            raise DemoFailure(f"{name} reports {cfg.status} over a live uplink")


def part_uplink(material: Material, tmp: Path, out: Print) -> None:
    out("Part 2 — the cloud uplink: devices behind NAT dial out, the cloud calls them")
    cloud, listener = _start_cloud(material, "127.0.0.1:0", "127.0.0.1:0")
    devices: list[BackgroundService] = []
    try:
        port = int(_url(cloud.messages, r"https://[^:]+:(\d+)/"))
        proxy = _url(cloud.messages, r"(http://\S+)/devices")
        out(f"  {cloud.messages[0]}")
        out(f"  {cloud.messages[1]}")
        for name in DEVICES:
            data = tmp / name
            _seed_device(data, name, material, port)
            devices.append(_start_device(data, name))
        for name in DEVICES:
            cloud.call(lambda name=name: listener.wait_for(name, timeout=30), timeout=35)
        out(f"  both devices connected: {', '.join(d.device_id for d in listener.devices())}")
        _show_through_uplink(listener, cloud, out)
        out("  UserLevel of the uplink applies (UPL-12): an Operator uplink may not write")
        operator = UplinkClient(f"http://{DEVICES[0]}/onvif/uplink_service",
                                transport=UplinkTransport(listener, DEVICES[0], cloud.loop))
        _expect_fault(lambda: operator.delete_uplink(f"https://localhost:{port}/uplink"), ("NotAuthorized",), out)
        with urllib.request.urlopen(f"{proxy}/devices", timeout=10) as response:
            listing = json.loads(response.read())
        out(f"  proxy GET /devices: {[(d['id'], d['auth_mode']) for d in listing]}")
        out("  killing the cloud …")
        cloud.stop()
        direct = UplinkClient(_url(devices[0].messages, r"(http://\S+)"), username=ADMIN[0], password=ADMIN[1])
        [cfg] = direct.get_uplinks()
        out(f"  {DEVICES[0]} (asked directly) reports {cfg.status}: {cfg.error}")
        out("  restarting the cloud on the same port …")
        cloud, listener = _start_cloud(material, f"127.0.0.1:{port}", proxy.rsplit("/", 1)[-1].replace("//", ""))
        for name in DEVICES:
            cloud.call(lambda name=name: listener.wait_for(name, timeout=60), timeout=65)
        out("  both devices came back on their own (individual ascending backoff, UPL-9)")
        _show_through_uplink(listener, cloud, out)
    finally:
        for device in devices:
            device.stop()
        cloud.stop()


def run(out: Print = print) -> int:
    """Run the demo; 0 when every step behaved as expected."""
    with tempfile.TemporaryDirectory(prefix="iec62676-demo-") as folder:
        tmp = Path(folder)
        material = _pki(tmp)
        part_configuration(material, tmp, out)
        part_uplink(material, tmp, out)
    out("demo finished: every step behaved as the standard says")
    return 0
