"""CFG-2: ``device uplink list`` shows the running device's live Status and Error; the rest checks the
operator's command line (version, logging flags, data folder, secrets, pipes, one-line errors)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import seed_device
from helpers import one_line_error, run

import iec62676_2_33
from iec62676_2_33.store import DeviceStore

WAIT = 60.0
CLI = [sys.executable, "-m", "iec62676_2_33"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """Infrastructure: ``--version`` prints the package version."""
    code, out, _ = run(capsys, "--version")
    assert (code, out.strip()) == (0, f"iec62676 {iec62676_2_33.__version__}")


@pytest.mark.parametrize("flags", [["-v"], ["--log-level", "debug"], ["--log-level=DEBUG"], ["--verbose"]])
def test_log_flags_are_accepted_anywhere(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         flags: list[str]) -> None:
    """Infrastructure: ``-v``/``--log-level`` before or after the subcommand set the library's log level."""
    seed_device(tmp_path)
    logger = logging.getLogger("iec62676_2_33")
    before = logger.level
    try:
        code, _, err = run(capsys, "device", "user", "list", *flags, "--data", str(tmp_path))
        assert (code, err) == (0, "")
        assert logger.level == logging.DEBUG
        code, _, _ = run(capsys, *flags, "device", "user", "list", "--data", str(tmp_path))
        assert code == 0
    finally:
        logger.setLevel(before)


def test_bad_log_level_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Infrastructure: an unknown level is one line, exit 2."""
    code, _, err = run(capsys, "device", "--log-level", "LOUD")
    assert code == 2
    assert one_line_error(err) == "iec62676: error: --log-level 'LOUD': choose one of DEBUG, INFO, WARNING, ERROR"


def test_data_must_hold_a_device_unless_the_command_creates_it(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    """Infrastructure: a mistyped ``--data`` is an error, not a new empty device; first-run commands create it."""
    typo = tmp_path / "devcie"
    for argv in (["uplink", "list"], ["user", "list"], ["keystore", "list"], ["resources", "list"], ["serve"]):
        code, _, err = run(capsys, "device", *argv, "--data", str(typo))
        assert code == 2, argv
        line = one_line_error(err)
        assert str(typo) in line and ("does not exist" in line or "holds no device" in line), line
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "device", "serve", "--data", str(empty), "--listen", "127.0.0.1:0")
    assert code == 2
    assert "give --init" in one_line_error(err)
    # A first-run command creates the folder.
    code, _, _ = run(capsys, "device", "user", "add", "--data", str(typo), "--name", "ops", "--password", "pw",
                     "--level", "Operator")
    assert code == 0
    assert run(capsys, "device", "user", "list", "--data", str(typo))[1] == "ops\tOperator\n"


def test_passwords_from_a_file_or_the_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Infrastructure: a password from ``--password-file`` or ``$IEC62676_PASSWORD``; none at all is one line."""
    data = tmp_path / "data"
    secret = tmp_path / "pw.txt"
    secret.write_text("from-file\nignored\n")
    assert run(capsys, "device", "user", "add", "--data", str(data), "--name", "a", "--password-file", str(secret),
               "--level", "User")[0] == 0
    monkeypatch.setenv("IEC62676_PASSWORD", "from-env")
    assert run(capsys, "device", "user", "add", "--data", str(data), "--name", "b", "--level", "User")[0] == 0
    monkeypatch.delenv("IEC62676_PASSWORD")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = run(capsys, "device", "user", "add", "--data", str(data), "--name", "c", "--level", "User")
    assert code == 2
    assert one_line_error(err) == ("iec62676: error: give --password, --password-file or $IEC62676_PASSWORD "
                                   "(or run on a terminal to be asked)")
    with DeviceStore(data) as store:
        assert store.get_user("a") == ("from-file", "User")
        assert store.get_user("b") == ("from-env", "User")
        assert store.get_user("c") is None


