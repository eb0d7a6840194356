"""The conformance kit against our own device (TEST-1, UPL-1 … UPL-16, CFG-1 … CFG-5, SEC-1, SEC-3, SEC-4,
PROV-3): every case passes (UPLINK-2-1-1 is skipped with its reason when there is no camera), the CLI's
exit status and reports follow the verdicts (also ``conformance demo``, what CI runs), the 30 s silence
rule is checked once at its real length, the uplinks' individual backoff on a device with widely spread
first intervals, and the evidence of the hostile-frames and access-token cases.

Our device runs with short reconnection intervals and, except in the one real-length run, a 2 s silence
rule that the session is told about (``silence_rule``), so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from camera import camera_available, start_camera
from helpers import run

from iec62676_2_33.conformance import DEVICE_CASES, DeviceSession, DeviceTarget, Verdict
from iec62676_2_33.conformance import run as run_cases
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.runtime import agent
from iec62676_2_33.runtime.agent import AgentSettings
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import ADMIN, RunningDevice, seed_device

#: Our device with a 2 s silence rule (PING after 1 s) and short reconnection intervals (first 0.1 … 0.3 s,
#: capped at 1 s: long enough that a loaded machine's scheduling jitter does not blur the ascent).
QUICK = AgentSettings(backoff_first=(0.1, 0.3), backoff_cap=1.0, stable_after=0.5, dead_after=2.0,
                      idle_ping_after=1.0)


def fresh_device(data: Path, settings: AgentSettings = QUICK) -> RunningDevice:
    """A device with an administrator and nothing else: the tool enrols it."""
    seed_device(data)
    return RunningDevice(data, settings=settings)


def dut_url(device: RunningDevice) -> str:
    assert device.device_service is not None
    return device.device_service


def quick_target(device: RunningDevice, **changes: object) -> DeviceTarget:
    values: dict[str, object] = {"silence_rule": 2.0, "silence_grace": 2.0, "connect_timeout": 10.0, "notice_timeout": 3.0,
                                 "backoff_window": 10.0}
    values.update(changes)
    return DeviceTarget(dut=dut_url(device), username=ADMIN[0], password=ADMIN[1], **values)  # type: ignore[arg-type]


@pytest.fixture
def quick_device(tmp_path: Path) -> Iterator[RunningDevice]:
    device = fresh_device(tmp_path / "dut")
    try:
        yield device
    finally:
        device.stop()


#: Run by its own test, on a device whose first reconnection intervals are spread as widely as a real
#: device spreads them (with QUICK's 0.2 s spread four uplinks would coincide by chance in many runs);
#: EXT-TWO-DUT-BACKOFF needs a second instance (test_conformance_two_duts.py).
OWN_TEST = ("EXT-SHARED-BACKOFF", "EXT-TWO-DUT-BACKOFF")


def test_our_device_passes_every_case(tmp_path: Path) -> None:
    """TEST-1, STR-1, UPL-2, UPL-3, UPL-7 … UPL-16, CFG-1 … CFG-5, SEC-4, PROV-3: the whole device suite
    against our own device: no case fails. With the synthetic camera (GStreamer, ffprobe) as its media source
    UPLINK-2-1-1 decodes H.264 through the uplink; without those parts it is skipped and says why."""
    data = tmp_path / "dut"
    with contextlib.ExitStack() as stack:
        if camera_available():
            cam = stack.enter_context(start_camera())
            with DeviceStore(data) as store:
                store.put_media_source(MediaSource(token="cam1", name="Camera 1", rtsp_url=cam.url,
                                                   width=cam.width, height=cam.height))
        device = fresh_device(data)
        stack.callback(device.stop)
        with DeviceSession(quick_target(device)) as session:
            chosen = [c for c in DEVICE_CASES.cases if c not in OWN_TEST]
            report = run_cases(DEVICE_CASES, session, target=dut_url(device), only=chosen)
            left = [cfg.remote_address for cfg in session.uplink().get_uplinks()]
        failed = {r.case.id: r.message for r in report.results if r.verdict is Verdict.FAIL}
        assert not failed, failed
        skipped = {r.case.id: r.message for r in report.results if r.verdict is Verdict.SKIP}
        if camera_available():
            assert skipped == {}
            (stream,) = [r for r in report.results if r.case.id == "UPLINK-2-1-1"]
            assert "h264,640,360" in stream.evidence[-1].text
        else:
            assert skipped == {"UPLINK-2-1-1": "the device has no media profile (GetProfiles over the uplink "
                                               "listed none)"}
        assert [r.case.id for r in report.results] == chosen
        assert all(r.evidence for r in report.results if r.verdict is Verdict.PASS)
        # The device is left as it was found: the tool deleted every uplink configuration it made (still listed
        # above while the session was open) once the session closed, and EXT-TOKEN its authorization server.
        assert left
        with DeviceStore(data) as store:
            assert store.list_uplinks() == [] and store.list_auth_servers() == []


def test_cli_runs_selected_cases_and_writes_reports(quick_device: RunningDevice, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """TEST-1, UPL-7, CFG-5: ``iec62676 conformance device --only`` runs the named cases, prints one line each,
    writes JUnit XML and HTML, exits 0; an unknown case ID is a one-line usage error (exit 2)."""
    junit, html = tmp_path / "report.xml", tmp_path / "report.html"
    argv = ["conformance", "device", "--dut", dut_url(quick_device), "--user", ADMIN[0], "--password", ADMIN[1],
            "--listen", "127.0.0.1:0"]
    code, out, err = run(capsys, *argv, "--only", "UPLINK-4-1-1", "EXT-PING", "--junit", str(junit),
                         "--html", str(html))
    assert code == 0, out + err
    assert "PASS  UPLINK-4-1-1" in out and "PASS  EXT-PING" in out and "PASSED: 2 passed, 0 failed" in out
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "0")
    assert [c.get("name") for c in suite.iter("testcase")] == ["UPLINK-4-1-1", "EXT-PING"]
    requirements = [p.get("value") for p in suite.iter("property") if p.get("name") == "requirement"]
    assert requirements == ["TEST-1", "CFG-5", "UPL-7", "UPL-15"]
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "PASSED" in page and "<script" not in page
    assert "PING ACK" in page and "Requirement matrix" in page
    code, _, err = run(capsys, *argv, "--only", "NO-SUCH-CASE")
    assert code == 2 and "unknown device case ID(s): NO-SUCH-CASE" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "conformance", "device", "--dut", "x", "--user", "u", "--password", "p",
                       "--listen", "127.0.0.1:0", "--list")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and lines["EXT-SILENCE"].startswith("EXT-SILENCE" + " " * 10 + "(long)")
    titles = {line.index(line.split(maxsplit=1)[1]) for line in lines.values()}
    assert titles == {21}, "every title starts in one column, after the longest case ID"


def test_silence_rule_at_its_real_length_upl_8(tmp_path: Path) -> None:
    """UPL-8, UPL-7: the one run of the 30 s rule at full length: our device (default timers) closes the
    uplink more than 30 s after the cloud fell silent, and within the tool's grace."""
    device = fresh_device(tmp_path / "dut", AgentSettings(backoff_first=(0.05, 0.3), backoff_cap=0.5))
    try:
        with DeviceSession(quick_target(device, silence_rule=30.0, silence_grace=10.0)) as session:
            report = run_cases(DEVICE_CASES, session, target=dut_url(device), only=["EXT-SILENCE"])
    finally:
        device.stop()
    (result,) = report.results
    assert result.verdict is Verdict.PASS, result.message
    assert result.evidence[-1].label == "silence"


