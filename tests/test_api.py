"""UPL-13, UPL-16, CFG-2, CFG-3: the Python API of VMS and device code — ``serve_cloud`` accepts a
device whose certificate it trusts and names it by its certificate (UPL-13), lists it, streams its
coming and going and carries zeep calls over its uplink (UPL-16); ``serve_device`` shows the live
Status/Error (CFG-2) and applies SetUplink's checks (CFG-3). The package root's public names are typed
and every exception derives from Iec62676Error."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import pkgutil
import ssl
from pathlib import Path

import pytest

import iec62676_2_33
from iec62676_2_33 import (
    AsyncUplinkClient,
    ConfigurationError,
    DeviceEvent,
    DeviceStore,
    Iec62676Error,
    UnknownDevice,
    UplinkConfigError,
    UplinkConfiguration,
    pki,
    serve_cloud,
    serve_device,
)

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0


def _material(folder: Path) -> pki.CertKey:
    ca = pki.make_ca("api CA")
    ca.write(folder, "ca")
    pki.make_leaf(ca, "localhost", kind="server", sans=["DNS:localhost", "IP:127.0.0.1"]).write(folder, "cloud")
    device = pki.make_leaf(ca, "cam-api", kind="client")
    with DeviceStore(folder / "device") as store:
        store.put_certificate("cert", device.cert_pem(), device.key_pem())
        store.put_policy("policy", [ca.cert_pem()])
    return ca


def test_cloud_and_device_context_managers_upl_13_upl_16_cfg_2(tmp_path: Path) -> None:
    """UPL-13, UPL-16, CFG-2: accept, list, call with zeep, events, live status, shut down."""
    _material(tmp_path)

    async def scenario() -> tuple[list[str], list[str]]:
        events: list[str] = []
        async with serve_cloud((tmp_path / "cloud.pem", tmp_path / "cloud.key"),
                               client_cas=[tmp_path / "ca.pem"]) as cloud:
            async def watch() -> None:
                async for event in cloud.listener.events():
                    assert isinstance(event, DeviceEvent)
                    events.append(f"{event.kind} {event.device.device_id}")

            watcher = asyncio.create_task(watch())
            async with serve_device(tmp_path / "device", listen="127.0.0.1:0") as device:
                assert device.url is not None and device.url.startswith("http://127.0.0.1:")
                device.set_uplink(UplinkConfiguration(remote_address=cloud.url, user_level=("User",),
                                                       certificate_id="cert", cert_path_validation_policy_id="policy"))
                await cloud.listener.wait_for("cam-api", timeout=WAIT)
                assert [d.device_id for d in cloud.listener.devices()] == ["cam-api"]
                client = AsyncUplinkClient("http://device/onvif/uplink_service", transport=cloud.transport("cam-api"))
                uplinks = await client.get_uplinks()
                assert [(u.remote_address, u.status) for u in uplinks] == [(cloud.url, "Connected")]
                assert [(u.status, u.error) for u in device.uplinks()] == [("Connected", None)]
            async with asyncio.timeout(WAIT):
                while len(events) < 2:
                    await asyncio.sleep(0.05)
            watcher.cancel()
            host, port = cloud.host, cloud.port
        with pytest.raises(UnknownDevice):
            cloud.listener.channel("cam-api")
        with pytest.raises(OSError):  # the listener is gone once the block is left
            await asyncio.wait_for(asyncio.open_connection(host, port), WAIT)
        with DeviceStore(tmp_path / "device") as store:
            return events, [u.remote_address for u in store.list_uplinks()]

    events, stored = asyncio.run(scenario())
    assert events == ["connected cam-api", "disconnected cam-api"]
    assert len(stored) == 1


def test_serve_device_refuses_a_folder_without_a_device(tmp_path: Path) -> None:
    """Infrastructure: ``serve_device`` of a mistyped folder raises and creates nothing."""
    async def attempt() -> None:
        async with serve_device(tmp_path / "typo"):
            pass

    with pytest.raises(ConfigurationError, match="holds no device"):
        asyncio.run(attempt())
    assert not (tmp_path / "typo").exists()


def test_serve_cloud_needs_a_way_to_authenticate(tmp_path: Path) -> None:
    """Infrastructure: without client CAs or an authenticator, a ConfigurationError naming parameters."""
    _material(tmp_path)

    async def attempt() -> None:
        async with serve_cloud((tmp_path / "cloud.pem", tmp_path / "cloud.key")):
            pass

    with pytest.raises(ConfigurationError, match="client_cas") as refused:
        asyncio.run(attempt())
    assert "--" not in str(refused.value)  # API errors name parameters, not command-line flags


def test_set_uplink_applies_the_same_checks_cfg_3(tmp_path: Path) -> None:
    """CFG-3: ``Device.set_uplink`` refuses what SetUplink refuses, with the same subcodes."""
    _material(tmp_path)

    async def attempt() -> tuple[str, ...]:
        async with serve_device(tmp_path / "device", listen=None, uplinks=False) as device:
            with pytest.raises(UplinkConfigError) as refused:
                device.set_uplink(UplinkConfiguration(remote_address="https://c.example/", user_level=("User",),
                                                      certificate_id="missing"))
            return refused.value.subcodes

    assert asyncio.run(attempt()) == ("InvalidArgVal", "CertificateID")


def test_serve_cloud_takes_an_ssl_context(tmp_path: Path) -> None:
    """Infrastructure: an application's own SSLContext and authenticator are accepted."""
    _material(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cloud.pem", tmp_path / "cloud.key")

    async def attempt() -> str:
        async with serve_cloud(context, authenticator=iec62676_2_33.MtlsAuthenticator()) as cloud:
            return cloud.url

    assert asyncio.run(attempt()).startswith("https://127.0.0.1:")


def test_root_names_are_typed_and_match_the_lazy_table() -> None:
    """Infrastructure: the names under TYPE_CHECKING, the lazy table and ``__all__`` agree, and each resolves."""
    tree = ast.parse((ROOT / "iec62676_2_33" / "__init__.py").read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                typed.update({alias.name: str(imp.module) for alias in imp.names})
    assert typed == iec62676_2_33._LAZY
    errors = {"AuthenticationError", "ConfigurationError", "Iec62676Error", "LocalProtocolError", "ProtocolError",
              "RemoteProtocolError", "SchemaError", "TransportError", "__version__"}
    assert set(iec62676_2_33.__all__) == set(typed) | errors
    for name in iec62676_2_33.__all__:
        assert getattr(iec62676_2_33, name) is not None
    assert (ROOT / "iec62676_2_33" / "py.typed").is_file()


def test_every_exception_is_an_iec62676_error_with_a_distinct_name() -> None:
    """Infrastructure: one exception tree, no two exceptions of the same name."""
    seen: dict[str, str] = {}
    for info in pkgutil.walk_packages(iec62676_2_33.__path__, "iec62676_2_33."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
                    and not name.startswith("_")):
                assert issubclass(obj, Iec62676Error), f"{module.__name__}.{name} is not an Iec62676Error"
                assert name not in seen, f"{name} in {seen.get(name)} and {module.__name__}"
                seen[name] = module.__name__
