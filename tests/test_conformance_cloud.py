"""``iec62676 conformance cloud`` against our own cloud (TEST-1, UPL-1 … UPL-4, UPL-6 … UPL-8, UPL-13 …
UPL-16): the tool dials it as a device and every case passes, also at a wss address with access tokens only;
without a request to answer the request case is skipped with its reason; a cloud that does not ask for client
certificates fails CLOUD-TLS; a cloud that swallows connection errors fails CLOUD-HOSTILE; a cloud that takes
any token fails CLOUD-TOKEN; a cloud that answers a WebSocket upgrade with the native 101 fails CLOUD-WSS."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.exceptions
import httpx
import pytest
from helpers import accept_uplink, run
from hostile_http import tls_serving
from token_env import CLIENT_SECRET, TokenWorld

from iec62676_2_33.conformance import Verdict
from iec62676_2_33.conformance import run as run_cases
from iec62676_2_33.conformance.cloud_cases import CLOUD_CASES, CloudSession, CloudTarget
from iec62676_2_33.conformance.tokensource import TokenSource
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import CloudListener, UpgradeRejected
from iec62676_2_33.sansio.upgrade import UpgradeRequest
from iec62676_2_33.testing.authserver import OAuthClient
from iec62676_2_33.testing.harness import RunningCloud, UplinkPki, wait_until
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import start_tls_server


def _target(certs: UplinkPki, cloud: RunningCloud, **changes: object) -> CloudTarget:
    cert, key = certs.device_files("probe-1")
    return CloudTarget(url=cloud.uplink_url(), cert=cert, key=key, ca=certs.ca_file, **changes)  # type: ignore[arg-type]


def test_our_cloud_passes_every_case(tmp_path: Path) -> None:
    """TEST-1, UPL-2, UPL-3, UPL-6, UPL-7, UPL-13, UPL-16: every cloud case passes against our cloud; the
    request case answers a request the cloud sends while the probe is connected."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
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
    expected = {c: Verdict.SKIP if c in ("CLOUD-WSS", "CLOUD-TOKEN") else Verdict.PASS for c in CLOUD_CASES.cases}
    assert {r.case.id: r.verdict for r in report.results} == expected, [(r.case.id, r.message) for r in report.results]
    assert sent == [200]


def test_our_cloud_passes_over_wss_with_access_tokens_upl_4_upl_14(tmp_path: Path) -> None:
    """UPL-4, UPL-14, UPL-16, TEST-1: our cloud taking access tokens only (no client certificates), tested at a
    wss address with a token from the authorization server (client credentials): every case runs over the
    WebSocket and passes (CLOUD-101, the native form, is skipped with its reason); CLOUD-TOKEN gets in with the
    token in the header and in the query, and a tampered token is refused 401 with a Bearer challenge."""
    certs = UplinkPki(tmp_path / "pki")
    world = TokenWorld(certs, tmp_path)
    sent: list[int] = []

    def trigger() -> None:
        def call() -> None:
            wait_until(lambda: "cam-t" in httpx.get(f"{world.proxy_url}/devices", timeout=5).text, 10,
                       what="the probe listed by the cloud")
            sent.append(httpx.post(f"{world.proxy_url}/devices/cam-t/onvif/device_service", content=b"<x/>",
                                   headers={"content-type": "application/soap+xml"}, timeout=10).status_code)

        threading.Thread(target=call, daemon=True).start()

    token = TokenSource(server_uri=f"{world.app.issuer}/token", client_id="cam-t", client_secret=CLIENT_SECRET,
                        ca=certs.ca_file)
    target = CloudTarget(url=world.uplink_url.replace("https://", "wss://"), cert=None, key=None, ca=certs.ca_file,
                         token=token, trigger=trigger)
    try:
        report = run_cases(CLOUD_CASES, CloudSession(target), target="ours, wss, tokens")
    finally:
        world.stop()
    verdicts = {r.case.id: (r.verdict, r.message) for r in report.results}
    assert verdicts.pop("CLOUD-101")[0] is Verdict.SKIP
    assert all(v is Verdict.PASS for v, _ in verdicts.values()), verdicts
    assert sent == [200]
    evidence = {item.label: item.text for r in report.results if r.case.id == "CLOUD-TOKEN" for item in r.evidence}
    assert "Upgrade: websocket" in evidence["valid token (access_token query parameter)"]
    assert evidence["tampered token"].startswith("refused: 401") and 'error="invalid_token"' in evidence[
        "tampered token"]
    assert evidence["token source"] == f"TokenSource({world.app.issuer}/token)"
    assert not any("eyJ" in text or CLIENT_SECRET in text for text in evidence.values())  # no token, no secret