def test_uplinks_back_off_individually_upl_9(tmp_path: Path) -> None:
    """UPL-9, UPL-10: several configurations of our device to a cloud that refuses them all back off on
    sequences of their own (first intervals spread over 0.5 … 3.5 s, as widely as a real device spreads them
    over 1 … 4 s), each ascending, while the first uplink stays up."""
    device = fresh_device(tmp_path / "dut", AgentSettings(backoff_first=(0.5, 3.5), backoff_cap=30.0,
                                                          stable_after=0.5))
    try:
        with DeviceSession(quick_target(device, backoff_window=20.0)) as session:
            report = run_cases(DEVICE_CASES, session, target=dut_url(device), only=["EXT-SHARED-BACKOFF"])
    finally:
        device.stop()
    (result,) = report.results
    assert result.verdict is Verdict.PASS, result.message
    sequences = [item.text for item in result.evidence if item.label.startswith("intervals of")]
    assert len(sequences) == 4 and len(set(sequences)) == 4


def test_hostile_frames_and_access_token_upl_14_upl_15(quick_device: RunningDevice) -> None:
    """UPL-4, UPL-14, UPL-15, UPL-16, PROV-3: EXT-HOSTILE's evidence shows our device ending each malformed
    connection with the GOAWAY the RFC names and cutting every flood off; EXT-TOKEN shows the Bearer token
    in the native and the WebSocket upgrade request (UPL-4), redacted in the report."""
    with DeviceSession(quick_target(quick_device)) as session:
        report = run_cases(DEVICE_CASES, session, target=dut_url(quick_device), only=["EXT-HOSTILE", "EXT-TOKEN"])
    hostile, token = report.results
    assert (hostile.verdict, token.verdict) == (Verdict.PASS, Verdict.PASS), (hostile.message, token.message)
    reactions = {item.label: item.text for item in hostile.evidence if not item.label.startswith("GetDevice")}
    assert "PROTOCOL_ERROR" in reactions["DATA on stream 0"]
    assert "FRAME_SIZE_ERROR" in reactions["SETTINGS of 5 bytes"]
    for flood in ("20,000 SETTINGS frames", "20,000 PING frames", "rapid reset of 2,000 streams"):
        assert "the device ended the connection" in reactions[flood]
    heads = [item.text for item in token.evidence if "request head" in item.label]
    assert len(heads) == 2 and "Upgrade: h2c-reverse" in heads[0] and "Upgrade: websocket" in heads[1]
    for head in heads:  # https, then wss (our device lists both Protocols)
        assert re.search(r"Authorization: Bearer <\d+ characters>", head) and "eyJ" not in head


