"""A gallery of deliberately broken devices: the conformance kit must catch each (TEST-1, UPL-2, UPL-8,
UPL-9, UPL-10, UPL-11, UPL-12, UPL-14, UPL-15, CFG-1, CFG-2, CFG-3, SEC-4).

Each broken device is our own device runtime with one part swapped for a faulty one (in this process,
with ``monkeypatch``), one per class of fault seen or feared in the field; the case that covers the fault
must FAIL and say what was wrong. ``test_conformance_device.py`` shows the unbroken device passing every
case.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_conformance_device import QUICK, dut_url, fresh_device, quick_target

from iec62676_2_33.conformance import DEVICE_CASES, DeviceSession, Verdict
from iec62676_2_33.conformance import run as run_cases
from iec62676_2_33.conformance.wire import CLIENT_MAGIC
from iec62676_2_33.runtime import agent, dial, wsgi_bridge
from iec62676_2_33.runtime.agent import AgentSettings, UplinkAgent
from iec62676_2_33.sansio.backoff import ReconnectBackoff
from iec62676_2_33.security.oauth import AccessTokenProvider
from iec62676_2_33.services import uplink as uplink_service
from iec62676_2_33.soap.fault import SoapFault


def raw_http2_without_upgrade(mp: pytest.MonkeyPatch) -> None:
    """UPL-2: HTTP/2 straight after TLS (the client preface, as the only public C++ uplink pair does)."""
    async def no_upgrade(stream: Any, remote_address: str, headers: Any = ()) -> bytes:
        await stream.write(CLIENT_MAGIC)
        return b""

    mp.setattr(dial, "upgrade", no_upgrade)


def constant_backoff(mp: pytest.MonkeyPatch) -> None:
    """UPL-9: the same interval after every failure."""
    class Constant(ReconnectBackoff):
        def next_delay(self) -> float:
            return self.first_interval

    mp.setattr(agent, "ReconnectBackoff", Constant)


def ignores_user_level(mp: pytest.MonkeyPatch) -> None:
    """UPL-12, SEC-4: every tunnelled request runs as Administrator, whatever the UserLevel."""
    class Everything(wsgi_bridge.WsgiOnH2):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["user_level"] = ("Administrator",)
            super().__init__(*args, **kwargs)

    mp.setattr(agent, "WsgiOnH2", Everything)


def accepts_any_certificate(mp: pytest.MonkeyPatch) -> None:
    """UPL-11: the cloud's certificate is not verified at all."""
    real = dial.tls_context

    def trusting(store: Any, cfg: Any) -> ssl.SSLContext:
        ctx = real(store, cfg)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    mp.setattr(dial, "tls_context", trusting)


def wrong_fault_subcodes(mp: pytest.MonkeyPatch) -> None:
    """CFG-3: faults without their last subcode (env:Sender/ter:InvalidArgVal, no ter:CertificateID)."""
    mp.setattr(uplink_service, "_fault", lambda exc: SoapFault(code=exc.code, subcodes=exc.subcodes[:1],
                                                                reason=str(exc)))


def status_stuck_on_connected(mp: pytest.MonkeyPatch) -> None:
    """CFG-1, CFG-2: once Connected, GetUplinks says Connected for ever."""
    real = UplinkAgent.status
    seen: set[str] = set()

    def sticky(self: UplinkAgent, address: str) -> tuple[str, str | None]:
        status, error = real(self, address)
        if status == "Connected":
            seen.add(address)
        return ("Connected", None) if address in seen else (status, error)

    mp.setattr(UplinkAgent, "status", sticky)


def ignores_authorization_server(mp: pytest.MonkeyPatch) -> None:
    """UPL-14: the uplink names an authorization server, but the device sends no token in its upgrade."""
    async def nothing(self: AccessTokenProvider, cfg: Any) -> list[tuple[str, str]]:
        return []

    mp.setattr(AccessTokenProvider, "auth_headers", nothing)


def reuses_the_rejected_token(mp: pytest.MonkeyPatch) -> None:
    """UPL-14: after a 401 (invalid_token) the device "refreshes" from its cache: the rejected token again."""
    mp.setattr(AccessTokenProvider, "refresh", AccessTokenProvider.auth_headers)


def connection_error_drops_every_uplink(mp: pytest.MonkeyPatch) -> None:
    """UPL-10, UPL-15: a connection error on one uplink restarts the device's whole HTTP/2 side, dropping
    every other uplink too."""
    real = agent._Link._serve

    async def serve(self: Any, result: Any) -> str:
        reason: str = await real(self, result)
        if "(by us)" in reason:
            for link in list(self.agent._links.values()):
                if link is not self and link.driver is not None:
                    link.driver.close("HTTP/2 side restarted")
        return reason

    mp.setattr(agent._Link, "_serve", serve)


def backoff_shared_by_every_uplink(mp: pytest.MonkeyPatch) -> None:
    """UPL-9: the reconnection sequence is seeded per device, not per uplink: every configuration waits the
    same intervals."""
    class PerDevice(ReconnectBackoff):
        def __init__(self, identity: str, **kwargs: Any) -> None:
            super().__init__(identity.split(" ", 1)[0], **kwargs)

    mp.setattr(agent, "ReconnectBackoff", PerDevice)


