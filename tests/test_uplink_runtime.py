"""End-to-end tests of the uplink runtimes with real TLS on loopback (UPL-1 … UPL-3,
UPL-6 … UPL-13, UPL-15, UPL-16, CFG-2, GEN-3).

A cloud (``run_cloud``: TLS listener + HTTP proxy) and devices (``run_device``:
direct HTTP + the uplink agent) run in background threads with certificates made
at test time. Devices use short reconnection intervals (``AgentSettings``
``backoff_first``/``backoff_cap``) so restarts cost little. Every wait is bounded;
state is observed by polling with a deadline (GetUplinks, the cloud's registry),
never by sleeping a guessed time; no test asserts a duration.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from helpers import parse_frames
from hyperframe.frame import GoAwayFrame, SettingsFrame

from iec62676_2_33 import pki
from iec62676_2_33.client import AsyncUplinkClient, UplinkClient
from iec62676_2_33.runtime.agent import AgentSettings
from iec62676_2_33.runtime.cloud import ListenerSettings
from iec62676_2_33.runtime.zeep_transport import AsyncUplinkTransport, UplinkTransport
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import ADMIN, RunningCloud, RunningDevice, UplinkPki, seed_device, wait_until
from iec62676_2_33.uplinkconfig import UplinkConfiguration

SERVICE = "http://device/onvif/uplink_service"


def uplink_client(cloud: RunningCloud, device_id: str) -> UplinkClient:
    """A sync zeep client whose transport is the cloud's uplink to ``device_id``."""
    assert cloud.loop is not None
    return UplinkClient(SERVICE, transport=UplinkTransport(cloud.cloud, device_id, cloud.loop, timeout=15))


def direct_client(device: RunningDevice) -> UplinkClient:
    assert device.url is not None
    return UplinkClient(device.url, username=ADMIN[0], password=ADMIN[1])


def statuses(device: RunningDevice) -> dict[str, UplinkConfiguration]:
    """GetUplinks over the device's direct HTTP service: RemoteAddress → configuration."""
    return {c.remote_address: c for c in direct_client(device).get_uplinks()}


# -- connecting and calling -----------------------------------------------------------

