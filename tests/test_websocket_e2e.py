"""UPL-4, UPL-5, CFG-3, CFG-5, UPL-13: the uplink over WebSocket (wss), end to end.

A real device agent dials a real cloud listener over loopback TLS (certificates
built at test time by :mod:`iec62676_2_33.pki`); the cloud calls the device's
SOAP service through the reversed HTTP/2 connection carried in WebSocket
binary frames. The same listener port takes native and WebSocket upgrades.
This module also holds the harness the access-token and TLS-matrix tests use.
Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from iec62676_2_33 import pki
from iec62676_2_33.namespaces import SOAP_ENV, TUP
from iec62676_2_33.runtime.agent import AgentSettings, UplinkAgent
from iec62676_2_33.runtime.cloud import (
    Authenticator,
    CloudListener,
    ListenerSettings,
    MtlsAuthenticator,
)
from iec62676_2_33.runtime.device import device_capabilities
from iec62676_2_33.runtime.dial import DialResult, dial_uplink, supported_protocols
from iec62676_2_33.security.oauth import AccessTokenProvider
from iec62676_2_33.services.app import UPLINK_PATH, build_device_app
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import TlsServer, start_tls_server
from iec62676_2_33.uplinkconfig import UplinkConfigError, UplinkConfiguration, validate

BOUND = 20.0  # seconds: the bound on every wait


# --------------------------------------------------------------------------- harness


class Pki:
    """A CA, the cloud's server certificate (localhost, 127.0.0.1) and device certificates."""

    def __init__(self) -> None:
        self.ca = pki.make_ca("uplink test CA")
        self.cloud = pki.make_leaf(self.ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1"])
        self.device = pki.make_leaf(self.ca, "device-1", kind="client")

    def server_ctx(self, leaf: pki.CertKey | None = None, *, client_certs: str = "required") -> ssl.SSLContext:
        leaf = leaf or self.cloud
        return server_context(leaf.cert_pem(), leaf.key_pem(),
                              client_ca_pems=None if client_certs == "none" else [self.ca.cert_pem()],
                              require_client_cert=client_certs == "required")


@dataclass
class Cloud:
    listener: CloudListener
    server: TlsServer
    port: int

    def url(self, scheme: str, path: str = "/uplink") -> str:
        return f"{scheme}://localhost:{self.port}{path}"


@contextlib.asynccontextmanager
async def running_cloud(ctx: ssl.SSLContext, authenticator: Authenticator | None = None) -> AsyncIterator[Cloud]:
    listener = CloudListener(authenticator or MtlsAuthenticator(),
                             settings=ListenerSettings(upgrade_timeout=BOUND, preface_timeout=BOUND))
    server = await start_tls_server(listener.handle, ("127.0.0.1", 0), ctx)
    try:
        yield Cloud(listener, server, server.sockets[0].getsockname()[1])
    finally:
        listener.close_all()
        await asyncio.wait_for(server.aclose(), BOUND)


def seed_store(data: Path, material: Pki) -> DeviceStore:
    store = DeviceStore(data)
    store.put_certificate("cert-1", material.device.cert_pem(), material.device.key_pem())
    store.put_policy("policy-1", [material.ca.cert_pem()])
    return store


def add_uplink(store: DeviceStore, remote: str, *, cert: str | None = "cert-1", policy: str | None = "policy-1",
               auth_server: str | None = None) -> UplinkConfiguration:
    cfg = validate(UplinkConfiguration(remote_address=remote, user_level=("Administrator",), certificate_id=cert,
                                       cert_path_validation_policy_id=policy, authorization_server=auth_server),
                   store, device_capabilities())
    store.put_uplink(cfg, max_uplinks=8)
    return cfg


@dataclass
class Device:
    store: DeviceStore
    agent: UplinkAgent
    context: UplinkServiceContext
    tokens: AccessTokenProvider
    failures: asyncio.Queue[BaseException] = field(default_factory=asyncio.Queue)
    headers_sent: list[list[tuple[str, str]]] = field(default_factory=list)

    async def next_failure(self) -> BaseException:
        return await asyncio.wait_for(self.failures.get(), BOUND)

    def error(self, remote: str) -> str | None:
        """The uplink's Error as GetUplinks reports it (CFG-1, CFG-2)."""
        return next(u.error for u in self.context.uplinks() if u.remote_address == remote)


@contextlib.asynccontextmanager
async def running_device(store: DeviceStore, *, settings: AgentSettings | None = None) -> AsyncIterator[Device]:
    context = UplinkServiceContext(store=store, capabilities=device_capabilities())
    app = build_device_app(context)
    executor = ThreadPoolExecutor(4, thread_name_prefix="test-device")
    tokens = AccessTokenProvider(store)
    failures: asyncio.Queue[BaseException] = asyncio.Queue()
    sent: list[list[tuple[str, str]]] = []

    async def dial(st: DeviceStore, cfg: UplinkConfiguration, headers: Sequence[tuple[str, str]]) -> DialResult:
        sent.append(list(headers))
        try:
            return await dial_uplink(st, cfg, headers)
        except BaseException as exc:
            failures.put_nowait(exc)
            raise

    async def auth_headers(cfg: UplinkConfiguration) -> list[tuple[str, str]]:
        try:
            return await tokens.auth_headers(cfg)
        except BaseException as exc:
            failures.put_nowait(exc)
            raise

    agent = UplinkAgent(store, app, executor=executor, settings=settings, dial=dial,
                        auth_headers=auth_headers, auth_refresh=tokens.refresh)
    context.status = agent.status
    device = Device(store, agent, context, tokens, failures, sent)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield device
    finally:
        stop.set()
        await asyncio.wait_for(task, BOUND)
        executor.shutdown(wait=False, cancel_futures=True)
        store.close()


def soap(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}">'
            f"<env:Body>{body}</env:Body></env:Envelope>").encode()


