"""GEN-1, GEN-3, UPL-10, UPL-4, UPL-14, RQ-5: ``iec62676 demo`` runs end to end on loopback and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end_gen_3_upl_10() -> None:
    """GEN-3, UPL-10, UPL-4, UPL-14, RQ-6: three devices (two mTLS, one wss with an access token) dial
    out, are called through their uplinks, survive a cloud restart; a location query and a live Offline
    change travel through an uplink."""
    proc = subprocess.run([sys.executable, "-m", "iec62676_2_33", "demo"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "fault as expected: env:Sender/ter:InvalidArgVal/ter:CertificateID" in out
    assert "all devices connected: camera-0001 (mTLS), camera-0002 (mTLS), camera-0003 (AccessToken)" in out
    assert "camera-0003 via its uplink: MaxUplinks=8, Protocols=https wss, uplink wss://localhost:" in out
    assert ("proxy GET /devices: [('camera-0001', 'mTLS'), ('camera-0002', 'mTLS'), ('camera-0003', 'AccessToken')]"
            in out)
    assert "all devices came back on their own" in out
    assert "400 resources loaded into its registry" in out
    assert "MediaProfiles within 100 m of (32.0603, 118.7969), asked through the uplink:" in out
    assert "    live: Changed " in out and "Offline=True" in out
    assert out.rstrip().endswith("demo finished: every step behaved as the standard says")
    assert "Traceback" not in proc.stderr
