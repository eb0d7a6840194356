#!/usr/bin/env python3
"""Cloud memory per idle uplink (issue 3, benchmark 2; goal tightened by issue 14).

The cloud (``run_cloud``: our TLS transport on MemoryBIO, the upgrade, HTTP/2
client role, device registry) runs in its own process; N devices are simulated
in other processes (each device: our TLS transport + ``UpgradeClient`` +
``H2ServerRole``, its own client certificate, mTLS). We read the cloud's RSS
(psutil, after ``gc.collect()``) once it is listening and again when all N
devices are registered and the connections have settled (``--settle`` idle
seconds); the growth divided by N is the cost of one idle authenticated
uplink. Goal: <= 48 KiB (issue 14; it was 64 KiB in issue 3).

Baselines, same run:

* ``floor``: the least a Python cloud can hold per uplink, N devices: a plain
  ``asyncio.Protocol`` with an ``ssl.SSLObject`` on two ``MemoryBIO`` objects
  (the same mTLS context), answering the upgrade and keeping an ``h2`` client
  connection per device; no registry, no deadlines, no budgets.
* ``stock``: asyncio SSL streams (``asyncio.start_server(ssl=...)``) with an
  ``h2`` client connection per device, M devices.

``--trace N``: instead, where the memory goes: the cloud and the floor run
with ``tracemalloc`` (``--frames`` deep) and N devices; the growth of the
Python heap per uplink is printed by allocating line, by the innermost line of
``iec62676_2_33`` on the allocation's stack, and by object type (``gc``); what
RSS grew beyond the traced heap was allocated outside Python's allocator
(OpenSSL's SSL object and buffers) or is allocator overhead.

Usage: ``python bench/bench_cloud_memory.py [--devices 5000] [--baseline 500] [--procs 4]``
or ``python bench/bench_cloud_memory.py --trace 2000``; ``--ours-only`` skips the baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import multiprocessing as mp
import os
import ssl
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from _uplink_bench import (
    Certs,
    cloud_main,
    free_port,
    machine,
    raise_nofile,
    rss_of,
    sim_main,
)

from iec62676_2_33.testing.harness import wait_until

KIB = 1024

UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n"


def server_context(certs_dir: str) -> ssl.SSLContext:
    """The baselines' mTLS context: the cloud's certificate, device certificates required."""
    d = Path(certs_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "cloud.pem"), str(d / "cloud.key"))
    ctx.load_verify_locations(str(d / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def answer(conn: object, registered: Callable[[], int]) -> None:
    """A baseline cloud's side of the pipe: (devices, rss) per message until "stop"."""
    loop = asyncio.get_running_loop()
    conn.send("ready")  # type: ignore[attr-defined]
    while (msg := await loop.run_in_executor(None, conn.recv)) != "stop":  # type: ignore[attr-defined]
        if msg == "gc":
            gc.collect()
        conn.send((registered(), rss_of(os.getpid())))  # type: ignore[attr-defined]


def stock_main(conn: object, certs_dir: str, port: int) -> None:
    """The stock way: asyncio SSL streams + an h2 client connection per device."""
    import h2.config
    import h2.connection
    import h2.events

    raise_nofile()
    ctx = server_context(certs_dir)
    registered = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal registered
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(UPGRADED)
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
        await answer(conn, lambda: registered)
        server.close()

    asyncio.run(main())


