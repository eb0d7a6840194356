#!/usr/bin/env python3
"""Memory of the cloud and the device under large POSTs through the proxy (issue 8, finding 4).

Real processes on loopback: certificates from ``iec62676 pki``, the device's store set up
with ``iec62676 device keystore/policy/uplink``, then ``iec62676 cloud serve --proxy`` and
``iec62676 device serve`` (uplink only). Once the device is listed by ``GET /devices`` and
one small SOAP call has gone through, both processes' RSS (psutil) is the idle baseline.
Then N clients (default 60) each open their own connection and POST a 15 MiB body to
``/devices/<id>/onvif/device_service`` through the proxy at the same time; RSS of both
processes is sampled every 20 ms during the load, and read again a few seconds after the
last answer. Figures are printed against the idle baseline of the same run. Two rounds,
each with fresh processes: bodies with a declared ``Content-Length`` (refusable from the
head), then chunked bodies without one (bytes must flow until a limit is crossed).
Goal (issue 8): both processes within 64 MiB of idle.

A client writes its body in 256 KiB slices of one shared buffer while reading the answer
(a 413 or 503 may come before the body is sent; the client then stops writing).

Usage: ``python bench/bench_proxy_memory.py [--clients 60] [--mib 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from _uplink_bench import free_port, machine, rss_of

from iec62676_2_33.testing.harness import wait_until

MIB = 1 << 20
DEVICE = "cam-bench"
GOAL = 64 * MIB
CLI = [sys.executable, "-m", "iec62676_2_33"]
SOAP = (b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
        b'<s:Body><tds:GetSystemDateAndTime xmlns:tds="http://www.onvif.org/ver10/device/wsdl"/>'
        b"</s:Body></s:Envelope>")


def cli(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True, capture_output=True, timeout=60)


def setup(d: Path, cloud_port: int) -> None:
    """Certificates and the device's store, all through the CLI."""
    cli("pki", "ca", "--out", str(d / "ca"))
    cli("pki", "issue", "--ca", str(d / "ca"), "--cn", "cloud", "--server", "--san", "localhost",
        "--san", "127.0.0.1", "--out", str(d / "cloud"))
    cli("pki", "issue", "--ca", str(d / "ca"), "--cn", DEVICE, "--client", "--out", str(d / "dev"))
    data = str(d / "data")
    cli("device", "keystore", "add", "--data", data, "--id", "cert", "--cert", str(d / "dev" / "cert.pem"),
        "--key", str(d / "dev" / "key.pem"))
    cli("device", "policy", "add", "--data", data, "--id", "policy", "--trust", str(d / "ca" / "ca.pem"))
    cli("device", "uplink", "set", "--data", data, "--remote", f"https://localhost:{cloud_port}/uplink",
        "--cert-id", "cert", "--policy-id", "policy", "--user-level", "User")


@contextlib.contextmanager
def sampling(pids: dict[str, int], interval: float = 0.02) -> Iterator[dict[str, int]]:
    """Peak RSS of some processes (by name), sampled in a thread while the block runs."""
    peak = {name: 0 for name in pids}
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss_of(pid))
            stop.wait(interval)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(5)


async def post(port: int, path: str, body: memoryview, timeout: float, chunked: bool) -> int | str:
    """One POST on its own connection, with Content-Length or chunked; the status, or what went wrong.

    Plain socket calls, not streams: a server that answers early and closes while body bytes
    are still arriving resets the connection, and a stream transport would then drop the
    answer already received; ``recv`` still returns it."""
    loop = asyncio.get_running_loop()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/soap+xml; charset=utf-8\r\n{framing}\r\nConnection: close\r\n\r\n").encode()
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)

        async def upload() -> None:
            await loop.sock_sendall(sock, head)
            for i in range(0, len(body), 256 * 1024):
                piece = body[i:i + 256 * 1024]
                if chunked:
                    await loop.sock_sendall(sock, b"%x\r\n" % len(piece))
                await loop.sock_sendall(sock, piece)
                if chunked:
                    await loop.sock_sendall(sock, b"\r\n")
            if chunked:
                await loop.sock_sendall(sock, b"0\r\n\r\n")

        async def answer() -> int | str:
            received = bytearray()
            while b"\r\n" not in received:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    return "closed without an answer"
                received.extend(data)
            with contextlib.suppress(ConnectionError):  # a reset after the answer: the rest of our body
                while await loop.sock_recv(sock, 65536):  # the rest, until the server closes (Connection: close)
                    pass
            return int(received.split(b" ", 2)[1])

        sending = asyncio.ensure_future(upload())
        try:
            async with asyncio.timeout(timeout):
                return await answer()
        except (ConnectionError, TimeoutError) as exc:
            return type(exc).__name__
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)


