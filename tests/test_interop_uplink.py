"""Interoperability of the cloud uplink with implementations not written by us
(UPL-1, UPL-2, UPL-3, UPL-15, UPL-16, GEN-3).

* A "device" that is nothing but a TLS relay in front of Debian's ``nghttpd``
  (h2c with prior knowledge): our cloud (``CloudListener.request``) and our
  HTTP proxy must work through it, byte for byte, 5 MiB included.
* A cloud written directly on the ``h2`` library (and the stdlib ``ssl``)
  that answers the upgrade with ``101`` and POSTs SOAP: our device serves it.
* Stock HTTP clients against our proxy: ``nghttp``, ``curl`` (HTTP/2 prior
  knowledge, h2c upgrade, HTTP/1.1) and ``h2load`` (HTTP/2 and ``--h1``).

Documented proxy behaviour (``runtime/proxy.py``): a device that is not
connected, never was or has disconnected, gives ``404`` with a body naming the
device and ``GET /devices``; a device that is registered but breaks off before
answering gives ``502`` with a body saying it did not answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from helpers import free_port
from lxml import etree

from iec62676_2_33.namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TUP
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import HttpResponse
from iec62676_2_33.testing.harness import RunningCloud, RunningDevice, UplinkPki, seed_device, wait_until

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("nghttpd", "nghttp", "h2load", "curl")),
    reason="nghttp2-server, nghttp2-client and curl are needed (.ci/run installs them)")

ACTION = f"{TUP}/GetServiceCapabilities"
SOAP_CT = f'{SOAP12_CONTENT_TYPE}; action="{ACTION}"'
GET_CAPABILITIES = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tup="{TUP}">'
    "<s:Body><tup:GetServiceCapabilities/></s:Body></s:Envelope>").encode()
GET_UPLINKS = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tup="{TUP}">'
    "<s:Body><tup:GetUplinks/></s:Body></s:Envelope>").encode()


def capabilities(body: bytes) -> dict[str, str]:
    """The attributes of ``tup:Capabilities`` in a GetServiceCapabilitiesResponse."""
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    caps = root.find(f"{{{SOAP_ENV}}}Body/{{{TUP}}}GetServiceCapabilitiesResponse/{{{TUP}}}Capabilities")
    assert caps is not None, body[:500]
    return dict(caps.attrib)


def run_tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


# -- a stock HTTP/2 server behind a relay "device" ---------------------------------

@pytest.fixture
def nghttpd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``nghttpd --no-tls -d DIR PORT`` serving a few files (one of 5 MiB)."""
    docroot = tmp_path / "htdocs"
    docroot.mkdir()
    (docroot / "hello.txt").write_bytes(b"hello from nghttpd\n")
    (docroot / "small.bin").write_bytes(os.urandom(70_000))
    (docroot / "big.bin").write_bytes(os.urandom(5 << 20))
    port = free_port()
    proc = subprocess.Popen(["nghttpd", "--no-tls", "-d", str(docroot), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(listening, 10, what="nghttpd to listen")
        yield port, docroot
    finally:
        proc.terminate()
        proc.wait(10)


async def relay_device(cloud_port: int, certs: UplinkPki, cn: str, h2c_port: int, stop: asyncio.Event,
                       announce: object) -> None:
    """A device that is nothing but a relay: TLS to the cloud (stdlib ``ssl``, client
    certificate), the upgrade, wait for ``101``, then copy bytes to an h2c server."""
    cert, key = certs.device_files(cn)
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))
    ctx.load_cert_chain(str(cert), str(key))
    reader, writer = await asyncio.open_connection("127.0.0.1", cloud_port, ssl=ctx, server_hostname="localhost")
    writer.write(f"GET /uplink HTTP/1.1\r\nHost: localhost:{cloud_port}\r\nConnection: Upgrade\r\n"
                 "Upgrade: h2c-reverse\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert re.search(rb"(?im)^upgrade:\s*h2c-reverse\s*$", head), head
    # Anything the cloud sent after the 101 is still in ``reader``: it goes to nghttpd first.
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", h2c_port)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            dst.close()

    tasks = [asyncio.ensure_future(pipe(reader, up_writer)), asyncio.ensure_future(pipe(up_reader, writer)),
             asyncio.ensure_future(stop.wait())]
    announce("relaying")  # type: ignore[operator]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.close()
    up_writer.close()


def test_relay_device_to_nghttpd_serves_cloud_and_proxy_UPL_2_UPL_3_UPL_16(
        tmp_path: Path, nghttpd: tuple[int, Path]) -> None:
    """UPL-2, UPL-3, UPL-15, UPL-16: a stock h2c server (nghttpd) behind a bare TLS relay
    is a device to our cloud: ``cloud.request`` and the proxy fetch its files intact."""
    h2c_port, docroot = nghttpd
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    relay = BackgroundService(lambda stop, announce: relay_device(cloud.port, certs, "relay-1", h2c_port, stop,
                                                                  announce), name="relay")
    try:
        relay.start()
        cloud.wait_for("relay-1")
        for name in ("hello.txt", "small.bin", "big.bin"):
            response = cloud.call(lambda n=name: cloud.cloud.request("relay-1", "GET", f"/{n}"))
            assert response.status == 200, (name, response.status)
            assert response.body == (docroot / name).read_bytes(), name
        missing = cloud.call(lambda: cloud.cloud.request("relay-1", "GET", "/missing"))
        assert missing.status == 404
        # Several streams at once over the one uplink.
        async def eight() -> list[HttpResponse]:
            return await asyncio.gather(*(cloud.cloud.request("relay-1", "GET", "/small.bin") for _ in range(8)))

        many = cloud.call(eight)
        assert all(r.status == 200 and r.body == (docroot / "small.bin").read_bytes() for r in many)

        expected = (docroot / "big.bin").read_bytes()
        with httpx.Client(timeout=60) as client:
            listing = client.get(f"{cloud.proxy_url}/devices")
            assert listing.status_code == 200
            assert [d["id"] for d in listing.json()] == ["relay-1"]
            got = client.get(f"{cloud.proxy_url}/devices/relay-1/big.bin")
            assert got.status_code == 200
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(expected).digest()
        out = tmp_path / "via-nghttp.bin"
        done = run_tool("curl", "--http2-prior-knowledge", "-sS", "-o", str(out), "-w", "%{http_code}",
                        f"{cloud.proxy_url}/devices/relay-1/big.bin")
        assert done.stdout == "200", done.stderr
        assert out.read_bytes() == expected
    finally:
        relay.stop()
        cloud.stop()


# -- a cloud written directly on the h2 library ------------------------------------

class H2LibraryCloud:
    """A cloud not written by us: stdlib ``ssl`` + asyncio, the upgrade read by hand,
    ``101``, then ``h2`` as the HTTP/2 client POSTing SOAP to the device."""

    def __init__(self, certs: UplinkPki, requests: list[bytes]) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs.cert), str(certs.key))
        self.ctx.load_verify_locations(str(certs.ca_file))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.requests = requests
        self.result: asyncio.Future[dict[str, object]] | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.result is not None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if self.result.done():
                return
            peer = dict(x[0] for x in writer.get_extra_info("peercert")["subject"])
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n")
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            answers: dict[int, dict[str, object]] = {}
            for body in self.requests:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", "device"),
                                        (":path", "/onvif/uplink_service"), ("content-type", SOAP_CT),
                                        ("content-length", str(len(body)))])
                conn.send_data(sid, body, end_stream=True)
                answers[sid] = {"body": bytearray()}
            writer.write(conn.data_to_send())
            await writer.drain()
            settings_seen = False
            while not all("ended" in a for a in answers.values()):
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, "the device closed the uplink"
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RemoteSettingsChanged):
                        settings_seen = True
                    elif isinstance(ev, h2.events.ResponseReceived):
                        answers[ev.stream_id]["headers"] = dict(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        answers[ev.stream_id]["body"] += ev.data  # type: ignore[operator]
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        answers[ev.stream_id]["ended"] = True
                    elif isinstance(ev, h2.events.StreamReset):
                        raise ConnectionError(f"the device reset stream {ev.stream_id}")
                writer.write(conn.data_to_send())
                await writer.drain()
            conn.close_connection()
            writer.write(conn.data_to_send())
            await writer.drain()
            self.result.set_result({"head": head, "peer": peer, "settings": settings_seen,
                                    "answers": [answers[k] for k in sorted(answers)]})
        except BaseException as exc:
            if not self.result.done():
                self.result.set_exception(exc)
            raise
        finally:
            writer.close()


async def test_cloud_on_h2_library_is_served_by_our_device_UPL_2_UPL_3_UPL_12_UPL_16(tmp_path: Path) -> None:
    """UPL-1, UPL-2, UPL-3, UPL-12, UPL-13, UPL-16: a cloud written on ``h2`` (not our code)
    gets our device's upgrade, answers 101, POSTs two SOAP requests at once and gets
    both answers from the device's services over the reversed connection."""
    certs = UplinkPki(tmp_path / "pki")
    peer = H2LibraryCloud(certs, [GET_CAPABILITIES, GET_UPLINKS])
    peer.result = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0, ssl=peer.ctx)
    port = server.sockets[0].getsockname()[1]
    seed_device(tmp_path / "dev", certs, "camera-7", [(f"https://localhost:{port}/uplink", ("User",))])
    device = await asyncio.to_thread(RunningDevice, tmp_path / "dev", listen=False)
    try:
        async with asyncio.timeout(20):
            result = await peer.result
    finally:
        await asyncio.to_thread(device.stop)
        server.close()
    head = result["head"].decode()  # type: ignore[attr-defined]
    assert head.startswith("GET /uplink HTTP/1.1\r\n")
    assert re.search(r"(?im)^upgrade: h2c-reverse\r$", head) and re.search(r"(?im)^connection: upgrade\r$", head)
    assert re.search(rf"(?im)^host: localhost:{port}\r$", head)
    assert result["peer"] == {"commonName": "camera-7"}
    assert result["settings"] is True
    caps_answer, uplinks_answer = result["answers"]  # type: ignore[misc]
    assert caps_answer["headers"][":status"] == "200"
    assert caps_answer["headers"]["content-type"].startswith("application/soap+xml")
    assert capabilities(bytes(caps_answer["body"]))["MaxUplinks"] == "8"
    # GetUplinks is READ_SYSTEM: the uplink's User level may read it (UPL-12).
    assert uplinks_answer["headers"][":status"] == "200"
    assert b"GetUplinksResponse" in uplinks_answer["body"]
    assert f"https://localhost:{port}/uplink".encode() in uplinks_answer["body"]