def test_cli_token_file_against_a_cloud_taking_tokens_only(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-14, TEST-1: ``conformance cloud --token-file …`` without ``--cert`` against our cloud that takes access
    tokens only: CLOUD-TLS passes (the token gets in, nothing else does), CLOUD-TOKEN passes, CLOUD-WSS is skipped
    for the https address."""
    certs = UplinkPki(tmp_path / "pki")
    world = TokenWorld(certs, tmp_path)
    token_file = tmp_path / "token.txt"
    token_file.write_text(world.app.issue(OAuthClient("cam-t", CLIENT_SECRET, "cam-t")) + "\n")
    try:
        code, out, err = run(capsys, "conformance", "cloud", "--cloud", world.uplink_url, "--ca", str(certs.ca_file),
                             "--token-file", str(token_file), "--only", "CLOUD-TLS", "CLOUD-101", "CLOUD-TOKEN",
                             "CLOUD-WSS")
    finally:
        world.stop()
    assert code == 0, out + err
    assert "PASS  CLOUD-TLS" in out and "PASS  CLOUD-TOKEN" in out and "SKIP  CLOUD-WSS" in out
    assert "PASSED: 3 passed, 0 failed, 1 skipped" in out


def test_a_cloud_that_takes_any_token_fails_cloud_token(tmp_path: Path) -> None:
    """UPL-14, TEST-1: a cloud that lets in whoever sends ``Authorization: Bearer`` (it never checks the token)
    fails CLOUD-TOKEN: it switched protocols for a tampered token."""
    certs = UplinkPki(tmp_path / "pki")

    class AnyBearer:
        async def authenticate(self, stream: object, request: UpgradeRequest) -> tuple[str, str]:
            if (request.authorization or "").lower().startswith("bearer "):
                return "anyone", "AccessToken"
            raise UpgradeRejected(401, "a token is required", headers=[("WWW-Authenticate", "Bearer")])

    service = BackgroundService(tls_serving(certs, CloudListener(AnyBearer()).handle), name="gullible cloud").start()  # type: ignore[arg-type]
    target = CloudTarget(url=f"https://localhost:{service.messages[0]}/uplink", cert=None, key=None,
                         ca=certs.ca_file, token=TokenSource(token="eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl"))
    try:
        report = run_cases(CLOUD_CASES, CloudSession(target), target="gullible", only=["CLOUD-TOKEN"])
    finally:
        service.stop()
    (result,) = report.results
    assert result.verdict is Verdict.FAIL
    assert result.message == "the cloud switched protocols for a tampered access token: it does not validate " \
                             "tokens (UPL-14)"


def test_a_cloud_that_answers_websocket_with_the_native_101_fails_cloud_wss(tmp_path: Path) -> None:
    """UPL-4, TEST-1: a cloud that answers the WebSocket upgrade of a wss address with the native
    ``Upgrade: h2c-reverse`` 101 (no Sec-WebSocket-Accept, no subprotocol) fails CLOUD-WSS, the answer shown."""
    certs = UplinkPki(tmp_path / "pki")

    async def native_only(stream: ByteStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = await stream.read(16384)
            if not chunk:
                return
            head += chunk
        await stream.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c-reverse\r\nConnection: Upgrade\r\n\r\n")
        while await stream.read(65536):
            pass

    service = BackgroundService(tls_serving(certs, native_only, client_certificates=True), name="native cloud").start()
    cert, key = certs.device_files("probe-w")
    target = CloudTarget(url=f"wss://localhost:{service.messages[0]}/uplink", cert=cert, key=key, ca=certs.ca_file)
    try:
        report = run_cases(CLOUD_CASES, CloudSession(target), target="native only", only=["CLOUD-WSS"])
    finally:
        service.stop()
    (result,) = report.results
    assert result.verdict is Verdict.FAIL
    assert result.message.startswith("the cloud's answer to the upgrade is not right:"), result.message
    assert "Upgrade: h2c-reverse" in result.evidence[0].text


def test_cli_skips_the_request_case_without_a_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TEST-1, UPL-16: on the command line nothing makes our cloud send a request: CLOUD-REQUEST is skipped
    with the reason, the rest pass, exit status 0."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    cert, key = certs.device_files("probe-2")
    try:
        code, out, err = run(capsys, "conformance", "cloud", "--cloud", cloud.uplink_url(), "--cert", str(cert),
                             "--key", str(key), "--ca", str(certs.ca_file), "--wait-request", "0.5")
    finally:
        cloud.stop()
    assert code == 0, out + err
    assert "SKIP  CLOUD-REQUEST" in out and "the cloud sent no request within 0.5 s" in out
    assert "SKIP  CLOUD-WSS" in out and "SKIP  CLOUD-TOKEN" in out  # an https address, no token source
    assert "PASSED: 6 passed, 0 failed, 3 skipped" in out


def test_a_cloud_without_client_certificates_fails_cloud_tls(tmp_path: Path) -> None:
    """UPL-13, TEST-1: a cloud that takes devices without a client certificate (its TLS server asks for
    none, its authenticator lets anyone in) fails CLOUD-TLS, saying so."""
    certs = UplinkPki(tmp_path / "pki")

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
    certs = UplinkPki(tmp_path / "pki")

    async def handle(stream: ByteStream) -> None:
        conn = await accept_uplink(stream)
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

    service = BackgroundService(tls_serving(certs, handle, client_certificates=True),
                                name="swallowing cloud").start()
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
