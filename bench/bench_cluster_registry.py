#!/usr/bin/env python3
"""Claim throughput and lag of the cluster's device registry (issue 14; the registry's part of failover
and of a fleet powering up).

One real nats-server (JetStream, temp store). Three :class:`ClusterRegistry` instances (three
nodes, each its own NATS connection, in this process) are told that N devices connected, a third
each, once each sees the others live; a device is *listed* once every registry's mirror holds its
entry (polled every 50 ms). The registries run once per ``--in-flight`` value (claims a node keeps
in flight; 1 is one compare-and-set after the other), on fresh buckets, same server, back to back.

* ``--rate R``: the uplinks come up at R connects/s in all (0, the default: all at once).
* ``--busy MS``: a task keeps the event loop busy in slices of MS milliseconds, as a node's loop is
  while it runs the TLS handshakes of arriving uplinks: every await then takes a slice or more.

Printed per run: connects/s offered, claims/s (N / time from the first connect until the last
listed), the lag of a device (listed minus connected: median and largest) and of the fleet (time
half were listed minus time half were connected). Baseline in the same run and server: the same
N records written to a bucket of their own with plain ``put`` (no compare-and-set, no decision,
no load), three writers at once, each awaiting one write after the other.

Usage: ``python bench/bench_cluster_registry.py [--devices 6000] [--rate 0] [--busy 0] [--in-flight 1 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import KeyValueConfig, StorageType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster_env import NatsServer

from iec62676_2_33.cluster.records import DEVICES_BUCKET, NODES_BUCKET, DeviceRecord, device_key
from iec62676_2_33.cluster.registry import ClusterRegistry

NODES = 3
POLL = 0.05


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


async def hog(slice_s: float) -> None:
    """Keep the event loop busy in slices of ``slice_s`` seconds (a loaded node's loop)."""
    while True:
        end = time.perf_counter() + slice_s
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def registry(url: str, devices: list[DeviceRecord], *, in_flight: int, rate: float, busy: float) -> str:
    """Tell three registries of their devices (at ``rate``, under ``busy`` load); what was measured."""
    connections = [await nats.connect(url) for _ in range(NODES)]
    nodes = [ClusterRegistry(nc, node_id=f"n{i}", internal=f"127.0.0.1:{i + 1}", ttl=3.0, in_flight=in_flight)
             for i, nc in enumerate(connections)]
    load = None
    try:
        for node in nodes:
            await node.start()
        deadline = time.perf_counter() + 30
        while any(len(node.live_nodes()) < NODES for node in nodes):  # each sees the others' heartbeats
            if time.perf_counter() > deadline:
                raise SystemExit("the registries did not see each other within 30 s")
            await asyncio.sleep(0.05)
        if busy:
            load = asyncio.create_task(hog(busy))
        connected: dict[str, float] = {}
        listed: dict[str, float] = {}

        async def feed() -> None:
            start = time.perf_counter()
            for i, record in enumerate(devices):
                if rate and (wait := start + i / rate - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                connected[record.id] = time.perf_counter()
                nodes[int(record.node[1:])].connected(record)

        feeder = asyncio.create_task(feed())
        waiting = {record.id: device_key(record.id) for record in devices}
        start = time.perf_counter()
        while waiting:
            if time.perf_counter() - start > 600:
                raise SystemExit(f"only {len(listed)} of {len(devices)} listed after 600 s")
            await asyncio.sleep(POLL)
            now = time.perf_counter()
            for device_id, key in list(waiting.items()):
                if all(key in node._mirror for node in nodes):
                    listed[device_id] = now
                    del waiting[device_id]
        await feeder
    finally:
        if load is not None:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
        for node in nodes:
            await node.close()
        js = connections[0].jetstream()
        for bucket in (DEVICES_BUCKET, NODES_BUCKET):  # fresh buckets for the next run
            await js.delete_key_value(bucket)
        for nc in connections:
            await nc.close()
    n, first = len(devices), min(connected.values())
    fed = max(connected.values()) - first
    took = max(listed.values()) - first
    lags = [listed[d] - connected[d] for d in connected]
    half = sorted(listed.values())[n // 2] - sorted(connected.values())[n // 2]
    offered = f"{n / fed:.0f}/s" if rate else "all at once"
    return (f"in flight {in_flight:>3}: connects {offered}; all listed after {took:.2f} s ({n / took:.0f} claims/s); "
            f"lag of a device median {statistics.median(lags):.2f} s, largest {max(lags):.2f} s; "
            f"half listed {half:.2f} s after half connected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=0.0, help="connects/s in all (0: all at once)")
    parser.add_argument("--busy", type=float, default=0.0, help="ms slices the event loop is kept busy in")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 64], help="claims a node keeps in flight")
    args = parser.parse_args()
    devices = records(args.devices)
    n = args.devices
    print(f"# {n} devices, {NODES} nodes (one process), connects {args.rate or 'all at once'}"
          f"{'/s' if args.rate else ''}, event loop busy in {args.busy:g} ms slices")
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "js")
        try:
            base = asyncio.run(baseline(server.url, devices))
            print(f"plain puts, no load: {base:.2f} s ({n / base:.0f}/s)")
            for k in args.in_flight:
                print(asyncio.run(registry(server.url, devices, in_flight=k, rate=args.rate, busy=args.busy / 1000)))
        finally:
            server.kill()


if __name__ == "__main__":
    main()
