"""Test helpers for the cloud cluster: a real nats-server (JetStream, temp store, free port),
a real haproxy from ``examples/haproxy.cfg``, node certificates, cloud nodes run as
``iec62676 cloud serve --nats ...`` subprocesses and devices as ``iec62676 device serve``
subprocesses. Every wait is bounded."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID
from helpers import free_port

from iec62676_2_33 import pki

ROOT = Path(__file__).resolve().parent.parent
BOUND = 15.0

#: The domain under which every node's proxy routes Host: <device id>.<domain> (host-based routing).
DEVICE_DOMAIN = "devices.test"


def wait_port(port: int, timeout: float = BOUND, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def have(*programs: str) -> bool:
    return all(shutil.which(p) for p in programs)


class NatsServer:
    """``nats-server -js`` on a free loopback port with its store in ``store``."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["nats-server", "-js", "-sd", str(self.store), "-a", "127.0.0.1",
                                      "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            kill_process(self.proc)

    def restart_empty(self) -> None:
        """Kill the server, delete its JetStream store and start it again (a NATS with no memory)."""
        self.kill()
        for path in sorted(self.store.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        self.start()


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` if it still runs, and reap it (bounded)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(BOUND)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` if it still runs; SIGKILL when it does not end within the bound."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(BOUND)
        except subprocess.TimeoutExpired:
            kill_process(proc)


class NodePki:
    """The node CA and a certificate per node (serverAuth and clientAuth: nodes are both ends)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = pki.make_ca("cluster node CA")
        self.ca_file, _ = self.ca.write(directory, "node-ca")

    def node(self, name: str) -> tuple[Path, Path]:
        leaf = pki.make_leaf(self.ca, name, kind="server", sans=["localhost", "IP:127.0.0.1"],
                             eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        return leaf.write(self.dir, name)


class Node:
    """``iec62676 cloud serve --nats ...`` as a subprocess; its uplink and proxy ports parsed from its output
    (with ``rtsp`` also its RTSP front, ``rtsp_base``)."""

    def __init__(self, name: str, *, cert: Path, key: Path, client_ca: Path, nodes: NodePki, nats_url: str,
                 balancer: str = "127.0.0.1/32", ttl: float = 3.0, log: Path, rtsp: bool = False) -> None:
        self.name = name
        ncert, nkey = nodes.node(name)
        self.port = free_port()
        argv = [sys.executable, "-m", "iec62676_2_33", "cloud", "serve", "--listen", f"127.0.0.1:{self.port}",
                "--cert", str(cert), "--key", str(key), "--client-ca", str(client_ca), "--proxy", "127.0.0.1:0",
                "--proxy-protocol-from", balancer, "--nats", nats_url, "--node-id", name,
                "--internal", "127.0.0.1:0", "--internal-cert", str(ncert), "--internal-key", str(nkey),
                "--internal-ca", str(nodes.ca_file), "--cluster-ttl", str(ttl), "--device-domain", DEVICE_DOMAIN,
                *(["--rtsp", "127.0.0.1:0"] if rtsp else [])]
        self.rtsp_base: str | None = None
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(log, "wb"),  # noqa: SIM115
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
        self.proxy_url = self._proxy_url()

    def _proxy_url(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + BOUND * 2
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            if front := re.search(r"cloud RTSP front on (rtsp://\S+)/devices", line):
                self.rtsp_base = front.group(1)
            found = re.search(r"cloud proxy on (http://\S+)/devices", line)
            if found:
                return found.group(1)
        raise AssertionError(f"node {self.name} did not start: {lines} {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


#: The server options of ``examples/haproxy.cfg``'s comment, with fast health checks for tests.
CHECKED = "send-proxy-v2 check inter 500ms fall 1 rise 1"


def wait_bound(port: int, timeout: float = BOUND, host: str = "127.0.0.1") -> None:
    """Wait until something listens on ``port`` without connecting to it: a probe through a
    balancer would reach a node as a connection of its own (a PROXY header, then nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {host}:{port} after {timeout} s")
        time.sleep(0.05)


class DeviceProcess:
    """``iec62676 device serve --data DIR`` as a subprocess (its uplinks configured in DIR's store)."""

    def __init__(self, data: Path, *, log: Path) -> None:
        self.data = data
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "iec62676_2_33", "device", "serve", "--data",
                                          str(data), "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL,
                                         stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)

    def kill(self) -> None:
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc)


class Haproxy:
    """haproxy with ``examples/haproxy.cfg``: TCP, TLS passthrough, ``server_options`` (by default
    send-proxy-v2 and health checks) for every node."""

    def __init__(self, directory: Path, nodes: Sequence[int], *, server_options: str = CHECKED,
                 name: str = "haproxy", maxconn: int = 4096, extra: str = "") -> None:
        self.port = free_port()
        servers = "\n".join(f"    server n{i} 127.0.0.1:{port} {server_options}" for i, port in enumerate(nodes))
        config = (ROOT / "examples" / "haproxy.cfg").read_text().format(
            maxconn=maxconn, bind=f"127.0.0.1:{self.port}", servers=servers) + extra  # extra: more sections
        self.config = directory / f"{name}.cfg"
        self.config.write_text(config)
        subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)], check=True, timeout=BOUND)
        log = directory / f"{name}.log"
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                         stderr=err)
        try:
            wait_bound(self.port)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {log.read_text()[-1000:]}") from None
        self.started = time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(BOUND)