def test_two_devices_own_certificates_sync_zeep_UPL_1_UPL_13_UPL_16_GEN_3(
        tmp_path: Path, uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """UPL-1, UPL-13, UPL-16, GEN-3: two devices with their own client certificates dial
    out; the cloud knows each by its certificate and a sync zeep client reaches each
    through its own uplink (UplinkTransport)."""
    devices = []
    try:
        for cn in ("cam-a", "cam-b"):
            seed_device(tmp_path / cn, uplink_pki, cn, [(cloud.uplink_url(), ("Operator",))])
            devices.append(RunningDevice(tmp_path / cn))
        for cn in ("cam-a", "cam-b"):
            cloud.wait_for(cn)
        infos = {d.device_id: d for d in cloud.cloud.devices()}
        assert sorted(infos) == ["cam-a", "cam-b"]
        assert {d.auth_mode for d in infos.values()} == {"mTLS"}
        assert infos["cam-a"].peer != infos["cam-b"].peer
        for cn in ("cam-a", "cam-b"):
            client = uplink_client(cloud, cn)
            assert client.get_service_capabilities().max_uplinks == 8
            (cfg,) = client.get_uplinks()
            assert (cfg.remote_address, cfg.status, cfg.error) == (cloud.uplink_url(), "Connected", None)
            assert cfg.user_level == ("Operator",)
    finally:
        for device in devices:
            device.stop()


def test_async_zeep_through_the_uplink_UPL_16_GEN_3(tmp_path: Path, uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """UPL-16, GEN-3: ``zeep.AsyncClient`` with AsyncUplinkTransport on the cloud's loop;
    many calls at once share the one HTTP/2 connection."""
    seed_device(tmp_path / "dev", uplink_pki, "cam-async", [(cloud.uplink_url(), ("User",))])
    device = RunningDevice(tmp_path / "dev")
    try:
        cloud.wait_for("cam-async")

        async def calls() -> tuple[list[object], list[object]]:
            client = AsyncUplinkClient(SERVICE, transport=AsyncUplinkTransport(cloud.cloud, "cam-async", timeout=15))
            caps = await asyncio.gather(*(client.get_service_capabilities() for _ in range(16)))
            uplinks = await client.get_uplinks()
            return caps, uplinks

        caps, uplinks = cloud.call(calls)
        assert {c.max_uplinks for c in caps} == {8}  # type: ignore[attr-defined]
        assert [u.status for u in uplinks] == ["Connected"]  # type: ignore[attr-defined]
    finally:
        device.stop()


def test_user_level_of_the_uplink_is_applied_UPL_12(tmp_path: Path, uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """UPL-12: a ``User``-level uplink may read (GetUplinks) but its SetUplink and
    DeleteUplink fault NotAuthorized, whatever the request carries."""
    seed_device(tmp_path / "dev", uplink_pki, "cam-user", [(cloud.uplink_url(), ("User",))])
    device = RunningDevice(tmp_path / "dev")
    try:
        cloud.wait_for("cam-user")
        client = uplink_client(cloud, "cam-user")
        assert [c.user_level for c in client.get_uplinks()] == [("User",)]
        new = UplinkConfiguration(remote_address="https://localhost:9/other", user_level=("User",),
                                  certificate_id="cert", cert_path_validation_policy_id="policy")
        with pytest.raises(SoapFault) as fault:
            client.set_uplink(new)
        assert fault.value.code == "Sender" and "NotAuthorized" in fault.value.subcodes
        with pytest.raises(SoapFault) as fault:
            client.delete_uplink(cloud.uplink_url())
        assert "NotAuthorized" in fault.value.subcodes
        assert [c.remote_address for c in client.get_uplinks()] == [cloud.uplink_url()]
    finally:
        device.stop()


def test_live_reconfiguration_through_the_uplink_UPL_10_CFG_2(tmp_path: Path, uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """UPL-10, CFG-2: SetUplink sent *through* an Administrator uplink adds a second uplink,
    which connects at once to a second cloud; DeleteUplink drops it again."""
    second = RunningCloud(uplink_pki, proxy=False)
    seed_device(tmp_path / "dev", uplink_pki, "cam-admin", [(cloud.uplink_url(), ("Administrator",))])
    device = RunningDevice(tmp_path / "dev")
    try:
        cloud.wait_for("cam-admin")
        client = uplink_client(cloud, "cam-admin")
        client.set_uplink(UplinkConfiguration(remote_address=second.uplink_url("/second"), user_level=("User",),
                                              certificate_id="cert", cert_path_validation_policy_id="policy"))
        second.wait_for("cam-admin")
        # Both are up, in parallel, and GetUplinks (through the first) says so.
        up = wait_until(lambda: (s := {c.remote_address: c.status for c in client.get_uplinks()})
                        and set(s.values()) == {"Connected"} and s, what="both uplinks Connected")
        assert sorted(up) == sorted([cloud.uplink_url(), second.uplink_url("/second")])
        # The second uplink carries the User level it was given.
        second_client = uplink_client(second, "cam-admin")
        with pytest.raises(SoapFault) as fault:
            second_client.delete_uplink(cloud.uplink_url())
        assert "NotAuthorized" in fault.value.subcodes

        client.delete_uplink(second.uplink_url("/second"))
        wait_until(lambda: "cam-admin" not in second.device_ids(), what="the deleted uplink to drop")
        assert [c.remote_address for c in client.get_uplinks()] == [cloud.uplink_url()]
        assert cloud.device_ids() == ["cam-admin"]
    finally:
        device.stop()
        second.stop()


# -- Status and Error --------------------------------------------------------------------

def _hanging_tcp() -> tuple[socket.socket, list[socket.socket]]:
    """A TCP listener that accepts and never answers: a TLS handshake that never ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


def test_status_and_error_are_truthful_CFG_2_UPL_10_UPL_11_UPL_13(tmp_path: Path, uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """CFG-2, UPL-10, UPL-11, UPL-13: one device with five uplinks in parallel, each
    showing its own truth in GetUplinks: Connected (Error empty); cloud down (Offline,
    connection refused); the cloud's certificate not trusted by the policy (certificate
    verify failed); the cloud refusing our client certificate (authentication);
    a TLS handshake that never ends (Connecting)."""
    other_ca = pki.make_ca("some other CA")
    other_ca_file, _ = other_ca.write(uplink_pki.dir, "other-ca")
    picky = RunningCloud(uplink_pki, client_cas=[other_ca_file], proxy=False)  # does not trust our device's CA
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here
    hanging, accepted = _hanging_tcp()
    hang_port = hanging.getsockname()[1]

    ok, down = cloud.uplink_url(), f"https://localhost:{dead_port}/uplink"
    untrusted, refused = cloud.uplink_url("/untrusted"), picky.uplink_url()
    slow = f"https://localhost:{hang_port}/uplink"
    data = tmp_path / "dev"
    seed_device(data, uplink_pki, "cam-status")
    with DeviceStore(data) as store:
        store.put_policy("wrong", [other_ca.cert_pem()])
        for address, policy in ((ok, "policy"), (down, "policy"), (untrusted, "wrong"), (refused, "policy"),
                                (slow, "policy")):
            store.put_uplink(UplinkConfiguration(remote_address=address, user_level=("User",), certificate_id="cert",
                                                 cert_path_validation_policy_id=policy), max_uplinks=8)
    device = RunningDevice(data)
    try:
        def settled() -> dict[str, UplinkConfiguration] | None:
            s = statuses(device)
            done = (s[ok].status == "Connected" and all(s[a].error for a in (down, untrusted, refused))
                    and s[slow].status == "Connecting")
            return s if done else None

        s = wait_until(settled, what="every uplink to show its state")
        assert s[ok].error is None
        assert s[down].status in ("Offline", "Connecting")
        assert "refused" in s[down].error.lower(), s[down].error  # type: ignore[union-attr]
        assert s[untrusted].status in ("Offline", "Connecting")
        assert "certificate verify failed" in s[untrusted].error, s[untrusted].error  # type: ignore[operator]
        assert s[refused].status in ("Offline", "Connecting")
        assert re.search(r"refused the client certificate", s[refused].error), s[refused].error  # type: ignore[arg-type]
        assert s[slow].error is None
        assert cloud.device_ids() == ["cam-status"] and picky.device_ids() == []
        assert accepted  # the device really is inside the TCP connection it reports as Connecting
    finally:
        device.stop()
        picky.stop()
        hanging.close()
        for conn in accepted:
            conn.close()


def test_cloud_restart_devices_come_back_UPL_8_UPL_9_CFG_2(tmp_path: Path, uplink_pki: UplinkPki) -> None:
    """UPL-8, UPL-9, CFG-2: when the cloud goes away both devices show Offline with the
    reason in Error, and reconnect by themselves when it is back on the same address."""
    cloud = RunningCloud(uplink_pki)
    port = cloud.port
    devices = []
    try:
        for cn in ("cam-1", "cam-2"):
            seed_device(tmp_path / cn, uplink_pki, cn, [(cloud.uplink_url(), ("User",))])
            devices.append(RunningDevice(tmp_path / cn))
        for cn in ("cam-1", "cam-2"):
            cloud.wait_for(cn)
        cloud.stop()
        for device in devices:
            gone = wait_until(lambda d=device: (c := statuses(d)[f"https://localhost:{port}/uplink"]).error and c,
                              what="the device to see the cloud go")
            assert gone.status in ("Offline", "Connecting")
        cloud = RunningCloud(uplink_pki, port=port)
        for cn in ("cam-1", "cam-2"):
            cloud.wait_for(cn)
        for device in devices:
            cfg = wait_until(lambda d=device: (c := statuses(d)[cloud.uplink_url()]).status == "Connected" and c,
                             what="Connected again")
            assert cfg.error is None
    finally:
        for device in devices:
            device.stop()
        cloud.stop()


# -- the cloud: identity, deadlines, caps ----------------------------------------------------

def _device_ssl(uplink_pki: UplinkPki, cn: str) -> ssl.SSLContext:
    cert, key = uplink_pki.device_files(cn)
    ctx = ssl.create_default_context(cafile=str(uplink_pki.ca_file))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def _mini_device(cloud: RunningCloud, uplink_pki: UplinkPki, cn: str, label: bytes, up: asyncio.Event,
                       ended: asyncio.Future[bytes]) -> None:
    """A minimal device on stdlib ssl + h2: answers every request with ``label``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", cloud.port, ssl=_device_ssl(uplink_pki, cn),
                                                   server_hostname="localhost")
    writer.write(b"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    up.set()
    goaway = b""
    while data := await reader.read(65536):
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(label)))])
                conn.send_data(ev.stream_id, label, end_stream=True)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                goaway = ev.additional_data or b"GOAWAY"
        writer.write(conn.data_to_send())
    writer.close()
    ended.set_result(goaway)


