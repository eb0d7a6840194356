"""UPL-11, UPL-13: ``iec62676 cloud serve`` — bad input is one line and exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from iec62676_2_33 import pki
from iec62676_2_33.cli import main


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = pki.make_ca("cli CA")
    ca.write(tmp_path, "ca")
    pki.make_leaf(ca, "cloud", kind="server", sans=["localhost"]).write(tmp_path, "cloud")
    (tmp_path / "junk.pem").write_text("junk\n")
    return {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cloud.pem", "key": tmp_path / "cloud.key",
            "junk": tmp_path / "junk.pem", "missing": tmp_path / "missing.pem"}


def _serve(files: dict[str, Path], **override: str) -> list[str]:
    args = {"--listen": "127.0.0.1:0", "--cert": str(files["cert"]), "--key": str(files["key"]),
            "--client-ca": str(files["ca"])}
    args.update(override)
    return ["cloud", "serve", *[x for kv in args.items() for x in kv]]


@pytest.mark.parametrize(("override", "needle"), [
    ({"--client-ca": "junk"}, "junk.pem"),
    ({"--client-ca": "missing"}, "missing.pem"),
    ({"--cert": "junk"}, "cannot load the TLS certificate and key"),
    ({"--listen": "nonsense"}, "argument --listen: 'nonsense' is not HOST:PORT"),
    ({"--proxy": "8081"}, "argument --proxy: '8081' is not HOST:PORT"),
])
def test_cloud_serve_bad_input_upl_11_upl_13(capsys: pytest.CaptureFixture[str], files: dict[str, Path],
                                            override: dict[str, str], needle: str) -> None:
    """UPL-11, UPL-13: unreadable PEM, missing files and a bad --listen are refused in one line."""
    resolved = {k: (str(files[v]) if v in files else v) for k, v in override.items()}
    assert main(_serve(files, **resolved)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iec62676: error: ")
    assert needle in lines[0]


def test_cloud_serve_port_in_use_upl_11(files: dict[str, Path]) -> None:
    """UPL-11: a busy port is one line and exit 2 from a real process, no traceback."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "iec62676_2_33", *_serve(files, **{"--listen": f"127.0.0.1:{port}"})],
                              check=False, capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"iec62676: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in proc.stderr
