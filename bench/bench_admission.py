#!/usr/bin/env python3
"""Handshake flood at the cloud's uplink front (issue 8, finding 3): does a valid device get in?

Three processes on loopback: the cloud (this process: ``CloudListener`` behind
``start_tls_server``, wired as ``run_cloud`` wires them, so its counters can be
read), an attacker holding ``--flood`` silent TCP connections (as in issue 8:
each replaced by a new one after ``--hold`` 9 s, just before the cloud's 10 s
deadline, and opened again ``--reopen`` s after the cloud closed it), and a device (our TLS transport with its
client certificate + the native upgrade, as the agent dials) that connects
``--rounds`` times from 127.0.0.1, retrying a refused attempt after 0.1 s, and
reports how long each connection took until the ``101`` (authenticated); a
round not connected after 12 s (more than one handshake deadline) counts as
locked out and ends the scenario.

Scenarios, same run:

* ``no flood``: the device alone (baseline);
* ``before``: the earlier front, emulated: a global cap of 1,024 handshakes in
  progress and nothing else (no per-source limits, no eviction, no first-byte
  deadline), the flood from one source;
* ``after, 1 source`` and ``after, 40 sources``: ``ListenerSettings()`` defaults
  (``DEFAULT_ADMISSION``, first-byte deadline 4 s), the flood from 127.0.0.2, or
  spread over 127.0.0.2 … 127.0.0.41 (each source under its per-source limit, so
  only the global rules act).

Also printed: the server's CPU per full TLS handshake (mTLS, this machine's
certificates), which sizes the per-source rate default, and the memory per entry
of the policy's tables. Not run by the test suite; nothing is asserted.

    python3 bench/bench_admission.py [--flood 1100] [--rounds 10] [--spacing 1] [--hold 9] [--reopen 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import ssl
import statistics
import time
import tracemalloc
from typing import Any

from _uplink_bench import Certs, device_contexts, machine, raise_nofile

from iec62676_2_33.runtime.cloud import CloudListener, ListenerSettings, MtlsAuthenticator
from iec62676_2_33.runtime.dial import upgrade
from iec62676_2_33.sansio.admission import Admission, AdmissionLimits
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import connect_tls, start_tls_server

PER_ROUND = 12.0  # seconds a device round may take before it counts as locked out (> the 10 s deadline)


class _Count(logging.Handler):
    """Counts the lines the TLS front logs (a flood must not make one per connection)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1


class _CapOnly(Admission[Any]):
    """The earlier front, for the baseline: the global cap alone, never evicting."""

    def _victim(self, source: str, known: bool) -> None:
        return None


# -- the attacker process ------------------------------------------------------------------------

def attacker_main(conn: object, port: int, sources: list[str], n: int, hold: float, reopen: float) -> None:
    """Hold ``n`` silent connections spread over ``sources``, each for ``hold`` s (then at once
    another), ``reopen`` s after the cloud closed one; report (opened, closed by the cloud)."""
    raise_nofile()

    async def main() -> None:
        opened = closed = 0

        async def slot(source: str) -> None:
            nonlocal opened, closed
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                except OSError:
                    await asyncio.sleep(reopen)
                    continue
                opened += 1
                try:
                    await asyncio.wait_for(reader.read(), hold)
                except TimeoutError:
                    writer.close()  # our own turn-over, before the cloud's deadline: no gap
                    continue
                except OSError:
                    pass
                writer.close()
                closed += 1
                await asyncio.sleep(reopen)

        tasks = [asyncio.create_task(slot(sources[i % len(sources)])) for i in range(n)]
        loop = asyncio.get_running_loop()
        while (msg := await loop.run_in_executor(None, conn.recv)) != "stop":  # type: ignore[attr-defined]
            conn.send((opened, closed))  # type: ignore[attr-defined]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        del msg

    asyncio.run(main())


# -- the device process --------------------------------------------------------------------------

