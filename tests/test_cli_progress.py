"""RQ-5, PROV-1: the long commands, run as an operator runs them (a subprocess), show progress on stderr and
keep stdout clean.

``iec62676 query`` enumerating a large resource list (RQ-5) prints exactly the
list on stdout (``--format json``: every line one resource) while a bar counts
on stderr: when stderr is a terminal (a pseudo-terminal here) or with
``--progress``, and not when stderr is a pipe. ``iec62676 cloud enroll`` with
several ``--device`` enrols each one into a real cloud (PROV-1), a line per
device, a bar on stderr, and a device that cannot be reached is one line on
stderr while the others are enrolled, ending in one error line and exit
status 2. ``iec62676 device resources load --progress`` shows the same kind of bar
while its summary stays alone on stdout.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

from conftest import ADMIN, RunningDevice
from test_enroll import device_service, fresh_device

from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.testing.harness import RunningCloud, UplinkPki

ROOT = Path(__file__).resolve().parent.parent
COUNT = 1500
BOUND = 120.0


def cli(*argv: str, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "iec62676_2_33", *argv], stdout=stdout, stderr=stderr,
                            text=True, cwd=ROOT)


def query_args(device: RunningDevice, *extra: str) -> list[str]:
    return ["query", "--url", device.base, "--user", ADMIN[0], "--password", ADMIN[1], "--topic", "MediaProfile",
            "--format", "json", *extra]


def many_resources(device: RunningDevice) -> None:
    with ResourceRegistry(device.data / "resources.db") as registry:
        registry.upsert_many([Resource(f"dev7:p{i:05d}", "MediaProfile", f"camera {i}") for i in range(COUNT)])


def tokens(stdout: str) -> list[str]:
    return [json.loads(line)["token"] for line in stdout.splitlines()]


def test_query_progress_only_on_stderr_rq_5(device: RunningDevice) -> None:
    """RQ-5: with --progress the bar is on stderr and stdout holds the whole list as JSON lines; without it
    (stderr a pipe) stderr stays empty."""
    many_resources(device)
    shown = cli(*query_args(device, "--progress"))
    out, err = shown.communicate(timeout=BOUND)
    assert shown.returncode == 0, err
    assert tokens(out) == [f"dev7:p{i:05d}" for i in range(COUNT)]
    assert "resources: " in err and " resource" in err
    quiet = cli(*query_args(device))
    out, err = quiet.communicate(timeout=BOUND)
    assert quiet.returncode == 0 and err == ""
    assert len(tokens(out)) == COUNT


def test_query_progress_on_a_terminal_rq_5(device: RunningDevice, tmp_path: Path) -> None:
    """RQ-5: stderr on a (pseudo-)terminal gets the bar without --progress; stdout, a file, gets only JSON."""
    many_resources(device)
    leader, follower = pty.openpty()
    termios.tcsetwinsize(follower, (24, 100))  # a fresh pty is 0 columns wide
    listing = tmp_path / "list.jsonl"
    try:
        with listing.open("w") as stdout:
            proc = cli(*query_args(device), stdout=stdout, stderr=follower)
        os.close(follower)
        follower = -1
        seen = bytearray()
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=BOUND)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0
    assert len(tokens(listing.read_text())) == COUNT
    assert b"resources: " in seen


def test_resources_load_progress_on_stderr(tmp_path: Path) -> None:
    """Infrastructure: ``device resources load --progress`` draws the bar (named after the file) on stderr;
    stdout is the one summary line."""
    lines = tmp_path / "cameras.jsonl"
    lines.write_text("".join(json.dumps({"token": f"cam:{i}", "kind": "MediaProfile", "name": f"camera {i}"}) + "\n"
                             for i in range(COUNT)))
    proc = cli("device", "resources", "load", "--data", str(tmp_path / "dev"), str(lines), "--progress")
    out, err = proc.communicate(timeout=BOUND)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"{lines}: {COUNT} added, 0 changed; {COUNT} resource(s) in the registry"]
    assert "cameras.jsonl: " in err


def test_enroll_several_devices_with_progress_prov_1(tmp_path: Path) -> None:
    """PROV-1: two devices are enrolled by one command (a line each on stdout, the bar on stderr) and both
    appear on the cloud; a third that cannot be reached is one line on stderr, and the command ends with
    one error line and exit status 2."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    devices = [fresh_device(tmp_path / f"dev{i}") for i in range(2)]
    try:
        assert cloud.proxy_url is not None
        unreachable = "http://127.0.0.1:9/onvif/device_service"
        urls = [device_service(d) for d in devices]
        argv = ["cloud", "enroll", "--user", ADMIN[0], "--password", ADMIN[1], "--ca", str(certs.dir),
                "--remote", cloud.uplink_url(), "--cloud-proxy", cloud.proxy_url, "--wait", "30", "--progress",
                "--jobs", "3"]
        for url in [*urls, unreachable]:
            argv += ["--device", url]
        proc = cli(*argv)
        out, err = proc.communicate(timeout=BOUND)
        assert proc.returncode == 2, err
        enrolled = [line.split()[1] for line in out.splitlines() if " enrolled: " in line]
        assert sorted(enrolled) == cloud.device_ids() and len(enrolled) == 2
        assert sum(" is connected to the cloud" in line for line in out.splitlines()) == 2
        lines = [line.strip("\r") for line in err.replace("\r", "\n").splitlines()]
        assert [line for line in lines if line.startswith("iec62676: error: ")] == [
            "iec62676: error: 1 of 3 devices were not enrolled (see above)"]
        assert sum(line.startswith(f"iec62676: {unreachable}: ") for line in lines) == 1
        assert any(line.startswith("enrolled: ") for line in lines)
    finally:
        for device in devices:
            device.stop()
        cloud.stop()
