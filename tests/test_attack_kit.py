"""The conformance kit against hostile products (TEST-1, UPL-2, UPL-7, UPL-15, UPL-16): every case ends with a
one-line verdict, never a hang.

A device under test that trickles its answer (head or body) a byte at a time, or floods an endless body, on
the kit's hand-written SOAP requests, on its zeep clients and through its uplink, ends the case with a one-line
failure within the target's deadline and the kit's byte budget (an uplink stream is reset); a device whose
answer holds control characters leaves a JUnit report a CI system can read and a terminal that shows them as
escapes; a fault reason of many lines makes a one-line, bounded message; a cloud under test that never answers
the upgrade fails with a clear line, one that floods HTTP/2 frames and never reads what the kit writes back
ends the probe at its deadline, and a probe keeps a bounded record of what a cloud floods it with.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from helpers import accept_uplink, run
from hostile_http import Behaviour, HostileServer, tls_serving

from iec62676_2_33.conformance import Verdict, junit_xml
from iec62676_2_33.conformance import run as run_cases
from iec62676_2_33.conformance.cloud_cases import CLOUD_CASES, KEEP_EVENTS, CloudSession, CloudTarget, Probe
from iec62676_2_33.conformance.device_cases import DEVICE_CASES
from iec62676_2_33.conformance.device_session import DeviceSession, DeviceTarget
from iec62676_2_33.conformance.registry import MAX_MESSAGE_CHARS, Result, run_case
from iec62676_2_33.errors import Iec62676Error
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TUP
from iec62676_2_33.pki import make_leaf
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.sansio.upgrade import Switched, UpgradeClient
from iec62676_2_33.testing.harness import UplinkPki, wait_until
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.contexts import client_context
from iec62676_2_33.transport.tls import connect_tls

#: The longest any hostile exchange may hold a test before it counts as a hang (a bound, not a speed goal).
HANG = 30.0

def trickle_head(conn: socket.socket, stop: threading.Event, request: bytes) -> None:
    """An answer head that never ends: a header byte every 0.2 s (well inside any per-read timeout)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.wait(0.2):
        conn.sendall(b"x")


def trickle_body(conn: socket.socket, stop: threading.Event, request: bytes) -> None:
    """A whole head, then a body that never ends: a byte every 0.2 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml\r\nconnection: close\r\n\r\n<")
    while not stop.wait(0.2):
        conn.sendall(b" ")


def flood_body(conn: socket.socket, stop: threading.Event, request: bytes) -> None:
    """A whole head, then an endless body as fast as the kit takes it."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml\r\nconnection: close\r\n\r\n")
    chunk = b"<a>" * 20000
    while not stop.is_set():
        conn.sendall(chunk)


def control_characters(conn: socket.socket, stop: threading.Event, request: bytes) -> None:
    """A short garbage answer holding characters XML 1.0 cannot carry."""
    body = b"\x00\x01garbage\x1b[31m\x0c<oops>"
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                 % (len(body), body))


def terminal_escapes(conn: socket.socket, stop: threading.Event, request: bytes) -> None:
    """A non-XML answer to GetServices carrying terminal escape sequences (set the title, clear the screen)."""
    body = b"\x1b]0;pwned\x07\x1b[2J not SOAP"
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                 % (len(body), body))


def _answer(conn: socket.socket, body: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml\r\ncontent-length: %d\r\n"
                 b"connection: close\r\n\r\n%s" % (len(body), body))


#: A fault reason of 200 lines, 20,000 characters in all.
LONG_REASON = "\n".join(f"line {n}: " + "x" * 90 for n in range(200))


def long_fault_reason(conn: socket.socket, stop: threading.Event, request: bytes) -> None:
    """GetServices answered as a device with an uplink service would; every other request a SOAP fault whose
    reason is :data:`LONG_REASON`."""
    env = f'<s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tds="{TDS}" xmlns:tup="{TUP}"><s:Body>'
    if b"GetServices" in request:
        caps = "<tds:Capabilities><tup:Capabilities MaxUplinks='2'/></tds:Capabilities>" \
            if b"IncludeCapability>true" in request else ""
        port = conn.getsockname()[1]
        body = (f"{env}<tds:GetServicesResponse><tds:Service><tds:Namespace>{TUP}</tds:Namespace><tds:XAddr>"
                f"http://127.0.0.1:{port}/onvif/uplink</tds:XAddr>{caps}</tds:Service></tds:GetServicesResponse>")
    else:
        body = (f"{env}<s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason>"
                f"<s:Text xml:lang='en'>{LONG_REASON}</s:Text></s:Reason></s:Fault>")
    _answer(conn, (body + "</s:Body></s:Envelope>").encode())


