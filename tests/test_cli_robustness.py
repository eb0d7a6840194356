"""The command line against input a user gets wrong: every case ends with one ``iec62676: error: …`` line and
exit status 2 (or 130 after Ctrl-C), never a traceback, never a secret, never an unbounded wait."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import seed_device
from helpers import free_port, one_line_error

from iec62676_2_33 import pki

WAIT = 60.0
CLI = [sys.executable, "-m", "iec62676_2_33"]
SECRET = "TOPSECRET"


def cli(*argv: str | bytes, env: dict[str, str] | None = None, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """The installed command line as a process (stdin closed: no prompt), bounded by ``timeout``."""
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False, env=env)


def usage_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert exit status 2 and one error line on stderr; return the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    return one_line_error(proc.stderr)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ca"
    pki.create_ca_dir(folder)
    return folder


@pytest.fixture
def not_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"\xd6\xff\xfe secret\n")
    return path


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback port that accepts TCP and never answers; the connections it accepted."""
    accepted: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def _secret_file_commands(data: Path, path: Path) -> list[list[str]]:
    return [
        ["device", "user", "add", "--data", str(data), "--name", "a", "--level", "User", "--password-file", str(path)],
        ["device", "authserver", "add", "--data", str(data), "--token", "t", "--url", "https://auth.example/token",
         "--client-id", "c", "--client-secret-file", str(path)],
        ["device", "media", "add", "--data", str(data), "--token", "t", "--name", "n", "--rtsp",
         "rtsp://127.0.0.1:8554/cam", "--rtsp-user", "u", "--rtsp-password-file", str(path)],
        ["conformance", "device", "--dut", "http://127.0.0.1:9/onvif/device_service", "--user", "a",
         "--password-file", str(path), "--listen", "127.0.0.1:0"],
    ]


@pytest.mark.parametrize("which", range(4))
def test_secret_file_that_is_not_utf8(tmp_path: Path, not_utf8: Path, which: int) -> None:
    """A secret file in another encoding is one line naming the flag and the file, not a traceback."""
    seed_device(tmp_path / "dev")
    argv = _secret_file_commands(tmp_path / "dev", not_utf8)[which]
    line = usage_error(cli(*argv))
    flag = next(a for a in argv if a.endswith("-file"))
    assert f"{flag} {not_utf8}" in line and "not UTF-8" in line, line


def test_secret_file_reads_only_its_first_line(tmp_path: Path) -> None:
    """A huge secret file is refused after its first MAX_SECRET_BYTES, not read whole."""
    from iec62676_2_33.cli.options import MAX_SECRET_BYTES

    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (MAX_SECRET_BYTES + 1) + b"\n")
    line = usage_error(cli("device", "user", "add", "--data", str(tmp_path / "dev"), "--name", "a", "--level", "User",
                           "--password-file", str(huge)))
    assert "longer than" in line, line


def test_argument_that_is_not_utf8_is_one_line_without_its_value(tmp_path: Path) -> None:
    """A password (or a name) in another encoding is one line naming its flag, not a traceback; the value is
    not echoed; the same for the password's environment variable."""
    data = str(tmp_path / "dev")
    line = usage_error(cli("device", "user", "add", "--data", data, "--name", "a", "--level", "User", "--password",
                           os.fsencode(SECRET) + b"\xff"))
    assert "(after --password) is not UTF-8" in line and SECRET not in line, line
    line = usage_error(cli("device", "user", "add", "--data", data, "--name", b"\xff\xfe", "--password", "p",
                           "--level", "User"))
    assert "(after --name) is not UTF-8" in line, line
    env = {k: v for k, v in os.environ.items() if k != "IEC62676_PASSWORD"}
    env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    env_bytes[b"IEC62676_PASSWORD"] = os.fsencode(SECRET) + b"\xff"
    proc = subprocess.run([*CLI, "device", "user", "add", "--data", data, "--name", "a", "--level", "User"],
                          capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL, timeout=WAIT,
                          check=False, env=env_bytes)  # type: ignore[arg-type]
    line = usage_error(proc)
    assert "$IEC62676_PASSWORD is not UTF-8" in line and SECRET not in line, line


def _url_commands(url: str, ca: Path, data: Path) -> list[list[str]]:
    return [
        ["query", "--url", url, "--topic", "MediaProfile"],
        ["cloud", "enroll", "--device", url, "--user", "a", "--password", "b", "--ca", str(ca), "--remote",
         "https://127.0.0.1:9/uplink"],
        ["conformance", "device", "--dut", url, "--user", "a", "--password", "b", "--listen", "127.0.0.1:0",
         "--only", "UPLINK-1-1-1"],
        ["vss", "lower", "add", "--data", str(data), "--url", url, "--user", "a", "--password", "b"],
    ]


@pytest.mark.parametrize("url", ["http://::1:8080/onvif/device_service", "127.0.0.1:8080",
                                 "ftp://127.0.0.1/onvif/device_service", "http://127.0.0.1:70000/",
                                 f"http://admin:{SECRET}@127.0.0.1:9/onvif/device_service"])
