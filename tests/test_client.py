"""CFG-2 … CFG-5, SEC-2, SEC-3: the zeep clients built from the authored WSDL, against a running device."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ADMIN, USER, RunningDevice, seed_device

from iec62676_2_33.client import AsyncUplinkClient, UplinkClient
from iec62676_2_33.errors import TransportError
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.http_server import bind_listen, serve_wsgi, wait_event
from iec62676_2_33.services.app import UPLINK_PATH, build_device_app
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.uplinkconfig import UplinkConfiguration

CFG = UplinkConfiguration(remote_address="https://cloud.example.com:8443/uplink", user_level=("Operator",),
                          certificate_id="cert-1", cert_path_validation_policy_id="policy-1")


def test_sync_client_all_operations_cfg_2_cfg_3_cfg_4_cfg_5(device: RunningDevice) -> None:
    """CFG-2..5: the four operations through zeep, returning the library's plain objects."""
    client = UplinkClient(device.url, username=ADMIN[0], password=ADMIN[1])
    caps = client.get_service_capabilities()
    assert (caps.max_uplinks, caps.protocols, caps.authorization_modes, caps.streaming_over_uplink) == (
        8, ("https", "wss"), ("mTLS", "AccessToken"), False)  # issue 5: wss, access tokens
    client.set_uplink(CFG)
    [got] = client.get_uplinks()
    assert got == UplinkConfiguration(
        remote_address=CFG.remote_address, user_level=("Operator",), certificate_id="cert-1",
        cert_path_validation_policy_id="policy-1", status="Offline")
    client.delete_uplink(CFG.remote_address)
    assert client.get_uplinks() == []


def test_fault_subcodes_readable_as_data_cfg_3(device: RunningDevice) -> None:
    """CFG-3: a fault raised by the client keeps its code and subcode chain as data."""
    client = UplinkClient(device.url, username=ADMIN[0], password=ADMIN[1])
    with pytest.raises(SoapFault) as info:
        client.set_uplink(UplinkConfiguration(remote_address="https://c.example/", user_level=("User",),
                                               certificate_id="cert-1", authorization_server="as"))
    assert info.value.code == "Sender"
    assert tuple(info.value.subcodes) == ("InvalidArgs", "AmbiguousAuthentication")
    assert "mutually exclusive" in info.value.reason


def test_async_client_all_operations_cfg_2_cfg_3_cfg_4(device: RunningDevice) -> None:
    """CFG-2..4: the asyncio client does the same."""

    async def scenario() -> list[str]:
        client = AsyncUplinkClient(device.url, username=ADMIN[0], password=ADMIN[1])
        try:
            await client.set_uplink(CFG)
            addresses = [c.remote_address for c in await client.get_uplinks()]
            with pytest.raises(SoapFault) as info:
                await client.delete_uplink("https://unknown.example/")
            assert tuple(info.value.subcodes) == ("InvalidArgVal", "Address")
            await client.delete_uplink(CFG.remote_address)
            return addresses
        finally:
            await client.aclose()

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [CFG.remote_address]


@pytest.mark.parametrize(("credentials", "operation", "allowed"), [
    (None, "get_service_capabilities", True),
    (None, "get_uplinks", False),
    (USER, "get_uplinks", True),
    (USER, "delete_uplink", False),
    (("viewer", "wrong"), "get_uplinks", False),
    (("nobody", "pw"), "get_uplinks", False),
    # PRE_AUTH runs even with bad credentials: clients bootstrap their clock this way.
    (("nobody", "pw"), "get_service_capabilities", True),
])
def test_access_classes_over_ws_security_sec_1_sec_2_sec_3(device: RunningDevice, credentials: tuple[str, str] | None,
                                                             operation: str, allowed: bool) -> None:
    """SEC-1..3: the access-class table decides; a refused call faults NotAuthorized and changes nothing."""
    UplinkClient(device.url, username=ADMIN[0], password=ADMIN[1]).set_uplink(CFG)
    user, password = credentials if credentials else (None, None)
    client = UplinkClient(device.url, username=user, password=password)
    call = {"get_service_capabilities": client.get_service_capabilities, "get_uplinks": client.get_uplinks,
            "delete_uplink": lambda: client.delete_uplink(CFG.remote_address)}[operation]
    if allowed:
        call()
    else:
        with pytest.raises(SoapFault) as info:
            call()
        assert (info.value.code, tuple(info.value.subcodes)) == ("Sender", ("NotAuthorized",))
    remaining = UplinkClient(device.url, username=ADMIN[0], password=ADMIN[1]).get_uplinks()
    assert [c.remote_address for c in remaining] == [CFG.remote_address]


@pytest.fixture
def skewed_device(tmp_path: Path) -> Iterator[str]:
    """A device whose clock runs one hour ahead of ours."""
    data = tmp_path / "skewed"
    seed_device(data)

    async def service(stop: asyncio.Event, announce) -> None:  # type: ignore[no-untyped-def]
        store = DeviceStore(data)
        app = build_device_app(UplinkServiceContext(store=store), clock=lambda: time.time() + 3600)
        sock = bind_listen("127.0.0.1", 0)
        announce(f"http://127.0.0.1:{sock.getsockname()[1]}{UPLINK_PATH}")
        try:
            await serve_wsgi(app, sock, lambda: wait_event(stop))
        finally:
            store.close()

    with BackgroundService(service, name="skewed device") as running:
        yield running.messages[0]


def test_clock_offset_correction_sec_2(skewed_device: str) -> None:
    """SEC-2: Created outside the freshness window is refused; the client's time offset corrects it."""
    with pytest.raises(SoapFault) as info:
        UplinkClient(skewed_device, username=ADMIN[0], password=ADMIN[1]).get_uplinks()
    assert tuple(info.value.subcodes) == ("NotAuthorized",)
    corrected = UplinkClient(skewed_device, username=ADMIN[0], password=ADMIN[1], time_offset=timedelta(hours=1))
    assert corrected.get_uplinks() == []


def test_unreachable_device_is_a_transport_error_cfg_2() -> None:
    """CFG-2: a device that does not answer becomes the library's TransportError."""
    sock = bind_listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        UplinkClient(f"http://127.0.0.1:{port}{UPLINK_PATH}", timeout=5).get_uplinks()
