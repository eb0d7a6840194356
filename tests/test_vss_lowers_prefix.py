"""ANX-A-5, ADR-4, ADR-2, GEN-1: ``iec62676 vss lower add`` without ``--prefix`` takes the lower system's Annex A
device ID — the SerialNumber a running device announces (asked with the VSS's account, within ``--timeout``), or
the ``--uplink`` device ID — and the VSS then exposes the device's tokens under it; a system without an Annex A ID,
one that refuses the account, one that does not answer in time and an uplink ID of another shape are one line
asking for ``--prefix``, nothing stored.

Real parts on loopback: ``run_device`` (its ``device-info.json``), ``run_vss``, the CLI as a separate process and
in process, a TCP listener that never answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import one_line_error, run
from vss_env import NS, answer, seed, soap, start_device, start_vss

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.vss.lower import LowerStore

#: ANX-A-5's example: IP camera no. 15 of ticket check 08 at station 10 of metro line 1 in city 320100.
DEVICE_ID = "32010001071321008015"
CAMERA = MediaSource(token="main", name="Ticket check camera", rtsp_url="rtsp://127.0.0.1:9/main")
CLI_TIMEOUT = 60.0


def _device(tmp_path: Path, serial: str | None) -> Iterator[str]:
    seed(tmp_path / "cam", sources=(CAMERA,))
    if serial is not None:
        (tmp_path / "cam" / "device-info.json").write_text(json.dumps({"serial_number": serial}), encoding="utf-8")
    service, base = start_device(tmp_path / "cam")
    try:
        yield f"{base}/onvif/device_service"
    finally:
        service.stop()


@pytest.fixture
def annex_a_device(tmp_path: Path) -> Iterator[str]:
    """A running device whose SerialNumber is an Annex A device ID; its device service URL."""
    yield from _device(tmp_path, DEVICE_ID)


@pytest.fixture
def plain_device(tmp_path: Path) -> Iterator[str]:
    """A running device with the default SerialNumber (12 hex characters, no Annex A ID)."""
    yield from _device(tmp_path, None)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iec62676_2_33", *argv], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)


def _stored(data: Path) -> list[str]:
    with LowerStore(data) as store:
        return [lower.prefix for lower in store.list()]


def test_url_prefix_defaults_to_the_announced_device_id_anx_a_5_adr_4(annex_a_device: str, tmp_path: Path) -> None:
    """ANX-A-5, ADR-4, ADR-2: the CLI asks the device for its SerialNumber, stores the lower system under that
    Annex A ID, and the VSS serving that folder exposes the device's profile as ``<device ID>:main``."""
    vss = tmp_path / "vss"
    seed(vss)
    done = _cli("vss", "lower", "add", "--data", str(vss), "--url", annex_a_device, "--user", "admin",
                "--password", "admin-pw")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"lower system {DEVICE_ID} stored ({annex_a_device})"
    listed = _cli("vss", "lower", "list", "--data", str(vss), "--json")
    assert json.loads(listed.stdout) == [{"prefix": DEVICE_ID, "url": annex_a_device, "user": "admin",
                                          "uplink": None}]
    service, base = start_vss(vss)
    try:
        status, root = soap(base, "/onvif/media2_service", "<tr2:GetProfiles><tr2:Type>All</tr2:Type>"
                                                           "</tr2:GetProfiles>")
        assert status == 200
        assert [p.get("token") for p in answer(root).findall("tr2:Profiles", NS)] == [f"{DEVICE_ID}:main"]
    finally:
        service.stop()


def test_an_explicit_prefix_asks_nothing_adr_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ADR-2: with ``--prefix`` the system is not asked (here nothing listens at the URL)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/onvif/device_service"
    assert run(capsys, "vss", "lower", "add", "--data", str(tmp_path / "vss"), "--prefix", "site", "--url", url,
               "--user", "u", "--password", "w")[0] == 0
    assert _stored(tmp_path / "vss") == ["site"]


def test_no_annex_a_serial_number_asks_for_a_prefix_anx_a_5(plain_device: str, tmp_path: Path) -> None:
    """ANX-A-5: a device whose SerialNumber is not 20 digits gives one line (exit 2) naming it; nothing stored."""
    done = _cli("vss", "lower", "add", "--data", str(tmp_path / "vss"), "--url", plain_device, "--user", "admin",
                "--password", "admin-pw")
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert "SerialNumber" in line and "not an Annex A device ID" in line and line.endswith("pass --prefix P")
    assert _stored(tmp_path / "vss") == []


def test_refused_account_asks_for_a_prefix_adr_4(annex_a_device: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """ADR-4: a device that refuses the VSS's account (wrong password) is one line with its reason."""
    code, _, err = run(capsys, "vss", "lower", "add", "--data", str(tmp_path / "vss"), "--url", annex_a_device,
                       "--user", "admin", "--password", "wrong")
    assert code == 2
    line = one_line_error(err)
    assert f"cannot ask {annex_a_device} for its Annex A device ID" in line and line.endswith("pass --prefix P")
    assert _stored(tmp_path / "vss") == []


def test_a_silent_system_is_left_at_the_deadline_adr_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ADR-4: a system that accepts the connection and never answers is given up after ``--timeout`` (one
    line, nothing stored); an unreachable one likewise."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/onvif/device_service"
        code, _, err = run(capsys, "vss", "lower", "add", "--data", str(tmp_path / "vss"), "--url", url,
                           "--user", "admin", "--password", "admin-pw", "--timeout", "0.5")
    assert code == 2
    assert one_line_error(err).endswith("pass --prefix P")
    code, _, err = run(capsys, "vss", "lower", "add", "--data", str(tmp_path / "vss"), "--url", url,
                       "--user", "admin", "--password", "admin-pw", "--timeout", "0.5")
    assert code == 2
    assert f"cannot ask {url}" in one_line_error(err)
    assert _stored(tmp_path / "vss") == []


def test_uplink_prefix_defaults_to_an_annex_a_device_id_anx_a_5(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """ANX-A-5, ADR-4: ``--uplink`` with an Annex A device ID is its own prefix; another shape of device ID is one
    line asking for ``--prefix``, and with ``--prefix`` it is stored."""
    data = str(tmp_path / "vss")
    code, out, _ = run(capsys, "vss", "lower", "add", "--data", data, "--uplink", DEVICE_ID)
    assert code == 0 and out.strip() == f"lower system {DEVICE_ID} stored (uplink:{DEVICE_ID})"
    code, _, err = run(capsys, "vss", "lower", "add", "--data", data, "--uplink", "cam-7")
    assert code == 2
    assert one_line_error(err) == ("iec62676: error: the uplink device ID 'cam-7' is not an Annex A device ID "
                                   "(20 digits) to use as the prefix; pass --prefix P")
    assert run(capsys, "vss", "lower", "add", "--data", data, "--uplink", "cam-7", "--prefix", "cam-7")[0] == 0
    assert _stored(tmp_path / "vss") == [DEVICE_ID, "cam-7"]
