"""Helpers shared by the tests: assertions on SOAP faults and one-line CLI errors (CFG-3, CFG-4, SEC-3), SOAP
calls in process and over HTTP, free loopback ports, and stand-in servers, clouds and RTSP exchanges on
loopback."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import pytest
from hyperframe.frame import Frame
from lxml import etree

from iec62676_2_33.cli import main
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.http2.role import PREFACE
from iec62676_2_33.namespaces import SOAP_ENV, TER, WSA
from iec62676_2_33.sansio.upgrade import UpgradeServer
from iec62676_2_33.testing.harness import RunningCloud, RunningDevice, UplinkPki, seed_device
from iec62676_2_33.transport.base import ByteStream

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


def soap_environ(data: bytes, path: str, **extra: Any) -> dict[str, Any]:
    """The WSGI environ of a SOAP 1.2 POST of ``data`` to ``path`` on http://cam.local, ``extra`` on top."""
    return {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/soap+xml; charset=utf-8",
            "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data), "wsgi.url_scheme": "http",
            "HTTP_HOST": "cam.local", "SERVER_NAME": "cam.local", "SERVER_PORT": "80", "SCRIPT_NAME": "",
            "PATH_INFO": path, **extra}


def call_wsgi(app: Any, environ: dict[str, Any]) -> tuple[str, etree._Element]:
    """``app`` called in process on ``environ``: its status line and the parsed answer."""
    status: list[str] = []
    out = b"".join(app(environ, lambda line, headers, exc_info=None: status.append(line)))
    return status[0], etree.fromstring(out)


def soap_post_raw(url: str, data: bytes, *, headers: dict[str, str] | None = None,
                  timeout: float = 10.0) -> tuple[int, bytes]:
    """POST the SOAP 1.2 envelope ``data`` to ``url`` (``headers`` besides its Content-Type): the HTTP status
    and the answer's bytes as they came."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path, data, {"Content-Type": "application/soap+xml; charset=utf-8",
                                                 **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def soap_post(url: str, data: bytes, *, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, etree._Element]:
    """:func:`soap_post_raw`, the answer parsed."""
    status, body = soap_post_raw(url, data, headers=headers, timeout=timeout)
    return status, etree.fromstring(body)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uplinked_registry(tmp_path: Path, cn: str, fill: Callable[[ResourceRegistry], object],
                      **cloud_options: Any) -> Iterator[tuple[RunningCloud, ResourceRegistry]]:
    """Our cloud (``cloud_options``) and a device ``cn`` reached only over its uplink (UserLevel User), its
    resource registry filled by ``fill``; once the cloud lists the device, (cloud, registry); both stopped at the
    end."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs, **cloud_options)
    try:
        seed_device(tmp_path / "dev", certs, cn, [(cloud.uplink_url(), ("User",))])
        with ResourceRegistry(tmp_path / "dev" / "resources.db") as registry:
            fill(registry)
            device = RunningDevice(tmp_path / "dev", listen=False)
            try:
                cloud.wait_for(cn)
                yield cloud, registry
            finally:
                device.stop()
    finally:
        cloud.stop()


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


@contextlib.contextmanager
def http_serving(handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> Iterator[int]:
    """``handler`` served on a free loopback port (yielded) by a threaded HTTP server (HTTPS with ``context``), until
    the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def accept_uplink(stream: ByteStream) -> h2.connection.H2Connection:
    """A hand-written cloud's first steps on a device's ``stream``: read the upgrade request, switch protocols and
    send the HTTP/2 preface (the cloud is the client side); the h2 connection, for the test to go on with."""
    upgrade = UpgradeServer()
    while upgrade.receive_data(await stream.read(16384)) is None:
        pass
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    await stream.write(upgrade.accept() + conn.data_to_send())
    return conn


def _rtsp_complete(data: bytes) -> bool:
    """A whole RTSP response (head and Content-Length body) is in ``data``."""
    head, sep, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    return bool(sep) and len(body) >= (int(length[1]) if length else 0)


async def rtsp_request(stream: ByteStream, request: str) -> bytes:
    """Send one RTSP ``request`` on ``stream`` (e.g. one of ``open_rtsp``), read until its whole answer is in and
    close the stream: the answer."""
    try:
        await stream.write(request.encode())
        data = b""
        while not _rtsp_complete(data):
            chunk = await stream.read()
            assert chunk, data
            data += chunk
        return data
    finally:
        await stream.close()


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
