"""ANX-B-2, SEC-1, SEC-3: the PTZ service over the simulated head — nodes, configurations, absolute,
relative and continuous moves with the configured speed and limits (checked on GetStatus under a fake
clock), Stop, presets, faults and the ONVIF access classes.

The head's mechanics are tested sans-IO with a fake clock; the service runs in a real device
application on loopback (the same clock injected), every answer validated against the authored
``xsd/ptz.xsd``; a strict zeep client built from ``wsdl/ptz.wsdl`` drives it too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zeep
import zeep.exceptions
from conftest import ADMIN, OPERATOR, USER, seed_device
from helpers import fault_chain
from lxml import etree
from schema_check import assert_model_matches, binding_actions, token_types
from served_app import body_of, serve_app, soap_call

from iec62676_2_33 import schemas
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.ptz import Axis, PtzError, PtzNode, PtzPosition, PtzSpeed, SimulatedHead, SimulatedPtz
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TT
from iec62676_2_33.services import ptz as ptz_module
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.ptz import OPERATION_ACCESS, PTZ_PATH, TPTZ
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

NS = {"env": SOAP_ENV, "tptz": TPTZ, "tt": TT, "tds": TDS}
NODE = PtzNode(token="head-1", name="Dome", profile_token="main", pan=Axis(min=-0.5, max=0.5), max_speed=0.25)
MAIN = MediaSource(token="main", name="Main", rtsp_url="rtsp://127.0.0.1:8554/main")
FIXED = MediaSource(token="fixed", name="Fixed", rtsp_url="rtsp://127.0.0.1:8554/fixed")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def approx(value: float | None) -> Any:
    return pytest.approx(value, abs=1e-6)


# -- the simulated head, sans-IO -------------------------------------------------------------------

def test_absolute_move_travels_at_the_configured_speed_anx_b_2() -> None:
    """ANX-B-2: an absolute move covers max_speed x speed units per second per axis, reports MOVING
    until every axis arrives, then IDLE at the target."""
    head = SimulatedHead(NODE, 0.0)
    assert head.status(0.0) == head.status(100.0)  # idle at home (0, 0, zoom min)
    head.absolute_move(10.0, PtzPosition(pan=0.5, tilt=-0.25, zoom=1.0), PtzSpeed(pan=1.0, tilt=1.0, zoom=0.5))
    mid = head.status(11.0)
    assert (mid.pan, mid.tilt, mid.zoom) == (approx(0.25), approx(-0.25), approx(0.125))
    assert mid.pan_tilt_moving and mid.zoom_moving
    pan_done = head.status(12.5)  # pan arrived after 2 s, zoom needs 8 s
    assert (pan_done.pan, pan_done.pan_tilt_moving, pan_done.zoom_moving) == (approx(0.5), False, True)
    end = head.status(18.0)
    assert (end.pan, end.tilt, end.zoom, end.pan_tilt_moving, end.zoom_moving) == (
        approx(0.5), approx(-0.25), approx(1.0), False, False)


def test_limits_are_enforced_anx_b_2() -> None:
    """ANX-B-2: an absolute target outside the limits is refused (InvalidPosition) and nothing moves;
    a relative move stops at the limit; a continuous move stops at the limit."""
    head = SimulatedHead(NODE, 0.0)
    with pytest.raises(PtzError) as info:
        head.absolute_move(0.0, PtzPosition(pan=0.75))
    assert info.value.subcodes == ("InvalidArgVal", "InvalidPosition")
    assert head.status(5.0).pan == 0.0
    head.relative_move(0.0, PtzPosition(pan=1.0))
    assert head.status(1.0).pan == approx(0.25)
    assert (head.status(60.0).pan, head.status(60.0).pan_tilt_moving) == (approx(0.5), False)
    head.continuous_move(60.0, PtzSpeed(pan=-1.0, tilt=0.5), timeout=100.0)
    assert (head.status(62.0).pan, head.status(62.0).tilt) == (approx(0.0), approx(0.25))
    after = head.status(70.0)  # pan hit -0.5 after 4 s, tilt 1.0 after 8 s
    assert (after.pan, after.tilt, after.pan_tilt_moving) == (approx(-0.5), approx(1.0), False)


def test_continuous_move_timeout_and_stop_anx_b_2() -> None:
    """ANX-B-2: a continuous move ends at its timeout (or the node's default); Stop freezes the named
    axes where they are."""
    head = SimulatedHead(NODE, 0.0)
    head.continuous_move(0.0, PtzSpeed(pan=0.4, zoom=1.0), timeout=1.0)
    assert (head.status(0.5).pan, head.status(0.5).zoom) == (approx(0.05), approx(0.125))
    assert (head.status(3.0).pan, head.status(3.0).zoom, head.status(3.0).zoom_moving) == (
        approx(0.1), approx(0.25), False)
    head.continuous_move(3.0, PtzSpeed(tilt=-0.2, zoom=-1.0))  # default timeout 10 s
    head.stop(4.0, pan_tilt=False, zoom=True)
    status = head.status(5.0)
    assert (status.zoom, status.zoom_moving, status.tilt, status.pan_tilt_moving) == (
        approx(0.0), False, approx(-0.1), True)
    assert head.status(30.0).tilt == approx(-0.05 * 10)
    head.stop(30.0)
    assert head.status(31.0).pan_tilt_moving is False
    for bad in (PtzSpeed(pan=1.5), PtzSpeed(zoom=float("nan"))):
        with pytest.raises(PtzError):
            head.continuous_move(31.0, bad)
    with pytest.raises(PtzError):
        head.continuous_move(31.0, PtzSpeed(pan=0.1), timeout=0.0)


def test_presets_anx_b_2() -> None:
    """ANX-B-2: SetPreset stores the position now (new token, or replacing one), names stay unique,
    the node's maximum holds, GotoPreset travels back, RemovePreset forgets."""
    node = PtzNode(token="n", name="n", profile_token="p", max_presets=2, max_speed=1.0)
    head = SimulatedHead(node, 0.0)
    head.absolute_move(0.0, PtzPosition(pan=0.5, tilt=0.5))
    first = head.set_preset(1.0, "door")
    head.absolute_move(1.0, PtzPosition(pan=-0.5))
    second = head.set_preset(2.0, None)
    assert first != second
    with pytest.raises(PtzError) as info:
        head.set_preset(2.0, "door", second)
    assert info.value.subcodes == ("InvalidArgVal", "PresetExist")
    with pytest.raises(PtzError) as info:
        head.set_preset(2.0, "gate")
    assert (info.value.code, info.value.subcodes) == ("Receiver", ("Action", "TooManyPresets"))
    assert head.set_preset(2.0, "gate", second) == second
    assert [(p.name, p.position.pan) for p in head.presets()] == [("door", approx(0.5)), ("gate", approx(-0.5))]
    head.goto_preset(2.0, first, PtzSpeed(pan=0.5))
    assert head.status(3.0).pan == approx(0.0)
    assert head.status(4.0).pan == approx(0.5)
    head.remove_preset(first)
    with pytest.raises(PtzError) as info:
        head.goto_preset(4.0, first)
    assert info.value.subcodes == ("InvalidArgVal", "NoToken")


def test_node_configuration_is_validated_anx_b_2() -> None:
    """ANX-B-2: a node with bad limits, speed or token is refused with one clear message."""
    for kwargs in ({"pan": Axis(min=-2.0, max=1.0)}, {"zoom": Axis(min=0.5, max=0.5)}, {"max_speed": 0.0},
                   {"token": ""}, {"max_presets": 0}, {"name": " "}):
        with pytest.raises(ConfigurationError):
            PtzNode(**{"token": "n", "name": "n", "profile_token": "p", **kwargs})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        SimulatedPtz([NODE, PtzNode(token="other", name="o", profile_token="main")], 0.0)


# -- the service on a real device application ------------------------------------------------------

@pytest.fixture
def clock() -> FakeClock:
    """The device's clock, advanced by hand (it starts at the real time: WS-Security checks Created
    against it, and a test advances it by less than the 300 s freshness window)."""
    return FakeClock(time.time())


@pytest.fixture
def ptz(tmp_path: Path, clock: FakeClock) -> Iterator[str]:
    """A device application with two profiles, one with a PTZ head, on loopback; yields its PTZ address."""
    seed_device(tmp_path / "d")
    with DeviceStore(tmp_path / "d") as store:
        store.put_media_source(MAIN)
        store.put_media_source(FIXED)
        app = build_device_app(UplinkServiceContext(store=store), clock=clock,
                               ptz=SimulatedPtz([NODE], clock()))
        with serve_app(app) as base:
            yield base + PTZ_PATH


def ok(url: str, body: str, user: tuple[str, str] | None = OPERATOR) -> etree._Element:
    status, root = soap_call(url, body, NS, user=user)
    assert status == 200, etree.tostring(root)
    response = body_of(root)
    schemas.validate(response, "ptz")
    return response


def fault(url: str, body: str, user: tuple[str, str] | None = OPERATOR) -> tuple[int, list[str]]:
    status, root = soap_call(url, body, NS, user=user)
    return status, fault_chain(root)


def status_of(url: str) -> tuple[float, float, float, str, str]:
    status = ok(url, "<tptz:GetStatus><tptz:ProfileToken>main</tptz:ProfileToken></tptz:GetStatus>").find(
        "tptz:PTZStatus", NS)
    pan_tilt = status.find("tt:Position/tt:PanTilt", NS)
    zoom = status.find("tt:Position/tt:Zoom", NS)
    return (float(pan_tilt.get("x")), float(pan_tilt.get("y")), float(zoom.get("x")),
            status.findtext("tt:MoveStatus/tt:PanTilt", namespaces=NS),
            status.findtext("tt:MoveStatus/tt:Zoom", namespaces=NS))


def test_nodes_and_configurations_anx_b_2(ptz: str) -> None:
    """ANX-B-2: GetNodes/GetNode list the head with its generic spaces (pan limits narrowed) and preset
    maximum; GetConfigurations/GetConfiguration give its configuration with NodeToken and limits."""
    [node] = ok(ptz, "<tptz:GetNodes/>").findall("tptz:PTZNode", NS)
    assert (node.get("token"), node.findtext("tt:Name", namespaces=NS),
            node.findtext("tt:MaximumNumberOfPresets", namespaces=NS)) == ("head-1", "Dome", "32")
    space = node.find("tt:SupportedPTZSpaces/tt:AbsolutePanTiltPositionSpace", NS)
    assert (space.findtext("tt:URI", namespaces=NS), space.findtext("tt:XRange/tt:Min", namespaces=NS),
            space.findtext("tt:XRange/tt:Max", namespaces=NS)) == (
        "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace", "-0.5", "0.5")
    one = ok(ptz, "<tptz:GetNode><tptz:NodeToken>head-1</tptz:NodeToken></tptz:GetNode>").find("tptz:PTZNode", NS)
    assert etree.tostring(one) == etree.tostring(node)
    [config] = ok(ptz, "<tptz:GetConfigurations/>").findall("tptz:PTZConfiguration", NS)
    assert (config.get("token"), config.findtext("tt:NodeToken", namespaces=NS),
            config.findtext("tt:PanTiltLimits/tt:Range/tt:XRange/tt:Max", namespaces=NS),
            config.findtext("tt:DefaultPTZTimeout", namespaces=NS)) == ("head-1", "head-1", "0.5", "PT10S")
    ok(ptz, "<tptz:GetConfiguration><tptz:PTZConfigurationToken>head-1</tptz:PTZConfigurationToken>"
            "</tptz:GetConfiguration>")
    assert fault(ptz, "<tptz:GetNode><tptz:NodeToken>x</tptz:NodeToken></tptz:GetNode>") == (
        400, ["env:Sender", "ter:InvalidArgVal", "ter:NoEntity"])
    assert fault(ptz, "<tptz:GetConfiguration><tptz:PTZConfigurationToken>x</tptz:PTZConfigurationToken>"
                      "</tptz:GetConfiguration>") == (400, ["env:Sender", "ter:InvalidArgVal", "ter:NoConfig"])


def test_moves_show_on_get_status_anx_b_2(ptz: str, clock: FakeClock) -> None:
    """ANX-B-2: AbsoluteMove, RelativeMove, ContinuousMove (with Timeout) and Stop move the simulated head
    at the configured speed; GetStatus reports the position and MOVING/IDLE as the fake clock advances."""
    assert status_of(ptz) == (0.0, 0.0, 0.0, "IDLE", "IDLE")
    ok(ptz, "<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Position>"
            '<tt:PanTilt x="0.5" y="-0.5"/><tt:Zoom x="0.5"/></tptz:Position></tptz:AbsoluteMove>')
    clock.now += 1.0
    assert status_of(ptz) == (approx(0.25), approx(-0.25), approx(0.25), "MOVING", "MOVING")
    clock.now += 1.0
    assert status_of(ptz) == (approx(0.5), approx(-0.5), approx(0.5), "IDLE", "IDLE")
    ok(ptz, "<tptz:RelativeMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Translation>"
            '<tt:PanTilt x="-0.25" y="1"/></tptz:Translation><tptz:Speed><tt:PanTilt x="1" y="0.5"/></tptz:Speed>'
            "</tptz:RelativeMove>")
    clock.now += 4.0
    assert status_of(ptz)[:2] == (approx(0.25), approx(0.0))
    clock.now += 4.0
    assert status_of(ptz)[:2] == (approx(0.25), approx(0.5))
    ok(ptz, "<tptz:ContinuousMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Velocity>"
            '<tt:Zoom x="-1"/></tptz:Velocity><tptz:Timeout>PT1S</tptz:Timeout></tptz:ContinuousMove>')
    clock.now += 0.5
    assert status_of(ptz)[2::2] == (approx(0.375), "MOVING")
    clock.now += 5.0
    assert status_of(ptz)[2::2] == (approx(0.25), "IDLE")
    ok(ptz, "<tptz:ContinuousMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Velocity>"
            '<tt:PanTilt x="-1" y="0"/></tptz:Velocity></tptz:ContinuousMove>')
    clock.now += 1.0
    ok(ptz, "<tptz:Stop><tptz:ProfileToken>main</tptz:ProfileToken></tptz:Stop>")
    clock.now += 5.0
    assert status_of(ptz)[0::3] == (approx(0.0), "IDLE")


def test_presets_over_soap_anx_b_2(ptz: str, clock: FakeClock) -> None:
    """ANX-B-2: SetPreset answers a token, GetPresets lists it with its position, GotoPreset moves back,
    RemovePreset forgets it; an unknown preset is ter:NoToken."""
    ok(ptz, "<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Position>"
            '<tt:PanTilt x="-0.5" y="0.5"/></tptz:Position></tptz:AbsoluteMove>')
    clock.now += 10.0
    token = ok(ptz, "<tptz:SetPreset><tptz:ProfileToken>main</tptz:ProfileToken><tptz:PresetName>door"
                    "</tptz:PresetName></tptz:SetPreset>").findtext("tptz:PresetToken", namespaces=NS)
    [preset] = ok(ptz, "<tptz:GetPresets><tptz:ProfileToken>main</tptz:ProfileToken></tptz:GetPresets>",
                  user=USER).findall("tptz:Preset", NS)
    assert (preset.get("token"), preset.findtext("tt:Name", namespaces=NS),
            preset.find("tt:PTZPosition/tt:PanTilt", NS).get("x")) == (token, "door", "-0.5")
    ok(ptz, "<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Position>"
            '<tt:PanTilt x="0" y="0"/></tptz:Position></tptz:AbsoluteMove>')
    clock.now += 10.0
    ok(ptz, f"<tptz:GotoPreset><tptz:ProfileToken>main</tptz:ProfileToken><tptz:PresetToken>{token}"
            "</tptz:PresetToken></tptz:GotoPreset>")
    clock.now += 10.0
    assert status_of(ptz)[:2] == (approx(-0.5), approx(0.5))
    remove = (f"<tptz:RemovePreset><tptz:ProfileToken>main</tptz:ProfileToken><tptz:PresetToken>{token}"
              "</tptz:PresetToken></tptz:RemovePreset>")
    ok(ptz, remove)
    assert fault(ptz, remove) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:NoToken"])


def test_faults_anx_b_2(ptz: str) -> None:
    """ANX-B-2: an unknown profile is ter:NoProfile, a profile without PTZ ter:NoPTZProfile, a position
    beyond the limits ter:InvalidPosition, a space other than the generic ones ter:SpaceNotSupported,
    a malformed vector ter:InvalidArgs."""
    move = ("<tptz:AbsoluteMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Position>{}</tptz:Position>"
            "</tptz:AbsoluteMove>")
    assert fault(ptz, move.format("nope", '<tt:Zoom x="0"/>')) == (400, ["env:Sender", "ter:InvalidArgVal",
                                                                       "ter:NoProfile"])
    assert fault(ptz, move.format("fixed", '<tt:Zoom x="0"/>')) == (400, ["env:Sender", "ter:InvalidArgVal",
                                                                        "ter:NoPTZProfile"])
    assert fault(ptz, move.format("main", '<tt:PanTilt x="0.9" y="0"/>')) == (
        400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidPosition"])
    assert fault(ptz, move.format("main", '<tt:PanTilt x="0" y="0" space="http://example.com/degrees"/>')) == (
        400, ["env:Sender", "ter:InvalidArgVal", "ter:SpaceNotSupported"])
    assert fault(ptz, move.format("main", '<tt:PanTilt x="left" y="0"/>')) == (
        400, ["env:Sender", "ter:InvalidArgs"])
    assert status_of(ptz)[:3] == (0.0, 0.0, 0.0)  # nothing of a refused request ran


def test_access_classes_sec_1_sec_3(ptz: str) -> None:
    """SEC-1, SEC-3: GetServiceCapabilities is PRE_AUTH, reads are READ_MEDIA (a User may), moves and
    preset changes are ACTUATE (refused to a User with ter:NotAuthorized, allowed to an Operator and an
    Administrator); the table is the ONVIF PTZ specification's."""
    assert {op: cls for (_, op), cls in OPERATION_ACCESS.items()} == {
        "GetServiceCapabilities": "PRE_AUTH", "GetNodes": "READ_MEDIA", "GetNode": "READ_MEDIA",
        "GetConfigurations": "READ_MEDIA", "GetConfiguration": "READ_MEDIA", "GetStatus": "READ_MEDIA",
        "GetPresets": "READ_MEDIA", "ContinuousMove": "ACTUATE", "AbsoluteMove": "ACTUATE",
        "RelativeMove": "ACTUATE", "Stop": "ACTUATE", "SetPreset": "ACTUATE", "GotoPreset": "ACTUATE",
        "RemovePreset": "ACTUATE"}
    caps = ok(ptz, "<tptz:GetServiceCapabilities/>", user=None).find("tptz:Capabilities", NS)
    assert (caps.get("MoveStatus"), caps.get("StatusPosition")) == ("true", "true")
    status, chain = fault(ptz, "<tptz:GetNodes/>", user=None)
    assert status in (400, 401) and chain == ["env:Sender", "ter:NotAuthorized"]  # 401: Digest challenge
    ok(ptz, "<tptz:GetNodes/>", user=USER)
    stop = "<tptz:Stop><tptz:ProfileToken>main</tptz:ProfileToken></tptz:Stop>"
    assert fault(ptz, stop, user=USER) == (400, ["env:Sender", "ter:NotAuthorized"])
    ok(ptz, stop, user=OPERATOR)
    ok(ptz, stop, user=ADMIN)


def test_get_services_lists_ptz_anx_b_2(ptz: str) -> None:
    """ANX-B-2: GetServices lists the PTZ service at its address with its capabilities."""
    device = ptz.replace(PTZ_PATH, "/onvif/device_service")
    status, root = soap_call(device, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability>"
                                     "</tds:GetServices>", NS)
    assert status == 200
    [entry] = root.findall(f".//tds:Service[tds:Namespace='{TPTZ}']", NS)
    assert entry.findtext("tds:XAddr", namespaces=NS) == ptz
    schemas.validate(entry.find("tds:Capabilities/tptz:Capabilities", NS), "ptz")


def test_get_capabilities_names_ptz_anx_b_2(ptz: str) -> None:
    """ANX-B-2: the older GetCapabilities names the PTZ service too: asked for the PTZ category, and among
    All (clients that bootstrap from it, not from GetServices, find the heads)."""
    device = ptz.replace(PTZ_PATH, "/onvif/device_service")
    for categories in ("<tds:Category>PTZ</tds:Category>", "", "<tds:Category>All</tds:Category>"):
        status, root = soap_call(device, f"<tds:GetCapabilities>{categories}</tds:GetCapabilities>", NS)
        assert status == 200
        answer = root.find(".//tds:GetCapabilitiesResponse", NS)
        schemas.validate(answer, "device")
        assert answer.findtext("tds:Capabilities/tt:PTZ/tt:XAddr", namespaces=NS) == ptz


def test_zeep_client_on_our_wsdl_anx_b_2(ptz: str, clock: FakeClock) -> None:
    """ANX-B-2: strict zeep built from wsdl/ptz.wsdl moves the head and reads status, presets and faults."""
    from zeep.wsse.username import UsernameToken

    client = zeep.Client(str(schemas.wsdl_path("ptz")),
                         settings=zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True),
                         wsse=UsernameToken(*OPERATOR, use_digest=True))
    service = client.create_service(f"{{{TPTZ}}}PTZBinding", ptz)
    assert [n.token for n in service.GetNodes()] == ["head-1"]
    service.AbsoluteMove(ProfileToken="main", Position={"PanTilt": {"x": 0.25, "y": 0.25}})
    clock.now += 0.5
    status = service.GetStatus(ProfileToken="main")
    assert (status.Position.PanTilt.x, status.MoveStatus.PanTilt) == (approx(0.125), "MOVING")
    token = service.SetPreset(ProfileToken="main", PresetName="half")
    assert [p.token for p in service.GetPresets(ProfileToken="main")] == [token]
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.GotoPreset(ProfileToken="main", PresetToken="nope")
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "NoToken"]


