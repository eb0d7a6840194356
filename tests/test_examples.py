"""Infrastructure: every Python example in examples/ runs to completion on loopback and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each example → lines its output must contain, in this order.
EXPECTED = {
    "vms_cloud.py": ["cloud listening on https://127.0.0.1:", "event: camera-7 connected",
                     "connected: camera-7 (mTLS)", "device information: ", "event: camera-7 disconnected",
                     "cloud stopped"],
}


def test_every_example_has_expectations() -> None:
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    position = 0
    for expected in EXPECTED[name]:
        found = proc.stdout.find(expected, position)
        assert found >= 0, f"{expected!r} missing (in order) from:\n{proc.stdout}"
        position = found + len(expected)
