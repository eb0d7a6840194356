"""Infrastructure: every code block of README.md is run as written (on loopback, with free ports and a
temporary folder in place of the fixed ones), or names the test that covers it. Servers run in the
background: started, waited for, used, stopped."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from quickstart_env import ROOT, WAIT, Quickstart

from iec62676_2_33.testing.harness import wait_until

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


def wait_connected(quickstart: Quickstart) -> None:
    """Until the cloud lists camera-0001 and the device's live state (refreshed every second) says so."""
    proxy = quickstart.text("http://127.0.0.1:8081/devices")
    state = Path(quickstart.text("/tmp/iec62676-quickstart/camera/serve.json"))
    wait_until(lambda: "camera-0001" in urllib.request.urlopen(proxy, timeout=5).read().decode(), WAIT,
               what="camera-0001 at the cloud")
    wait_until(lambda: state.exists() and '"Connected"' in state.read_text(), WAIT, what="the device's live state")


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
    wait_until(lambda: any("device camera-0001 connected" in line for line in cloud_log), WAIT,
               what="the cloud's log line")
    assert any("uplink https://localhost:" in line and "connected" in line for line in device_log), device_log
