"""UPL-16: the cluster's device registry on a real nats-server (JetStream, started here): each
device shown once, a reconnect at another node takes the entry over by compare-and-set and
the old holder yields, a node that stops its heartbeat drops out within the TTL, a NATS
restart with an empty store is rebuilt from the nodes' live devices, a node's entry swept
while its uplink is live is claimed again, events reach every
subscriber, and ``iec62676 cloud devices --nats`` lists the registry. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from cluster_env import NatsServer, have
from helpers import run
from nats.js.errors import ServiceUnavailableError

from iec62676_2_33.cluster.records import DeviceRecord, device_key
from iec62676_2_33.cluster.registry import ClusterRegistry

pytestmark = pytest.mark.skipif(not have("nats-server"), reason="Debian nats-server is not installed (.ci/run)")

TTL = 2.0
BOUND = 15.0


async def until(condition: Callable[[], object], what: str, timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "js")
    yield srv
    srv.kill()


class Node:
    def __init__(self, name: str, registry: ClusterRegistry, nc: nats.NATS) -> None:
        self.name, self.registry, self.nc = name, registry, nc
        self.superseded: list[DeviceRecord] = []

    def record(self, device: str, since: float | None = None) -> DeviceRecord:
        return DeviceRecord(id=device, node=self.name, peer="192.0.2.1:5000", connected_since=since or time.time(),
                            auth_mode="mTLS")


async def start_node(url: str, name: str) -> Node:
    resync: list[ClusterRegistry] = []

    async def reconnected() -> None:
        resync[0].resync()

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                            reconnected_cb=reconnected)
    node = Node(name, None, nc)  # type: ignore[arg-type]
    node.registry = ClusterRegistry(nc, node_id=name, internal=f"127.0.0.1:{len(name)}", ttl=TTL,
                                    on_superseded=node.superseded.append)
    resync.append(node.registry)
    await node.registry.start()
    return node


async def stop_node(node: Node) -> None:
    await node.registry.close()
    await node.nc.close()


def ids(node: Node) -> list[tuple[str, str]]:
    return [(r.id, r.node) for r in node.registry.devices()]


async def test_registry_claims_moves_expires_and_rebuilds(server: NatsServer) -> None:
    a, b = await start_node(server.url, "a"), await start_node(server.url, "b")
    events: list[tuple[str, str, str]] = []

    async def watch() -> None:
        async for kind, record in b.registry.events():
            events.append((kind, record.id, record.node))

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.2)  # the watcher has subscribed ...
        await b.nc.flush(timeout=5)  # ... and the server has the subscription (PING/PONG after the SUB)
        first = a.record("cam/1 é")  # any id: the key is encoded
        a.registry.connected(first)
        a.registry.connected(a.record("cam-2"))
        await until(lambda: ids(b) == [("cam-2", "a"), ("cam/1 é", "a")], "both devices at a, seen from b")
        assert b.registry.locate("cam/1 é").node == "a"  # type: ignore[union-attr]

        # the device reconnects at b: b takes the entry over, a is told to close its older uplink
        b.registry.connected(b.record("cam/1 é"))
        await until(lambda: ("cam/1 é", "b") in ids(a), "the move seen from a")
        await until(lambda: [r.id for r in a.superseded] == ["cam/1 é"], "a told to close its uplink")
        assert sorted(ids(a)) == sorted(ids(b)) == [("cam-2", "a"), ("cam/1 é", "b")]
        # a's late disconnect of the old uplink does not remove b's claim
        a.registry.disconnected(first)
        await asyncio.sleep(0.5)
        assert ("cam/1 é", "b") in ids(b)
        await until(lambda: ("connected", "cam/1 é", "b") in events and ("disconnected", "cam/1 é", "a") in events,
                    "events on the subjects")

        # a dies without a word: its devices disappear within the TTL (its heartbeat expires)
        for task in list(a.registry._tasks):
            task.cancel()
        await a.nc.close()
        await until(lambda: ids(b) == [("cam/1 é", "b")], "a's devices gone", timeout=TTL * 3 + 5)

        # NATS restarts with an empty store: b reconnects and claims its live device again
        server.restart_empty()
        c = await start_node(server.url, "c")
        try:
            await until(lambda: ids(c) == [("cam/1 é", "b")], "registry rebuilt from b's live device",
                        timeout=BOUND + 10)
        finally:
            await stop_node(c)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await stop_node(b)
        for task in list(a.registry._tasks):
            task.cancel()


async def test_a_swept_entry_of_a_live_uplink_is_claimed_again(server: NatsServer) -> None:
    """A node whose heartbeat lapsed is swept by the others; its devices are still connected to it,
    so it claims them again. One it no longer holds stays removed."""
    a, b = await start_node(server.url, "a"), await start_node(server.url, "b")
    try:
        a.registry.connected(a.record("cam-1"))
        gone = a.record("cam-2")
        a.registry.connected(gone)
        await until(lambda: ids(b) == [("cam-1", "a"), ("cam-2", "a")], "claimed, seen from b")
        a.registry.disconnected(gone)
        await until(lambda: ids(b) == [("cam-1", "a")], "cam-2 released")
        kv = b.registry._devices_kv
        assert kv is not None
        await kv.delete(device_key("cam-1"))  # what b's sweep does to a node it believes dead
        await until(lambda: ids(b) == [], "the sweep seen from b")
        await until(lambda: ids(b) == [("cam-1", "a")], "a claims its live uplink again")
        assert ids(a) == [("cam-1", "a")] and not a.superseded
    finally:
        await stop_node(a)
        await stop_node(b)


async def test_a_rebuild_that_fails_while_jetstream_starts_is_retried(server: NatsServer) -> None:
    """NATS restarted with an empty store: the node's first rebuild after it reconnects fails (JetStream
    not up yet); the node tries again rather than giving up, and its live device is in the new registry."""
    b = await start_node(server.url, "b")
    registry = b.registry
    opened = registry._open
    failures: list[int] = []

    async def open_once_failing() -> None:
        if not failures:
            failures.append(1)
            raise ServiceUnavailableError()
        await opened()

    try:
        registry.connected(b.record("cam-7"))
        await until(lambda: ids(b) == [("cam-7", "b")], "claimed")
        registry._open = open_once_failing  # type: ignore[method-assign]
        server.restart_empty()
        c = await start_node(server.url, "c")
        try:
            await until(lambda: ids(c) == [("cam-7", "b")], "rebuilt after a failed first attempt",
                        timeout=BOUND + 10)
        finally:
            await stop_node(c)
        assert failures == [1]
    finally:
        await stop_node(b)


async def test_cli_lists_the_cluster_devices(server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    a = await start_node(server.url, "a")
    try:
        a.registry.connected(a.record("cam-9"))
        await until(lambda: ids(a) == [("cam-9", "a")], "claimed")
        code, out, _ = await asyncio.to_thread(run, capsys, "cloud", "devices", "--nats", server.url)
        assert code == 0
        assert [(d["id"], d["node"]) for d in json.loads(out)] == [("cam-9", "a")]
    finally:
        await stop_node(a)
