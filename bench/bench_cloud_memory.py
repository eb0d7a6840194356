#!/usr/bin/env python3
"""Cloud memory per idle uplink (issue 3, benchmark 2).

The cloud (``run_cloud``: our TLS transport on MemoryBIO, the upgrade, HTTP/2
client role, device registry) runs in its own process; N devices are simulated
in other processes (each device: our TLS transport + ``UpgradeClient`` +
``H2ServerRole``, its own client certificate). We read the cloud's RSS (psutil)
once it is listening and again when all N devices are registered and idle; the
growth divided by N is the cost of one idle uplink. Goal: <= 64 KiB.

Baseline, same run: a cloud on stock asyncio SSL streams
(``asyncio.start_server(ssl=...)``) answering the upgrade and keeping an ``h2``
client connection per device, with M devices.

Usage: ``python bench/bench_cloud_memory.py [--devices 5000] [--baseline 500] [--procs 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import ssl
import time
from pathlib import Path

from _uplink_bench import (
    Certs,
    cloud_main,
    free_port,
    machine,
    raise_nofile,
    rss_of,
    sim_main,
    wait_until,
)

KIB = 1024


def baseline_main(conn: object, certs_dir: str, port: int) -> None:
    """The stock way: asyncio SSL streams + an h2 client connection per device."""
    import h2.config
    import h2.connection
    import h2.events

    raise_nofile()
    d = Path(certs_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "cloud.pem"), str(d / "cloud.key"))
    ctx.load_verify_locations(str(d / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    registered = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal registered
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n")
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            h2c.initiate_connection()
            writer.write(h2c.data_to_send())
            counted = False
            while data := await reader.read(65536):
                for ev in h2c.receive_data(data):
                    if isinstance(ev, h2.events.RemoteSettingsChanged) and not counted:
                        counted = True
                        registered += 1
                writer.write(h2c.data_to_send())
            if counted:
                registered -= 1
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx, backlog=1024)
        conn.send("ready")  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        while (msg := await loop.run_in_executor(None, conn.recv)) != "stop":  # type: ignore[attr-defined]
            if msg == "gc":
                gc.collect()
            conn.send((registered, rss_of(os.getpid())))  # type: ignore[attr-defined]
        server.close()

    asyncio.run(main())


def measure(name: str, target: object, certs: Certs, devices: int, procs: int) -> tuple[float, int, int]:
    """Start the cloud process, connect ``devices`` simulated devices; (KiB per device, rss0, rss1)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    parent, child = ctx.Pipe()
    cloud = ctx.Process(target=target, args=(child, str(certs.dir), port), daemon=True)
    cloud.start()
    assert parent.poll(60) and parent.recv() == "ready"

    def ask(msg: str = "count") -> tuple[int, int]:
        parent.send(msg)
        return parent.recv()  # type: ignore[no-any-return]

    ask("gc")
    _, rss0 = ask("gc")
    sims = []
    per = [devices // procs + (1 if i < devices % procs else 0) for i in range(procs)]
    start = time.monotonic()
    for i, n in enumerate(per):
        a, b = ctx.Pipe()
        p = ctx.Process(target=sim_main, args=(b, port, str(certs.dir), f"{name}-{i}", n), daemon=True)
        p.start()
        sims.append((p, a))
    wait_until(lambda: ask()[0] >= devices, 600, f"{devices} devices registered at the {name} cloud", 0.5)
    took = time.monotonic() - start
    for _p, a in sims:
        assert a.poll(60) and a.recv()[0] == "up"
    time.sleep(1.0)  # idle: let in-flight handshakes' buffers go (measurement, not synchronisation)
    count, rss1 = ask("gc")
    assert count == devices, count
    for p, a in sims:
        a.send("stop")
    for p, _a in sims:
        p.join(60)
    parent.send("stop")
    cloud.join(30)
    print(f"  {name}: {devices} devices connected in {took:.0f} s; cloud RSS {rss0 / 2**20:.1f} MiB -> "
          f"{rss1 / 2**20:.1f} MiB")
    return (rss1 - rss0) / devices / KIB, rss0, rss1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--baseline", type=int, default=500)
    parser.add_argument("--procs", type=int, default=4)
    args = parser.parse_args()
    limit = raise_nofile()
    certs = Certs.make()
    print(f"# cloud RSS per idle uplink — {machine()}; open-files limit {limit}")
    ours, _, _ = measure("ours", cloud_main, certs, args.devices, args.procs)
    stock, _, _ = measure("stock", baseline_main, certs, args.baseline, 1)
    print(f"ours  (run_cloud, {args.devices} devices)                     {ours:7.1f} KiB per idle uplink "
          f"(goal <= 64 KiB: {'met' if ours <= 64 else 'MISSED'})")
    print(f"stock (asyncio SSL streams + h2, {args.baseline} devices)      {stock:7.1f} KiB per idle uplink")
    print(f"ratio ours/stock {ours / stock:.2f}x")


if __name__ == "__main__":
    main()
