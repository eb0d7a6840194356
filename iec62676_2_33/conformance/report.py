"""Conformance kit: the reports of a run — JUnit XML for CI systems, one self-contained HTML page for a
person (TEST-1).

The JUnit file has one ``testsuite`` (the side and target) with one
``testcase`` per case: ``classname`` is ``iec62676.conformance.<side>``, the
name the case ID; a failure carries the one-line message and the evidence as
text, a skip its reason, and every case its requirement IDs as properties.
The HTML page carries its style inline and loads nothing: the summary table,
each case's evidence (folded), and the requirement matrix (which case checks
which requirement ID, and how it went).
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .registry import Result, Verdict
from .runner import Report

#: What XML 1.0 cannot carry (control characters, U+FFFE, U+FFFF; lone surrogates): a product's answer can hold
#: them, and ElementTree would write them as they are, leaving a JUnit file no CI system can read.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """``text`` with every character XML 1.0 cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def _evidence_text(result: Result) -> str:
    return _xml("\n\n".join(f"== {item.label}\n{item.text}" for item in result.evidence))


def junit_xml(report: Report) -> bytes:
    suite = ET.Element("testsuite", {
        "name": _xml(f"iec62676 conformance {report.side}: {report.target}"),
        "tests": str(len(report.results)), "failures": str(report.count(Verdict.FAIL)), "errors": "0",
        "skipped": str(report.count(Verdict.SKIP)), "time": f"{report.duration:.3f}",
        "timestamp": report.started.strftime("%Y-%m-%dT%H:%M:%S")})
    for result in report.results:
        case = ET.SubElement(suite, "testcase", {"classname": f"iec62676.conformance.{report.side}",
                                                "name": result.case.id, "time": f"{result.duration:.3f}"})
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", {"name": "title", "value": result.case.title})
        for req in result.case.requirements:
            ET.SubElement(props, "property", {"name": "requirement", "value": req})
        if result.verdict is Verdict.FAIL:
            failure = ET.SubElement(case, "failure", {"message": _xml(result.message), "type": "ConformanceFailure"})
            failure.text = _evidence_text(result)
        elif result.verdict is Verdict.SKIP:
            ET.SubElement(case, "skipped", {"message": _xml(result.message)})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _evidence_text(result)
    ET.indent(suite)
    body: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body + b"\n"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.pass{color:#176117;font-weight:bold}.fail{color:#a31515;
font-weight:bold}.skip{color:#7a6a00;font-weight:bold}pre{white-space:pre-wrap;background:#f8f8f8;
padding:.5em;border:1px solid #eee;max-height:30em;overflow:auto}details{margin:.6em 0}code{font-size:95%}
"""


def html_report(report: Report) -> str:
    e = html.escape
    verdict = "PASSED" if report.passed else "FAILED"
    rows = "".join(
        f"<tr><td><a href='#{e(r.case.id)}'><code>{e(r.case.id)}</code></a></td><td>{e(r.case.title)}</td>"
        f"<td class='{r.verdict.value}'>{r.verdict.value}</td><td>{e(r.message)}</td>"
        f"<td>{r.duration:.2f} s</td><td>{e(', '.join(r.case.requirements))}</td></tr>"
        for r in report.results)
    details = "".join(
        f"<details id='{e(r.case.id)}'{' open' if r.verdict is Verdict.FAIL else ''}><summary>"
        f"<code>{e(r.case.id)}</code> {e(r.case.title)} — <span class='{r.verdict.value}'>{r.verdict.value}"
        f"</span></summary><p>{e(r.case.doc)}</p><p><b>{e(r.message)}</b></p>"
        + "".join(f"<h4>{e(item.label)}</h4><pre>{e(item.text)}</pre>" for item in r.evidence)
        + "</details>" for r in report.results)
    matrix = "".join(
        f"<tr><td><code>{e(req)}</code></td><td>"
        + ", ".join(f"<a href='#{e(r.case.id)}'>{e(r.case.id)}</a> "
                    f"<span class='{r.verdict.value}'>{r.verdict.value}</span>" for r in results)
        + "</td></tr>" for req, results in report.requirement_matrix().items())
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>IEC 62676-2-33 conformance "
            f"({e(report.side)}): {verdict}</title><style>{_STYLE}</style></head><body>"
            f"<h1>IEC 62676-2-33 conformance — {e(report.side)}</h1>"
            f"<p>Target: <code>{e(report.target)}</code><br>Started {report.started:%Y-%m-%d %H:%M:%S} UTC; "
            f"the run took {report.duration:.1f} s.<br>Result: <span class='{'pass' if report.passed else 'fail'}'>"
            f"{verdict}</span> — {e(report.summary())}</p>"
            f"<h2>Summary</h2><table><tr><th>case</th><th>title</th><th>verdict</th><th>message</th><th>time</th>"
            f"<th>requirements</th></tr>{rows}</table>"
            f"<h2>Evidence</h2>{details}"
            f"<h2>Requirement matrix</h2><table><tr><th>requirement</th><th>cases</th></tr>{matrix}</table>"
            f"</body></html>\n")


def write_reports(report: Report, *, junit: Path | None = None, html_file: Path | None = None) -> None:
    if junit is not None:
        junit.write_bytes(junit_xml(report))
    if html_file is not None:
        html_file.write_text(html_report(report), encoding="utf-8")
