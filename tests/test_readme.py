"""Infrastructure: every code block of README.md is run as written (on loopback, with free ports and a
temporary folder in place of the fixed ones), or names the test that covers it. Servers run in the
background: started, waited for, used, stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)

#: Blocks not run here: a distinctive line of the block → why, and which test covers it.
COVERED_ELSEWHERE = {
    "pip install . && .venv/bin/iec62676 demo": "installs the package; the demo itself: tests/test_demo.py",
    "pip install -q '.[test]'": "the test command itself (.ci/run)",
    ".venv/bin/iec62676 demo": "tests/test_demo.py",
    "iec62676 device media add": "media sources and a camera: tests/test_media_sources.py, tests/test_rtsp_cli.py",
    "ffplay -rtsp_transport tcp": "a player on the RTSP front: tests/test_rtsp_uplink.py",
    "iec62676 recordings add": "recordings served by device serve: tests/test_recording_serve.py",
    "iec62676 cloud enroll --device http://192.0.2.10": "a device at a documentation address: tests/test_enroll.py",
}
#: The long-running blocks, by a distinctive line, and the line each prints when it is ready.
SERVERS = {"iec62676 cloud serve --listen 127.0.0.1:8443": "cloud listening for uplinks",
           "iec62676 device serve --data $D --listen 127.0.0.1:8080": "device serving"}


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Quickstart:
    """The README's fixed folder and ports replaced by a temporary folder and free ports."""

    def __init__(self, folder: Path) -> None:
        self.subst = {"/tmp/iec62676-quickstart": str(folder)}
        for port in ("8443", "8080", "8081"):
            self.subst[f"127.0.0.1:{port}"] = f"127.0.0.1:{free_port()}"
            self.subst[f"localhost:{port}"] = self.subst[f"127.0.0.1:{port}"].replace("127.0.0.1", "localhost")
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "IEC62676_PASSWORD": "change me"}
        self.servers: list[tuple[subprocess.Popen[str], list[str]]] = []

    def text(self, block: str) -> str:
        for old, new in self.subst.items():
            block = block.replace(old, new)
        return block

    def run(self, kind: str, block: str) -> str:
        argv = ["bash", "-euo", "pipefail", "-c", self.text(block)] if kind == "sh" else \
            [sys.executable, "-c", self.text(block)]
        proc = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=WAIT,
                              check=False)
        assert proc.returncode == 0, f"{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        return proc.stdout

    def start(self, block: str, ready: str) -> list[str]:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", self.text(block)], cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        out: list[str] = []
        err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
        self.servers.append((proc, err))
        wait_until(lambda: any(ready in line for line in out) or proc.poll() is not None, f"{ready!r}")
        assert proc.poll() is None, "".join(err)
        return err

    def stop(self) -> None:
        for proc, _ in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, err in self.servers:
            proc.wait(WAIT)
            assert "Traceback" not in "".join(err), "".join(err)


def wait_until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def wait_connected(quickstart: Quickstart) -> None:
    """Until the cloud lists camera-0001 and the device's live state (refreshed every second) says so."""
    proxy = quickstart.text("http://127.0.0.1:8081/devices")
    state = Path(quickstart.text("/tmp/iec62676-quickstart/camera/serve.json"))
    wait_until(lambda: "camera-0001" in urllib.request.urlopen(proxy, timeout=5).read().decode(),
               "camera-0001 at the cloud")
    wait_until(lambda: state.exists() and '"Connected"' in state.read_text(), "the device's live state")


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Quickstart]:
    qs = Quickstart(tmp_path / "qs")
    try:
        yield qs
    finally:
        qs.stop()


def test_every_block_is_run_or_covered() -> None:
    for kind, block in blocks():
        runs = kind == "python" or block.startswith(". .venv/bin/activate\n")
        covered = [line for line in COVERED_ELSEWHERE if line in block]
        assert runs != bool(covered), f"block neither run here nor covered elsewhere (or both):\n{block}"
    assert all(any(line in b for _, b in blocks()) for line in COVERED_ELSEWHERE), "a stale COVERED_ELSEWHERE entry"


def test_quick_start_runs_as_written(quickstart: Quickstart) -> None:
    to_run = [(kind, block) for kind, block in blocks()
              if kind == "python" or block.startswith(". .venv/bin/activate\n")]
    logs: dict[str, list[str]] = {}
    outputs: list[str] = []
    for kind, block in to_run:
        server = next((line for line in SERVERS if line in block), None)
        if server is not None:
            logs[server] = quickstart.start(block, SERVERS[server])
            continue
        if "device uplink list" in block:  # the uplink connects within its first backoff (seconds)
            wait_connected(quickstart)
        outputs.append(quickstart.run(kind, block))
    setup, use, client, resources, vms = outputs
    assert "device.db" not in setup
    uplinks, rest = use.split("\n", 1)
    devices, soap = rest.split("<?xml", 1)
    assert uplinks.endswith("\tConnected"), use
    assert [d["id"] for d in json.loads(devices)] == ["camera-0001"]
    assert "MaxUplinks" in soap and "env:Fault" not in soap
    assert "Connected None" in client and "Sender ('InvalidArgVal', 'Address')" in client
    assert "300 added, 0 changed" in resources
    assert len([line for line in resources.splitlines() if "MediaProfile" in line]) > 0
    assert "device information:" in vms and vms.rstrip().endswith("cloud stopped")
    cloud_log, device_log = (logs[line] for line in SERVERS)
    wait_until(lambda: any("device camera-0001 connected" in line for line in cloud_log), "the cloud's log line")
    assert any("uplink https://localhost:" in line and "connected" in line for line in device_log), device_log
