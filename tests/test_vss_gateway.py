"""GEN-1, GEN-3, ADR-2, ADR-3, ADR-4, SEC-1, ANX-B-1: an upper VSS in front of a lower device reached by URL — Media2
GetProfiles merged with remote tokens, GetStreamUri forwarded with the prefix stripped and its URI
rewritten to the VSS's RTSP front, and the faults: unknown prefix, over-long token, the lower system's own
fault relayed with its subcodes, a lower system that never answers, a configuration loop.

Real servers on loopback: the lower system is ``run_device``, the VSS ``run_vss``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import fault_chain
from lxml import etree
from rtsp_env import RawPlayer
from vss_env import NS, add_lower, answer, seed, soap, start_device, start_vss, stream_uri

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.runtime.cloud_server import CloudOptions
from iec62676_2_33.testing.harness import UplinkPki
from iec62676_2_33.vss.lower import LowerStore, LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

CAMERA = MediaSource(token="main", name="Gate camera", rtsp_url="rtsp://127.0.0.1:9/gate/main", width=640,
                     height=360)
OWN = MediaSource(token="lobby", name="Lobby camera", rtsp_url="rtsp://127.0.0.1:9/lobby")
PROFILES = "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>"


@dataclass
class Hierarchy:
    vss: str
    lower: str
    vss_data: Path


@pytest.fixture
def hierarchy(tmp_path: Path) -> Iterator[Hierarchy]:
    seed(tmp_path / "cam", sources=(CAMERA,))
    device, lower = start_device(tmp_path / "cam")
    seed(tmp_path / "vss", sources=(OWN,))
    add_lower(tmp_path / "vss", LowerSystem(prefix="gate", url=f"{lower}/onvif/device_service",
                                            username="admin", password="admin-pw"))
    vss, base = start_vss(tmp_path / "vss", VssOptions(rtsp="127.0.0.1:0", rtsp_open=True, timeout=5), ready_after=2)
    try:
        yield Hierarchy(base, lower, tmp_path / "vss")
    finally:
        vss.stop()
        device.stop()


def test_profiles_merged_with_remote_tokens(hierarchy: Hierarchy) -> None:
    """ANX-B-1, ADR-2, ADR-4: the VSS's own profile and the lower's, every token of the lower prefixed."""
    status, root = soap(hierarchy.vss, "/onvif/media2_service", PROFILES)
    assert status == 200
    profiles = {p.get("token"): p for p in answer(root).findall("tr2:Profiles", NS)}
    assert set(profiles) == {"lobby", "gate:main"}
    gate = profiles["gate:main"]
    assert gate.findtext("tr2:Name", namespaces=NS) == "Gate camera"
    assert gate.find("tr2:Configurations/tr2:VideoSource", NS).get("token") == "gate:main"
    assert gate.findtext("tr2:Configurations/tr2:VideoSource/tt:SourceToken", namespaces=NS) == "gate:main"
    assert gate.find("tr2:Configurations/tr2:VideoEncoder", NS).get("token") == "gate:main"
    status, root = soap(hierarchy.vss, "/onvif/media2_service",
                        "<tr2:GetProfiles><tr2:Token>gate:main</tr2:Token></tr2:GetProfiles>")
    assert status == 200
    assert [p.get("token") for p in answer(root).findall("tr2:Profiles", NS)] == ["gate:main"]


def test_stream_uri_forwarded_and_relayed(hierarchy: Hierarchy) -> None:
    """ANX-B-1: the lower's URI is not handed out; the VSS's RTSP front is, and asking twice gives one URI.
    The VSS's own token stays local."""
    status, root = stream_uri(hierarchy.vss, "gate:main")
    assert status == 200, root
    uri = answer(root).findtext("tr2:Uri", namespaces=NS)
    assert uri.startswith("rtsp://127.0.0.1:") and "/relay/" in uri and "gate/main" not in uri
    assert answer(stream_uri(hierarchy.vss, "gate:main")[1]).findtext("tr2:Uri", namespaces=NS) == uri
    status, root = stream_uri(hierarchy.vss, "lobby")
    assert status == 200
    assert answer(root).findtext("tr2:Uri", namespaces=NS) == OWN.rtsp_url


def test_unknown_prefix_and_long_token_are_refused(hierarchy: Hierarchy) -> None:
    """ADR-3, ADR-6: a prefix no lower system has, and a token over 64 characters: Sender/InvalidArgVal."""
    status, root = stream_uri(hierarchy.vss, "nowhere:main")
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal"]
    assert "nowhere" in root.findtext(".//env:Text", namespaces=NS)
    status, root = stream_uri(hierarchy.vss, "gate:" + "x" * 60)
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal"]
    assert "64" in root.findtext(".//env:Text", namespaces=NS)


