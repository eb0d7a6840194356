"""CFG-3: one RemoteAddress check for every entry point — SetUplink on the wire, ``device uplink set``
and the Python API refuse the same malformed addresses with ``ter:InvalidArgVal/ter:RemoteAddress``
(a Sender fault, never a 500), and accept the same well-formed ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import RunningDevice, seed_device
from helpers import fault_chain, one_line_error, run
from test_uplink_service import answer, envelope, post, set_uplink

from iec62676_2_33 import UplinkConfigError, UplinkConfiguration, parse_remote_address, serve_device

MALFORMED = [
    "https://[::1/x",  # unclosed IPv6 bracket
    "https://[zz]/x",  # not an IPv6 address
    "https://[::1]x/",  # characters after the bracket that are not :port
    "https://[::1]:x/",
    "https://cloud.example:99999/up",
    "https://cloud.example:0/up",
    "https://cloud.example:8x/up",
    "https://cloud example/up",
    "https://cloud.example/up\u0007",
    "https://:8443/up",
    "https:/cloud.example/up",
    "https://user@cloud.example/up",
    "https://cloud.example/up#frag",
    "https://cl<oud.example/up",
    "cloud.example:8443",
]
WELL_FORMED = ["https://[::1]:8443/up", "https://127.0.0.1:8443/up", "https://cloud.example/up?site=7",
               "wss://cloud.example:443/ws"]


@pytest.mark.parametrize("address", MALFORMED)
def test_parser_refuses_malformed_addresses_cfg_3(address: str) -> None:
    """CFG-3: each malformed address is an UplinkConfigError naming InvalidArgVal/RemoteAddress."""
    with pytest.raises(UplinkConfigError) as refused:
        parse_remote_address(address)
    assert refused.value.code == "Sender"
    assert refused.value.subcodes == ("InvalidArgVal", "RemoteAddress")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("address", WELL_FORMED)
def test_parser_accepts_well_formed_addresses_cfg_3(address: str) -> None:
    """CFG-3: well-formed https/wss addresses, IPv6 literals included, pass unchanged."""
    assert parse_remote_address(address).geturl() == address


def test_soap_set_uplink_answers_sender_fault_for_each_cfg_3(device: RunningDevice) -> None:
    """CFG-3: SetUplink with each malformed address is HTTP 400, env:Sender/ter:InvalidArgVal/ter:RemoteAddress,
    and nothing is stored."""
    from xml.sax.saxutils import escape

    for address in (a for a in MALFORMED if "\u0007" not in a):  # XML 1.0 cannot carry BEL at all
        status, root = post(device.url, envelope(set_uplink(escape(address))))
        assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:RemoteAddress"]), address
    _, after = post(device.url, envelope("<tup:GetUplinks/>"))
    assert len(answer(after)) == 0


def test_cli_refuses_each_with_one_line_exit_2_cfg_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """CFG-3: ``device uplink set`` refuses the same addresses in one line, exit status 2, nothing stored."""
    seed_device(tmp_path)
    for address in MALFORMED:
        code, _, err = run(capsys, "device", "uplink", "set", "--data", str(tmp_path), "--remote", address,
                           "--cert-id", "cert-1")
        assert code == 2, address
        assert "RemoteAddress" in one_line_error(err)
        assert "Traceback" not in err
    code, out, _ = run(capsys, "device", "uplink", "list", "--data", str(tmp_path))
    assert (code, out) == (0, "")


def test_python_api_refuses_each_cfg_3(tmp_path: Path) -> None:
    """CFG-3: ``Device.set_uplink`` of ``serve_device`` applies the same check."""
    seed_device(tmp_path)

    async def attempt() -> list[tuple[str, ...]]:
        async with serve_device(tmp_path, listen=None, uplinks=False) as device:
            refusals = []
            for address in MALFORMED:
                with pytest.raises(UplinkConfigError) as refused:
                    device.set_uplink(UplinkConfiguration(remote_address=address, user_level=("User",),
                                                          certificate_id="cert-1"))
                refusals.append(refused.value.subcodes)
            assert device.uplinks() == []
            return refusals

    assert set(asyncio.run(asyncio.wait_for(attempt(), 60))) == {("InvalidArgVal", "RemoteAddress")}


def test_an_address_with_a_token_is_refused_without_echo_upl_14(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    """UPL-14, CFG-3: even a malformed address is refused without repeating an access token it carries."""
    seed_device(tmp_path)
    address = "wss://[::1/up?access_token=s3cret-t0ken"
    with pytest.raises(UplinkConfigError) as refused:
        parse_remote_address(address)
    assert "s3cret" not in str(refused.value)
    code, _, err = run(capsys, "device", "uplink", "set", "--data", str(tmp_path), "--remote", address,
                       "--cert-id", "cert-1")
    assert code == 2 and "s3cret" not in err
