"""Assertion helpers shared by the SOAP and CLI tests (CFG-3, CFG-4, SEC-3: faults and one-line errors)."""

from __future__ import annotations

import pytest
from hyperframe.frame import Frame
from lxml import etree

from iec62676_2_33.cli import main
from iec62676_2_33.http2.role import PREFACE
from iec62676_2_33.namespaces import SOAP_ENV, TER

_NS = {"env": SOAP_ENV}


def fault_chain(root: etree._Element) -> list[str]:
    """The Code/Value and Subcode/Value texts of a SOAP 1.2 fault envelope, each prefix checked to be
    declared in scope (strict clients resolve them)."""
    body = root.find("env:Body", _NS)
    assert body is not None
    fault = body[0]
    assert fault.tag == f"{{{SOAP_ENV}}}Fault"
    chain = []
    node = fault.find("env:Code", _NS)
    while node is not None:
        value = node.find("env:Value", _NS)
        prefix, local = value.text.split(":")
        assert value.nsmap[prefix] in (SOAP_ENV, TER), f"prefix {prefix} is not declared in scope"
        chain.append(f"{prefix}:{local}")
        node = node.find("env:Subcode", _NS)
    return chain


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """Assert stderr is exactly one ``iec62676: error: …`` line; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("iec62676: error: ")
    return lines[0]


def parse_frames(data: bytes) -> list[Frame]:
    """Split HTTP/2 bytes (the client preface, if they start with it, left out) into hyperframe frames."""
    frames, view = [], memoryview(data.removeprefix(PREFACE))
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9:9 + length])
        frames.append(frame)
        view = view[9 + length:]
    return frames
