"""``iec62676 conformance cloud`` against our own cloud (TEST-1, UPL-1 … UPL-3, UPL-6 … UPL-8, UPL-13,
UPL-15, UPL-16): the tool dials it as a device and every case passes; without a request to answer the
request case is skipped with its reason; a cloud that does not ask for client certificates fails
CLOUD-TLS; a cloud that swallows connection errors fails CLOUD-HOSTILE."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.exceptions
import pytest
from helpers import run
from uplink_env import Cloud, Pki

from iec62676_2_33.conformance import Verdict
from iec62676_2_33.conformance import run as run_cases
from iec62676_2_33.conformance.cloud_cases import CLOUD_CASES, CloudSession, CloudTarget
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import CloudListener
from iec62676_2_33.sansio.upgrade import UpgradeServer
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import start_tls_server


def _target(certs: Pki, cloud: Cloud, **changes: object) -> CloudTarget:
    cert, key = certs.device_files("probe-1")
    return CloudTarget(url=cloud.uplink_url(), cert=cert, key=key, ca=certs.ca_file, **changes)  # type: ignore[arg-type]


def test_our_cloud_passes_every_case(tmp_path: Path) -> None:
    """TEST-1, UPL-2, UPL-3, UPL-6, UPL-7, UPL-13, UPL-16: every cloud case passes against our cloud; the
    request case answers a request the cloud sends while the probe is connected."""
    certs = Pki(tmp_path / "pki")
    cloud = Cloud(certs)
    sent: list[int] = []

    def trigger() -> None:
        def call() -> None:
            cloud.wait_for("probe-1", 10)
            response = cloud.call(lambda: cloud.cloud.request("probe-1", "POST", "/onvif/device_service",
                                                              [("content-type", "application/soap+xml")], b"<x/>",
                                                              timeout=10))
            sent.append(response.status)

        threading.Thread(target=call, daemon=True).start()

    try:
        report = run_cases(CLOUD_CASES, CloudSession(_target(certs, cloud, trigger=trigger)), target="ours")
    finally:
        cloud.stop()
    assert {r.case.id: r.verdict for r in report.results} == {c: Verdict.PASS for c in CLOUD_CASES.cases}, [
        (r.case.id, r.message) for r in report.results]
    assert sent == [200]


def test_cli_skips_the_request_case_without_a_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TEST-1, UPL-16: on the command line nothing makes our cloud send a request: CLOUD-REQUEST is skipped
    with the reason, the rest pass, exit status 0."""
    certs = Pki(tmp_path / "pki")
    cloud = Cloud(certs)
    cert, key = certs.device_files("probe-2")
    try:
        code, out, err = run(capsys, "conformance", "cloud", "--cloud", cloud.uplink_url(), "--cert", str(cert),
                             "--key", str(key), "--ca", str(certs.ca_file), "--wait-request", "0.5")
    finally:
        cloud.stop()
    assert code == 0, out + err
    assert "SKIP  CLOUD-REQUEST" in out and "the cloud sent no request within 0.5 s" in out
    assert "PASSED: 6 passed, 0 failed, 1 skipped" in out


def test_a_cloud_without_client_certificates_fails_cloud_tls(tmp_path: Path) -> None:
    """UPL-13, TEST-1: a cloud that takes devices without a client certificate (its TLS server asks for
    none, its authenticator lets anyone in) fails CLOUD-TLS, saying so."""
    certs = Pki(tmp_path / "pki")

    class Anyone:
        async def authenticate(self, stream: object, request: object) -> tuple[str, str]:
            return "anyone", "none"

    async def lax_cloud(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        context = server_context(certs.cert.read_bytes(), certs.key.read_bytes())
        server = await start_tls_server(CloudListener(Anyone()).handle, ("127.0.0.1", 0), context)  # type: ignore[arg-type]
        announce(str(server.sockets[0].getsockname()[1]))
        try:
            await stop.wait()
        finally:
            server.close()

    service = BackgroundService(lax_cloud, name="lax cloud").start()
    cert, key = certs.device_files("probe-3")
    target = CloudTarget(url=f"https://localhost:{service.messages[0]}/uplink", cert=cert, key=key,
                         ca=certs.ca_file)
    try:
        report = run_cases(CLOUD_CASES, CloudSession(target), target="lax", only=["CLOUD-TLS"])
    finally:
        service.stop()
    (result,) = report.results
    assert result.verdict is Verdict.FAIL
    assert result.message == "the cloud switched protocols for a device without a client certificate"


def test_a_cloud_that_swallows_connection_errors_fails_cloud_hostile(tmp_path: Path) -> None:
    """UPL-15, TEST-1: a hand-written cloud on h2 that, when a device sends a malformed frame, neither sends
    GOAWAY nor closes (it stops writing and reads on) fails CLOUD-HOSTILE, naming the frame; well-behaved
    devices on fresh connections are still answered, so the verdict is about the connection error alone."""
    certs = Pki(tmp_path / "pki")

    async def handle(stream: ByteStream) -> None:
        upgrade = UpgradeServer()
        while upgrade.receive_data(await stream.read(16384)) is None:
            pass
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        await stream.write(upgrade.accept() + conn.data_to_send())
        swallowed = False
        while data := await stream.read(65536):
            if swallowed:
                continue
            try:
                conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                swallowed = True  # the fault: no GOAWAY, no close
                continue
            await stream.write(conn.data_to_send())

    async def swallowing_cloud(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        context = server_context(certs.cert.read_bytes(), certs.key.read_bytes(),
                                 client_ca_pems=[certs.ca.cert_pem()], require_client_cert=True)
        server = await start_tls_server(handle, ("127.0.0.1", 0), context)
        announce(str(server.sockets[0].getsockname()[1]))
        try:
            await stop.wait()
        finally:
            server.close()

    service = BackgroundService(swallowing_cloud, name="swallowing cloud").start()
    cert, key = certs.device_files("probe-4")
    target = CloudTarget(url=f"https://localhost:{service.messages[0]}/uplink", cert=cert, key=key,
                         ca=certs.ca_file)
    try:
        report = run_cases(CLOUD_CASES, CloudSession(target), target="swallowing", only=["CLOUD-HOSTILE", "CLOUD-PING"])
    finally:
        service.stop()
    results = {r.case.id: r for r in report.results}
    assert results["CLOUD-PING"].verdict is Verdict.PASS, results["CLOUD-PING"].message
    failed = results["CLOUD-HOSTILE"]
    assert failed.verdict is Verdict.FAIL
    assert failed.message.startswith("DATA on stream 0: the cloud did not end the connection within 3 s"), failed.message