async def capabilities_over_uplink(listener: CloudListener, device_id: str) -> dict[str, str]:
    """GetServiceCapabilities through the uplink (the cloud is the HTTP/2 client, UPL-16)."""
    response = await listener.request(device_id, "POST", UPLINK_PATH,
                                      [("content-type", "application/soap+xml; charset=utf-8")],
                                      soap("<tup:GetServiceCapabilities/>"), timeout=BOUND)
    assert response.status == 200, response.body[:300]
    caps = etree.fromstring(response.body).find(f".//{{{TUP}}}Capabilities")
    assert caps is not None
    return dict(caps.attrib)


# --------------------------------------------------------------------------- tests


def test_protocols_capability_lists_registered_transports_upl_5_cfg_5() -> None:
    """UPL-5, CFG-5: Protocols are exactly the registered dialers; AccessToken is a mode."""
    assert supported_protocols() == ("https", "wss")
    caps = device_capabilities()
    assert caps.protocols == ("https", "wss")
    assert caps.authorization_modes == ("mTLS", "AccessToken")


def test_set_uplink_accepts_wss_and_still_refuses_other_schemes_cfg_3(tmp_path: Path) -> None:
    """CFG-3: SetUplink accepts https and wss; other schemes fault ProtocolNotSupported."""
    with seed_store(tmp_path / "d", Pki()) as store:
        add_uplink(store, "wss://cloud.example.com/uplink")
        add_uplink(store, "https://cloud.example.com/uplink")
        with pytest.raises(UplinkConfigError) as info:
            add_uplink(store, "ws://cloud.example.com/uplink")
        assert info.value.subcodes == ("InvalidArgs", "ProtocolNotSupported")


async def test_wss_uplink_end_to_end_mtls_upl_4(tmp_path: Path) -> None:
    """UPL-4, UPL-13: a wss uplink connects with mTLS; SOAP calls travel in WebSocket frames."""
    material = Pki()
    async with running_cloud(material.server_ctx()) as cloud:
        store = seed_store(tmp_path / "d", material)
        remote = cloud.url("wss")
        add_uplink(store, remote)
        async with running_device(store) as device:
            info = await cloud.listener.wait_for("device-1", timeout=BOUND)
            assert info.auth_mode == "mTLS"
            channel = cloud.listener.channel("device-1")
            assert channel.driver.stream.extra("websocket_subprotocol") == "h2c-reverse"
            caps = await capabilities_over_uplink(cloud.listener, "device-1")
            assert caps["Protocols"].split() == ["https", "wss"]
            assert caps["AuthorizationModes"].split() == ["mTLS", "AccessToken"]
            assert device.agent.status(remote) == ("Connected", None)


async def test_one_port_takes_native_and_websocket_upgrades_upl_2_upl_4(tmp_path: Path) -> None:
    """UPL-2, UPL-4: two devices, one native and one wss, on the same listener port."""
    material = Pki()
    second = pki.make_leaf(material.ca, "device-2", kind="client")
    async with running_cloud(material.server_ctx()) as cloud:
        store1 = seed_store(tmp_path / "d1", material)
        add_uplink(store1, cloud.url("https"))
        store2 = seed_store(tmp_path / "d2", material)
        store2.put_certificate("cert-1", second.cert_pem(), second.key_pem())
        add_uplink(store2, cloud.url("wss"))
        async with running_device(store1), running_device(store2):
            await cloud.listener.wait_for("device-1", timeout=BOUND)
            await cloud.listener.wait_for("device-2", timeout=BOUND)
            kinds = {d: cloud.listener.channel(d).driver.stream.extra("websocket_subprotocol")
                     for d in ("device-1", "device-2")}
            assert kinds == {"device-1": None, "device-2": "h2c-reverse"}
            for device_id in ("device-1", "device-2"):
                caps = await capabilities_over_uplink(cloud.listener, device_id)
                assert caps["MaxUplinks"] == "8"


async def test_wss_bulk_response_and_many_calls_upl_4_upl_16(tmp_path: Path) -> None:
    """UPL-4, UPL-16: concurrent calls and a large answer cross the WebSocket intact."""
    material = Pki()
    async with running_cloud(material.server_ctx()) as cloud:
        store = seed_store(tmp_path / "d", material)
        add_uplink(store, cloud.url("wss"))
        async with running_device(store):
            await cloud.listener.wait_for("device-1", timeout=BOUND)
            results = await asyncio.gather(*(capabilities_over_uplink(cloud.listener, "device-1")
                                             for _ in range(20)))
            assert all(r["Protocols"] == "https wss" for r in results)
            # a 300 kB request body crosses cloud -> device in many frames and gets its answer
            big = soap("<tup:GetServiceCapabilities/>" + "<!--" + "x" * 300_000 + "-->")
            response = await cloud.listener.request("device-1", "POST", UPLINK_PATH,
                                                    [("content-type", "application/soap+xml")], big,
                                                    timeout=BOUND)
            assert response.status in (200, 400, 413)