# -- stock HTTP clients against our proxy --------------------------------------------

@pytest.fixture
def proxied_device(tmp_path: Path) -> Iterator[tuple[RunningCloud, RunningDevice, Path]]:
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    seed_device(tmp_path / "dev", certs, "cam-1", [(cloud.uplink_url(), ("User",))])
    device = RunningDevice(tmp_path / "dev", listen=False)
    soap = tmp_path / "caps.xml"
    soap.write_bytes(GET_CAPABILITIES)
    try:
        cloud.wait_for("cam-1")
        yield cloud, device, soap
    finally:
        device.stop()
        cloud.stop()


def test_nghttp_and_curl_against_the_proxy_GEN_3_UPL_16(proxied_device: tuple[RunningCloud, RunningDevice, Path]) -> None:
    """GEN-3, UPL-16: unmodified HTTP clients (nghttp with HTTP/2 prior knowledge, curl
    over HTTP/2 and HTTP/1.1) list the devices and call one through the proxy."""
    cloud, _device, soap = proxied_device
    base = cloud.proxy_url
    listing = run_tool("nghttp", "-v", f"{base}/devices")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", listing.stdout), listing.stdout
    body = re.search(r"(?ms)^\[$.*?^\]$", listing.stdout).group(0)  # type: ignore[union-attr]
    assert [d["id"] for d in json.loads(body)] == ["cam-1"]
    assert json.loads(body)[0]["auth_mode"] == "mTLS"

    call = run_tool("nghttp", "-d", str(soap), "-H", f"content-type: {SOAP_CT}",
                    f"{base}/devices/cam-1/onvif/uplink_service")
    assert call.returncode == 0, call.stderr
    assert capabilities(call.stdout.encode())["MaxUplinks"] == "8"

    for flag, proto in (("--http2-prior-knowledge", "HTTP/2"), ("--http2", "HTTP/1.1"), ("--http1.1", "HTTP/1.1")):
        got = run_tool("curl", flag, "-sS", "-D", "-", f"{base}/devices")
        assert got.returncode == 0, got.stderr
        if flag == "--http2":  # the h2c upgrade (deprecated by RFC 9113) is declined: answered on HTTP/1.1
            assert got.stdout.startswith("HTTP/1.1 200 OK\n"), got.stdout
        assert re.search(rf"(?m)^{re.escape(proto)} 200", got.stdout), got.stdout
        assert '"id": "cam-1"' in got.stdout
        posted = run_tool("curl", flag, "-sS", "-o", "-", "-w", "\n%{http_code} %{http_version}",
                          "-H", f"Content-Type: {SOAP_CT}", "--data-binary", f"@{soap}",
                          f"{base}/devices/cam-1/onvif/uplink_service")
        body_text, _, status = posted.stdout.rpartition("\n")
        # curl --http2 stays on HTTP/1.1: the proxy's server declines the h2c upgrade.
        assert status == ("200 2" if flag == "--http2-prior-knowledge" else "200 1.1"), (flag, posted)
        assert capabilities(body_text.encode())["MaxUplinks"] == "8"


