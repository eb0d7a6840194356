#!/usr/bin/env python3
"""Failover of a cloud cluster: a node killed with SIGKILL, its devices back (issue 14, benchmark 3).

Real parts on loopback, as in ``tests/test_cluster.py``: one nats-server (JetStream), three
cloud nodes (``iec62676 cloud serve --nats ...`` subprocesses, ``--cluster-ttl``), HAProxy
from ``examples/haproxy.cfg`` (TCP, ``send-proxy-v2``, health checks every 0.5 s, one miss
takes a node out) and N simulated devices in other processes (our TLS transport +
``UpgradeClient`` + ``H2ServerRole``, each with its own certificate and its own loopback
source address, so the nodes' per-source admission limits apply as to real devices). Each
device keeps its uplink up the way the device agent does: the sans-IO ``UplinkSupervisor``
with a ``ReconnectBackoff`` seeded by its identity (UPL-9; the first interval is drawn from
``--backoff MIN MAX``, the agent's default is [1, 4) s).

Once every device is listed and has been up longer than ``stable_after`` (so a drop costs
only the first interval), the node holding the most devices is killed; the registry as a
survivor's proxy serves it (``GET /devices``, what routes every request) is polled until
each of the victim's devices is listed at a survivor. Printed: when the first, the median
and the last came back, and the last as a ratio of the configured first reconnect interval's
upper bound and of the cluster TTL, same run; and, from the survivors' logs, when their
uplinks came up (the difference to the list is the registry's part).

Usage: ``python bench/bench_failover.py [--devices 300] [--procs 2] [--backoff 1 4] [--ttl 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _uplink_bench import Certs, device_contexts, machine, raise_nofile, sim_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster_env import Haproxy, NatsServer, Node, NodePki

#: Every simulated device dials from an address of its own: 127.1.0.1, 127.1.0.2, ...
SOURCE_BASE = (127 << 24) | (1 << 16)


def source_of(index: int) -> str:
    n = SOURCE_BASE + 1 + index
    return ".".join(str((n >> shift) & 255) for shift in (24, 16, 8, 0))


def fleet_main(conn: object, port: int, certs_dir: str, prefix: str, first: int, n: int,
               backoff: tuple[float, float], stable_after: float, wait_go: bool = False) -> None:
    """``n`` devices kept connected through the balancer on ``port`` until "stop" arrives. With
    ``wait_go`` the process makes its certificates, sends "ready" and dials only after "go"."""
    from iec62676_2_33.errors import Iec62676Error
    from iec62676_2_33.sansio.backoff import ReconnectBackoff
    from iec62676_2_33.sansio.link import UplinkSupervisor

    raise_nofile()
    contexts = device_contexts(certs_dir, prefix, n)
    if wait_go:
        conn.send("ready")  # type: ignore[attr-defined]
        conn.recv()  # type: ignore[attr-defined]
    url = f"https://localhost:{port}/uplink"

    async def device(i: int, ctx: object) -> None:
        loop = asyncio.get_running_loop()
        sup = UplinkSupervisor(ReconnectBackoff(f"{prefix}-{i} {url}", first_min=backoff[0], first_max=backoff[1]),
                               loop.time(), stable_after=stable_after)
        local = (source_of(first + i), 0)
        while True:
            if not sup.should_connect(loop.time()):
                deadline = sup.next_deadline()
                await asyncio.sleep(max(0.0, (deadline or loop.time() + 1.0) - loop.time()))
                continue
            try:
                driver = await sim_connect(port, ctx, url, local_addr=local)
            except (Iec62676Error, OSError) as exc:
                sup.connect_failed(loop.time(), str(exc))
                continue
            sup.connected(loop.time())
            await driver.task  # type: ignore[attr-defined]
            sup.disconnected(loop.time(), driver.close_reason or "closed")

    async def main() -> None:
        tasks = [asyncio.create_task(device(i, c)) for i, c in enumerate(contexts)]
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # type: ignore[attr-defined]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def listing(node: Node) -> dict[str, str]:
    """id -> node, as the node's proxy routes requests (empty if it does not answer)."""
    try:
        answer = httpx.get(f"{node.proxy_url}/devices", timeout=10)
    except httpx.HTTPError:
        return {}
    return {d["id"]: d["node"] for d in answer.json()} if answer.status_code == 200 else {}


