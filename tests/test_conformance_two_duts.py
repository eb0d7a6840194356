"""EXT-TWO-DUT-BACKOFF: two instances of one device model must not share one reconnection sequence (TEST-1,
UPL-9, UPL-10).

Two instances of our own device (each its own data folder, so its own device salt) pass through the command
line (``--dut2``, the second's password from a file); two instances of a broken model whose backoff is
seeded only from the RemoteAddress fail through the pytest plugin's ``conformance`` fixture; without a
second instance the case is skipped with its reason. Both instances are left without the configurations
the case made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import one_line_error, run
from test_conformance_device import QUICK, dut_url, fresh_device

from iec62676_2_33.conformance import DEVICE_CASES, DeviceSession, DeviceTarget, Verdict
from iec62676_2_33.conformance import run as run_cases
from iec62676_2_33.runtime import agent
from iec62676_2_33.runtime.agent import AgentSettings
from iec62676_2_33.sansio.backoff import ReconnectBackoff
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import ADMIN, RunningDevice

CASE = "EXT-TWO-DUT-BACKOFF"
#: First intervals spread over 3 s, as widely as a real device spreads them over 1 … 4 s (our device's default):
#: two instances then coincide on all four addresses about once in 800,000 runs.
SPREAD = AgentSettings(backoff_first=(0.5, 3.5), backoff_cap=30.0, stable_after=0.5)


@pytest.fixture
def two_devices(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RunningDevice, RunningDevice]]:
    settings: AgentSettings = getattr(request, "param", QUICK)
    first = fresh_device(tmp_path / "dut1", settings)
    try:
        second = fresh_device(tmp_path / "dut2", settings)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def uplinks(device: RunningDevice) -> list[str]:
    with DeviceStore(device.data) as store:
        return [cfg.remote_address for cfg in store.list_uplinks()]


@pytest.mark.parametrize("two_devices", [SPREAD], indirect=True)
def test_two_instances_of_our_device_pass(two_devices: tuple[RunningDevice, RunningDevice], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-9, UPL-10, TEST-1: two instances of our device (different identities) given the same four
    configurations to a refusing cloud back off on sequences of their own: ``conformance device --dut2`` passes
    the case, the HTML report shows both instances' intervals per address, and neither instance keeps a
    configuration the run made."""
    first, second = two_devices
    secret, html = tmp_path / "pw2.txt", tmp_path / "report.html"
    secret.write_text(ADMIN[1] + "\n")
    code, out, err = run(capsys, "conformance", "device", "--dut", dut_url(first), "--user", ADMIN[0],
                         "--password", ADMIN[1], "--listen", "127.0.0.1:0", "--dut2", dut_url(second),
                         "--user2", ADMIN[0], "--password2-file", str(secret), "--only", CASE, "--html", str(html))
    assert code == 0, out + err
    assert f"PASS  {CASE}" in out and "PASSED: 1 passed, 0 failed" in out
    page = html.read_text()
    sequences = re.findall(r"intervals of https://127\.0\.0\.1:\d+/conformance-pair-(\d) on instance (\d) \(s\)", page)
    assert sorted(sequences) == [(str(n), str(i)) for n in range(4) for i in (1, 2)]
    assert "conformance-dut-2" in page  # the second instance's certificate CN, in the evidence
    assert uplinks(first) == [] and uplinks(second) == []


def address_seeded_backoff(mp: pytest.MonkeyPatch) -> None:
    """UPL-9: the reconnection sequence is seeded from the RemoteAddress only (not from the device): every
    instance of the model configured alike waits the same intervals."""
    class PerAddress(ReconnectBackoff):
        def __init__(self, identity: str, **kwargs: Any) -> None:
            super().__init__(identity.split(" ", 1)[1], **kwargs)

    mp.setattr(agent, "ReconnectBackoff", PerAddress)


def test_address_seeded_backoff_fails(two_devices: tuple[RunningDevice, RunningDevice],
                                      monkeypatch: pytest.MonkeyPatch, conformance: Callable[..., Any]) -> None:
    """UPL-9, TEST-1: two instances of a model that seeds its backoff from the RemoteAddress only wait the same
    intervals on every address: the case FAILS and says so (the plugin's ``conformance`` fixture with
    ``dut2``); the evidence carries both instances' intervals per address. Each instance alone still passes
    EXT-SHARED-BACKOFF's one-device check (its addresses differ), which is why this case exists."""
    address_seeded_backoff(monkeypatch)
    first, second = two_devices
    options = {"silence_rule": 2.0, "silence_grace": 2.0, "connect_timeout": 10.0, "notice_timeout": 3.0,
               "backoff_window": 10.0}
    report = conformance(dut_url(first), ADMIN[0], ADMIN[1], only=[CASE], dut2=dut_url(second), **options)
    (result,) = report.results
    assert result.verdict is Verdict.FAIL, result.message
    assert "both instances wait the same intervals on all 4 addresses" in result.message, result.message
    labels = [item.label for item in result.evidence if item.label.startswith("intervals of")]
    assert len(labels) == 8 and sum(label.endswith("on instance 2 (s)") for label in labels) == 4
    assert uplinks(first) == [] and uplinks(second) == []


def test_without_a_second_instance_the_case_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    """TEST-1: without ``--dut2`` the case is skipped with its reason; ``--dut2`` naming the ``--dut`` itself is
    a one-line usage error before anything starts."""
    nowhere = "http://127.0.0.1:9/onvif/device_service"  # the case decides before it calls the device
    with DeviceSession(DeviceTarget(dut=nowhere, username="u", password="p")) as session:
        report = run_cases(DEVICE_CASES, session, target=nowhere, only=[CASE])
    (result,) = report.results
    assert result.verdict is Verdict.SKIP
    assert result.message == "no second instance given (--dut2): the case compares two instances of one model"
    code, _, err = run(capsys, "conformance", "device", "--dut", nowhere, "--user", "u", "--password", "p",
                       "--listen", "127.0.0.1:0", "--dut2", nowhere)
    assert code == 2 and "--dut2 names the same device service as --dut" in one_line_error(err)