# -- models and WSDL ------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "file", "type_name", "optional"), [
    (ptz_module.PTZServiceCapabilities, "ptz", "Capabilities", ("EFlip", "Reverse", "GetCompatibleConfigurations",
                                                                "MoveAndTrack")),
    (ptz_module.Vector2D, "ptz-common", "Vector2D", ()),
    (ptz_module.Vector1D, "ptz-common", "Vector1D", ()),
    (ptz_module.PTZVector, "ptz-common", "PTZVector", ()),
    (ptz_module.PTZSpeed, "ptz-common", "PTZSpeed", ()),
    (ptz_module.PTZMoveStatus, "ptz-common", "PTZMoveStatus", ()),
    (ptz_module.PTZStatus, "ptz-common", "PTZStatus", ("Error", "FieldOfView")),
    (ptz_module.FloatRange, "ptz-common", "FloatRange", ()),
    (ptz_module.Space2DDescription, "ptz-common", "Space2DDescription", ()),
    (ptz_module.Space1DDescription, "ptz-common", "Space1DDescription", ()),
    (ptz_module.PTZSpaces, "ptz-common", "PTZSpaces", ("Extension",)),
    (ptz_module.PTZNode, "ptz-common", "PTZNode", ("AuxiliaryCommands", "Extension")),
    (ptz_module.PanTiltLimits, "ptz-common", "PanTiltLimits", ()),
    (ptz_module.ZoomLimits, "ptz-common", "ZoomLimits", ()),
    (ptz_module.PTZConfiguration, "ptz-common", "PTZConfiguration", ("Extension", "MoveRamp", "PresetRamp",
                                                                    "PresetTourRamp")),
    (ptz_module.PTZPreset, "ptz-common", "PTZPreset", ()),
])
def test_spyne_models_match_authored_xsd_anx_b_2(model: type, file: str, type_name: str,
                                                 optional: tuple[str, ...]) -> None:
    """ANX-B-2: the Spyne models carry the authored XSD's names, order and kinds (optional parts this
    device never sends aside), in the XSD's namespace."""
    assert_model_matches(model, (file, "media-common"), type_name, optional)
    assert model.get_namespace() == (TPTZ if file == "ptz" else TT)