def test_password_prompt_on_a_terminal(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Infrastructure: on a terminal the password is asked with getpass."""
    monkeypatch.delenv("IEC62676_PASSWORD", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert run(capsys, "device", "user", "add", "--data", str(tmp_path / "d"), "--name", "a", "--level", "User")[0] == 0
    with DeviceStore(tmp_path / "d") as store:
        assert store.get_user("a") == ("typed", "User")


def test_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """Infrastructure: output into a closed pipe (``| head -1``) ends without a word on stderr."""
    lines = tmp_path / "r.jsonl"
    lines.write_text("".join(json.dumps({"token": f"dev:cam{i:05d}", "kind": "MediaProfile"}) + "\n"
                             for i in range(20000)))
    subprocess.run([*CLI, "device", "resources", "load", "--data", str(tmp_path / "d"), str(lines)], check=True,
                   capture_output=True, timeout=WAIT)
    proc = subprocess.Popen([*CLI, "device", "resources", "list", "--data", str(tmp_path / "d")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(WAIT) != 0
    assert first.startswith(b"dev:cam00000\t")
    assert err == b""


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str], list[str]]]:
    """``device serve`` as a process, with one uplink to a port nobody listens on; its stderr lines."""
    data = tmp_path / "dev"
    seed_device(data)
    assert subprocess.run([*CLI, "device", "uplink", "set", "--data", str(data), "--remote",
                           "https://127.0.0.1:9/up", "--cert-id", "cert-1"], timeout=WAIT, check=False).returncode == 0
    proc = subprocess.Popen([*CLI, "device", "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:
        yield data, proc, err_lines
    finally:
        proc.terminate()
        proc.wait(WAIT)


def _wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_uplink_list_shows_live_status_and_error_cfg_2(serving: tuple[Path, subprocess.Popen[str], list[str]]) -> None:
    """CFG-2: while ``device serve`` runs, ``uplink list`` shows the live Status and the Error of the failing
    dial; the serve log says why at INFO by default; once stopped, the list says no device runs."""
    data, proc, err_lines = serving
    assert proc.stdout is not None
    assert re.match(r"device serving http://127\.0\.0\.1:\d+/", proc.stdout.readline())

    def listed() -> dict[str, object]:
        out = subprocess.run([*CLI, "device", "uplink", "list", "--data", str(data), "--format", "json"],
                             capture_output=True, text=True, timeout=WAIT, check=True)
        [entry] = json.loads(out.stdout)
        return dict(entry, stderr=out.stderr)

    _wait_for(lambda: listed()["Error"] is not None, "the live Error never appeared")
    entry = listed()
    assert entry["Status"] in ("Offline", "Connecting")
    assert "127.0.0.1" in str(entry["Error"]) or "refused" in str(entry["Error"]).lower()
    assert entry["stderr"] == ""
    _wait_for(lambda: any("uplink https://127.0.0.1:9/up:" in line and " INFO " in line for line in err_lines),
              "the failing dial was not logged at INFO")
    proc.terminate()
    proc.wait(WAIT)
    after = listed()
    assert (after["Status"], after["Error"]) == ("Offline", None)
    assert "no device is running on" in str(after["stderr"])
    assert not (data / "serve.json").exists()


def test_serve_refuses_a_folder_without_a_device_unless_init(tmp_path: Path) -> None:
    """Infrastructure: ``device serve`` on a folder without a device needs ``--init`` and creates nothing."""
    proc = subprocess.run([*CLI, "device", "serve", "--data", str(tmp_path), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=WAIT, check=False)
    assert proc.returncode == 2
    assert "give --init" in one_line_error(proc.stderr)
    assert not (tmp_path / "device.db").exists()
    assert os.listdir(tmp_path) == []


def test_client_secret_from_a_file_or_the_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Infrastructure: ``device authserver add`` reads the client secret from a file or
    ``$IEC62676_CLIENT_SECRET`` and never prints it."""
    data = tmp_path / "dev"
    secret = tmp_path / "secret.txt"
    secret.write_text("file-secret\n")
    assert run(capsys, "device", "authserver", "add", "--data", str(data), "--token", "as-1", "--url",
               "https://auth.example/token", "--client-id", "cam", "--client-secret-file", str(secret))[0] == 0
    monkeypatch.setenv("IEC62676_CLIENT_SECRET", "env-secret")
    code, out, err = run(capsys, "device", "authserver", "add", "--data", str(data), "--token", "as-2", "--url",
                         "https://auth.example/token", "--client-id", "cam")
    assert code == 0 and "secret" not in out + err
    with DeviceStore(data) as store:
        first, second = store.get_auth_server("as-1"), store.get_auth_server("as-2")
    assert first is not None and first.client_secret == "file-secret"
    assert second is not None and second.client_secret == "env-secret"