def device_main(conn: object, port: int, certs_dir: str, rounds: int, spacing: float) -> None:
    """Connect ``rounds`` times (stop at the first round locked out); send [(seconds to the 101 or
    None, failed attempts)]."""
    from iec62676_2_33.errors import Iec62676Error

    ctx = device_contexts(certs_dir, "bench-device", 1)[0]
    url = f"https://localhost:{port}/uplink"

    async def one() -> tuple[float | None, int]:
        start = time.perf_counter()
        failed = 0
        while time.perf_counter() - start < PER_ROUND:
            try:
                stream = await connect_tls("127.0.0.1", port, ctx,  # type: ignore[arg-type]
                                           server_hostname="localhost", timeout=PER_ROUND)
                await asyncio.wait_for(upgrade(stream, url), PER_ROUND)
            except (TimeoutError, Iec62676Error, OSError):
                failed += 1
                await asyncio.sleep(0.1)
                continue
            took = time.perf_counter() - start
            stream.abort()
            return took, failed
        return None, failed

    async def main() -> None:
        results = []
        for _ in range(rounds):
            results.append(await one())
            if results[-1][0] is None:
                break  # locked out: more rounds would only repeat it
            await asyncio.sleep(spacing)
        conn.send(results)  # type: ignore[attr-defined]

    asyncio.run(main())


# -- the cloud (this process) --------------------------------------------------------------------

async def scenario(name: str, certs: Certs, *, limits: AdmissionLimits | None, first_byte: float | None,
                   sources: list[str], flood: int, args: argparse.Namespace) -> dict[str, object]:
    d = certs.dir
    ctx = server_context((d / "cloud.pem").read_bytes(), (d / "cloud.key").read_bytes(),
                         client_ca_pems=[(d / "ca.pem").read_bytes()], require_client_cert=True)
    log = logging.getLogger("iec62676_2_33.transport.tls")
    counter = _Count()
    log.addHandler(counter)
    log.setLevel(logging.INFO)
    log.propagate = False
    started = time.perf_counter()
    settings = ListenerSettings()
    cloud = CloudListener(MtlsAuthenticator(), settings=settings)
    server = await start_tls_server(cloud.handle, ("127.0.0.1", 0), ctx, handshake_timeout=settings.handshake_timeout,
                                    first_byte_timeout=first_byte, admission=limits or AdmissionLimits.global_cap(1024))
    if limits is None:
        server._admission = _CapOnly(AdmissionLimits.global_cap(1024))  # the earlier front (bench only)
    port = server.sockets[0].getsockname()[1]
    spawn = mp.get_context("spawn")
    loop = asyncio.get_running_loop()
    attacker = None
    if flood:
        a_pipe, a_child = spawn.Pipe()
        attacker = spawn.Process(target=attacker_main, daemon=True,
                                 args=(a_child, port, sources, flood, args.hold, args.reopen))
        attacker.start()
        while server.stats["accepted"] < flood:  # the flood is in place (first wave accepted)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    held = server.admission.pending
    d_pipe, d_child = spawn.Pipe()
    device = spawn.Process(target=device_main, daemon=True,
                           args=(d_child, port, str(certs.dir), args.rounds, args.spacing))
    device.start()
    results = await loop.run_in_executor(None, d_pipe.recv)
    device.join(10)
    if attacker is not None:
        a_pipe.send("count")
        opened, closed = await loop.run_in_executor(None, a_pipe.recv)
        a_pipe.send("stop")
        attacker.join(10)
    else:
        opened = closed = 0
    cloud.close_all()
    await server.aclose()
    log.removeHandler(counter)
    times = [t for t, _ in results if t is not None]
    return {"name": name, "held": held, "stats": dict(server.stats), "opened": opened, "closed": closed,
            "connected": len(times), "rounds": len(results), "times": times,
            "failed": sum(f for _, f in results), "log_lines": counter.lines,
            "seconds": time.perf_counter() - started}


