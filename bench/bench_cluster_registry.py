#!/usr/bin/env python3
"""Claim throughput of the cluster's device registry (issue 14; the registry's part of failover).

One real nats-server (JetStream, temp store). Three :class:`ClusterRegistry` instances (three
nodes, each its own NATS connection, in this process) are told at once that N devices
connected, a third each, once each sees the others live; timed until every registry's
mirror lists all N. Baseline, same
run and server: the same N records written to a bucket of their own with plain ``put`` (no
compare-and-set, no decision), three writers at once, each awaiting one write after the
other as a registry does. Printed: claims/s of both and the ratio registry / baseline.

Usage: ``python bench/bench_cluster_registry.py [--devices 6000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import KeyValueConfig, StorageType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster_env import NatsServer

from iec62676_2_33.cluster.records import DeviceRecord, device_key
from iec62676_2_33.cluster.registry import ClusterRegistry

NODES = 3


def records(n: int) -> list[DeviceRecord]:
    now = time.time()
    return [DeviceRecord(id=f"cam-{i}", node=f"n{i % NODES}", peer=f"192.0.2.{i % 250 + 1}:5000",
                         connected_since=now, auth_mode="mTLS") for i in range(n)]


async def baseline(url: str, devices: list[DeviceRecord]) -> float:
    """Seconds for three writers to ``put`` every record, one after the other each."""
    connections = [await nats.connect(url) for _ in range(NODES)]
    try:
        kv = await connections[0].jetstream().create_key_value(KeyValueConfig(
            bucket="bench-baseline", history=1, storage=StorageType.FILE))
        buckets = [kv] + [await nc.jetstream().key_value("bench-baseline") for nc in connections[1:]]

        async def writer(i: int) -> None:
            for record in devices[i::NODES]:
                await buckets[i].put(device_key(record.id), record.encode())

        start = time.perf_counter()
        await asyncio.gather(*(writer(i) for i in range(NODES)))
        return time.perf_counter() - start
    finally:
        for nc in connections:
            await nc.close()


async def registry(url: str, devices: list[DeviceRecord]) -> float:
    """Seconds from telling three registries of their devices until every one lists all."""
    connections = [await nats.connect(url) for _ in range(NODES)]
    nodes = [ClusterRegistry(nc, node_id=f"n{i}", internal=f"127.0.0.1:{i + 1}", ttl=3.0)
             for i, nc in enumerate(connections)]
    try:
        for node in nodes:
            await node.start()
        deadline = time.perf_counter() + 30
        while any(len(node.live_nodes()) < NODES for node in nodes):  # each sees the others' heartbeats
            if time.perf_counter() > deadline:
                raise SystemExit("the registries did not see each other within 30 s")
            await asyncio.sleep(0.05)
        start = time.perf_counter()
        for record in devices:
            nodes[int(record.node[1:])].connected(record)
        while any(len(node.devices()) < len(devices) for node in nodes):
            if time.perf_counter() - start > 300:
                raise SystemExit("the registries did not list every device within 300 s")
            await asyncio.sleep(0.1)  # devices() sorts every record: poll gently
        return time.perf_counter() - start
    finally:
        for node in nodes:
            await node.close()
        for nc in connections:
            await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=6000)
    args = parser.parse_args()
    devices = records(args.devices)
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "js")
        try:
            base = asyncio.run(baseline(server.url, devices))
            claimed = asyncio.run(registry(server.url, devices))
        finally:
            server.kill()
    n = args.devices
    print(f"{n} devices, {NODES} nodes: plain puts {base:.2f} s ({n / base:.0f}/s); registry claims until "
          f"every node lists all {claimed:.2f} s ({n / claimed:.0f}/s); ratio registry/puts {base / claimed:.2f}")


if __name__ == "__main__":
    main()
