#!/usr/bin/env python3
"""Many idle devices across two cloud nodes (issue 14, benchmark 1): connect time and memory per uplink.

Real parts on loopback, as in ``tests/test_cluster.py`` and ``bench_failover.py``: one nats-server
(JetStream), two cloud nodes (``iec62676 cloud serve --nats ...`` subprocesses, default
``--cluster-ttl``), HAProxy from ``examples/haproxy.cfg`` (TCP, ``send-proxy-v2``, health checks
with HAProxy's default timing) and N simulated devices in processes of ``--per-proc`` devices each
(``bench_failover.fleet_main``: our TLS transport + ``UpgradeClient`` + ``H2ServerRole``, each
device its own certificate and loopback source address 127.1.x.y, kept up by the agent's
``UplinkSupervisor`` and ``ReconnectBackoff``, UPL-9).

One process may hold at most ``ulimit -Hn`` descriptors (20,000 here, and it cannot be raised), and
HAProxy needs two per proxied connection: beyond ``--per-balancer`` devices the front is several
HAProxy processes, each on its own port with the same two nodes behind it (as DNS round robin over
balancers would spread them), every fleet process dialling one of them.

The device processes make their certificates first; the clock starts when all are ready and told
to dial at once (a fleet powering up together). Printed: when all N are listed in the registry
(``GET /devices`` on a node's proxy, polled every second per 10,000 devices), connects/s, when
the uplinks came up (the nodes' INFO lines), how many uplinks were opened in all (more than N
means reconnects), the nodes' TLS-front summaries (connections refused while their handshake
slots were full: those devices retried on their backoff); then,
after ``--settle`` idle seconds, each node's RSS growth per uplink it holds (RSS after minus RSS
before the fleet dialled, psutil), the device processes' and the balancers' RSS per uplink.

Usage: ``python bench/bench_cluster_scale.py [--devices 2000] [--per-proc 2500] [--per-balancer 8000]``.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _uplink_bench import Certs, machine, raise_nofile
from bench_failover import fleet_main, listing, uplinks_up

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster_env import Haproxy, NatsServer, Node, NodePki

KIB, MIB = 1024, 1024 * 1024

#: HAProxy's own default check timing (inter 2s, fall 3, rise 2): a node busy with thousands of
#: handshakes is not taken out for one slow check, as the tests' fast settings would.
SERVER_OPTIONS = "send-proxy-v2 check inter 2s fall 3 rise 2"


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def split(total: int, size: int) -> list[int]:
    """``total`` in parts of at most ``size``, as even as possible."""
    parts = -(-total // size)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def front_summary(log: str) -> str:
    """The node's TLS-server INFO summaries added up: connections refused, handshakes evicted and failed."""
    total = {what: sum(int(k) for k in re.findall(pattern, log)) for what, pattern in (
        ("refused", r"refused (\d+) connections"), ("evicted", r"evicted (\d+) handshakes"),
        ("failed", r"(\d+) handshakes failed"))}
    return ", ".join(f"{k} {what}" for what, k in total.items())


