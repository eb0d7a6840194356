#!/usr/bin/env python3
"""The device's service edge measured from outside with h2load (issue 8, "Benchmark: the edge
gets faster, not slower").

Layout: a second process runs the device (``run_device``: the direct HTTP/1.1 + h2c port
*and* the uplink agent, one uplink to this process). This process is a minimal
byte-splicing cloud: a TLS server that requires the device's client certificate, reads the
upgrade request, answers ``101 Switching Protocols`` / ``Upgrade: h2c-reverse``, and splices
the TLS connection's plaintext to and from one plain TCP connection that h2load opened on
a local port. So h2load speaks h2c with prior knowledge to the device *through the uplink*
and the cloud adds nothing but the splice (two threads per connection, blocking I/O).

Every figure is ``h2load -c 1`` posting a GetServiceCapabilities envelope
(``content-type: application/soap+xml; charset=utf-8``) to the uplink service:

* direct HTTP/1.1 (``--h1``), direct h2c ``-m 1`` and ``-m 16``;
* through the uplink, h2c ``-m 1`` and ``-m 16`` (each h2load run uses a fresh uplink
  connection: the device re-dials within 0.1 s after the previous one ended).

Goals (issue 8): uplink ``-m 16`` >= 2,000 req/s and >= 1.0x the direct HTTP/1.1 port at
one connection, same run; the ratio is printed for the uplink at 16 streams (one connection
each) and at 1 stream (one request at a time). Any failed request (a non-2xx answer
included) stops the benchmark with the h2load output. Each figure is the best of ``--rounds``, printed with the device
process's CPU time (all threads, user + system) per request.

Options: ``--pin`` puts the device on one CPU and this process and h2load on the others;
``--all-inline`` is a what-if: the device's application declares every request quick
(``runs_inline``), so the runtime runs them on its event loop; ``--null-app`` another:
the device answers every request with its first answer, inline (the HTTP edge alone,
its floor without any SOAP work); ``--only NAME`` measures
one run; ``--py-spy FILE`` samples the device with py-spy during the measured runs
(collapsed stacks of the thread holding the GIL; ``pip install py-spy``). Usage:
``python bench/bench_edge.py [-n 4000] [--rounds 2] [--pin] [--all-inline] [--null-app] [--only NAME]
[--py-spy FILE]``.
Results and their analysis: docs/benchmarks.md, "Service edge (issue 8)".
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import psutil
from _uplink_bench import ROOT, Certs, machine  # noqa: F401  (ROOT puts the package on sys.path)

DEVICE = "bench-edge-device"
PATH = "/onvif/uplink_service"
CONTENT_TYPE = "content-type: application/soap+xml; charset=utf-8"
ENVELOPE = (b'<?xml version="1.0" encoding="utf-8"?>'
            b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
            b'xmlns:tup="http://www.onvif.org/ver10/uplink/wsdl">'
            b"<env:Body><tup:GetServiceCapabilities/></env:Body></env:Envelope>")
GOAL_M16 = 2000.0
RUNS = ("direct HTTP/1.1", "direct h2c m1", "direct h2c m16", "uplink m1", "uplink m16")
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n"


# -- the device process ------------------------------------------------------------------------

def device_main(conn: object, data_dir: str, all_inline: bool, cpu: int | None, null_app: bool = False) -> None:
    if cpu is not None:  # --pin: before any thread exists (threads inherit the calling thread's mask)
        os.sched_setaffinity(0, {cpu})
    from iec62676_2_33.runtime.agent import AgentSettings
    from iec62676_2_33.runtime.device import run_device
    from iec62676_2_33.services.app import DeviceApplication

    if all_inline or null_app:  # what-if (--all-inline): the application declares every request quick
        DeviceApplication.runs_inline = lambda _self, _environ: True  # type: ignore[attr-defined]
    if null_app:  # what-if (--null-app): the edge alone -- the first answer, replayed for every request
        real, kept = DeviceApplication.__call__, {}

        def replay(self: DeviceApplication, environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
            if not kept:
                got: list[object] = []
                kept["body"] = b"".join(real(self, environ, lambda *head: got.extend(head)))
                kept["head"] = got
            else:
                environ["wsgi.input"].read()  # type: ignore[attr-defined]
            start_response(*kept["head"][:2])
            return [kept["body"]]  # type: ignore[list-item]

        DeviceApplication.__call__ = replay  # type: ignore[method-assign]

    # Re-dial at once after a splice ended (the next h2load run needs a fresh HTTP/2 connection).
    settings = AgentSettings(backoff_first=(0.05, 0.1), backoff_cap=0.1)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_device(data_dir, "127.0.0.1:0", stop, conn.send,  # type: ignore[attr-defined]
                                              settings=settings))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # type: ignore[attr-defined]
        stop.set()
        await task

    asyncio.run(main())


# -- the byte-splicing cloud -------------------------------------------------------------------

class SplicingCloud:
    """Accepts the device's uplinks (TLS, client certificate required, ``101 h2c-reverse``) and
    pairs each plain TCP connection accepted on ``splice_port`` with the next uplink."""

    def __init__(self, certs: Certs) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca_file))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_cert_chain(certs.dir / "cloud.pem", certs.dir / "cloud.key")
        self.uplinks: Queue[tuple[ssl.SSLSocket, bytes]] = Queue()
        self.tls = _listener()
        self.plain = _listener()
        self.tls_port = self.tls.getsockname()[1]
        self.splice_port = self.plain.getsockname()[1]
        self.errors: list[str] = []
        for target in (self._accept_uplinks, self._accept_clients):
            threading.Thread(target=target, daemon=True).start()

    def _accept_uplinks(self) -> None:
        while True:
            raw, _ = self.tls.accept()
            threading.Thread(target=self._upgrade, args=(raw,), daemon=True).start()

    def _upgrade(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(10)
            tls = self.ctx.wrap_socket(raw, server_side=True)
            subject: Any = (tls.getpeercert() or {}).get("subject", ())
            cn = next((value for rdn in subject for key, value in rdn if key == "commonName"), None)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(4096)
                if not chunk:
                    raise ConnectionError("the device closed before its upgrade request was complete")
                head += chunk
            request, _, trailing = head.partition(b"\r\n\r\n")
            if b"h2c-reverse" not in request.lower() or cn != DEVICE:
                raise ConnectionError(f"unexpected upgrade from {cn!r}: {request[:200]!r}")
            tls.sendall(SWITCH)
            tls.settimeout(None)
            tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.uplinks.put((tls, trailing))
        except (OSError, ConnectionError, KeyError) as exc:
            self.errors.append(f"uplink: {exc}")
            raw.close()

    def _accept_clients(self) -> None:
        while True:
            client, _ = self.plain.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                tls, trailing = self.uplinks.get(timeout=15)
            except Empty:
                self.errors.append("no uplink connection within 15 s")
                client.close()
                continue
            if trailing:  # bytes the device sent right behind its upgrade request: none expected
                client.sendall(trailing)
            ends = [threading.Event(), threading.Event()]
            threading.Thread(target=_pump, args=(client, tls, ends[0]), daemon=True).start()
            threading.Thread(target=_pump, args=(tls, client, ends[1]), daemon=True).start()
            threading.Thread(target=_close_when_done, args=(client, tls, ends), daemon=True).start()

    def wait_uplink(self, timeout: float) -> None:
        """Block until an uplink waits (leaves it queued)."""
        deadline = time.monotonic() + timeout
        while self.uplinks.empty():
            if time.monotonic() > deadline:
                raise SystemExit(f"the device did not connect its uplink within {timeout:g} s: {self.errors}")
            time.sleep(0.01)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def _pump(src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
    try:
        while data := src.recv(262144):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        done.set()


def _close_when_done(client: socket.socket, tls: ssl.SSLSocket, ends: list[threading.Event]) -> None:
    while not any(e.wait(0.05) for e in ends):
        pass
    for sock in (client, tls):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


# -- h2load --------------------------------------------------------------------------------------

@dataclass
class Result:
    rate: float
    succeeded: int
    failed: int
    cpu: float = 0.0  # device CPU seconds (user + system, all threads) per request


def h2load(url: str, body: Path, n: int, streams: int, *, h1: bool = False, clients: int = 1) -> Result:
    args = ["h2load", "-n", str(n), "-c", str(clients), "-m", str(streams), "-d", str(body), "-H", CONTENT_TYPE]
    if h1:
        args.append("--h1")
    out = subprocess.run([*args, url], check=False, capture_output=True, text=True, timeout=120).stdout
    finished = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    requests = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if finished is None or requests is None or codes is None:
        raise SystemExit(f"cannot read h2load's output ({' '.join(args)} {url}):\n{out}")
    result = Result(float(finished.group(1)), int(requests.group(2)), int(requests.group(3)))
    if result.failed or result.succeeded != n or int(codes.group(1)) != n:
        raise SystemExit(f"FAILED requests ({' '.join(args)} {url}):\n{out}")
    return result


# -- the run -------------------------------------------------------------------------------------

def run(n: int, rounds: int, profile: str | None, only: list[str], all_inline: bool, pin: bool,
        null_app: bool = False) -> None:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (Debian: nghttp2-client)")
    cpus = sorted(os.sched_getaffinity(0)) if pin else []
    if pin:  # the device on the first CPU, everything else (this process, h2load) on the others
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least 2 CPUs")
        os.sched_setaffinity(0, cpus[1:])
    certs = Certs.make()
    cloud = SplicingCloud(certs)
    data = certs.seed_device(DEVICE, cloud.tls_port)
    body = Path(tempfile.mkdtemp(prefix="bench-edge-")) / "envelope.xml"
    body.write_bytes(ENVELOPE)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=device_main, args=(child, str(data), all_inline, cpus[0] if cpus else None, null_app),
                       daemon=True)
    proc.start()
    if not parent.poll(30):
        raise SystemExit("the device did not start within 30 s")
    direct = re.search(r"(http://\S+)", parent.recv()).group(1)  # type: ignore[union-attr]
    uplink = f"http://127.0.0.1:{cloud.splice_port}{PATH}"

    def through_uplink(requests: int, streams: int) -> Result:
        cloud.wait_uplink(15)
        return h2load(uplink, body, requests, streams)

    runs = {
        "direct HTTP/1.1": lambda k: h2load(direct, body, k, 1, h1=True),
        "direct h2c m1": lambda k: h2load(direct, body, k, 1),
        "direct h2c m16": lambda k: h2load(direct, body, k, 16),
        "uplink m1": lambda k: through_uplink(k, 1),
        "uplink m16": lambda k: through_uplink(k, 16),
    }
    if only:
        runs = {name: measure for name, measure in runs.items() if name in only}
    for measure in runs.values():  # warm up every path (imports, caches, first connections)
        measure(300)
    spy = None
    if profile:
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid),
                                "--format", "raw", "--threads", "--gil", "--rate", "200", "--output", profile],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches (no readiness signal to wait for)
    device = psutil.Process(proc.pid)

    def with_cpu(measure: Callable[[int], Result]) -> Result:
        before = device.cpu_times()
        result = measure(n)
        after = device.cpu_times()
        result.cpu = (after.user + after.system - before.user - before.system) / n
        return result

    best: dict[str, Result] = {}
    for _ in range(rounds):
        for name, measure in runs.items():
            result = with_cpu(measure)
            if name not in best or result.rate > best[name].rate:
                best[name] = result
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        spy.wait(30)
    parent.send("stop")
    proc.join(15)
    shutil.rmtree(certs.dir, ignore_errors=True)
    shutil.rmtree(body.parent, ignore_errors=True)

    what = ("; WHAT-IF every request inline" if all_inline else "") + ("; device pinned to one CPU" if pin else "")
    what += "; WHAT-IF no application (the first answer replayed)" if null_app else ""
    print(f"# service edge, GetServiceCapabilities, h2load -c 1 -n {n} — {machine()}; best of {rounds}{what}")
    for name, result in best.items():
        print(f"{name:<16} {result.rate:9.1f} req/s   device CPU {result.cpu * 1e6:6.0f} us/req")
    if only:
        return
    m16, m1, h1 = (best[name].rate for name in ("uplink m16", "uplink m1", "direct HTTP/1.1"))
    print(f"uplink m16 / {GOAL_M16:.0f} goal       {m16 / GOAL_M16:5.2f}x "
          f"({'met' if m16 >= GOAL_M16 else 'MISSED'})")
    # The goal's "1.0x the direct HTTP/1.1 port at 1 connection", both readings: one connection
    # each (the uplink at its 16 streams), and one request at a time (the uplink at 1 stream).
    print(f"uplink m16 / direct HTTP/1.1 {m16 / h1:5.2f}x (one connection each; goal >= 1.0x: "
          f"{'met' if m16 >= h1 else 'MISSED'})")
    print(f"uplink m1 / direct HTTP/1.1  {m1 / h1:5.2f}x (one request at a time; goal >= 1.0x: "
          f"{'met' if m1 >= h1 else 'MISSED'})")
    if cloud.errors:
        print(f"# cloud errors: {cloud.errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=4000, help="requests per h2load run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--py-spy", dest="profile", help="sample the device with py-spy into this file")
    parser.add_argument("--only", action="append", default=[], choices=RUNS,
                        help="measure only this run (repeatable; no ratios then)")
    parser.add_argument("--all-inline", action="store_true",
                        help="what-if: run every request on the device's event loop (WsgiHandler inline)")
    parser.add_argument("--null-app", action="store_true",
                        help="what-if: the device replays its first answer inline (the HTTP edge alone, no SOAP)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the device process to one CPU and the rest (cloud, h2load) to the others")
    args = parser.parse_args()
    start = time.monotonic()
    run(args.n, args.rounds, args.profile, args.only, args.all_inline, args.pin, args.null_app)
    print(f"# total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