async def test_reconnect_of_the_same_identity_replaces_the_old_channel_UPL_13(uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """UPL-13: a second connection with the same certificate replaces the first one: the
    old connection gets GOAWAY and is closed, requests go to the new one."""
    loop = asyncio.get_running_loop()
    first_up, second_up = asyncio.Event(), asyncio.Event()
    first_end, second_end = loop.create_future(), loop.create_future()
    first = asyncio.create_task(_mini_device(cloud, uplink_pki, "same", b"first", first_up, first_end))
    async with asyncio.timeout(15):
        await first_up.wait()
    await asyncio.to_thread(cloud.wait_for, "same")
    got = await asyncio.to_thread(cloud.call, lambda: cloud.cloud.request("same", "GET", "/"))
    assert got.body == b"first"
    old_channel = cloud.cloud.channel("same")

    second = asyncio.create_task(_mini_device(cloud, uplink_pki, "same", b"second", second_up, second_end))
    async with asyncio.timeout(15):
        await second_up.wait()
        reason = await first_end  # the old connection is over
    assert b"replaced" in reason
    await asyncio.to_thread(wait_until, lambda: cloud.cloud.channel("same") is not old_channel,
                            what="the new channel to be registered")
    got = await asyncio.to_thread(cloud.call, lambda: cloud.cloud.request("same", "GET", "/"))
    assert got.body == b"second"
    assert cloud.device_ids() == ["same"]
    assert cloud.cloud.stats["replaced"] == 1
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)