class FloorUplink(asyncio.Protocol):
    """One uplink held the least costly way: an SSLObject on two MemoryBIOs, the upgrade answered,
    an h2 client connection; ``registered`` counts the devices whose SETTINGS arrived."""

    registered = 0

    def __init__(self, ctx: ssl.SSLContext) -> None:
        import h2.config
        import h2.connection

        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.transport: asyncio.Transport | None = None
        self.shaken = self.upgraded = self.counted = False
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        try:
            if not self.shaken:
                self.tls.do_handshake()
                self.shaken = True
            while True:
                self.plain(self.tls.read(65536))
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            assert self.transport is not None
            self.transport.close()
        if out := self.outgoing.read():
            assert self.transport is not None
            self.transport.write(out)

    def plain(self, data: bytes) -> None:
        import h2.events

        if not self.upgraded:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            data = self.head.split(b"\r\n\r\n", 1)[1]
            self.head, self.upgraded = b"", True
            self.h2c.initiate_connection()
            self.tls.write(UPGRADED + self.h2c.data_to_send())
        for ev in self.h2c.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and not self.counted:
                self.counted = True
                FloorUplink.registered += 1
        if out := self.h2c.data_to_send():
            self.tls.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            FloorUplink.registered -= 1


def floor_main(conn: object, certs_dir: str, port: int) -> None:
    raise_nofile()
    ctx = server_context(certs_dir)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: FloorUplink(ctx), "127.0.0.1", port, backlog=1024)
        await answer(conn, lambda: FloorUplink.registered)
        server.close()

    asyncio.run(main())


TARGETS: dict[str, Callable[[object, str, int], None]] = {"ours": cloud_main, "floor": floor_main,
                                                          "stock": stock_main}


class TracedPipe:
    """A cloud's end of the pipe that, after answering each "gc", also writes a tracemalloc
    snapshot and the count of gc-tracked objects by type into ``directory`` (0, 1, 2, ...)."""

    def __init__(self, conn: object, directory: str) -> None:
        self.conn, self.dir, self.last, self.taken = conn, Path(directory), None, 0

    def recv(self) -> object:
        self.last = self.conn.recv()  # type: ignore[attr-defined]
        return self.last

    def send(self, obj: object) -> None:
        self.conn.send(obj)  # type: ignore[attr-defined]
        if self.last == "gc":
            tracemalloc.take_snapshot().dump(str(self.dir / f"{self.taken}.snap"))
            types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
            (self.dir / f"{self.taken}.types").write_text(json.dumps(types))
            self.taken += 1


def traced_main(conn: object, certs_dir: str, port: int, name: str, directory: str, frames: int) -> None:
    """``TARGETS[name]`` with tracemalloc on (``frames`` deep), snapshots through :class:`TracedPipe`."""
    tracemalloc.start(frames)
    TARGETS[name](TracedPipe(conn, directory), certs_dir, port)


