#!/usr/bin/env python3
"""SOAP calls/s through the uplink vs direct HTTP/1.1 keep-alive (issue 3, benchmark 1).

Layout (the same for both ways): this process runs the cloud (``run_cloud``) and
the client; a second process runs the device (``run_device``: direct HTTP on
hypercorn *and* the uplink agent dialling this cloud). The client is the same
zeep ``AsyncClient`` code (``AsyncUplinkClient``) calling GetServiceCapabilities;
only its transport differs:

* baseline: zeep's ``AsyncTransport`` (httpx, HTTP/1.1 keep-alive, a pool big
  enough that every worker keeps its connection) to the device's direct address;
* uplink: ``AsyncUplinkTransport`` (one HTTP/2 connection, the device dialled out).

Concurrency 1 and 32 (that many workers calling in a loop). Goal: uplink/direct
>= 1.0 at c=1 and >= 1.5 at c=32. Usage: ``python bench/bench_soap_uplink.py
[--seconds 4] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import re
import time

from _uplink_bench import ROOT, Certs, machine  # noqa: F401  (ROOT puts the package on sys.path)

DEVICE = "bench-device"


def device_main(conn: object, data_dir: str, settings_kw: dict[str, float]) -> None:
    from iec62676_2_33.runtime.agent import AgentSettings
    from iec62676_2_33.runtime.device import run_device

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_device(data_dir, "127.0.0.1:0", stop, conn.send,  # type: ignore[attr-defined]
                                              settings=AgentSettings(**settings_kw)))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # type: ignore[attr-defined]
        stop.set()
        await task

    asyncio.run(main())


async def measure(client: object, concurrency: int, seconds: float) -> float:
    """Calls per second of ``concurrency`` workers calling GetServiceCapabilities in a loop."""
    for _ in range(20):  # warm up (and open the pool's connections)
        await asyncio.gather(*(client.get_service_capabilities() for _ in range(concurrency)))  # type: ignore[attr-defined]
    count = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker() -> None:
        nonlocal count
        while loop.time() < deadline:
            caps = await client.get_service_capabilities()  # type: ignore[attr-defined]
            assert caps.max_uplinks == 8
            count += 1

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (loop.time() - start)


async def run(seconds: float, rounds: int) -> None:
    import httpx
    from zeep.transports import AsyncTransport

    from iec62676_2_33.client import AsyncUplinkClient
    from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
    from iec62676_2_33.runtime.zeep_transport import AsyncUplinkTransport

    certs = Certs.make()
    stop = asyncio.Event()
    holder: list[object] = []
    messages: list[str] = []
    cloud_task = asyncio.create_task(run_cloud(
        CloudOptions(listen="127.0.0.1:0", cert=certs.dir / "cloud.pem", key=certs.dir / "cloud.key",
                     client_cas=[certs.ca_file]), stop, messages.append, ready=holder.append))
    async with asyncio.timeout(15):
        while not holder or not messages:
            await asyncio.sleep(0.01)
    cloud = holder[0]
    port = int(re.search(r":(\d+)/", messages[0]).group(1))  # type: ignore[union-attr]
    data = certs.seed_device(DEVICE, port)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=device_main, args=(child, str(data), {}), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    announced = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 30)
    direct_url = re.search(r"(http://\S+)", announced).group(1)  # type: ignore[union-attr]
    await cloud.wait_for(DEVICE, timeout=30)  # type: ignore[attr-defined]

    pool = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64), timeout=30)
    direct = AsyncUplinkClient(direct_url, transport=AsyncTransport(client=pool))
    uplink = AsyncUplinkClient(f"http://{DEVICE}/onvif/uplink_service",
                               transport=AsyncUplinkTransport(cloud, DEVICE, timeout=30))  # type: ignore[arg-type]
    print(f"# SOAP GetServiceCapabilities calls/s — {machine()}; {seconds:g} s per figure, best of {rounds}")
    results: dict[tuple[str, int], float] = {}
    for concurrency in (1, 32):
        for _ in range(rounds):
            for name, client in (("direct", direct), ("uplink", uplink)):
                rate = await measure(client, concurrency, seconds)
                key = (name, concurrency)
                results[key] = max(results.get(key, 0.0), rate)
        d, u = results[("direct", concurrency)], results[("uplink", concurrency)]
        goal = 1.0 if concurrency == 1 else 1.5
        print(f"c={concurrency:<3} direct HTTP/1.1 keep-alive {d:8.1f} calls/s   uplink {u:8.1f} calls/s   "
              f"ratio {u / d:.2f}x (goal >= {goal}x: {'met' if u / d >= goal else 'MISSED'})")
    await pool.aclose()
    parent.send("stop")
    proc.join(15)
    stop.set()
    await cloud_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    start = time.monotonic()
    asyncio.run(run(args.seconds, args.rounds))
    print(f"# total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