SHORT = ListenerSettings(handshake_timeout=1.0, upgrade_timeout=0.5, preface_timeout=0.5)


@pytest.fixture
def strict_cloud(uplink_pki: UplinkPki) -> Iterator[RunningCloud]:
    c = RunningCloud(uplink_pki, settings=SHORT, proxy=False)
    try:
        yield c
    finally:
        c.stop()


async def _read_to_eof(reader: asyncio.StreamReader, limit: float = 15.0) -> bytes:
    data = bytearray()
    async with asyncio.timeout(limit):
        while chunk := await reader.read(65536):
            data += chunk
    return bytes(data)


async def test_silent_tcp_peer_is_closed_at_the_handshake_deadline_UPL_6(strict_cloud: RunningCloud) -> None:
    """UPL-6: a TCP client that never starts TLS is dropped at the handshake deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_cloud.port)
    assert await _read_to_eof(reader) == b""
    writer.close()


async def test_silent_tls_peer_is_closed_at_the_upgrade_deadline_UPL_2(uplink_pki: UplinkPki, strict_cloud: RunningCloud) -> None:
    """UPL-2: a device that completes the TLS handshake and then sends nothing is closed
    at the upgrade deadline; it never becomes a device."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_cloud.port, ssl=_device_ssl(uplink_pki, "mute"),
                                                   server_hostname="localhost")
    assert await _read_to_eof(reader) == b""
    assert strict_cloud.device_ids() == []
    writer.close()


