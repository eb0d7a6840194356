"""``iec62676 cloud serve --rtsp``: the RTSP front binds loopback unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from iec62676_2_33 import pki
from iec62676_2_33.cli import main


def test_rtsp_front_refuses_a_remote_address_without_the_flag(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    """STR-1: `--rtsp 0.0.0.0:…` is refused in one line unless `--rtsp-allow-remote` is given."""
    ca = pki.make_ca("cli CA")
    ca_file, _ = ca.write(tmp_path, "ca")
    cert, key = pki.make_leaf(ca, "cloud", kind="server", sans=["localhost"]).write(tmp_path, "cloud")
    code = main(["cloud", "serve", "--listen", "127.0.0.1:0", "--cert", str(cert), "--key", str(key),
                 "--client-ca", str(ca_file), "--rtsp", "0.0.0.0:0"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iec62676: error: --rtsp 0.0.0.0:0")
    assert "--rtsp-allow-remote" in lines[0]