def _bounded(fn: Callable[[], object]) -> object:
    """``fn()`` in a thread, waited for at most :data:`HANG` seconds; its result or its exception."""
    outcome: list[object] = []

    def go() -> None:
        try:
            outcome.append(fn())
        except Exception as exc:  # noqa: BLE001 - handed back for the test to judge
            outcome.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"still waiting after {HANG:g} s: the kit hangs on a hostile product"
    return outcome[0]


def _against(behaviour: Behaviour, fn: Callable[[DeviceSession], object]) -> object:
    device = HostileServer(behaviour, "/onvif/device_service")
    try:
        session = DeviceSession(DeviceTarget(dut=device.url, username="admin", password="pw", timeout=1.0))
        try:
            return _bounded(lambda: fn(session))
        finally:
            device.stop.set()  # before close(): a hung exchange on the original kit ends when the device stops
            session.close()
    finally:
        device.close()


@pytest.mark.parametrize(("behaviour", "expected"), [
    (trickle_head, "ExchangeTimeout: no whole answer within 1 s"),
    (trickle_body, "ExchangeTimeout: no whole answer within 1 s"),
    (flood_body, "AnswerTooLong: an answer longer than 4194304 bytes"),
], ids=["trickled-head", "trickled-body", "endless-body"])
def test_device_case_ends_with_a_verdict_against_a_trickling_or_flooding_device(
        behaviour: Behaviour, expected: str) -> None:
    """TEST-1: the kit's own SOAP requests (GetServices of UPLINK-4-1-1) are bounded as a whole: a device
    that trickles or floods its answer fails the case with one line."""
    result = _against(behaviour, lambda s: run_case(DEVICE_CASES.cases["UPLINK-4-1-1"], s))
    assert isinstance(result, Result)
    assert (result.verdict, result.message) == (Verdict.FAIL, expected)


@pytest.mark.parametrize("behaviour", [trickle_head, trickle_body, flood_body],
                         ids=["trickled-head", "trickled-body", "endless-body"])
def test_device_clock_question_is_bounded(behaviour: Behaviour) -> None:
    """TEST-1: the kit's zeep clients (GetSystemDateAndTime for the WS-Security clock offset) end at the
    deadline or the byte budget with a one-line error naming the address."""
    outcome = _against(behaviour, lambda s: s.time_offset())
    assert isinstance(outcome, Iec62676Error), outcome
    message = str(outcome)
    assert "/onvif/device_service: " in message and "\n" not in message
    assert "no whole answer within 1 s" in message or "an answer longer than" in message


def test_junit_report_stays_xml_when_the_device_answers_control_characters() -> None:
    """TEST-1: a device's answer with control characters goes into the evidence; the JUnit report is still
    well-formed XML, with each such character replaced."""
    result = _against(control_characters, lambda s: run_case(DEVICE_CASES.cases["UPLINK-4-1-1"], s))
    assert isinstance(result, Result) and result.verdict is Verdict.FAIL
    assert "\x01garbage" in result.evidence[0].text  # the evidence itself keeps what came
    from iec62676_2_33.conformance import Report

    report = Report("device", "hostile", [result])
    suite = ET.fromstring(junit_xml(report))
    failure = suite.find("testcase/failure")
    assert failure is not None and "\ufffd\ufffdgarbage\ufffd[31m\ufffd<oops>" in (failure.text or "")


def test_message_quoting_a_long_fault_reason_is_one_bounded_line() -> None:
    """TEST-1: a case's failure message that quotes the device's fault reason (200 lines, 20,000 characters)
    is one line of at most MAX_MESSAGE_CHARS; the evidence keeps the answer (bounded as ever)."""
    result = _against(long_fault_reason, lambda s: run_case(DEVICE_CASES.cases["UPLINK-4-1-1"], s))
    assert isinstance(result, Result) and result.verdict is Verdict.FAIL
    assert result.message.startswith("GetServiceCapabilities faulted: env:Receiver line 0: xxx")
    assert "\n" not in result.message and len(result.message) <= MAX_MESSAGE_CHARS + 30
    assert result.message.endswith(" characters)") and "line 199" not in result.message


