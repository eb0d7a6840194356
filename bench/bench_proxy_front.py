#!/usr/bin/env python3
"""The cloud's HTTP front measured from outside (issue 14, "Faster HTTP front").

Real processes on loopback, set up through the CLI as in ``bench_proxy_memory.py``:
``iec62676 cloud serve --proxy`` and ``iec62676 device serve --listen`` (the direct
HTTP/1.1 + h2c port *and* one uplink, UserLevel User, to that cloud). The same
unmodified client -- h2load, posting a device-service GetServiceCapabilities envelope
(``content-type: application/soap+xml; charset=utf-8``) -- calls the device directly and
through the cloud's proxy (``/devices/<id>/onvif/device_service``: proxy front, uplink,
device), in the same run, interleaved:

* HTTP/1.1 (``h2load --h1``) with 1 and with 8 connections (concurrency 1 and 8);
* h2c with prior knowledge, 1 connection, 1 and 8 streams;
* the standard library's HTTP/1.1 client (``http.client``, one keep-alive connection per
  client process) with 1 and with 8 clients: the kind of client a VMS script uses.

Goals (issue 14): HTTP/1.1 through the proxy >= 1.0x direct at concurrency 1 and >= 1.5x
at 8, with both clients. Every figure is the best of ``--rounds``; any failed or non-2xx request stops the
run. The CPU time of both processes (user + system, all threads, psutil) per request is
printed beside each rate. ``--py-spy PREFIX`` samples the cloud and the device with py-spy during
the measured runs (collapsed stacks of the thread holding the GIL, ``PREFIX-cloud.txt`` and
``PREFIX-device.txt``). Usage: ``python bench/bench_proxy_front.py [-n 3000] [--rounds 2] [--py-spy PREFIX]``.
Results: docs/benchmarks.md, "Proxy front (issue 14)".
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from _uplink_bench import free_port, machine
from bench_edge import CONTENT_TYPE, Result, h2load
from bench_proxy_memory import DEVICE, processes, setup

from iec62676_2_33.testing.harness import wait_until

PATH = "/onvif/device_service"
ENVELOPE = (b'<?xml version="1.0" encoding="utf-8"?>'
            b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
            b'xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
            b"<env:Body><tds:GetServiceCapabilities/></env:Body></env:Envelope>")
#: (name, client: "h1" / "h2c" (h2load) or "stdlib" (http.client), connections, streams per connection)
SHAPES = (("HTTP/1.1 c1", "h1", 1, 1), ("HTTP/1.1 c8", "h1", 8, 1), ("h2c m1", "h2c", 1, 1),
          ("h2c m8", "h2c", 1, 8), ("http.client c1", "stdlib", 1, 1), ("http.client c8", "stdlib", 8, 1))
GOALS = {"HTTP/1.1 c1": 1.0, "HTTP/1.1 c8": 1.5, "http.client c1": 1.0, "http.client c8": 1.5}


@dataclass
class Stack:
    """A running cloud (with the proxy) and device (direct port + uplink), made by :func:`stack`."""

    urls: dict[str, str]  # "direct" and "proxy": the device service, directly and through the proxy
    ports: dict[str, int]  # "direct" and "proxy": the two HTTP ports
    procs: dict[str, psutil.Process]  # "cloud" and "device"
    body: Path  # the GetServiceCapabilities envelope, for h2load -d


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    """``iec62676 cloud serve --proxy`` and ``iec62676 device serve --listen`` with one uplink to it,
    once the device is listed by the proxy; stopped and removed at the end."""
    d = Path(tempfile.mkdtemp(prefix="proxy-front-"))
    cloud_port, proxy_port, device_port = free_port(), free_port(), free_port()
    try:
        setup(d, cloud_port)
        body = d / "envelope.xml"
        body.write_bytes(ENVELOPE)
        proxy = f"http://127.0.0.1:{proxy_port}"
        commands = {
            "cloud": ["cloud", "serve", "--listen", f"127.0.0.1:{cloud_port}", "--cert", str(d / "cloud" / "cert.pem"),
                      "--key", str(d / "cloud" / "key.pem"), "--client-ca", str(d / "ca" / "ca.pem"),
                      "--proxy", f"127.0.0.1:{proxy_port}"],
            "device": ["device", "serve", "--data", str(d / "data"), "--listen", f"127.0.0.1:{device_port}"],
        }

        def listed() -> bool:
            try:
                with urllib.request.urlopen(f"{proxy}/devices", timeout=5) as got:
                    return any(dev["id"] == DEVICE for dev in json.load(got))
            except OSError:
                return False

        with processes(d, commands) as pids:
            wait_until(listed, 60, 0.2, f"{DEVICE} listed by the proxy")
            yield Stack(urls={"direct": f"http://127.0.0.1:{device_port}{PATH}",
                              "proxy": f"{proxy}/devices/{DEVICE}{PATH}"},
                        ports={"direct": device_port, "proxy": proxy_port},
                        procs={name: psutil.Process(pid) for name, pid in pids.items()}, body=body)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(n: int, rounds: int, profile: str | None = None) -> None:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (Debian: nghttp2-client)")
    best: dict[tuple[str, str], Result] = {}
    cpu: dict[tuple[str, str], dict[str, float]] = {}
    with stack() as s:

        def measure(where: str, client: str, clients: int, streams: int, k: int) -> Result:
            if client == "stdlib":
                return stdlib_clients(s.urls[where], k, clients)
            return h2load(s.urls[where], s.body, k, streams, h1=client == "h1", clients=clients)

        for _shape, client, clients, streams in SHAPES:  # warm up every path
            for where in s.urls:
                measure(where, client, clients, streams, 300)
        spies = [spy(p.pid, f"{profile}-{name}.txt") for name, p in s.procs.items()] if profile else []
        for _ in range(rounds):
            for shape, client, clients, streams in SHAPES:
                for where in s.urls:
                    before = {name: cpu_seconds(p) for name, p in s.procs.items()}
                    result = measure(where, client, clients, streams, n)
                    spent = {name: (cpu_seconds(p) - before[name]) / n for name, p in s.procs.items()}
                    key = (shape, where)
                    if key not in best or result.rate > best[key].rate:
                        best[key], cpu[key] = result, spent
        for sampler in spies:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        for sampler in spies:
            sampler.wait(30)

    print(f"# proxy front, GetServiceCapabilities, -n {n} per run -- {machine()}; best of {rounds}")
    print(f"{'':15} {'direct':>10} {'proxy':>10} {'ratio':>7}   CPU per request: direct (device) | "
          "proxy (cloud + device)")
    for shape, *_ in SHAPES:
        direct, via = best[(shape, "direct")], best[(shape, "proxy")]
        d_cpu, p_cpu = cpu[(shape, "direct")], cpu[(shape, "proxy")]
        ratio = via.rate / direct.rate
        goal = GOALS.get(shape)
        verdict = f" (goal >= {goal:.1f}x: {'met' if ratio >= goal else 'MISSED'})" if goal else ""
        print(f"{shape:15} {direct.rate:10.1f} {via.rate:10.1f} {ratio:6.2f}x   "
              f"{d_cpu['device'] * 1e6:5.0f} us | {p_cpu['cloud'] * 1e6:5.0f} + {p_cpu['device'] * 1e6:5.0f} us"
              f"{verdict}")


def stdlib_clients(url: str, n: int, clients: int) -> Result:
    """``n`` calls from ``clients`` processes, each with one keep-alive ``http.client`` connection
    (processes, so the clients do not share one GIL); the rate over the wall time of all of them."""
    context = mp.get_context("fork")
    share = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    with context.Pool(clients) as pool:
        ready = [pool.apply_async(_stdlib_connect, (url,)) for _ in range(clients)]
        for started in ready:
            started.get(30)
        start = time.perf_counter()
        counts = pool.starmap(_stdlib_calls, [(url, k) for k in share], chunksize=1)
        elapsed = time.perf_counter() - start
    if sum(counts) != n:
        raise SystemExit(f"FAILED requests (http.client, {url}): {n - sum(counts)} not 200")
    return Result(n / elapsed, n, 0)


def _stdlib_connect(url: str) -> None:
    """Import and warm the client in the pool's worker before the clock starts."""
    _stdlib_calls(url, 1)


def _stdlib_calls(url: str, k: int) -> int:
    """``k`` POSTs of the envelope on one keep-alive connection; how many were answered 200."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Content-Type": CONTENT_TYPE.split(": ", 1)[1]}
    ok = 0
    try:
        for _ in range(k):
            conn.request("POST", parts.path, ENVELOPE, headers)
            answer = conn.getresponse()
            answer.read()
            ok += answer.status == 200
    finally:
        conn.close()
    return ok


def spy(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into ``output`` until SIGINT (as ``bench_edge.py --py-spy``)."""
    sampler = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                                "--format", "raw", "--threads", "--gil", "--rate", "200", "--output", output],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches (no readiness signal to wait for)
    return sampler


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of ``proc`` (all threads)."""
    times = proc.cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="requests per h2load run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--py-spy", dest="profile", metavar="PREFIX",
                        help="sample both processes with py-spy into PREFIX-cloud.txt and PREFIX-device.txt")
    args = parser.parse_args()
    start = time.monotonic()
    run(args.n, args.rounds, args.profile)
    print(f"# total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
