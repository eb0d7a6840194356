"""CFG-3, CFG-4, CFG-6, SEC-1: the ``iec62676 device`` commands — same validation as SetUplink,
durable results, one-line errors and exit status 2 for every bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import one_line_error, run

from iec62676_2_33 import pki
from iec62676_2_33.store import DeviceStore


@pytest.fixture
def material(tmp_path: Path) -> dict[str, Path]:
    ca = pki.make_ca("cli CA")
    leaf = pki.make_leaf(ca, "device-7", kind="client")
    other = pki.make_leaf(ca, "device-8", kind="client")
    ca_pem, _ = ca.write(tmp_path, "ca")
    cert, key = leaf.write(tmp_path, "leaf")
    _, other_key = other.write(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {"ca": ca_pem, "cert": cert, "key": key, "other_key": other_key, "garbage": garbage,
            "data": tmp_path / "data"}


def test_full_device_setup_and_uplink_lifecycle_cfg_3_cfg_4_cfg_6(capsys: pytest.CaptureFixture[str],
                                                                  material: dict[str, Path]) -> None:
    """CFG-3, CFG-4, CFG-6: user, keystore, policy and uplink commands store what they say."""
    data = str(material["data"])
    assert run(capsys, "device", "user", "add", "--data", data, "--name", "ops", "--password", "pw",
               "--level", "Operator")[0] == 0
    assert run(capsys, "device", "keystore", "add", "--data", data, "--id", "dev-7", "--cert",
               str(material["cert"]), "--key", str(material["key"]))[0] == 0
    assert run(capsys, "device", "policy", "add", "--data", data, "--id", "cloud", "--trust",
               str(material["ca"]))[0] == 0
    code, out, _ = run(capsys, "device", "uplink", "set", "--data", data, "--remote", "https://cloud.example/up",
                       "--cert-id", "dev-7", "--policy-id", "cloud", "--user-level", "Operator",
                       "--user-level", "User")
    assert (code, out.strip()) == (0, "uplink https://cloud.example/up stored")
    code, out, _ = run(capsys, "device", "uplink", "list", "--data", data, "--format", "json")
    assert json.loads(out) == [{"RemoteAddress": "https://cloud.example/up", "CertificateID": "dev-7",
                                "UserLevel": ["Operator", "User"], "Status": "Offline",
                                "CertPathValidationPolicyID": "cloud", "AuthorizationServer": None,
                                "Error": None}]
    code, out, _ = run(capsys, "device", "user", "list", "--data", data)
    assert out.strip() == "ops\tOperator"
    assert run(capsys, "device", "uplink", "delete", "--data", data, "--remote", "https://cloud.example/up")[0] == 0
    with DeviceStore(data) as store:
        assert store.list_uplinks() == []
        assert store.get_policy("cloud") == [pki.load_cert_pem(material["ca"]).public_bytes(
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM)]
        assert store.get_user("ops") == ("pw", "Operator")


@pytest.mark.parametrize(("argv", "message"), [
    (["uplink", "set", "--remote", "https://c.example/", "--cert-id", "nope"],
     "no certificate is stored under CertificateID 'nope'"),
    (["uplink", "set", "--remote", "ftp://c.example/", "--cert-id", "dev-7"],
     "protocol 'ftp' of RemoteAddress is not supported; supported: https wss"),
    (["uplink", "set", "--remote", "https://c.example/"],
     "neither CertificateID nor AuthorizationServer is given; set exactly one"),
    (["uplink", "set", "--remote", "https://c.example/", "--cert-id", "dev-7", "--policy-id", "nope"],
     "no certification path validation policy is stored under 'nope'"),
    (["uplink", "set", "--remote", "https://c.example/", "--cert-id", "dev-7", "--user-level", "Root"],
     "UserLevel Root is invalid; use one or more of Administrator Operator User Anonymous"),
    (["uplink", "delete", "--remote", "https://c.example/"], "no uplink exists for the address 'https://c.example/'"),
])
def test_uplink_bad_input_one_line_errors_cfg_3_cfg_4(capsys: pytest.CaptureFixture[str], material: dict[str, Path],
                                                      argv: list[str], message: str) -> None:
    """CFG-3, CFG-4: the CLI refuses exactly what SetUplink/DeleteUplink refuse, in one line."""
    data = str(material["data"])
    run(capsys, "device", "keystore", "add", "--data", data, "--id", "dev-7", "--cert", str(material["cert"]),
        "--key", str(material["key"]))
    code, _, err = run(capsys, "device", argv[0], argv[1], "--data", data, *argv[2:])
    assert code == 2
    assert one_line_error(err) == f"iec62676: error: {message}"
    with DeviceStore(data) as store:
        assert store.list_uplinks() == []


def test_keystore_bad_files_one_line_errors_cfg_6(capsys: pytest.CaptureFixture[str],
                                                    material: dict[str, Path]) -> None:
    """CFG-6: unreadable PEM, mismatched key and missing files are refused and nothing is stored."""
    data = str(material["data"])
    cases = [
        (material["garbage"], material["key"], str(material["garbage"])),
        (material["cert"], material["other_key"], "does not match"),
        (material["cert"], material["data"] / "missing.pem", "missing.pem"),
    ]
    for cert, key, needle in cases:
        code, _, err = run(capsys, "device", "keystore", "add", "--data", data, "--id", "x", "--cert", str(cert),
                           "--key", str(key))
        assert code == 2
        assert needle in one_line_error(err)
    with DeviceStore(data) as store:
        assert store.list_certificates() == []


def test_bad_level_and_unknown_flag_sec_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """SEC-1: only the standard's user levels are accepted; argparse errors are one line too."""
    code, _, err = run(capsys, "device", "user", "add", "--data", str(tmp_path), "--name", "a", "--password", "b",
                       "--level", "Root")
    assert code == 2
    assert "invalid choice: 'Root'" in one_line_error(err)
    assert run(capsys, "device", "user", "add", "--data", str(tmp_path), "--name", "a", "--password", "b",
               "--level", "User")[0] == 0
    code, _, err = run(capsys, "device", "uplink", "list", "--data", str(tmp_path), "--bogus")
    assert code == 2
    assert "unrecognized arguments: --bogus" in one_line_error(err)


def test_serve_port_in_use_is_one_line_error_cfg_6(tmp_path: Path) -> None:
    """CFG-6: ``device serve`` on a busy port exits 2 with one line, no traceback (real process)."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "iec62676_2_33", "device", "serve", "--init", "--data",
                               str(tmp_path), "--listen", f"127.0.0.1:{port}"], check=False, capture_output=True, text=True,
                              timeout=60)
    finally:
        busy.close()
    assert proc.returncode == 2
    assert one_line_error(proc.stderr).startswith(f"iec62676: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in proc.stderr


def test_serve_bad_listen_is_one_line_error_cfg_6(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """CFG-6: a malformed --listen says what is expected."""
    code, _, err = run(capsys, "device", "serve", "--init", "--data", str(tmp_path), "--listen", "nonsense")
    assert code == 2
    assert one_line_error(err) == ("iec62676: error: argument --listen: 'nonsense' is not HOST:PORT "
                                   "(e.g. 127.0.0.1:8080)")