def measure(name: str, target: Callable[..., None], certs: Certs, devices: int, procs: int, settle: float,
            extra: tuple[object, ...] = ()) -> tuple[float, int, int]:
    """Start the cloud process, connect ``devices`` simulated devices; (KiB per device, rss0, rss1)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    parent, child = ctx.Pipe()
    cloud = ctx.Process(target=target, args=(child, str(certs.dir), port, *extra), daemon=True)
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
    wait_until(lambda: ask()[0] >= devices, 600, 0.5, f"{devices} devices registered at the {name} cloud")
    took = time.monotonic() - start
    for _p, a in sims:
        assert a.poll(60) and a.recv()[0] == "up"
    time.sleep(settle)  # idle: the HTTP/2 connections settle, handshakes' buffers go (measurement only)
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


def where(frame: tracemalloc.Frame) -> str:
    """``package/module.py:line`` of a frame."""
    path = frame.filename
    for cut in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if cut in path:
            path = path.split(cut, 1)[1]
    return f"{path}:{frame.lineno}"


def table(title: str, sizes: collections.Counter[str], counts: collections.Counter[str], n: int, top: int) -> None:
    print(f"  {title}")
    for key, size in sizes.most_common(top):
        print(f"    {size / n / KIB:7.2f} KiB {counts[key] / n:6.1f} blocks  {key}")


def explain(name: str, directory: Path, devices: int, rss_per_uplink: float, top: int) -> None:
    """Print where the traced run's Python heap grew per uplink, and what RSS grew beyond it."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before = tracemalloc.Snapshot.load(str(directory / "1.snap")).filter_traces(ignore)
    after = tracemalloc.Snapshot.load(str(directory / "2.snap")).filter_traces(ignore)
    lines: collections.Counter[str] = collections.Counter()
    line_blocks: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    our_blocks: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        frames = list(stat.traceback)  # oldest first
        line = where(frames[-1])
        mine = next((where(f) for f in reversed(frames) if "iec62676_2_33" in f.filename), "(no library frame)")
        lines[line] += stat.size_diff
        line_blocks[line] += stat.count_diff
        ours[mine] += stat.size_diff
        our_blocks[mine] += stat.count_diff
    heap = sum(lines.values()) / devices / KIB
    print(f"{name}: RSS {rss_per_uplink:.1f} KiB per uplink (untraced run); Python heap {heap:.1f} KiB "
          f"(tracemalloc); outside Python's allocator or overhead {rss_per_uplink - heap:.1f} KiB")
    table("by allocating line:", lines, line_blocks, devices, top)
    if name == "ours":
        table("by the innermost iec62676_2_33 line on the stack:", ours, our_blocks, devices, top)
    t0 = json.loads((directory / "1.types").read_text())
    t1 = json.loads((directory / "2.types").read_text())
    grown = collections.Counter({k: v - t0.get(k, 0) for k, v in t1.items() if v > t0.get(k, 0)})
    print("  gc-tracked objects per uplink: " + ", ".join(f"{k} {v / devices:.1f}" for k, v in grown.most_common(top)))


def trace(certs: Certs, devices: int, procs: int, settle: float, frames: int, top: int) -> None:
    for name in ("ours", "floor"):
        rss, _, _ = measure(name, TARGETS[name], certs, devices, procs, settle)
        with tempfile.TemporaryDirectory() as directory:
            measure(f"{name}-traced", traced_main, certs, devices, procs, settle, (name, directory, frames))
            explain(name, Path(directory), devices, rss, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--baseline", type=int, default=500, help="devices for the stock baseline")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before the RSS is read")
    parser.add_argument("--trace", type=int, metavar="N", help="where the memory goes, with N devices")
    parser.add_argument("--frames", type=int, default=30, help="tracemalloc stack depth (--trace)")
    parser.add_argument("--top", type=int, default=15, help="rows per table (--trace)")
    parser.add_argument("--ours-only", action="store_true", help="measure ours only (no baselines)")
    args = parser.parse_args()
    limit = raise_nofile()
    certs = Certs.make()
    print(f"# cloud RSS per idle uplink — {machine()}; open-files limit {limit}")
    if args.trace:
        trace(certs, args.trace, args.procs, args.settle, args.frames, args.top)
        return
    ours, _, _ = measure("ours", cloud_main, certs, args.devices, args.procs, args.settle)
    verdict = f"(goal <= 48 KiB: {'met' if ours <= 48 else 'MISSED'})"
    if args.ours_only:
        print(f"ours  (run_cloud, {args.devices} devices) {ours:7.1f} KiB per idle uplink {verdict}")
        return
    floor, _, _ = measure("floor", floor_main, certs, args.devices, args.procs, args.settle)
    stock, _, _ = measure("stock", stock_main, certs, args.baseline, 1, args.settle)
    print(f"ours  (run_cloud, {args.devices} devices)                      {ours:7.1f} KiB per idle uplink "
          f"{verdict}")
    print(f"floor (Protocol + SSLObject on MemoryBIO + h2, {args.devices} devices) {floor:7.1f} KiB per idle uplink")
    print(f"stock (asyncio SSL streams + h2, {args.baseline} devices)       {stock:7.1f} KiB per idle uplink")
    print(f"ratio ours/floor {ours / floor:.2f}x, ours/stock {ours / stock:.2f}x")


if __name__ == "__main__":
    main()