async def load(port: int, clients: int, size: int, chunked: bool) -> collections.Counter[int | str]:
    shared = memoryview(b"<" + b"x" * (size - 1))  # one buffer for all clients
    path = f"/devices/{DEVICE}/onvif/device_service"
    results = await asyncio.gather(*(post(port, path, shared, 300, chunked) for _ in range(clients)),
                                   return_exceptions=True)
    return collections.Counter(r if isinstance(r, (int, str)) else type(r).__name__ for r in results)


def mib(n: int) -> str:
    return f"{n / MIB:7.1f} MiB"


@contextlib.contextmanager
def processes(d: Path, commands: dict[str, list[str]]) -> Iterator[dict[str, int]]:
    """Start the CLI commands (stderr to ``<name>.log`` in ``d``); their pids; terminated at the end."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with contextlib.ExitStack() as logs:
        try:
            for name, command in commands.items():
                log = logs.enter_context(open(d / f"{name}.log", "wb"))
                procs[name] = subprocess.Popen([*CLI, *command], stdout=subprocess.DEVNULL, stderr=log)
            yield {name: p.pid for name, p in procs.items()}
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


def measure(args: argparse.Namespace, chunked: bool) -> None:
    """Fresh processes, their idle RSS, the load, peak and after; prints one table."""
    d = Path(tempfile.mkdtemp(prefix="proxy-memory-"))
    cloud_port, proxy_port = free_port(), free_port()
    setup(d, cloud_port)
    base = f"http://127.0.0.1:{proxy_port}"
    commands = {
        "cloud": ["cloud", "serve", "--listen", f"127.0.0.1:{cloud_port}", "--cert", str(d / "cloud" / "cert.pem"),
                  "--key", str(d / "cloud" / "key.pem"), "--client-ca", str(d / "ca" / "ca.pem"),
                  "--proxy", f"127.0.0.1:{proxy_port}"],
        "device": ["device", "serve", "--data", str(d / "data")],
    }

    def listed() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/devices", timeout=5) as got:
                return any(dev["id"] == DEVICE for dev in json.load(got))
        except OSError:
            return False

    warm = urllib.request.Request(f"{base}/devices/{DEVICE}/onvif/device_service", data=SOAP,
                                  headers={"Content-Type": "application/soap+xml"})
    with processes(d, commands) as pids:
        wait_until(listed, 60, 0.2, f"{DEVICE} listed by the proxy")
        with urllib.request.urlopen(warm, timeout=30) as got:
            assert got.status == 200, got.status
        time.sleep(1.0)  # idle: let the start-up settle (measurement, not synchronisation)
        idle = {name: rss_of(pid) for name, pid in pids.items()}
        started = time.monotonic()
        with sampling(pids) as peak:
            statuses = asyncio.run(load(proxy_port, args.clients, args.mib * MIB, chunked))
        took = time.monotonic() - started
        time.sleep(args.settle)  # let freed memory go back (measurement, not synchronisation)
        after = {name: rss_of(pid) for name, pid in pids.items()}
        with urllib.request.urlopen(warm, timeout=30) as got:
            still = got.status

    framing = "chunked, no declared length" if chunked else "Content-Length declared"
    print(f"## {framing}")
    print(f"answers: {dict(sorted(statuses.items(), key=str))} in {took:.1f} s; a SOAP call afterwards: {still}")
    print(f"{'process':8} {'idle':>11} {'peak':>11} {'after':>11} {'peak-idle':>11} {'after-idle':>11}  goal")
    for name in ("cloud", "device"):
        growth = peak[name] - idle[name]
        print(f"{name:8} {mib(idle[name]):>11} {mib(peak[name]):>11} {mib(after[name]):>11} "
              f"{mib(growth):>11} {mib(after[name] - idle[name]):>11}  "
              f"peak {peak[name] / idle[name]:.2f}x idle; within 64 MiB: {'met' if growth <= GOAL else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--mib", type=int, default=15)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the load before 'after'")
    args = parser.parse_args()
    print(f"# {args.clients} concurrent {args.mib} MiB POSTs through the cloud proxy — {machine()}")
    for chunked in (False, True):
        measure(args, chunked)


if __name__ == "__main__":
    main()
