#!/usr/bin/env python3
"""Bulk bytes of one HTTP/2 stream through the uplink vs raw TLS (issue 3, benchmark 3).

Two processes: this one is the cloud, a second one the device. The device runs
our uplink agent (``UplinkAgent``) with a WSGI app that answers ``GET /bulk`` with
SIZE bytes, dialled into this process's ``CloudListener``; the cloud reads the
response with ``DeviceChannel.open``/``body`` (flow control follows the reader).
Baseline, same processes and the same TLS transport (``transport.tls``): the
device opens a plain TLS connection to this process and writes SIZE bytes in
64 KiB writes; we read them. Both timings run from our first byte sent (request
or "go") to the last byte received; the two alternate, each round, which goes first.
Prints the best and the median round of each; the ratio of the bests is the figure
(goal: uplink/raw >= 0.75), the ratio of the medians shows how noisy the machine was.

Usage: ``[BULK_FRAME=65536] python bench/bench_bulk.py [--mib 128] [--rounds 5]``
(``BULK_FRAME`` overrides SETTINGS_MAX_FRAME_SIZE on both ends, ``BULK_WINDOW`` the
stream receive window; default: the runtimes' own settings).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from _uplink_bench import Certs, machine

DEVICE = "bulk-device"


def _windows() -> dict[str, int]:
    """``BULK_WINDOW=N`` (bytes): the stream receive window (the connection's is 4x)."""
    window = int(os.environ.get("BULK_WINDOW", "0"))
    return {"initial_window_size": window, "connection_window_size": 4 * window} if window else {}


def device_main(conn: object, certs_dir: str, uplink_port: int, raw_port: int, size: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from iec62676_2_33 import pki
    from iec62676_2_33.runtime.agent import UplinkAgent
    from iec62676_2_33.store import DeviceStore
    from iec62676_2_33.transport.contexts import client_context
    from iec62676_2_33.transport.tls import connect_tls
    from iec62676_2_33.uplinkconfig import UplinkConfiguration

    payload = os.urandom(size)
    certs = Certs(Path(certs_dir))
    leaf = pki.make_leaf(certs.ca(), DEVICE, kind="client")
    anchors = [certs.ca_file.read_bytes()]

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"),  # type: ignore[operator]
                                  ("Content-Length", str(size))])
        return [payload]

    async def raw_send() -> None:
        ctx = client_context(cafile_pems=anchors, certfile_pem=leaf.cert_pem(), keyfile_pem=leaf.key_pem())
        stream = await connect_tls("127.0.0.1", raw_port, ctx, server_hostname="localhost")
        assert await stream.read(1) == b"g"
        view = memoryview(payload)
        for offset in range(0, size, 65536):
            await stream.write(view[offset:offset + 65536])  # type: ignore[arg-type]
        await stream.read(1)  # until the reader closes
        await stream.close()

    async def main() -> None:
        data = Path(tempfile.mkdtemp(prefix="bulk-device-"))
        store = DeviceStore(data)
        store.put_certificate("c", leaf.cert_pem(), leaf.key_pem())
        store.put_policy("p", anchors)
        store.put_uplink(UplinkConfiguration(remote_address=f"https://localhost:{uplink_port}/uplink",
                                             user_level=("Administrator",), certificate_id="c",
                                             cert_path_validation_policy_id="p"), max_uplinks=8)
        from iec62676_2_33.http2.limits import H2Limits
        from iec62676_2_33.runtime.agent import AgentSettings
        frame = int(os.environ.get("BULK_FRAME", "0")) or AgentSettings().limits.max_frame_size
        agent = UplinkAgent(store, app, executor=ThreadPoolExecutor(4),
                            settings=AgentSettings(limits=H2Limits(max_frame_size=frame, **_windows())))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, conn.recv) != "stop":  # type: ignore[attr-defined]
            await raw_send()
            conn.send("sent")  # type: ignore[attr-defined]
        stop.set()
        await task
        store.close()

    asyncio.run(main())