def uplinks_up(survivors: list[Node], devices: set[str], since: float) -> list[float]:
    """Seconds after ``since`` (wall clock) at which each device's uplink came up at a survivor,
    from the nodes' INFO lines ("device ID connected from ...", millisecond timestamps)."""
    found: dict[str, float] = {}
    for node in survivors:
        for line in node.log.read_text().splitlines():
            match = re.match(r"(\S+ \S+),(\d{3}) INFO \S+: device (\S+) connected from", line)
            if match is None or match.group(3) not in devices:
                continue
            stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000
            if stamp >= since - 0.001:
                found[match.group(3)] = max(found.get(match.group(3), 0.0), stamp - since)
    return list(found.values()) or [float("nan")]


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--backoff", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"))
    parser.add_argument("--ttl", type=float, default=3.0, help="the nodes' --cluster-ttl")
    args = parser.parse_args()
    raise_nofile()
    n, stable_after = args.devices, 2.0
    backoff = (args.backoff[0], args.backoff[1])
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        certs = Certs.make()
        node_pki = NodePki(tmp)
        nats = NatsServer(tmp / "js")
        nodes: list[Node] = []
        balancer: Haproxy | None = None
        pipes, procs = [], []
        try:
            for i in range(3):
                nodes.append(Node(f"n{i}", cert=certs.dir / "cloud.pem", key=certs.dir / "cloud.key",
                                  client_ca=certs.ca_file, nodes=node_pki, nats_url=nats.url, ttl=args.ttl,
                                  log=tmp / f"n{i}.log"))
            balancer = Haproxy(tmp, [node.port for node in nodes], maxconn=max(4096, n + 64))
            per = [n // args.procs + (1 if i < n % args.procs else 0) for i in range(args.procs)]
            for i, k in enumerate(per):
                a, b = ctx.Pipe()
                p = ctx.Process(target=fleet_main, args=(b, balancer.port, str(certs.dir), f"cam{i}", sum(per[:i]),
                                                         k, backoff, stable_after), daemon=True)
                p.start()
                pipes.append(a)
                procs.append(p)
            deadline = time.monotonic() + 300
            while (listed := len(listing(nodes[0]))) < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {listed} of {n} devices in the registry after 300 s")
                time.sleep(0.5)
            time.sleep(stable_after + 0.5)
            held = listing(nodes[0])
            counts = {node.name: sum(1 for v in held.values() if v == node.name) for node in nodes}
            victim = next(node for node in nodes if node.name == max(counts, key=counts.__getitem__))
            survivors = [node for node in nodes if node is not victim]
            theirs = {d for d, v in held.items() if v == victim.name}
            names = {node.name for node in survivors}
            print(f"# failover of {n} devices ({counts}) behind HAProxy, 3 nodes, TTL {args.ttl:g} s, "
                  f"first reconnect interval [{backoff[0]:g}, {backoff[1]:g}) s — {machine()}")
            back: dict[str, float] = {}
            killed, killed_wall = time.monotonic(), time.time()
            victim.kill()
            deadline = killed + 120
            while len(back) < len(theirs):
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {len(back)} of {len(theirs)} devices back after 120 s")
                now = time.monotonic()
                for device, node in listing(survivors[0]).items():
                    if device in theirs and node in names and device not in back:
                        back[device] = now - killed
                time.sleep(0.05)
            wait(lambda: listing(survivors[1]) == listing(survivors[0]), 30, "the survivors' lists to agree")
            last = max(back.values())
            print(f"node {victim.name} killed holding {len(theirs)} devices: first back after "
                  f"{min(back.values()):.2f} s, median {statistics.median(back.values()):.2f} s, "
                  f"all {len(theirs)} after {last:.2f} s")
            up = uplinks_up(survivors, theirs, killed_wall)
            print(f"their uplinks up again at the survivors (node logs): median {statistics.median(up):.2f} s, "
                  f"all after {max(up):.2f} s")
            print(f"ratio last/backoff upper bound {last / backoff[1]:.2f}; last/TTL {last / args.ttl:.2f}")
        finally:
            for pipe in pipes:
                pipe.send("stop")
            for p in procs:
                p.join(30)
            if balancer is not None:
                balancer.stop()
            for node in nodes:
                node.stop()
            nats.kill()


if __name__ == "__main__":
    main()
