#!/usr/bin/env python3
"""Reconnect storm: N devices after a cloud restart (issue 3, benchmark 4).

N simulated devices (our TLS transport + ``UpgradeClient`` + ``H2ServerRole``,
each with its own certificate) in other processes keep their uplink up the way
the device agent does: the sans-IO ``UplinkSupervisor`` with a
``ReconnectBackoff`` seeded by the device's identity and RemoteAddress (UPL-9,
defaults: first interval in [1, 4) s, doubling, capped at 30 s). The cloud
process (``run_cloud``) is killed (SIGKILL) and started again on the same port;
we count every connection attempt per second until all N are Connected again.

Baseline, same run: the same fleet with one shared backoff identity, i.e. every
device on the same sequence (what UPL-9 forbids); the ratio of the peaks shows
what the individual intervals buy.

Usage: ``python bench/bench_reconnect_storm.py [--devices 1000] [--procs 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import time

from _uplink_bench import (
    Certs,
    cloud_main,
    device_contexts,
    free_port,
    machine,
    raise_nofile,
    sim_connect,
)


def storm_sim(conn: object, port: int, certs_dir: str, prefix: str, n: int, shared: bool) -> None:
    """``n`` devices kept connected by the supervisor; reports (connected, attempt times) every 0.2 s."""
    from iec62676_2_33.errors import Iec62676Error
    from iec62676_2_33.sansio.backoff import ReconnectBackoff
    from iec62676_2_33.sansio.link import UplinkSupervisor

    raise_nofile()
    contexts = device_contexts(certs_dir, prefix, n)
    url = f"https://localhost:{port}/uplink"
    attempts: list[float] = []
    connected = 0

    async def device(i: int, ctx: object) -> None:
        nonlocal connected
        loop = asyncio.get_running_loop()
        identity = "one shared identity" if shared else f"{prefix}-{i} {url}"
        sup = UplinkSupervisor(ReconnectBackoff(identity), loop.time())
        while True:
            if not sup.should_connect(loop.time()):
                deadline = sup.next_deadline()
                await asyncio.sleep(max(0.0, (deadline or loop.time() + 1.0) - loop.time()))
                continue
            attempts.append(time.time())
            try:
                driver = await sim_connect(port, ctx, url)
            except (Iec62676Error, OSError) as exc:
                sup.connect_failed(loop.time(), str(exc))
                continue
            sup.connected(loop.time())
            connected += 1
            await driver.task  # type: ignore[attr-defined]
            connected -= 1
            sup.disconnected(loop.time(), driver.close_reason or "closed")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(device(i, c)) for i, c in enumerate(contexts)]
        while not conn.poll():  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)
            batch = attempts[:]
            attempts.clear()
            conn.send((connected, batch))  # type: ignore[attr-defined]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        del loop

    asyncio.run(main())


class Fleet:
    def __init__(self, ctx: mp.context.SpawnContext, certs: Certs, port: int, n: int, procs: int, shared: bool,
                 name: str) -> None:
        self.pipes = []
        self.procs = []
        self.connected = [0] * procs
        self.attempts: list[float] = []
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        for i, k in enumerate(per):
            a, b = ctx.Pipe()
            p = ctx.Process(target=storm_sim, args=(b, port, str(certs.dir), f"{name}-{i}", k, shared), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)

    def poll(self) -> int:
        for i, pipe in enumerate(self.pipes):
            while pipe.poll():
                self.connected[i], batch = pipe.recv()
                self.attempts += batch
        return sum(self.connected)

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send("stop")
        for p in self.procs:
            p.join(30)


def start_cloud(ctx: mp.context.SpawnContext, certs: Certs, port: int) -> mp.Process:
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=cloud_main, args=(child, str(certs.dir), port), daemon=True)
    proc.start()
    assert parent.poll(60) and parent.recv() == "ready"
    proc.pipe = parent  # type: ignore[attr-defined]
    return proc


def storm(certs: Certs, n: int, procs: int, shared: bool, name: str) -> tuple[int, float, int]:
    """(peak attempts per second, seconds until all back, attempts) after a cloud restart."""
    ctx = mp.get_context("spawn")
    port = free_port()
    cloud = start_cloud(ctx, certs, port)
    fleet = Fleet(ctx, certs, port, n, procs, shared, name)
    deadline = time.monotonic() + 300
    while fleet.poll() < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {fleet.poll()} of {n} devices connected")
        time.sleep(0.1)
    killed = time.time()
    cloud.kill()
    cloud.join(10)
    cloud = start_cloud(ctx, certs, port)
    deadline = time.monotonic() + 300
    while fleet.poll() < n or time.time() - killed < 1.0:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {fleet.poll()} of {n} devices came back")
        time.sleep(0.1)
    back = time.time() - killed
    after = [t for t in fleet.attempts if t >= killed]
    per_second = collections.Counter(int(t - killed) for t in after)
    fleet.stop()
    cloud.pipe.send("stop")  # type: ignore[attr-defined]
    cloud.join(30)
    return max(per_second.values()), back, len(after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    raise_nofile()
    certs = Certs.make()
    print(f"# reconnect storm of {args.devices} devices after a cloud restart (SIGKILL + start) — {machine()}")
    results = {}
    for shared, name in ((False, "individual"), (True, "shared")):
        peak, back, count = storm(certs, args.devices, args.procs, shared, name)
        results[name] = peak
        label = ("individual backoff (UPL-9)" if not shared else "baseline: one shared sequence")
        print(f"{label:32} all {args.devices} Connected again after {back:5.1f} s; {count} attempts; "
              f"peak {peak} attempts/s")
    print(f"ratio of peaks individual/shared {results['individual'] / results['shared']:.2f}x")


if __name__ == "__main__":
    main()