async def run(size: int, rounds: int) -> None:
    from iec62676_2_33.http2.limits import H2Limits
    from iec62676_2_33.runtime.cloud import CloudListener, ListenerSettings, MtlsAuthenticator
    from iec62676_2_33.transport.contexts import server_context
    from iec62676_2_33.transport.tls import start_tls_server

    certs = Certs.make()
    context = server_context((certs.dir / "cloud.pem").read_bytes(), (certs.dir / "cloud.key").read_bytes(),
                             client_ca_pems=[certs.ca_file.read_bytes()], require_client_cert=True)
    # A bulk download is bigger than the default response-body cap (16 MiB).
    frame = int(os.environ.get("BULK_FRAME", "0")) or ListenerSettings().limits.max_frame_size
    cloud = CloudListener(MtlsAuthenticator(), settings=ListenerSettings(
        limits=H2Limits(max_body_size=size + 1, max_frame_size=frame, **_windows())))
    uplink_server = await start_tls_server(cloud.handle, ("127.0.0.1", 0), context)
    raw_done: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def raw_handler(stream: object) -> None:
        start = time.perf_counter()
        await stream.write(b"g")  # type: ignore[attr-defined]
        got = 0
        while got < size:
            chunk = await stream.read(1 << 20)  # type: ignore[attr-defined]
            if not chunk:
                break
            got += len(chunk)
        raw_done.put_nowait((got, time.perf_counter() - start))

    raw_server = await start_tls_server(raw_handler, ("127.0.0.1", 0), context)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=device_main, daemon=True, args=(
        child, str(certs.dir), uplink_server.sockets[0].getsockname()[1], raw_server.sockets[0].getsockname()[1],
        size))
    proc.start()
    await cloud.wait_for(DEVICE, timeout=60)
    channel = cloud.channel(DEVICE)
    loop = asyncio.get_running_loop()

    async def uplink_once() -> float:
        start = time.perf_counter()
        stream_id, status, _ = await channel.open("GET", "/bulk", timeout=60)
        assert status == 200
        got = 0
        async for chunk in channel.body(stream_id, timeout=60):
            got += len(chunk)
        assert got == size, got
        return time.perf_counter() - start

    async def raw_once() -> float:
        parent.send("go")
        got, seconds = await asyncio.wait_for(raw_done.get(), 120)
        assert got == size, got
        await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 60)
        return seconds

    await uplink_once()  # warm up both paths
    await raw_once()
    times: dict[str, list[float]] = {"raw": [], "uplink": []}
    for i in range(rounds):  # alternate which path goes first
        for path in (("raw", "uplink") if i % 2 == 0 else ("uplink", "raw")):
            times[path].append(await (raw_once() if path == "raw" else uplink_once()))
    mib = size / (1 << 20)
    best = {k: mib / min(v) for k, v in times.items()}
    med = {k: mib / statistics.median(v) for k, v in times.items()}
    ratio = best["uplink"] / best["raw"]
    print(f"# one stream of {mib:.0f} MiB, {rounds} rounds, SETTINGS_MAX_FRAME_SIZE {frame} — {machine()}")
    print(f"{'':31}{'best':>9}{'median':>9} MiB/s")
    print(f"raw TLS (transport.tls)        {best['raw']:9.1f}{med['raw']:9.1f}")
    print(f"uplink HTTP/2 stream           {best['uplink']:9.1f}{med['uplink']:9.1f}")
    print(f"ratio {ratio:.2f}x best, {med['uplink'] / med['raw']:.2f}x median "
          f"(goal >= 0.75x: {'met' if ratio >= 0.75 else 'MISSED'})")
    parent.send("stop")
    proc.join(15)
    cloud.close_all()
    await uplink_server.aclose()
    await raw_server.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.mib << 20, args.rounds))


if __name__ == "__main__":
    main()
