"""PROV-4, SEC-1, SEC-4, UPL-12: user roles — defined over the device service, held by device users, named in an
uplink's UserLevel, and what they grant, through the tunnel.

ONVIF Core (Security › User roles; Device management › GetUserRoles, SetUserRole,
DeleteUserRole) defines a role as a name and the functions (``prefix:Operation``)
it permits, three fixed ``onvif:`` roles equivalent to the user levels, and the
faults each operation gives; the Uplink specification lets UserLevel list roles
when the device reports MaxUserRoles. Raw SOAP 1.2 envelopes go to real devices
on loopback; answers are validated against the authored ``xsd/device.xsd``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ADMIN, USER, RunningDevice
from helpers import fault_chain, one_line_error, run
from lxml import etree
from served_app import soap_call

from iec62676_2_33 import schemas
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TT, TUP
from iec62676_2_33.security.access import AccessClass, is_allowed
from iec62676_2_33.security.roles import MAX_USER_ROLES, function_name
from iec62676_2_33.services.security import TAS
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningCloud, UplinkPki, seed_device
from iec62676_2_33.testing.harness import RunningDevice as Device

NS = {"env": SOAP_ENV, "tds": TDS, "tt": TT, "tas": TAS, "tup": TUP}
READER = ("<tds:SetUserRole><tds:UserRole><tt:Name>keystore-reader</tt:Name>"
          "<tt:Functions>tas:GetAllCertificates tds:GetUserRoles</tt:Functions></tds:UserRole></tds:SetUserRole>")


def post(url: str, body: str, user: tuple[str, str] | None = ADMIN) -> tuple[int, etree._Element]:
    return soap_call(url, body, NS, user=user)


def answer(status_root: tuple[int, etree._Element], xsd: str = "device") -> etree._Element:
    status, root = status_root
    assert status == 200, etree.tostring(root)
    response = root.find("env:Body", NS)[0]
    schemas.validate(response, xsd)
    return response


def roles_of(response: etree._Element) -> dict[str, str]:
    return {r.findtext("tt:Name", namespaces=NS): r.findtext("tt:Functions", namespaces=NS) or ""
            for r in response.findall("tds:UserRole", NS)}


def test_user_role_operations_and_their_faults_prov_4(device: RunningDevice) -> None:
    """PROV-4: MaxUserRoles is reported; GetUserRoles lists the predefined onvif: roles (no functions) and the
    custom ones; SetUserRole creates and overwrites; the faults are Core's (Device management › User roles):
    OperationProhibited/OnvifPrefix for onvif: names, Action/FunctionNotImplemented for an operation the
    device lacks, Action/TooManyUserRoles beyond MaxUserRoles (predefined roles counted),
    InvalidArgVal/InvalidUserRole for an unknown role; a User may read roles but not set them."""
    url = device.base + "/onvif/device_service"
    caps = answer(post(url, "<tds:GetServiceCapabilities/>", user=None)).find("tds:Capabilities/tds:Security", NS)
    assert caps.get("MaxUserRoles") == str(MAX_USER_ROLES)
    assert roles_of(answer(post(url, "<tds:GetUserRoles/>"))) == {
        "onvif:Administrator": "", "onvif:Operator": "", "onvif:User": ""}
    answer(post(url, READER))
    answer(post(url, READER.replace(" tds:GetUserRoles", "")))  # overwritten, not added
    assert roles_of(answer(post(url, "<tds:GetUserRoles><tds:UserRole>keystore-reader</tds:UserRole>"
                                     "</tds:GetUserRoles>"))) == {"keystore-reader": "tas:GetAllCertificates"}
    refusals = {
        READER.replace("keystore-reader", "onvif:Reader"): ["env:Sender", "ter:OperationProhibited", "ter:OnvifPrefix"],
        READER.replace("tas:GetAllCertificates", "tas:CreateRSAKeyPair tptz:Teleport"):
            ["env:Receiver", "ter:Action", "ter:FunctionNotImplemented"],
        READER.replace("keystore-reader", "Administrator"): ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"],
        "<tds:GetUserRoles><tds:UserRole>nobody</tds:UserRole></tds:GetUserRoles>":
            ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"],
        "<tds:DeleteUserRole><tds:UserRole>nobody</tds:UserRole></tds:DeleteUserRole>":
            ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"],
        "<tds:DeleteUserRole><tds:UserRole>onvif:User</tds:UserRole></tds:DeleteUserRole>":
            ["env:Sender", "ter:OperationProhibited", "ter:OnvifPrefix"],
    }
    for body, chain in refusals.items():
        status, root = post(url, body)
        assert status in (400, 500) and fault_chain(root) == chain, body
    for i in range(MAX_USER_ROLES - 3 - 1):  # keystore-reader and the predefined three are held already
        answer(post(url, READER.replace("keystore-reader", f"role-{i}")))
    status, root = post(url, READER.replace("keystore-reader", "one-too-many"))
    assert fault_chain(root) == ["env:Receiver", "ter:Action", "ter:TooManyUserRoles"]
    assert len(roles_of(answer(post(url, "<tds:GetUserRoles/>", user=USER)))) == MAX_USER_ROLES
    status, root = post(url, READER, user=USER)
    assert fault_chain(root) == ["env:Sender", "ter:NotAuthorized"]
    answer(post(url, "<tds:DeleteUserRole><tds:UserRole>role-0</tds:UserRole></tds:DeleteUserRole>"))
    assert len(roles_of(answer(post(url, "<tds:GetUserRoles/>")))) == MAX_USER_ROLES - 1


def test_device_user_holds_roles_prov_4(device: RunningDevice) -> None:
    """PROV-4, SEC-1: a User-level user holding the custom role may call the function it lists although the
    level alone would not (GetAllCertificates is READ_SYSTEM_SECRET), and nothing else it needs higher rights
    for; a user holding onvif:Administrator is an Administrator."""
    url = device.base + "/onvif/device_service"
    security = device.base + "/onvif/security_service"
    answer(post(url, READER))
    assert fault_chain(post(security, "<tas:GetAllCertificates/>", user=USER)[1])[1] == "ter:NotAuthorized"
    with DeviceStore(device.data) as store:
        store.set_roles_of_user(USER[0], ["keystore-reader"])
    answer(post(security, "<tas:GetAllCertificates/>", user=USER), "security")
    assert fault_chain(post(security, "<tas:GetAllKeys/>", user=USER)[1])[1] == "ter:NotAuthorized"
    with DeviceStore(device.data) as store:
        store.set_roles_of_user(USER[0], ["onvif:Administrator"])
        assert store.roles_of_user(USER[0]) == ("onvif:Administrator",)
    answer(post(security, "<tas:GetAllKeys/>", user=USER), "security")
    answer(post(url, READER.replace("keystore-reader", "by-a-user"), user=USER))


def test_no_one_hands_out_more_rights_than_it_holds_prov_4_sec_1(device: RunningDevice) -> None:
    """PROV-4, SEC-1: a User-level account holding a role that lists SetUplink and SetUserRole is no
    Administrator: SetUplink with UserLevel Administrator, or naming a role with functions it lacks, and a
    SetUserRole that adds such a function (to any role, its own too) are Sender/NotAuthorized, and nothing is
    stored; within its own rights it may do both. An Administrator may hand out anything. (Rights are counted
    in the functions the device serves.)"""
    url = device.base + "/onvif/device_service"
    uplink = device.base + "/onvif/uplink_service"
    editor = ("<tds:SetUserRole><tds:UserRole><tt:Name>uplink-editor</tt:Name><tt:Functions>tup:SetUplink "
              "tup:GetUplinks tds:SetUserRole</tt:Functions></tds:UserRole></tds:SetUserRole>")
    answer(post(url, editor))
    answer(post(url, READER))
    with DeviceStore(device.data) as store:
        store.set_roles_of_user(USER[0], ["uplink-editor"])
        store.put_certificate("cert", b"CERT", b"KEY")

    def set_uplink(level: str, user: tuple[str, str]) -> tuple[int, etree._Element]:
        address = f"https://cloud.example/{level.replace(' ', '-')}"
        return post(uplink, f"<tup:SetUplink><tup:Configuration><tup:RemoteAddress>{address}"
                            f"</tup:RemoteAddress><tup:CertificateID>cert</tup:CertificateID>"
                            f"<tup:UserLevel>{level}</tup:UserLevel></tup:Configuration>"
                            "</tup:SetUplink>", user=user)

    for level in ("Administrator", "keystore-reader", "User keystore-reader"):
        status, root = set_uplink(level, USER)
        assert (status, fault_chain(root)[:2]) == (400, ["env:Sender", "ter:NotAuthorized"]), level
        assert "which this account may not call itself" in root.findtext(".//env:Text", namespaces=NS)
    escalate = editor.replace("tds:SetUserRole</tt:Functions>", "tds:SetUserRole tas:GetAllKeys</tt:Functions>")
    status, root = post(url, escalate, user=USER)
    assert (status, fault_chain(root)[:2]) == (400, ["env:Sender", "ter:NotAuthorized"])
    assert "tas:GetAllKeys" in root.findtext(".//env:Text", namespaces=NS)
    with DeviceStore(device.data) as store:
        assert store.list_uplinks() == []
        assert dict(store.list_user_roles())["uplink-editor"] == ("tup:SetUplink", "tup:GetUplinks",
                                                                 "tds:SetUserRole")
    answer(set_uplink("User", USER), "uplink")  # its own level, and a role within its rights:
    answer(post(url, READER.replace("keystore-reader", "lister").replace(
        "tas:GetAllCertificates tds:GetUserRoles", "tup:GetUplinks"), user=USER))
    answer(set_uplink("Administrator", ADMIN), "uplink")
    answer(post(url, escalate))


def test_uplink_user_level_names_roles_through_the_tunnel_prov_4_sec_4(tmp_path: Path) -> None:
    """PROV-4, SEC-4, UPL-12: SetUplink takes UserLevel "onvif:User keystore-reader" (roles the device
    holds; an unknown name is refused); a cloud client calling through the tunnel without credentials gets what
    those roles grant — onvif:User's READ_SYSTEM operations and the custom role's GetAllCertificates — and
    nothing more (GetAllKeys, SetUplink)."""
    certs = UplinkPki(tmp_path / "pki")
    seed_device(tmp_path / "dev", certs, "cam-roles")
    cloud = RunningCloud(certs)
    device = Device(tmp_path / "dev")
    try:
        assert device.url is not None and cloud.proxy_url is not None
        base = device.url.rsplit("/onvif/", 1)[0]
        answer(post(base + "/onvif/device_service", READER))

        def set_uplink(levels: str) -> tuple[int, etree._Element]:
            return post(base + "/onvif/uplink_service", (
                f"<tup:SetUplink><tup:Configuration><tup:RemoteAddress>{cloud.uplink_url()}</tup:RemoteAddress>"
                f"<tup:CertificateID>cert</tup:CertificateID><tup:UserLevel>{levels}</tup:UserLevel>"
                "<tup:CertPathValidationPolicyID>policy</tup:CertPathValidationPolicyID>"
                "</tup:Configuration></tup:SetUplink>"))

        assert fault_chain(set_uplink("onvif:User no-such-role")[1]) == ["env:Sender", "ter:InvalidArgVal"]
        answer(set_uplink("onvif:User keystore-reader"), "uplink")
        cloud.wait_for("cam-roles")
        tunnel = f"{cloud.proxy_url}/devices/cam-roles/onvif"
        info = answer(post(f"{tunnel}/device_service", "<tds:GetDeviceInformation/>", user=None))
        assert info.findtext("tds:SerialNumber", namespaces=NS)
        certificates = answer(post(f"{tunnel}/security_service", "<tas:GetAllCertificates/>", user=None), "security")
        assert len(certificates.findall("tas:Certificate", NS)) == 2  # the device's and the trust anchor
        delete = "<tup:DeleteUplink><tup:RemoteAddress>x</tup:RemoteAddress></tup:DeleteUplink>"
        for path, body in (("security_service", "<tas:GetAllKeys/>"), ("uplink_service", delete)):
            _, root = post(f"{tunnel}/{path}", body, user=None)
            assert fault_chain(root) == ["env:Sender", "ter:NotAuthorized"], body
    finally:
        device.stop()
        cloud.stop()


def test_predefined_roles_count_as_their_levels_everywhere_prov_4() -> None:
    """PROV-4 (Core, User roles: "functionally equivalent"): every level check — also the RTSP relay's and the
    snapshot relay's READ_MEDIA — takes onvif:Administrator/Operator/User as the level; functions are written
    with the services' conventional prefixes."""
    assert is_allowed(["onvif:Operator"], AccessClass.ACTUATE)
    assert is_allowed(["onvif:User"], AccessClass.READ_MEDIA)
    assert not is_allowed(["onvif:User"], AccessClass.ACTUATE)
    assert not is_allowed(["onvif:Guest"], AccessClass.PRE_AUTH)
    assert function_name(TDS, "GetScopes") == "tds:GetScopes"
    assert function_name(TAS, "GetAllKeys") == "tas:GetAllKeys"
    assert function_name("urn:example:other", "Op") is None


def test_cli_user_add_with_roles_prov_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PROV-4: ``device user add --role`` gives a user roles the device holds (in the same change as the user),
    ``user list`` shows them; a role the device does not hold is a one-line error and stores nothing."""
    data = str(tmp_path / "d")
    base = ["device", "user", "add", "--data", data, "--name", "ops", "--password", "pw", "--level", "User"]
    code, _, err = run(capsys, *base, "--role", "no-such-role")
    assert code == 2 and "not a user role of this device" in one_line_error(err)
    with DeviceStore(data) as store:
        assert store.list_users() == []
    code, out, _ = run(capsys, *base, "--role", "onvif:Operator")
    assert code == 0 and "onvif:Operator" in out
    code, out, _ = run(capsys, "device", "user", "list", "--data", data)
    assert out.splitlines() == ["ops\tUser\troles=onvif:Operator"]
    with DeviceStore(data) as store:
        assert store.roles_of_user("ops") == ("onvif:Operator",)
