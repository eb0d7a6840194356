"""GEN-1, ADR-2, ADR-3: ``iec62676 vss lower add|list|remove`` — durable, owner-only, the prefix checked by
the token rules, the password never shown, one-line errors."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import one_line_error, run

from iec62676_2_33.vss.lower import VSS_DB, LowerStore

URL = "http://127.0.0.1:8080/onvif/device_service"


def test_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GEN-1: both kinds of lower system survive the process."""
    data = str(tmp_path / "vss")
    assert run(capsys, "vss", "lower", "add", "--data", data, "--prefix", "site", "--url", URL,
               "--user", "vss", "--password", "s3cret-pw")[0] == 0
    assert run(capsys, "vss", "lower", "add", "--data", data, "--uplink", "cam-7", "--prefix", "cam-7")[0] == 0
    code, out, _ = run(capsys, "vss", "lower", "list", "--data", data, "--json")
    assert code == 0
    assert json.loads(out) == [
        {"prefix": "cam-7", "url": None, "user": None, "uplink": "cam-7"},
        {"prefix": "site", "url": URL, "user": "vss", "uplink": None},
    ]
    code, out, _ = run(capsys, "vss", "lower", "list", "--data", data)
    assert "s3cret-pw" not in out and "site" in out
    with LowerStore(data) as store:
        assert {x.prefix: x.password for x in store.list()} == {"cam-7": None, "site": "s3cret-pw"}
    assert b"s3cret-pw" not in (tmp_path / "vss" / VSS_DB).read_bytes()  # sealed at rest
    assert stat.S_IMODE((tmp_path / "vss" / VSS_DB).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "vss").stat().st_mode) == 0o700
    assert run(capsys, "vss", "lower", "remove", "--data", data, "--prefix", "site")[0] == 0
    code, out, _ = run(capsys, "vss", "lower", "list", "--data", data, "--json")
    assert [x["prefix"] for x in json.loads(out)] == ["cam-7"]


@pytest.mark.parametrize("argv, why", [
    (["--prefix", "a:b", "--uplink", "x"], "contains ':'"),
    (["--prefix", "p" * 64, "--uplink", "x"], "64"),
    (["--prefix", "p q", "--uplink", "x"], "whitespace"),
    (["--prefix", "p"], "--url"),
    (["--prefix", "p", "--url", URL, "--uplink", "x"], "not both"),
    (["--prefix", "p", "--url", "ftp://h/onvif/device_service", "--user", "u", "--password", "w"], "http"),
    (["--prefix", "p", "--url", URL, "--password", "w"], "together"),
    (["--prefix", "p", "--url", URL, "--user", "u"], "--password-file"),
    (["--url", URL, "--user", "u", "--password", "w"], "--prefix"),
])
def test_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], why: str) -> None:
    """ADR-2, ADR-3: a bad prefix or an incomplete way to reach the system is one line, exit 2, nothing stored."""
    code, _, err = run(capsys, "vss", "lower", "add", "--data", str(tmp_path / "vss"), *argv)
    assert code == 2
    assert why in one_line_error(err)
    with LowerStore(tmp_path / "vss") as store:
        assert store.list() == []


def test_the_password_comes_from_a_file_or_the_environment_never_only_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """ADR-2: the VSS's password at a lower system is read like every secret of the command line: from
    --password-file's first line or $IEC62676_PASSWORD, so it need not be visible to other local users."""
    secret = tmp_path / "pw.txt"
    secret.write_text("from-the-file\n", encoding="utf-8")
    data = str(tmp_path / "vss")
    assert run(capsys, "vss", "lower", "add", "--data", data, "--prefix", "a", "--url", URL, "--user", "u",
               "--password-file", str(secret))[0] == 0
    monkeypatch.setenv("IEC62676_PASSWORD", "from-the-environment")
    assert run(capsys, "vss", "lower", "add", "--data", data, "--prefix", "b", "--url", URL, "--user", "u")[0] == 0
    with LowerStore(tmp_path / "vss") as store:
        assert {x.prefix: x.password for x in store.list()} == {"a": "from-the-file", "b": "from-the-environment"}


def test_remove_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "vss")
    assert run(capsys, "vss", "lower", "add", "--data", data, "--uplink", "cam-7", "--prefix", "cam-7")[0] == 0
    code, _, err = run(capsys, "vss", "lower", "remove", "--data", data, "--prefix", "nope")
    assert code == 2
    assert "nope" in one_line_error(err)


@pytest.mark.parametrize(("command", "extra"), [(["lower", "list"], []), (["lower", "remove"], ["--prefix", "p"]),
                                                (["serve"], ["--listen", "127.0.0.1:0"])])
def test_a_mistyped_data_folder_is_an_error_not_a_new_vss(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          command: list[str], extra: list[str]) -> None:
    """A --data folder that holds neither a VSS nor a device is one line, exit 2, and nothing is created."""
    typo = tmp_path / "typo"
    code, _, err = run(capsys, "vss", *command, "--data", str(typo), *extra)
    assert code == 2
    assert "does not exist" in one_line_error(err)
    assert not typo.exists()


def test_serve_needs_listener_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "vss", "lower", "add", "--data", str(tmp_path / "vss"), "--uplink", "c", "--prefix", "c")[0] == 0
    code, _, err = run(capsys, "vss", "serve", "--data", str(tmp_path / "vss"), "--listen", "127.0.0.1:0",
                       "--uplink-listen", "127.0.0.1:0")
    assert code == 2
    assert "--cert" in one_line_error(err)


def test_serve_runs_the_vss(tmp_path: Path) -> None:
    """GEN-1: ``vss serve`` is a device runtime (same users, same paths) whose Media2 service answers."""
    from vss_env import NS, answer, seed, soap

    seed(tmp_path / "vss")
    proc = subprocess.Popen([sys.executable, "-m", "iec62676_2_33", "vss", "serve", "--data", str(tmp_path / "vss"),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""))
        reader.start()
        reader.join(30)
        found = re.search(r"device serving (http://[^/\s]+)", line[0] if line else "")
        assert found, line
        status, root = soap(found.group(1), "/onvif/media2_service", "<tr2:GetProfiles/>")
        assert status == 200
        assert answer(root).findall("tr2:Profiles", NS) == []
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
