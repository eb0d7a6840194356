"""Assertion helpers shared by the SOAP and CLI tests (CFG-3, CFG-4, SEC-3: faults and one-line errors)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hyperframe.frame import Frame
from lxml import etree

from iec62676_2_33.cli import main
from iec62676_2_33.http2.role import PREFACE
from iec62676_2_33.namespaces import SOAP_ENV, TER, WSA

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


async def rtsp_stub_server(seen: list[str], gate: asyncio.Event | None = None, *,
                           wait: float = 15.0) -> asyncio.Server:
    """A loopback stand-in for an RTSP server behind a relay: records each request line in ``seen`` and
    answers ``200 OK`` (once ``gate`` is set, when one is given); every read and wait bounded by ``wait``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait):
                lines = head.decode("latin-1").split("\r\n")
                seen.append(lines[0])
                if gate is not None:
                    await asyncio.wait_for(gate.wait(), wait)
                cseq = next(line for line in lines if line.lower().startswith("cseq"))
                writer.write(f"RTSP/1.0 200 OK\r\n{cseq}\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body :func:`~iec62676_2_33.soap.envelope.parse_request` parses from now on, through either of its
    two callers (the inline decision and access control), in order: one entry per parse."""
    from iec62676_2_33.security import middleware
    from iec62676_2_33.services import inline
    from iec62676_2_33.soap import envelope

    parses: list[bytes] = []

    def parse(content_type: str | None, data: bytes) -> envelope.SoapRequest:
        parses.append(data)
        return envelope.parse_request(content_type, data)

    monkeypatch.setattr(inline, "parse_request", parse)
    monkeypatch.setattr(middleware, "parse_request", parse)
    return parses


#: A corpus entry that expects a fault (:func:`check_dispatched`).
FAULT = "fault"


def check_dispatched(got: int, root: etree._Element, status: int, namespace: str, tag: str, check: Any,
                     validate: Callable[[etree._Element], None]) -> None:
    """One corpus answer of a service on the QName dispatcher without WS-Addressing: the HTTP ``status``; for
    ``tag`` :data:`FAULT` the fault chain ``check`` and no ``wsa:RelatesTo``; otherwise no SOAP Header, the
    answer element ``{namespace}tag``, ``validate`` (the authored XSD) and ``check(answer)``."""
    assert got == status, etree.tostring(root)
    answer = root.find("env:Body", _NS)[0]
    if tag == FAULT:
        assert fault_chain(root) == check
        assert root.findtext("env:Header/wsa:RelatesTo", namespaces={**_NS, "wsa": WSA}) is None
        return
    assert root.find("env:Header", _NS) is None
    assert answer.tag == f"{{{namespace}}}{tag}"
    validate(answer)
    check(answer)