def test_lower_fault_relayed_with_subcodes(hierarchy: Hierarchy) -> None:
    """GEN-2: the lower system's NoProfile fault reaches the client with its whole subcode chain."""
    status, root = stream_uri(hierarchy.vss, "gate:nope")
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:NoProfile"]
    assert "lower system gate" in root.findtext(".//env:Text", namespaces=NS)


def test_silent_lower_system_is_a_receiver_fault(tmp_path: Path) -> None:
    """GEN-1: a lower system that accepts and never answers gives Receiver/Action/LowerSystemTimeout."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stopping.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    seed(tmp_path / "vss")
    add_lower(tmp_path / "vss", LowerSystem(prefix="mute", url=f"http://127.0.0.1:{silent.getsockname()[1]}/onvif/"
                                            "device_service", username="admin", password="x"))
    vss, base = start_vss(tmp_path / "vss", VssOptions(timeout=1))
    try:
        status, root = stream_uri(base, "mute:main")
        assert status == 500
        assert fault_chain(root) == ["env:Receiver", "ter:Action", "ter:LowerSystemTimeout"]
    finally:
        vss.stop()
        stopping.set()
        thread.join(5)
        for conn in held:
            conn.close()
        silent.close()


def test_configuration_loop_is_detected(tmp_path: Path) -> None:
    """GEN-1: a VSS that is its own lower system: the forwarded request comes back and is refused
    (Sender/InvalidArgVal/ConfigurationLoop, relayed to the client), never an endless chain."""
    seed(tmp_path / "vss")
    vss, base = start_vss(tmp_path / "vss", VssOptions(timeout=5))
    try:
        with LowerStore(tmp_path / "vss") as store:
            store.put(LowerSystem(prefix="self", url=f"{base}/onvif/device_service", username="admin",
                                  password="admin-pw"))
        status, root = stream_uri(base, "self:self:main")
        assert status == 400, etree.tostring(root)
        assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ConfigurationLoop"]
    finally:
        vss.stop()


def test_unclassified_operation_is_not_forwarded(hierarchy: Hierarchy) -> None:
    """SEC-1, GEN-1: an operation the VSS's access table does not classify (a PTZ call sent to Media2,
    anonymously) is never forwarded under the VSS's account."""
    body = ('<tptz:AbsoluteMove xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl"><tptz:ProfileToken>gate:main'
            '</tptz:ProfileToken><tptz:Position/></tptz:AbsoluteMove>')
    status, root = soap(hierarchy.vss, "/onvif/media2_service", body, user=None)
    assert status == 500
    assert fault_chain(root) == ["env:Receiver", "ter:ActionNotSupported"]
    assert "lower system" not in root.findtext(".//env:Text", namespaces=NS)


def test_rtsp_front_refuses_unknown_streams(hierarchy: Hierarchy) -> None:
    """ANX-B-1: the VSS's RTSP front serves only the URIs its gateway handed out; anything else is 404."""
    uri = answer(stream_uri(hierarchy.vss, "gate:main")[1]).findtext("tr2:Uri", namespaces=NS)
    unknown = uri.rsplit("/", 1)[0] + "/aaaaaaaaaaaaaaaa"
    player = RawPlayer(unknown, timeout=10)
    try:
        status, _, _ = player.request("DESCRIBE", unknown, "Accept: application/sdp")
    finally:
        player.close()
    assert status == 404


def test_uplink_lower_not_connected(tmp_path: Path) -> None:
    """GEN-3: a lower system reached by uplink that has not dialled in: Receiver/Action/LowerSystemUnreachable
    at once, and without --uplink-listen the same fault says why."""
    certs = UplinkPki(tmp_path / "pki")
    seed(tmp_path / "vss")
    add_lower(tmp_path / "vss", LowerSystem(prefix="ghost", uplink="ghost"))
    listener = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file])
    for options in (VssOptions(uplink=listener, timeout=5), VssOptions(timeout=5)):
        vss, base = start_vss(tmp_path / "vss", options)
        try:
            status, root = stream_uri(base, "ghost:main")
            assert status == 500
            assert fault_chain(root) == ["env:Receiver", "ter:Action", "ter:LowerSystemUnreachable"]
        finally:
            vss.stop()