async def test_oversized_upgrade_head_gets_431_UPL_2(uplink_pki: UplinkPki, strict_cloud: RunningCloud) -> None:
    """UPL-2: an upgrade request head over 16 KiB (here 20 KiB) is answered 431 and closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_cloud.port, ssl=_device_ssl(uplink_pki, "big"),
                                                   server_hostname="localhost")
    writer.write(b"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n"
                 + b"X-Padding: " + b"a" * (20 << 10) + b"\r\n\r\n")
    answer = await _read_to_eof(reader)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert strict_cloud.device_ids() == []
    writer.close()


async def test_device_without_settings_is_dropped_at_the_preface_deadline_UPL_3_UPL_15(
        uplink_pki: UplinkPki, strict_cloud: RunningCloud) -> None:
    """UPL-3, UPL-15: after the 101 the cloud sends its preface (SETTINGS) first; a device
    that never answers with its own SETTINGS gets GOAWAY at the preface deadline and is
    never registered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict_cloud.port, ssl=_device_ssl(uplink_pki, "no-h2"),
                                                   server_hostname="localhost")
    writer.write(b"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    rest = await _read_to_eof(reader)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the cloud is the HTTP/2 client
    assert rest.startswith(preface), rest[:64]
    frames = parse_frames(rest[len(preface):])
    assert isinstance(frames[0], SettingsFrame), frames
    assert isinstance(frames[-1], GoAwayFrame), frames
    assert b"SETTINGS" in frames[-1].additional_data
    assert strict_cloud.device_ids() == []
    writer.close()


# -- liveness: a cloud that stops answering -----------------------------------------------

class FreezableRelay:
    """A TCP relay between device and cloud. ``freeze()`` stops forwarding cloud → device on
    the live connections and holds new ones; ``thaw()`` lets new connections through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.frozen = threading.Event()
        self.thawed = threading.Event()
        self.thawed.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(down)
            threading.Thread(target=self._serve, args=(down,), daemon=True).start()

    def _serve(self, down: socket.socket) -> None:
        self.thawed.wait(30)
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.socks.append(up)
        self.connections += 1
        threading.Thread(target=self._pipe, args=(down, up, None), daemon=True).start()
        self._pipe(up, down, self.frozen if not self.frozen.is_set() else None)

    def _pipe(self, src: socket.socket, dst: socket.socket, freeze: threading.Event | None) -> None:
        try:
            while data := src.recv(65536):
                if freeze is not None and freeze.is_set():
                    continue  # the cloud "stops answering": drop what it sends
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def freeze(self) -> None:
        self.thawed.clear()
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen = threading.Event()  # connections made from now on are never frozen
        self.thawed.set()

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()


def test_silent_cloud_makes_the_device_close_and_reconnect_UPL_7_UPL_8(
        tmp_path: Path, uplink_pki: UplinkPki, cloud: RunningCloud) -> None:
    """UPL-7, UPL-8: with small idle-PING/dead-link timers, a cloud that stops answering
    (a relay that drops everything the cloud sends) makes the device close the uplink with
    the reason in Error, try again (Connecting) and come back Connected once the path is
    open again."""
    relay = FreezableRelay(cloud.port)
    address = f"https://localhost:{relay.port}/uplink"
    seed_device(tmp_path / "dev", uplink_pki, "cam-live", [(address, ("User",))])
    settings = AgentSettings(idle_ping_after=0.2, dead_after=1.0, stable_after=0.5, backoff_first=(0.05, 0.1),
                             backoff_cap=0.2)
    device = RunningDevice(tmp_path / "dev", settings=settings)
    try:
        cloud.wait_for("cam-live")
        first = wait_until(lambda: (c := statuses(device)[address]).status == "Connected" and c, what="Connected")
        assert first.error is None
        peer = cloud.cloud.devices()[0].peer
        relay.freeze()
        dead = wait_until(lambda: (c := statuses(device)[address]).error and c, what="the device to give up")
        assert "no data from the cloud" in dead.error and "UPL-8" in dead.error, dead.error  # type: ignore[operator]
        assert dead.status in ("Offline", "Connecting")
        # Held by the relay: the next attempt is under way and the reason stays visible.
        held = wait_until(lambda: (c := statuses(device)[address]).status == "Connecting" and c, what="Connecting")
        assert "UPL-8" in held.error  # type: ignore[operator]
        relay.thaw()
        back = wait_until(lambda: (c := statuses(device)[address]).status == "Connected" and c,
                          what="Connected again")
        assert back.error is None
        wait_until(lambda: [d.peer for d in cloud.cloud.devices()] not in ([], [peer]),
                   what="the cloud to see the new connection")
        assert relay.connections == 2
    finally:
        device.stop()
        relay.close()
