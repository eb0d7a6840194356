"""CFG-1, CFG-3, SEC-1, SEC-4, UPL-12: an uplink whose UserLevel is Anonymous, configured and used.

tt:UserLevel lists Anonymous, and tup:Configuration's UserLevel takes tt:UserLevel values: SetUplink accepts
it, and a cloud client calling through that tunnel without credentials gets exactly the Anonymous column of
the access policy — PRE_AUTH operations answer, READ_SYSTEM ones are refused. A real device and a real cloud
(TLS with certificates made by the test) run on loopback.
"""

from __future__ import annotations

from pathlib import Path

from helpers import fault_chain
from test_security_roles import answer, post

from iec62676_2_33.testing.harness import RunningCloud, RunningDevice, UplinkPki, seed_device


def test_anonymous_uplink_gets_pre_auth_only_through_the_tunnel_cfg_3_sec_4(tmp_path: Path) -> None:
    """CFG-3, SEC-1, SEC-4, UPL-12: SetUplink with UserLevel Anonymous is stored; through the tunnel
    GetServices (PRE_AUTH) answers and GetDeviceInformation (READ_SYSTEM) is env:Sender/ter:NotAuthorized."""
    certs = UplinkPki(tmp_path / "pki")
    seed_device(tmp_path / "dev", certs, "cam-anon")
    cloud = RunningCloud(certs)
    device = RunningDevice(tmp_path / "dev")
    try:
        assert device.url is not None and cloud.proxy_url is not None
        base = device.url.rsplit("/onvif/", 1)[0]
        answer(post(base + "/onvif/uplink_service", (
            f"<tup:SetUplink><tup:Configuration><tup:RemoteAddress>{cloud.uplink_url()}</tup:RemoteAddress>"
            "<tup:CertificateID>cert</tup:CertificateID><tup:UserLevel>Anonymous</tup:UserLevel>"
            "<tup:CertPathValidationPolicyID>policy</tup:CertPathValidationPolicyID>"
            "</tup:Configuration></tup:SetUplink>")), "uplink")
        cloud.wait_for("cam-anon")
        tunnel = f"{cloud.proxy_url}/devices/cam-anon/onvif/device_service"
        services = answer(post(tunnel, "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability>"
                                       "</tds:GetServices>", user=None))
        assert len(services) >= 2
        _, root = post(tunnel, "<tds:GetDeviceInformation/>", user=None)
        assert fault_chain(root) == ["env:Sender", "ter:NotAuthorized"]
    finally:
        device.stop()
        cloud.stop()