def handshake_cpu(certs: Certs, n: int = 300) -> float:
    """Milliseconds of the server's own CPU per full TLS handshake with a client certificate."""
    d = certs.dir
    sctx = server_context((d / "cloud.pem").read_bytes(), (d / "cloud.key").read_bytes(),
                          client_ca_pems=[(d / "ca.pem").read_bytes()], require_client_cert=True)
    cctx = device_contexts(str(d), "cpu-probe", 1)[0]
    assert isinstance(cctx, ssl.SSLContext)
    server_time = 0.0
    for _ in range(n):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = cctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        server = sctx.wrap_bio(s_in, s_out, server_side=True)
        done_c = done_s = False
        while not (done_c and done_s):
            if not done_c:
                try:
                    client.do_handshake()
                    done_c = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            if not done_s:
                start = time.perf_counter()
                try:
                    server.do_handshake()
                    done_s = True
                except ssl.SSLWantReadError:
                    pass
                server_time += time.perf_counter() - start
            c_in.write(s_out.read())
        client.write(b"x")  # TLS 1.3: the server verifies the client's certificate on its last flight
        s_in.write(c_out.read())
        start = time.perf_counter()
        server.read(1)
        server_time += time.perf_counter() - start
    return server_time / n * 1000


def table_bytes() -> tuple[float, float]:
    """Bytes per known source and per token bucket, IPv4 keys (tracemalloc)."""
    n = 20000
    policy: Admission[int] = Admission(AdmissionLimits(max_known=n, max_sources=n))
    keys = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i, key in enumerate(keys):
        policy.authenticated(key, float(i))
    known = (tracemalloc.get_traced_memory()[0] - base) / n
    base = tracemalloc.get_traced_memory()[0]
    for i, key in enumerate(keys):
        policy.admit(i, key, 0.0)
        policy.release(i)
    buckets = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    return known, buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=1100, help="silent connections the attacker holds")
    parser.add_argument("--rounds", type=int, default=10, help="device connections per scenario")
    parser.add_argument("--hold", type=float, default=9.0,
                        help="seconds the attacker holds a connection before it replaces it (issue 8: 9 s)")
    parser.add_argument("--reopen", type=float, default=0.1,
                        help="seconds before the attacker reopens a connection the cloud closed")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between the device's connections")
    args = parser.parse_args()
    raise_nofile()
    certs = Certs.make()
    defaults = ListenerSettings()
    one = ["127.0.0.2"]
    forty = [f"127.0.0.{i}" for i in range(2, 42)]
    plan = [
        ("no flood", defaults.admission, defaults.first_byte_timeout, one, 0),
        ("before: global cap only, 1 source", None, None, one, args.flood),
        ("after: defaults, 1 source", defaults.admission, defaults.first_byte_timeout, one, args.flood),
        ("after: defaults, 40 sources", defaults.admission, defaults.first_byte_timeout, forty, args.flood),
    ]
    print(f"# {machine()}; flood of {args.flood} silent connections, each replaced after {args.hold:g} s or "
          f"reopened {args.reopen:g} s after the cloud closed it; {args.rounds} device connections "
          f"{args.spacing:g} s apart per scenario, a round given up after {PER_ROUND:g} s")
    print(f"server CPU per full mTLS handshake: {handshake_cpu(certs):.2f} ms")
    known, buckets = table_bytes()
    print(f"policy tables: {known:.0f} B per known source, {buckets:.0f} B per token bucket")
    print("| scenario | flood held at start | refused (rate/source/full) | evicted | first-byte timeouts "
          "| device connected | time to 101: median / max | failed attempts | front's log lines in |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, limits, first_byte, sources, flood in plan:
        r = asyncio.run(scenario(name, certs, limits=limits, first_byte=first_byte, sources=sources, flood=flood,
                                 args=args))
        s = r["stats"]
        times = r["times"]
        assert isinstance(s, dict) and isinstance(times, list)
        timing = (f"{statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms" if times else "-")
        print(f"| {name} | {r['held']} | {s['rejected']} ({s['refused_rate']}/{s['refused_source']}/"
              f"{s['refused_full']}) | {s['evicted']} | {s['first_byte_timeout']} | "
              f"{r['connected']} of {r['rounds']} | {timing} | {r['failed']} | "
              f"{r['log_lines']} in {r['seconds']:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