def _h2load_summary(output: str) -> dict[str, int]:
    match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", output)
    assert match, output
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    assert codes, output
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    return {**dict(zip(keys, map(int, match.groups()))),
            **dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups())))}


@pytest.mark.parametrize("protocol", ["h2c", "h1"])
def test_h2load_against_the_proxy_UPL_16(proxied_device: tuple[RunningCloud, RunningDevice, Path], protocol: str) -> None:
    """UPL-15, UPL-16: h2load POSTs 200 SOAP calls over 4 client connections (HTTP/2 prior
    knowledge, and ``--h1``) through the proxy and one uplink: every one succeeds."""
    cloud, _device, soap = proxied_device
    args = ["h2load", "-n", "200", "-c", "4", "-d", str(soap), "-H", f"content-type: {SOAP_CT}"]
    args += ["--h1"] if protocol == "h1" else ["-m", "8"]  # 8 concurrent streams per HTTP/2 connection
    done = run_tool(*args, f"{cloud.proxy_url}/devices/cam-1/onvif/uplink_service", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _h2load_summary(done.stdout)
    assert summary["total"] == summary["done"] == 200, done.stdout
    assert summary["errored"] == summary["timeout"] == 0, done.stdout
    # Both protocols count every answer: the HTTP/1.1 status line carries its reason phrase.
    assert summary["succeeded"] == summary["2xx"] == 200 and summary["failed"] == 0, done.stdout
    one = httpx.post(f"{cloud.proxy_url}/devices/cam-1/onvif/uplink_service", content=soap.read_bytes(),
                     headers={"content-type": SOAP_CT}, timeout=10)
    assert one.status_code == 200 and capabilities(one.content)["MaxUplinks"] == "8"
    data = re.search(r"traffic: .*\((\d+)\) data", done.stdout)
    assert data and int(data.group(1)) == 200 * len(one.content), done.stdout


def test_unknown_and_disconnected_devices_give_404_GEN_3(proxied_device: tuple[RunningCloud, RunningDevice, Path]) -> None:
    """GEN-3: the proxy answers 404 with a clear body for a device that never connected
    and for one that has disconnected."""
    cloud, device, soap = proxied_device
    url = f"{cloud.proxy_url}/devices/nobody/onvif/uplink_service"
    got = run_tool("curl", "--http2-prior-knowledge", "-sS", "-o", "-", "-w", "\n%{http_code}", url)
    text, _, status = got.stdout.rpartition("\n")
    assert status == "404"
    assert text == "device 'nobody' is not connected; GET /devices lists the connected ones\n"

    device.stop()
    wait_until(lambda: "cam-1" not in cloud.device_ids(), what="the cloud to notice the device left")
    got = run_tool("curl", "--http1.1", "-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary", f"@{soap}",
                   f"{cloud.proxy_url}/devices/cam-1/onvif/uplink_service")
    text, _, status = got.stdout.rpartition("\n")
    assert status == "404"
    assert "device 'cam-1' is not connected" in text
    listing = httpx.get(f"{cloud.proxy_url}/devices", timeout=10)
    assert listing.json() == []


async def breaking_device(cloud_port: int, certs: UplinkPki, cn: str, stop: asyncio.Event, announce: object) -> None:
    """A device (stdlib ssl + h2 server role) that takes a request and drops the uplink."""
    cert, key = certs.device_files(cn)
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))
    ctx.load_cert_chain(str(cert), str(key))
    reader, writer = await asyncio.open_connection("127.0.0.1", cloud_port, ssl=ctx, server_hostname="localhost")
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    announce("up")  # type: ignore[operator]
    while data := await reader.read(65536):
        events = conn.receive_data(data)
        writer.write(conn.data_to_send())
        if any(isinstance(ev, h2.events.RequestReceived) for ev in events):
            writer.transport.abort()  # gone without an answer
            break
    await stop.wait()


def test_device_breaking_off_gives_502_GEN_3(tmp_path: Path) -> None:
    """GEN-3, UPL-16: a connected device that drops its uplink before it answers makes
    the proxy answer 502 with a body saying the device did not answer."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    dev = BackgroundService(lambda stop, announce: breaking_device(cloud.port, certs, "flaky", stop, announce),
                            name="flaky")
    try:
        dev.start()
        cloud.wait_for("flaky")
        got = httpx.get(f"{cloud.proxy_url}/devices/flaky/anything", timeout=20)
        assert got.status_code == 502
        assert got.text.startswith("device 'flaky' did not answer: ")
    finally:
        dev.stop()
        cloud.stop()


def test_tools_are_the_stock_ones() -> None:
    """GEN-3: the peers above are the Debian tools, not something of ours on the PATH."""
    for tool in ("nghttpd", "nghttp", "h2load"):
        version = run_tool(tool, "--version")
        assert "nghttp2" in version.stdout, version
    assert run_tool("curl", "--version").stdout.startswith("curl ")