def diagnose(directory: Path) -> None:
    """After a failed run: the last lines of every node's and balancer's log that are not a device's
    connect or disconnect (the reason is usually there: descriptors, ports, memory)."""
    for log in sorted(directory.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if " connected from " not in line and " disconnected: " not in line]
        print(f"--- {log.name}: " + ("\n".join(lines[-8:]) or "(nothing else)"), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--per-proc", type=int, default=2500, help="devices per simulator process")
    parser.add_argument("--per-balancer", type=int, default=8000,
                        help="devices per HAProxy process (two descriptors each; ulimit -Hn bounds it)")
    parser.add_argument("--backoff", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"),
                        help="the devices' first reconnect interval (the agent's default)")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before RSS is read")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    limit = raise_nofile()
    n = args.devices
    fleets = split(n, args.per_proc)
    fronts = split(n, args.per_balancer)
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    print(f"# {n} idle devices, 2 nodes, {len(fronts)} HAProxy, {len(fleets)} simulator processes — {machine()}; "
          f"open-files limit {limit}; ephemeral ports {ports[0]}-{ports[1]}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        certs = Certs.make()
        node_pki = NodePki(tmp)
        nats = NatsServer(tmp / "js")
        nodes: list[Node] = []
        balancers: list[Haproxy] = []
        pipes, procs = [], []
        try:
            for i in range(2):
                nodes.append(Node(f"n{i}", cert=certs.dir / "cloud.pem", key=certs.dir / "cloud.key",
                                  client_ca=certs.ca_file, nodes=node_pki, nats_url=nats.url, ttl=15.0,
                                  log=tmp / f"n{i}.log"))
            for i, k in enumerate(fronts):
                balancers.append(Haproxy(tmp, [node.port for node in nodes], server_options=SERVER_OPTIONS,
                                         name=f"haproxy{i}", maxconn=k + 64))
            for i, k in enumerate(fleets):
                a, b = ctx.Pipe()
                port = balancers[i % len(balancers)].port
                p = ctx.Process(target=fleet_main, args=(b, port, str(certs.dir), f"cam{i}", sum(fleets[:i]), k,
                                                         tuple(args.backoff), 30.0, True), daemon=True)
                p.start()
                pipes.append(a)
                procs.append(p)
            for a in pipes:
                if not a.poll(args.timeout) or a.recv() != "ready":
                    raise SystemExit("a simulator process did not make its certificates in time")
            time.sleep(2.0)  # the nodes idle after their start (measurement, not synchronisation)
            node_before = [rss(node.proc.pid) for node in nodes]
            fleet_before = [rss(p.pid) for p in procs]  # type: ignore[arg-type]
            front_before = [rss(b.proc.pid) for b in balancers]
            go, go_wall = time.monotonic(), time.time()
            for a in pipes:
                a.send("go")
            listed, progress = 0, []
            poll = max(1.0, n / 10000)  # the whole list each time: not more than 10,000 entries a second
            while listed < n:
                if time.monotonic() - go > args.timeout:
                    raise SystemExit(f"only {listed} of {n} devices in the registry after {args.timeout:g} s")
                time.sleep(poll)
                listed = len(listing(nodes[0]))
                progress.append((time.monotonic() - go, listed))
            all_listed = time.monotonic() - go
            time.sleep(args.settle)
            held = listing(nodes[0])
            node_after = [rss(node.proc.pid) for node in nodes]
            fleet_after = [rss(p.pid) for p in procs]  # type: ignore[arg-type]
            front_after = [rss(b.proc.pid) for b in balancers]
            counts = [sum(1 for v in held.values() if v == node.name) for node in nodes]
            up = sorted(uplinks_up(nodes, set(held), go_wall))
            opened = sum(node.log.read_text().count(" connected from ") for node in nodes)
            half = next(t for t, k in progress if k >= n // 2)
            peak = max(collections.Counter(int(t) for t in up).values())
            print(f"all {n} listed after {all_listed:.1f} s (half after {half:.1f} s): {n / all_listed:.0f} connects/s; "
                  f"uplinks up (node logs): first {up[0]:.1f} s, median {statistics.median(up):.1f} s, "
                  f"last {up[-1]:.1f} s, peak {peak}/s; {opened} uplinks opened in all; "
                  f"listed {len(held)} after {args.settle:g} s idle")
            for node in nodes:
                print(f"node {node.name} TLS front: {front_summary(node.log.read_text())}")
            for node, k, before, after in zip(nodes, counts, node_before, node_after, strict=True):
                print(f"node {node.name}: {k} uplinks, RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB, "
                      f"{(after - before) / max(k, 1) / KIB:.1f} KiB per uplink")
            grown, total = sum(fleet_after) - sum(fleet_before), sum(fleet_after)
            print(f"device processes: RSS {sum(fleet_before) / MIB:.0f} -> {total / MIB:.0f} MiB, "
                  f"{grown / n / KIB:.1f} KiB per uplink grown ({total / n / KIB:.1f} KiB with certificates "
                  f"and interpreters)")
            print(f"HAProxy: RSS {sum(front_before) / MIB:.1f} -> {sum(front_after) / MIB:.1f} MiB, "
                  f"{(sum(front_after) - sum(front_before)) / n / KIB:.1f} KiB per proxied uplink")
        except SystemExit:
            diagnose(tmp)
            raise
        finally:
            for pipe in pipes:
                try:
                    pipe.send("stop")
                except OSError:
                    pass
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()
            for balancer in balancers:
                balancer.stop()
            for node in nodes:
                node.stop()
            nats.kill()


if __name__ == "__main__":
    main()