def one_uplink_at_a_time(mp: pytest.MonkeyPatch) -> None:
    """UPL-10: the device holds one uplink only: the first configuration that dials keeps the only slot, every
    other one is refused (as a device with a single connection slot does) until that configuration is gone."""
    real = agent._Link._dial

    async def dial(self: Any) -> Any:
        holder = next((link for link in self.agent._links.values()
                       if link is not self and getattr(link, "holds_the_slot", False) and not link.supervisor.stopped),
                      None)
        if holder is not None:
            raise OSError(f"only one uplink at a time; {holder.cfg.remote_address} holds it")
        self.holds_the_slot = True
        return await real(self)

    mp.setattr(agent._Link, "_dial", dial)


NEVER_SILENT = AgentSettings(backoff_first=(0.05, 0.3), backoff_cap=0.5, stable_after=0.5, dead_after=3600.0,
                             idle_ping_after=1.0)
TOO_EAGER = AgentSettings(backoff_first=(0.05, 0.3), backoff_cap=0.5, stable_after=0.5, dead_after=0.4,
                          idle_ping_after=0.2)

GALLERY: list[tuple[str, Callable[[pytest.MonkeyPatch], None] | None, AgentSettings, str, str]] = [
    ("raw HTTP/2 after TLS", raw_http2_without_upgrade, QUICK, "EXT-UPGRADE",
     "sent no HTTP/1.1 upgrade request after TLS; its first bytes: b'PRI * HTTP/2.0"),
    ("never closes on silence", None, NEVER_SILENT, "EXT-SILENCE",
     "the device kept the uplink open 2 s after the cloud fell silent (UPL-8: close after more than 1 s)"),
    ("closes before 30 s of silence", None, TOO_EAGER, "EXT-SILENCE", "before the 1 s of UPL-8"),
    ("constant backoff", constant_backoff, QUICK, "EXT-BACKOFF", "the intervals do not ascend"),
    ("ignores UserLevel", ignores_user_level, QUICK, "EXT-USERLEVEL",
     ("DeleteUplink over a User uplink answered env:Sender/ter:InvalidArgVal/ter:Address: it was not refused as "
     "env:Sender/ter:NotAuthorized")),
    ("accepts any cloud certificate", accepts_any_certificate, QUICK, "EXT-CLOUD-CERT",
     "wrong name: the device accepted the certificate and went on (sent b'GET /uplink HTTP/1.1"),
    ("wrong fault subcodes", wrong_fault_subcodes, QUICK, "EXT-FAULTS",
     "unknown CertificateID: env:Sender/ter:InvalidArgVal, expected env:Sender/ter:InvalidArgVal/ter:CertificateID"),
    ("Status stuck on Connected", status_stuck_on_connected, QUICK, "EXT-STATUS",
     "GetUplinks still reports Status Connected 2 s after the cloud closed the uplink"),
    ("sends no access token", ignores_authorization_server, QUICK, "EXT-TOKEN",
     ("the device's upgrade request carries no Authorization: Bearer token (UPL-14); the tool answered "
      "'HTTP/1.1 401")),
    ("reuses the rejected token", reuses_the_rejected_token, QUICK, "EXT-TOKEN-REFETCH",
     "after the 401 (invalid_token) the device retried with the rejected token instead of fetching a new one"),
    ("a connection error drops every uplink", connection_error_drops_every_uplink, QUICK, "EXT-HOSTILE",
     "after DATA on stream 0: the device dropped its uplink to the legitimate cloud"),
    ("connects only one of two uplinks", one_uplink_at_a_time, QUICK, "EXT-PARALLEL",
     "the device connected 1 of its 2 uplinks: none to https://127.0.0.1:"),
    ("one backoff sequence for every uplink", backoff_shared_by_every_uplink, QUICK, "EXT-SHARED-BACKOFF",
     "all 4 uplinks wait the same intervals"),
]


@pytest.mark.parametrize(("fault", "breaker", "settings", "case_id", "message"), GALLERY,
                         ids=[g[0] for g in GALLERY])
def test_broken_device_fails_the_matching_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str,
                                               breaker: Callable[[pytest.MonkeyPatch], None] | None,
                                               settings: AgentSettings, case_id: str, message: str) -> None:
    """TEST-1: the broken device FAILS the case that covers its fault, with a message that names it."""
    if breaker is not None:
        breaker(monkeypatch)
    device = fresh_device(tmp_path / "dut", settings)
    try:
        with DeviceSession(quick_target(device, silence_rule=1.0, silence_grace=1.0, notice_timeout=2.0)) as session:
            report = run_cases(DEVICE_CASES, session, target=dut_url(device), only=[case_id])
    finally:
        device.stop()
    (result,) = report.results
    assert result.verdict is Verdict.FAIL, (fault, result.message)
    assert message in result.message, result.message
    assert result.evidence, "a failure carries its evidence"