def test_parallel_uplinks_and_token_refetch_upl_10_upl_14(quick_device: RunningDevice) -> None:
    """UPL-10, UPL-16, UPL-14: EXT-PARALLEL's evidence shows our device's two uplinks to two endpoints, each
    answering; EXT-TOKEN-REFETCH's shows the revoked first token, then one new token fetched and accepted."""
    with DeviceSession(quick_target(quick_device)) as session:
        report = run_cases(DEVICE_CASES, session, target=dut_url(quick_device),
                           only=["EXT-PARALLEL", "EXT-TOKEN-REFETCH"])
    parallel, refetch = report.results
    assert (parallel.verdict, refetch.verdict) == (Verdict.PASS, Verdict.PASS), (parallel.message, refetch.message)
    heads = [item.text for item in parallel.evidence if "request head" in item.label]
    assert len(heads) == 2 and len({re.search(r"Host: (\S+)", h).group(1) for h in heads}) == 2  # type: ignore[union-attr]
    presented = next(item.text for item in refetch.evidence if item.label == "tokens presented").splitlines()
    first, retry = (re.match(r"token (\w+): (.+) \(tokens issued by then: (\d+)\)", line) for line in presented[:2])
    assert first and retry and first[2] == "revoked now" and retry[2] == "accepted"
    assert first[1] != retry[1] and int(retry[3]) == int(first[3]) + 1
    challenge = next(item.text for item in refetch.evidence if item.label == "the tool's answer head")
    assert challenge.startswith("HTTP/1.1 401") and 'error="invalid_token"' in challenge


def test_cli_demo_leaves_the_ci_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TEST-1: ``iec62676 conformance demo --out DIR`` (what CI runs) starts the library's own device with its
    default timers, runs the quick cases, exits 0 and leaves junit.xml (every case, long ones skipped) and
    report.html in DIR."""
    out = tmp_path / "conformance-report"
    code, text, err = run(capsys, "conformance", "demo", "--out", str(out))
    assert code == 0, text + err
    suite = ET.parse(out / "junit.xml").getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == list(DEVICE_CASES.cases)
    skipped = {c.get("name"): c.find("skipped").get("message")  # type: ignore[union-attr]
               for c in suite.iter("testcase") if c.find("skipped") is not None}
    long_cases = {c.id for c in DEVICE_CASES.cases.values() if c.long}
    assert long_cases <= set(skipped) <= long_cases | {"UPLINK-2-1-1"}
    assert suite.get("failures") == "0"
    page = (out / "report.html").read_text()
    assert "PASSED" in page and "iec62676 device serve (this library" in page


def test_a_device_slow_to_drop_a_replaced_uplink_is_judged_on_its_new_one_upl_12(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST-1, UPL-12, SEC-4: a device may close the uplink of a replaced configuration a while after
    SetUplink. EXT-USERLEVEL sets UserLevel User and must then test the new connection, not the old
    Administrator one that is still up: a device that drops it one second late still passes."""
    real_stop = agent._Link.stop

    async def late_stop(self: agent._Link) -> None:
        await asyncio.sleep(1.0)
        await real_stop(self)

    monkeypatch.setattr(agent._Link, "stop", late_stop)
    device = fresh_device(tmp_path / "dut")
    try:
        with DeviceSession(quick_target(device)) as session:
            report = run_cases(DEVICE_CASES, session, target=dut_url(device), only=["EXT-USERLEVEL"])
    finally:
        device.stop()
    (result,) = report.results
    assert result.verdict is Verdict.PASS, result.message