@pytest.mark.parametrize("which", range(4))
def test_malformed_url_is_a_usage_error(tmp_path: Path, ca_dir: Path, url: str, which: int) -> None:
    """A URL without http(s), with IPv6 unbracketed, an impossible port or user info is a usage error naming
    the flag, before anything is sent; a password in it is not echoed."""
    argv = _url_commands(url, ca_dir, tmp_path / "vss")[which]
    line = usage_error(cli(*argv))
    assert f"argument {argv[argv.index(url) - 1]}: " in line and "not an http(s) URL" in line, line
    assert SECRET not in line


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan", "x"])
def test_seconds_out_of_range(tmp_path: Path, value: str) -> None:
    """A timeout that is negative, zero, infinite or not a number is a usage error, not a traceback."""
    line = usage_error(cli("vss", "lower", "add", "--data", str(tmp_path / "vss"), "--url",
                           f"http://127.0.0.1:{free_port()}/onvif/device_service", "--user", "a", "--password", "b",
                           "--timeout", value))
    assert line.startswith("iec62676: error: argument --timeout: "), line


@pytest.mark.parametrize(("flag", "value"), [("--days", "99999999"), ("--cn", ""), ("--cn", "x" * 65)])
def test_pki_out_of_range(tmp_path: Path, flag: str, value: str) -> None:
    """A validity past the calendar or a common name X.509 cannot hold is a usage error, not a traceback."""
    line = usage_error(cli("pki", "ca", "--out", str(tmp_path / "ca"), flag, value))
    assert line.startswith(f"iec62676: error: argument {flag}: "), line
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize("argv", [["list"], ["remove", "--token", "t"]])
def test_media_list_and_remove_need_a_device(tmp_path: Path, argv: list[str]) -> None:
    """A mistyped ``--data`` for ``media list|remove`` is an error, not a new empty device."""
    typo = tmp_path / "devcie"
    line = usage_error(cli("device", "media", *argv, "--data", str(typo)))
    assert str(typo) in line and "does not exist" in line, line
    assert not typo.exists()


def test_unreachable_nats_is_one_line_without_the_password(tmp_path: Path) -> None:
    """``cloud devices`` and ``cloud ports release`` on a NATS URL nobody answers: one line, no log traceback per
    attempt, the URL's password not echoed."""
    pytest.importorskip("nats")
    url = f"nats://ops:{SECRET}@127.0.0.1:{free_port()}"
    for argv in (["cloud", "devices", "--nats", url], ["cloud", "ports", "release", "--nats", url, "--device", "x"]):
        line = usage_error(cli(*argv))
        assert "cannot connect" in line and SECRET not in line, line


def _enroll(ca: Path, devices: Sequence[str]) -> subprocess.Popen[str]:
    argv = [*CLI, "cloud", "enroll", "--user", "a", "--password", "b", "--ca", str(ca), "--remote",
            "https://127.0.0.1:9/uplink", "--jobs", "1"]
    for url in devices:
        argv += ["--device", url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True)


def test_ctrl_c_during_enrolment_begins_no_further_device(ca_dir: Path,
                                                          silent_server: tuple[int, list[socket.socket]]) -> None:
    """Ctrl-C while the first of several devices is enrolled: no other device is dialled; exit status 130,
    nothing on stderr."""
    port, accepted = silent_server
    proc = _enroll(ca_dir, [f"http://127.0.0.1:{port}/onvif/device_service?n={i}" for i in range(4)])
    try:
        for _ in range(int(WAIT * 10)):
            if accepted or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert accepted, "the first device was never dialled"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err) == (130, "")
    assert len(accepted) == 1


def test_a_second_device_serve_on_one_folder_is_refused(tmp_path: Path) -> None:
    """While ``device serve`` runs on a folder, a second one there is one line, exit status 2 (it would dial
    the same uplinks with the same identity); once the first has stopped, the folder serves again."""
    data = tmp_path / "dev"
    seed_device(data)
    argv = ["device", "serve", "--data", str(data), "--listen", "127.0.0.1:0"]
    first = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith("device serving ")
        line = usage_error(cli(*argv, timeout=WAIT / 2))
        assert "already runs on" in line and str(data) in line, line
    finally:
        first.terminate()
        first.communicate(timeout=WAIT)
    again = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert again.stdout is not None
        assert again.stdout.readline().startswith("device serving ")
    finally:
        again.terminate()
        again.communicate(timeout=WAIT)


def test_uplink_set_does_not_echo_a_password_in_remote_address(tmp_path: Path) -> None:
    """CFG-3: a RemoteAddress with user info is refused, and the message does not show the password (nor does
    the SOAP fault, which has the same text)."""
    proc = subprocess.run([*CLI, "device", "uplink", "set", "--data", str(tmp_path / "d"), "--remote",
                           "https://u:TOPSECRET@cloud.example/up", "--cert-id", "c"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "TOPSECRET" not in proc.stderr and "user info" in proc.stderr, proc.stderr


@pytest.mark.parametrize("url", ["http://::1:80/onvif/event_service", "ftp://127.0.0.1/onvif/event_service"])
def test_the_query_client_names_a_url_it_cannot_use(url: str) -> None:
    """A library caller's URL that httpx cannot send to (IPv6 without brackets, not http(s)) is one
    ConfigurationError that says so, not httpx's InvalidURL nor 'the answer broke off'."""
    from iec62676_2_33.errors import ConfigurationError
    from iec62676_2_33.query import ResourceQueryClient

    with pytest.raises(ConfigurationError, match="not a usable URL"), ResourceQueryClient(url).subscribe(["MediaProfile"]):
        pass
