"""The conformance kit's reports and its pytest plugin (TEST-1): JUnit XML and the HTML page carry each
verdict, message, evidence and requirement ID; the runnable example project of docs/conformance-kit.md
passes with the library's fixtures (``cloud``, ``device``, ``uplinked_device``, ``resource_registry``,
``conformance``)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from iec62676_2_33.conformance import Registry, Report, html_report, junit_xml
from iec62676_2_33.conformance.registry import run_case

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vendor-suite"


def _report() -> Report:
    registry = Registry("device")

    @registry.case("X-PASS", "passes", "UPL-2")
    def passes(session: object, ev: object) -> None:
        ev.note("sent", "GET /uplink HTTP/1.1")  # type: ignore[attr-defined]

    @registry.case("X-FAIL", "fails <badly>", "UPL-2", "UPL-8")
    def fails(session: object, ev: object) -> None:
        ev.note("answer", "<env:Fault>…</env:Fault>")  # type: ignore[attr-defined]
        ev.fail("closed after 12.0 s of silence & before 30 s")  # type: ignore[attr-defined]

    @registry.case("X-SKIP", "skips", "STR-1")
    def skips(session: object, ev: object) -> None:
        ev.skip("no media profile")  # type: ignore[attr-defined]

    @registry.case("X-BROKEN", "raises", "CFG-3")
    def broken(session: object, ev: object) -> None:
        raise TimeoutError("gave up after 5 s waiting for the device to connect\nsecond line")

    report = Report("device", "http://dut/onvif/device_service")
    report.results = [run_case(case, None) for case in registry.select()]
    report.duration = 1.5
    return report


def test_junit_report_carries_verdicts_messages_and_requirements() -> None:
    """TEST-1: one testcase per case; a failure carries its message and evidence, a skip its reason, an
    unexpected error becomes a one-line failure; the requirement IDs are properties."""
    report = _report()
    assert not report.passed and report.summary() == "1 passed, 2 failed, 1 skipped in 1.5 s"
    suite = ET.fromstring(junit_xml(report))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["X-FAIL"].find("failure")
    assert failure is not None and failure.get("message") == "closed after 12.0 s of silence & before 30 s"
    assert "== answer\n<env:Fault>…</env:Fault>" in (failure.text or "")
    assert cases["X-SKIP"].find("skipped").get("message") == "no media profile"  # type: ignore[union-attr]
    broken = cases["X-BROKEN"].find("failure")
    assert broken is not None
    assert broken.get("message") == "TimeoutError: gave up after 5 s waiting for the device to connect"
    assert [p.get("value") for p in cases["X-FAIL"].iter("property") if p.get("name") == "requirement"] == [
        "UPL-2", "UPL-8"]


def test_html_report_is_one_escaped_page_with_the_matrix() -> None:
    """TEST-1: the HTML page names the overall verdict and the run time, escapes the evidence, opens the
    failed cases' evidence, and maps each requirement ID to its cases."""
    page = html_report(_report())
    assert "FAILED" in page and "the run took 1.5 s" in page
    assert "&lt;env:Fault&gt;" in page and "<env:Fault>" not in page and "fails &lt;badly&gt;" in page
    assert "<details id='X-FAIL' open>" in page and "<details id='X-PASS'>" in page
    assert "<script" not in page and "http://" not in page.replace("http://dut/", "")
    matrix = page.split("Requirement matrix", 1)[1]
    assert matrix.index("UPL-2") < matrix.index("UPL-8")
    assert "<a href='#X-PASS'>X-PASS</a> <span class='pass'>pass</span>, <a href='#X-FAIL'>X-FAIL</a>" in matrix


def test_vendor_suite_example_passes_with_the_plugin_fixtures() -> None:
    """TEST-1, UPL-16: ``examples/vendor-suite`` (the "test your device in CI" project) runs under pytest
    with the library's plugin and passes: conformance cases, a call through an uplink, sample resources."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=EXAMPLE,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout


def test_every_case_names_requirements_the_digest_defines() -> None:
    """TEST-1: each device and cloud case names at least one requirement ID, and every ID it names is
    defined in the requirements digest (../shared/spec/REQUIREMENTS.md), so the matrix cannot drift."""
    import re

    from iec62676_2_33.conformance import CLOUD_CASES, DEVICE_CASES

    spec = Path(__file__).resolve().parent.parent.parent / "shared" / "spec" / "REQUIREMENTS.md"
    defined = set(re.findall(r"\*\*([A-Z]+(?:-[AB])?-\d+)", spec.read_text()))
    for registry in (DEVICE_CASES, CLOUD_CASES):
        for case in registry.cases.values():
            assert case.requirements and case.doc, case.id
            assert set(case.requirements) <= defined, (case.id, set(case.requirements) - defined)
