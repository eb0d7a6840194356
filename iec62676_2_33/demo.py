"""Layer 7: ``iec62676 demo`` — an end-to-end run on loopback that a newcomer can read.

It builds a throw-away device (users, PKI, keystore, trust policy), serves it,
and drives its uplink configuration service with the zeep client: the
capabilities, a SetUplink, GetUplinks, the faults a vendor must handle, and
access control. Every step prints what it shows; the run exits 0 only when
every step behaved as the standard says.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import pki
from .client import UplinkClient
from .errors import Iec62676Error
from .runtime.background import BackgroundService
from .runtime.device import run_device
from .soap.fault import SoapFault
from .store import DeviceStore
from .uplinkconfig import UplinkConfiguration

Print = Callable[[str], None]


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


def _prepare_device(data: Path, out: Print) -> None:
    ca = pki.make_ca("demo CA")
    device_cert = pki.make_leaf(ca, "camera-0001", kind="client")
    with DeviceStore(data) as store:
        store.put_user("admin", "admin-password", "Administrator")
        store.put_user("viewer", "viewer-password", "User")
        store.put_certificate("camera-0001", device_cert.cert_pem(), device_cert.key_pem())
        store.put_policy("cloud-ca", [ca.cert_pem()])
    out("  device store: users admin/viewer, certificate camera-0001, policy cloud-ca")


def run(out: Print = print) -> int:
    """Run the demo; 0 when every step behaved as expected."""
    with tempfile.TemporaryDirectory(prefix="iec62676-demo-") as tmp:
        data = Path(tmp) / "device"
        out("1. A device with its store")
        _prepare_device(data, out)
        service = BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce),
                                    name="device").start()
        try:
            match = re.search(r"(http://\S+)", service.messages[0])
            if match is None:
                raise DemoFailure(f"unexpected start-up message {service.messages[0]!r}")
            url = match.group(1)
            out(f"  {service.messages[0]}")
            admin = UplinkClient(url, username="admin", password="admin-password")
            out("2. GetServiceCapabilities (PRE_AUTH)")
            caps = admin.get_service_capabilities()
            out(f"    MaxUplinks={caps.max_uplinks} Protocols={' '.join(caps.protocols)}"
                f" AuthorizationModes={' '.join(caps.authorization_modes)}")
            out("3. SetUplink with mTLS certificate camera-0001, then GetUplinks")
            admin.set_uplink(UplinkConfiguration(
                remote_address="https://cloud.example.com:8443/uplink", user_level=("Operator",),
                certificate_id="camera-0001", cert_path_validation_policy_id="cloud-ca",
                status="Connected"))
            for cfg in admin.get_uplinks():
                out(f"    {cfg.remote_address} cert={cfg.certificate_id} level={' '.join(cfg.user_level)}"
                    f" status={cfg.status}")
            out("4. Faults a client must handle (CFG-3, CFG-4)")
            _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
                remote_address="https://cloud.example.com/x", user_level=("User",), certificate_id="nope")),
                ("InvalidArgVal", "CertificateID"), out)
            _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
                remote_address="ftp://cloud.example.com/x", user_level=("User",), certificate_id="camera-0001")),
                ("InvalidArgs", "ProtocolNotSupported"), out)
            _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
                remote_address="https://cloud.example.com/x", user_level=("User",))),
                ("InvalidArgs", "MissingAuthentication"), out)
            _expect_fault(lambda: admin.delete_uplink("https://unknown.example.com/"),
                          ("InvalidArgVal", "Address"), out)
            out("5. Access control (SEC-1): a User may read but not write")
            viewer = UplinkClient(url, username="viewer", password="viewer-password")
            out(f"    viewer sees {len(viewer.get_uplinks())} uplink(s)")
            _expect_fault(lambda: viewer.delete_uplink("https://cloud.example.com:8443/uplink"),
                          ("NotAuthorized",), out)
            admin.delete_uplink("https://cloud.example.com:8443/uplink")
            out(f"6. DeleteUplink: {len(admin.get_uplinks())} uplink(s) left")
        finally:
            service.stop()
    out("demo finished: every step behaved as the standard says")
    return 0
