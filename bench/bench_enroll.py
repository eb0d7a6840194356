"""Benchmark (issue 11, PROV-1): enrolment wall time for N devices in parallel against one cloud, and
RSA 2048 vs ECC P-256 key generation on the device, same run.

One process on loopback: a real cloud (``run_cloud``: mTLS listener + HTTP
proxy) and N real devices (``run_device``: direct HTTP + uplink agent), each in
its own thread and event loop, each starting with an empty keystore. N
enrolments (:func:`iec62676_2_33.enroll.enroll`: GetServices, CreateRSAKeyPair,
key status polling, CSR, CA signature, uploads, policy, SetUplink, then
``GET /devices`` until the device is connected) start at once; each one's wall
time is recorded; the fleet is enrolled twice, with RSA 2048 device keys
(CreateRSAKeyPair) and with ECC P-256 ones (CreateECCKeyPair, ECDSA CSR), each
on fresh devices. Prints p50/p95/max and the total of each and the p50 ratio,
after the median generation time of RSA 2048 and P-256 keys
(``security.keystore.generate_key``, what CreateRSAKeyPair and
CreateECCKeyPair run) and their ratio. Everything shares one
interpreter, so the figures include GIL contention between the devices, the
cloud and the clients. Not run by the test suite; nothing is asserted.

    python3 bench/bench_enroll.py [--devices 100] [--keys 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iec62676_2_33 import pki
from iec62676_2_33.enroll import enroll
from iec62676_2_33.runtime.agent import AgentSettings
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.runtime.device import run_device
from iec62676_2_33.security.keystore import generate_key
from iec62676_2_33.store import DeviceStore

ADMIN = ("admin", "admin-pw")
FAST = AgentSettings(backoff_first=(0.05, 0.3), backoff_cap=0.5, stable_after=0.5)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_cloud(folder: Path) -> tuple[BackgroundService, int, str]:
    ca = pki.load_ca_dir(folder)
    server = pki.make_leaf(ca, "cloud", kind="server", sans=["localhost", "127.0.0.1"])
    cert, key = server.write(folder, "cloud")
    options = CloudOptions(listen="127.0.0.1:0", cert=cert, key=key, client_cas=[folder / "ca.pem"],
                           proxy="127.0.0.1:0")
    service = BackgroundService(lambda stop, announce: run_cloud(options, stop, announce), name="cloud",
                                ready_after=2).start()
    port = int(re.search(r":(\d+)/", service.messages[0]).group(1))  # type: ignore[union-attr]
    proxy = re.search(r"(http://\S+)/devices", service.messages[1]).group(1)  # type: ignore[union-attr]
    return service, port, proxy


def start_device(data: Path) -> tuple[BackgroundService, str]:
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
    service = BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce,
                                                                  settings=FAST), name=data.name).start()
    url = re.search(r"(http://\S+)", service.messages[0]).group(1)  # type: ignore[union-attr]
    return service, url.rsplit("/onvif/", 1)[0] + "/onvif/device_service"


def bench_enrolment(devices: int, curve: str | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pki.make_ca("bench CA").write(folder, "ca")
        ca = pki.load_ca_dir(folder)
        cloud, port, proxy = start_cloud(folder)
        running = [start_device(folder / f"dev{i:03d}") for i in range(devices)]
        go = threading.Event()

        def one(i: int) -> float:
            go.wait()
            start = time.perf_counter()
            result = enroll(running[i][1], username=ADMIN[0], password=ADMIN[1], ca=ca,
                            remote_address=f"https://localhost:{port}/uplink", identity=f"bench-{i:03d}",
                            curve=curve, cloud_proxy=proxy, wait=300.0, timeout=60.0, key_timeout=300.0)
            assert result.online
            return time.perf_counter() - start

        try:
            with ThreadPoolExecutor(devices) as pool:
                futures = [pool.submit(one, i) for i in range(devices)]
                began = time.perf_counter()
                go.set()
                times = [f.result() for f in futures]
                total = time.perf_counter() - began
        finally:
            for service, _ in running:
                service.stop()
            cloud.stop()
    print(f"enrolment of {devices} devices in parallel with {curve or 'RSA 2048'} keys (until GET /devices lists "
          "each):")
    print(f"  p50 {percentile(times, 50):.2f} s   p95 {percentile(times, 95):.2f} s   "
          f"max {max(times):.2f} s   all done after {total:.2f} s")
    return percentile(times, 50)


def bench_keygen(keys: int) -> None:
    def median(kind: str, size: int | str) -> float:
        samples = []
        for _ in range(keys):
            start = time.perf_counter()
            generate_key(kind, size)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    rsa, p256 = median("RSA", 2048), median("EC", "secp256r1")
    print(f"key generation, median of {keys}: RSA 2048 {rsa * 1000:.1f} ms   P-256 {p256 * 1000:.2f} ms   "
          f"ratio RSA/P-256 {rsa / p256:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--keys", type=int, default=20)
    args = parser.parse_args()
    bench_keygen(args.keys)
    rsa = bench_enrolment(args.devices, None)
    p256 = bench_enrolment(args.devices, "secp256r1")
    print(f"p50 ratio RSA 2048 / P-256 enrolment: {rsa / p256:.2f}x")


if __name__ == "__main__":
    main()