def test_wsdl_binding_and_token_types_anx_b_2() -> None:
    """ANX-B-2: PTZBinding on port type PTZ, soapAction = namespace + operation, one operation per served
    method; every token of the messages is typed tt:ReferenceToken (what schema-driven adaption reads)."""
    binding, actions = binding_actions("ptz")
    assert binding == ("PTZBinding", "tptz:PTZ")
    assert actions == {name: f"{TPTZ}/{name}" for _, name in OPERATION_ACCESS}
    for file in ("ptz", "ptz-common"):
        assert all(types == {"tt:ReferenceToken"} for types in token_types(file).values()), file


def test_media2_profile_references_the_ptz_configuration_anx_b_2(ptz: str) -> None:
    """ANX-B-2: GetProfiles with Type=All (or PTZ) puts the head's PTZ configuration in the profile that
    reaches it, and none in a profile without a head; the capabilities list PTZ among the configurations."""
    from iec62676_2_33.services.media2 import MEDIA2_PATH, TR2

    media2 = ptz.replace(PTZ_PATH, MEDIA2_PATH)
    ns = {**NS, "tr2": TR2}
    status, root = soap_call(media2, "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>", ns, user=USER)
    assert status == 200
    response = body_of(root)
    schemas.validate(response, "media2")
    configs = {p.get("token"): p.find("tr2:Configurations/tr2:PTZ", ns) for p in response.findall("tr2:Profiles", ns)}
    assert configs["fixed"] is None
    assert (configs["main"].get("token"), configs["main"].findtext("tt:NodeToken", namespaces=ns)) == (
        "head-1", "head-1")
    status, root = soap_call(media2, "<tr2:GetProfiles><tr2:Token>main</tr2:Token><tr2:Type>PTZ</tr2:Type>"
                                     "</tr2:GetProfiles>", ns, user=USER)
    [profile] = body_of(root).findall("tr2:Profiles", ns)
    assert [etree.QName(c).localname for c in profile.find("tr2:Configurations", ns)] == ["PTZ"]
    status, root = soap_call(media2, "<tr2:GetProfiles><tr2:Token>fixed</tr2:Token><tr2:Type>PTZ</tr2:Type>"
                                     "</tr2:GetProfiles>", ns, user=USER)
    assert body_of(root).find("tr2:Profiles/tr2:Configurations", ns) is None
    status, root = soap_call(media2, "<tr2:GetServiceCapabilities/>", ns)
    assert body_of(root).find("tr2:Capabilities/tr2:ProfileCapabilities", ns).get("ConfigurationsSupported") == (
        "VideoSource VideoEncoder PTZ")