def test_cli_shows_a_device_s_escape_sequences_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """TEST-1: a failure message quoting what the device sent (here its non-SOAP answer to GetServices) reaches
    the engineer's terminal with control characters shown as escapes, not acted on."""
    device = HostileServer(terminal_escapes, "/onvif/device_service")
    try:
        code, out, err = run(capsys, "conformance", "device", "--dut", device.url, "--user", "admin", "--password",
                             "pw", "--listen", "127.0.0.1:0", "--only", "UPLINK-3-1-1")
    finally:
        device.close()
    assert code == 1, out + err
    assert "\x1b" not in out and "\x07" not in out
    assert "FAIL  UPLINK-3-1-1" in out and "failed: \\x1b]0;pwned\\x07\\x1b[2J not SOAP" in out


# -- a device answering through its uplink --------------------------------------------------------------------


def _uplink_device(s: DeviceSession, play: str, record: dict[str, bool]) -> BackgroundService:
    """A device (certificate CN ``hostile-dev`` from the tool's CA) that dials the tool's cloud and answers
    every request with a head and then a body that never ends: ``trickle`` (a byte every 0.2 s) or ``flood``
    (as fast as HTTP/2 flow control lets it). ``record["reset"]`` notes that the tool reset the stream."""
    leaf = make_leaf(s.pki.ca, "hostile-dev", kind="client")
    context = client_context(cafile_pems=[s.pki.ca.cert_pem()], certfile_pem=leaf.cert_pem(),
                             keyfile_pem=leaf.key_pem())

    async def serve(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        tls = await connect_tls("127.0.0.1", s.main.port, context, server_hostname="127.0.0.1", timeout=10.0)
        client = UpgradeClient(s.main.url())
        await tls.write(client.initiate())
        while not isinstance(event := client.receive_data(await tls.read(16384)), Switched):
            pass
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        streams: list[int] = []
        data = event.trailing_data
        announce("up")
        try:
            while not stop.is_set():
                for ev in conn.receive_data(data) if data else ():
                    if isinstance(ev, h2.events.RequestReceived):
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/soap+xml")])
                        streams.append(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        record["reset"] = True
                        streams.remove(ev.stream_id)
                for sid in streams:
                    if play == "trickle":
                        conn.send_data(sid, b" ")
                        continue
                    while (room := min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)) > 0:
                        conn.send_data(sid, b" " * room)
                await tls.write(conn.data_to_send())
                try:
                    async with asyncio.timeout(0.2):
                        data = await tls.read(65536)
                except TimeoutError:
                    data = b""
        finally:
            await tls.close()

    return BackgroundService(serve, name="hostile uplink device").start()


@pytest.mark.parametrize(("play", "deadline", "expected"), [
    ("trickle", 1.0, "no whole answer through the uplink within 1 s"),
    ("flood", 20.0, "the device's answer to POST /onvif/device_service exceeded 4194304 bytes"),
], ids=["trickled-body", "endless-body"])
def test_tunnel_answer_is_bounded_and_its_stream_reset(play: str, deadline: float, expected: str) -> None:
    """UPL-16, TEST-1: a request through the uplink of a device that trickles or floods its answer ends at the
    deadline or the byte budget with one line, and the tool resets the stream (nothing goes on reading it)."""
    record = {"reset": False}
    session = DeviceSession(DeviceTarget(dut="http://127.0.0.1:9/onvif/device_service", username="admin",
                                         password="pw", timeout=1.0))
    try:
        device = _uplink_device(session, play, record)
        try:
            wait_until(lambda: session.cloud.channel(session.main, "hostile-dev"), 15.0, what="the uplink")
            outcome = _bounded(lambda: session.tunnel(session.main, "http://dev/onvif/device_service", TDS,
                                                      "GetDeviceInformation", timeout=deadline,
                                                      identity="hostile-dev"))
            assert isinstance(outcome, Iec62676Error), outcome
            assert str(outcome) == expected
            wait_until(lambda: record["reset"], 15.0, what="the tool to reset the stream")
        finally:
            device.stop()
    finally:
        session.close()


# -- a cloud under test ---------------------------------------------------------------------------------------


def _cloud(certs: UplinkPki, flood: bytes, *, read: bool) -> BackgroundService:
    """A TLS cloud that switches protocols, sends its preface and then writes ``flood`` endlessly; it reads
    what the device sends only when ``read``."""
    async def handle(stream: ByteStream) -> None:
        await accept_uplink(stream)

        async def drain_reads() -> None:
            while await stream.read(65536):
                pass

        reader = asyncio.get_running_loop().create_task(drain_reads()) if read else None
        try:
            while True:
                await stream.write(flood)
                await asyncio.sleep(0)  # let the loop see the kit hang up (the write then fails)
        except Iec62676Error:
            pass
        finally:
            if reader is not None:
                reader.cancel()

    return BackgroundService(tls_serving(certs, handle, client_certificates=True), name="hostile cloud").start()


def _session(certs: UplinkPki, service: BackgroundService, name: str) -> CloudSession:
    cert, key = certs.device_files(name)
    return CloudSession(CloudTarget(url=f"https://localhost:{service.messages[0]}/uplink", cert=cert, key=key,
                                    ca=certs.ca_file, timeout=2.0))


#: PING frames (RFC 9113 §6.7), each of which the kit answers with a PING ACK.
PINGS = b"".join(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + i.to_bytes(8, "big") for i in range(4096))
#: Frames of an unknown type (RFC 9113 §5.5: ignored), nothing to answer.
UNKNOWN = b"\x00\x00\x00\xfa\x00\x00\x00\x00\x00" * 4096


def test_cloud_that_floods_pings_and_never_reads_fails_cloud_ping(tmp_path: Path) -> None:
    """UPL-7, TEST-1: a cloud that floods PINGs and reads none of the ACKs the kit writes back cannot hold
    the probe: its writes are under the deadline too, and CLOUD-PING fails with one line."""
    certs = UplinkPki(tmp_path / "pki")
    service = _cloud(certs, PINGS, read=False)
    try:
        session = _session(certs, service, "probe-ping")
        report = _bounded(lambda: run_cases(CLOUD_CASES, session, target="flood", only=["CLOUD-PING"]))
    finally:
        service.stop()
    (result,) = report.results  # type: ignore[attr-defined]
    assert result.verdict is Verdict.FAIL
    assert result.message.startswith("no PING ACK with payload "), result.message


def test_probe_keeps_a_bounded_record_of_a_frame_flood(tmp_path: Path) -> None:
    """UPL-15: a cloud that floods frames (of a type to ignore) while the probe waits: the probe keeps at most
    :data:`KEEP_EVENTS` of the events, however many frames came."""
    certs = UplinkPki(tmp_path / "pki")
    service = _cloud(certs, UNKNOWN, read=True)

    class Counting(Probe):
        frames = 0

        def _received(self, data: bytes) -> None:
            self.frames += len(data) // 9  # the flood's frames are 9 bytes each
            super()._received(data)

    async def go(session: CloudSession) -> tuple[int, int]:
        probe = Counting(session)
        try:
            await probe.open()
            await probe.pump(lambda: probe.frames > 4 * KEEP_EVENTS, 10.0)
            return probe.frames, len(probe.events)
        finally:
            await probe.close()

    try:
        session = _session(certs, service, "probe-flood")
        outcome = _bounded(lambda: session.run(lambda: go(session)))
    finally:
        service.stop()
    assert isinstance(outcome, tuple), outcome
    frames, kept = outcome
    assert frames > 4 * KEEP_EVENTS and 0 < kept <= KEEP_EVENTS


def _silent_cloud(certs: UplinkPki, head: bytes) -> BackgroundService:
    """A TLS cloud that takes the upgrade request, writes ``head`` and then one more byte of it every 0.2 s
    (nothing at all when ``head`` is empty), reading on."""
    async def handle(stream: ByteStream) -> None:
        await stream.read(16384)
        try:
            if head:
                await stream.write(head)
            while True:
                if head:
                    await stream.write(b"x")
                await asyncio.sleep(0.2)
        except Iec62676Error:
            pass

    return BackgroundService(tls_serving(certs, handle, client_certificates=True), name="silent cloud").start()


@pytest.mark.parametrize("head", [b"", b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: "], ids=["silent", "trickled-101"])
@pytest.mark.parametrize("case_id", ["CLOUD-PREFACE", "CLOUD-TLS"])
def test_cloud_that_never_answers_the_upgrade_fails_with_a_clear_line(tmp_path: Path, head: bytes,
                                                                        case_id: str) -> None:
    """UPL-2, TEST-1: a cloud that accepts the connection and never answers the upgrade (or trickles its 101
    head) fails the case at the deadline with one line saying so."""
    certs = UplinkPki(tmp_path / "pki")
    service = _silent_cloud(certs, head)
    try:
        cert, key = certs.device_files("probe-silent")
        session = CloudSession(CloudTarget(url=f"https://localhost:{service.messages[0]}/uplink", cert=cert, key=key,
                                           ca=certs.ca_file, timeout=1.0))
        report = _bounded(lambda: run_cases(CLOUD_CASES, session, target="silent", only=[case_id]))
    finally:
        service.stop()
    (result,) = report.results  # type: ignore[attr-defined]
    assert (result.verdict, result.message) == (
        Verdict.FAIL, "TransportError: the cloud sent no whole answer to the upgrade within 1 s")
