"""UPL-8 … UPL-10, UPL-13, UPL-14, CFG-3: an uplink survives its own failures, never waits forever,
never lets a token or a password into its configuration or messages, and cannot be taken over."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from iec62676_2_33.cli import main
from iec62676_2_33.runtime import dial as dial_module
from iec62676_2_33.runtime.agent import UplinkAgent
from iec62676_2_33.runtime.cloud import CloudListener, DeviceInfo, UpgradeRejected
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import FAST, UplinkPki, seed_device
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import start_tls_server


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


async def _until(condition: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_unexpected_failure_while_dialling_is_reported_and_retried_upl_9_upl_10(tmp_path: Path) -> None:
    """UPL-9, UPL-10: a bug in one dial attempt (here a ValueError) becomes the uplink's Error and the
    agent retries on its backoff; the agent itself keeps running."""
    certs = UplinkPki(tmp_path / "pki")
    seed_device(tmp_path / "dev", certs, "cam", [("https://localhost:9/uplink", ("User",))])
    attempts: list[int] = []

    async def broken_dial(*_args: Any) -> Any:
        attempts.append(1)
        raise ValueError("an unforeseen bug")

    with DeviceStore(tmp_path / "dev") as store:
        agent = UplinkAgent(store, _app, settings=FAST, dial=broken_dial)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await _until(lambda: len(attempts) >= 3)
            status, error = agent.status("https://localhost:9/uplink")
            assert status in ("Offline", "Connecting")
            assert error == "internal error: an unforeseen bug"
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_cloud_silent_after_tls_hits_the_upgrade_deadline_upl_8(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """UPL-8: a cloud that completes TLS and then says nothing cannot hold an uplink in Connecting."""
    monkeypatch.setattr(dial_module, "HANDSHAKE_TIMEOUT", 0.3)
    certs = UplinkPki(tmp_path / "pki")
    held: list[Any] = []

    async def silent(stream: Any) -> None:
        held.append(stream)
        while await stream.read(65536):
            pass

    server = await start_tls_server(silent, ("127.0.0.1", 0),
                                    server_context(certs.server.cert_pem(), certs.server.key_pem()))
    port = server.sockets[0].getsockname()[1]
    address = f"https://localhost:{port}/uplink"
    seed_device(tmp_path / "dev", certs, "cam", [(address, ("User",))])
    with DeviceStore(tmp_path / "dev") as store:
        agent = UplinkAgent(store, _app, settings=FAST)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await _until(lambda: agent.status(address)[1] is not None)
            assert agent.status(address)[1] == f"the cloud localhost:{port} did not answer the upgrade within 0.3 s"
            assert held, "the device never reached the silent cloud"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            server.close()
            await server.wait_closed()


def test_identity_cannot_be_taken_over_by_another_authentication_mode_upl_13_upl_14() -> None:
    """UPL-13, UPL-14: a token whose subject equals a connected device's certificate CN is refused (409);
    the same mode may replace its own connection."""
    cloud = CloudListener()

    class _Held:
        info = DeviceInfo(device_id="camera-1", peer="127.0.0.1:1", connected_since=0.0, auth_mode="mTLS")

    cloud._channels["camera-1"] = _Held()  # type: ignore[assignment]
    with pytest.raises(UpgradeRejected) as info:
        cloud._check_identity("camera-1", "AccessToken")
    assert info.value.status == 409
    assert str(info.value) == "device identity 'camera-1' is connected with mTLS; it cannot be taken over with AccessToken"
    cloud._check_identity("camera-1", "mTLS")
    cloud._check_identity("camera-2", "AccessToken")


@pytest.mark.parametrize(("remote", "extra", "message"), [
    ("wss://cloud.example/up?access_token=SECRET-TOKEN", ["--auth-server", "as"],
     "RemoteAddress must not carry an access token; leave access_token= empty and configure an AuthorizationServer"),
    ("wss://cloud.example/up?access_token=", ["--cert-id", "c"],
     ("an empty access_token= asks for the access token in the query string; it needs a wss RemoteAddress "
     "and an AuthorizationServer")),
])
def test_remote_address_never_holds_a_token_cfg_3_upl_14(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          remote: str, extra: list[str], message: str) -> None:
    """CFG-3, UPL-14: a RemoteAddress with a token (stored, listed by GetUplinks, logged) is refused,
    and the refusal does not repeat it."""
    with DeviceStore(tmp_path) as store:
        store.put_certificate("c", b"x", b"y")
    main(["device", "authserver", "add", "--data", str(tmp_path), "--token", "as", "--url",
          "https://auth.example/token", "--client-id", "id", "--client-secret", "s"])
    capsys.readouterr()
    code = main(["device", "uplink", "set", "--data", str(tmp_path), "--remote", remote, *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"iec62676: error: {message}"
    assert "SECRET" not in err


def test_token_endpoint_with_user_info_refused_upl_14(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """UPL-14: a password in the token endpoint URL would reach messages and GetUplinks' Error: refused."""
    code = main(["device", "authserver", "add", "--data", str(tmp_path), "--token", "as", "--url",
                 "https://user:hunter2@auth.example/token", "--client-id", "id", "--client-secret", "s"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == ("iec62676: error: --url: the token endpoint URL must not carry user info; "
                           "the client id and secret are configured separately")
    assert "hunter2" not in err
