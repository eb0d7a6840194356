"""GEN-1, GEN-3, UPL-10: ``iec62676 demo`` runs end to end on loopback and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end_gen_3_upl_10() -> None:
    """GEN-3, UPL-10: two devices dial out, are called through their uplinks, survive a cloud restart."""
    proc = subprocess.run([sys.executable, "-m", "iec62676_2_33", "demo"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "fault as expected: env:Sender/ter:InvalidArgVal/ter:CertificateID" in out
    assert "both devices connected: camera-0001, camera-0002" in out
    assert "camera-0001 via its uplink: MaxUplinks=8" in out
    assert "proxy GET /devices: [('camera-0001', 'mTLS'), ('camera-0002', 'mTLS')]" in out
    assert "both devices came back on their own" in out
    assert out.rstrip().endswith("demo finished: every step behaved as the standard says")
    assert "Traceback" not in proc.stderr
