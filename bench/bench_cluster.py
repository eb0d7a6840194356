#!/usr/bin/env python3
"""Cross-node request overhead in a cloud cluster (issue 14, benchmark 2).

Real parts on loopback, as in ``tests/test_cluster.py``: one nats-server (JetStream), two
cloud nodes (``iec62676 cloud serve --nats ...`` subprocesses), HAProxy in TCP mode with
``send-proxy-v2``, and devices (our device runtime, in this process) dialling the balancer.
For each device, GetServiceCapabilities is called through the proxy of the node that holds
it (the baseline: one hop, as on a single node) and through the other node's proxy (relayed
node to node over HTTP/2 on mutual TLS), at concurrency 1 and 8, with keep-alive HTTP/1.1
clients (httpx). Printed: calls/s of each path and the ratio relayed / local of the same run.

Usage: ``python bench/bench_cluster.py [--devices 4] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster_env import Haproxy, NatsServer, Node, NodePki

from iec62676_2_33.namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TUP
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until

BODY = (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tup="{TUP}">'
        "<s:Body><tup:GetServiceCapabilities/></s:Body></s:Envelope>").encode()
HEADERS = {"content-type": f'{SOAP12_CONTENT_TYPE}; action="{TUP}/GetServiceCapabilities"'}


def rate(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    """Calls/s answered 200, and how many calls got another answer."""
    done = [0] * concurrency
    failed = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                answer = client.post(url, content=BODY, headers=HEADERS)
                if answer.status_code == 200:
                    done[i] += 1
                else:
                    failed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - start), sum(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        certs, node_pki = UplinkPki(tmp / "pki"), NodePki(tmp / "pki")
        nats = NatsServer(tmp / "js")
        nodes = [Node(f"n{i}", cert=certs.cert, key=certs.key, client_ca=certs.ca_file, nodes=node_pki,
                      nats_url=nats.url, log=tmp / f"n{i}.log") for i in range(2)]
        balancer = Haproxy(tmp, [n.port for n in nodes])
        devices = []
        try:
            for i in range(args.devices):
                cn = f"cam-{i}"
                seed_device(tmp / cn, certs, cn, [(f"https://localhost:{balancer.port}/uplink", ("User",))])
                devices.append(RunningDevice(tmp / cn, listen=False))

            def held() -> dict[str, str] | None:
                listed = httpx.get(f"{nodes[0].proxy_url}/devices", timeout=10).json()
                return {d["id"]: d["node"] for d in listed} if len(listed) == args.devices else None

            where = wait_until(held, 60, 0.2, "every device in the registry")
            by_name = {n.name: n for n in nodes}
            device, home = next(iter(where.items()))
            other = next(n for n in nodes if n.name != home)
            local_url = f"{by_name[home].proxy_url}/devices/{device}/onvif/uplink_service"
            relayed_url = f"{other.proxy_url}/devices/{device}/onvif/uplink_service"
            rate(local_url, 1, 1.0)  # warm up both paths (connections, node-to-node HTTP/2)
            rate(relayed_url, 1, 1.0)
            print(f"device {device} at node {home}; relayed through node {other.name}; {args.seconds:g} s each")
            for concurrency in (1, 8):
                local, local_failed = rate(local_url, concurrency, args.seconds)
                relayed, relayed_failed = rate(relayed_url, concurrency, args.seconds)
                print(f"concurrency {concurrency}: local {local:.0f} calls/s ({local_failed} failed), "
                      f"relayed {relayed:.0f} calls/s ({relayed_failed} failed), ratio {relayed / max(local, 1e-9):.2f}")
        finally:
            for d in devices:
                d.stop()
            balancer.stop()
            for n in nodes:
                n.stop()
            nats.kill()


if __name__ == "__main__":
    main()
