"""Benchmark (issue 5, UPL-4): the uplink over WebSocket (wss) vs native h2c-reverse, same run.

One process, one event loop, loopback TLS with mTLS: a cloud listener and two
device agents — ``device-https`` dials ``https://`` (native h2c-reverse),
``device-wss`` dials ``wss://`` (HTTP/2 in WebSocket binary frames) — serving
the real device WSGI app (Spyne). Measured, alternating the two transports
per round so neither gets a warmer machine:

* SOAP calls/s: GetServiceCapabilities through the uplink, ``--concurrency``
  calls in flight;
* bulk stream throughput: a ``--bulk-mib`` MiB response body streamed from the
  device to the cloud (a WSGI route added for the benchmark only).

Prints each figure and the ratio wss / native (goal >= 0.9 for both). Not
run by the test suite; nothing is asserted.

    python3 bench/bench_wss.py [--rounds 5] [--calls 400] [--concurrency 8] [--bulk-mib 12]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iec62676_2_33 import pki
from iec62676_2_33.namespaces import SOAP_ENV, TUP
from iec62676_2_33.runtime.agent import UplinkAgent
from iec62676_2_33.runtime.cloud import CloudListener, MtlsAuthenticator
from iec62676_2_33.runtime.device import device_capabilities
from iec62676_2_33.services.app import UPLINK_PATH, build_device_app
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import start_tls_server
from iec62676_2_33.uplinkconfig import UplinkConfiguration

CHUNK = 64 * 1024
SOAP = (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}">'
        "<env:Body><tup:GetServiceCapabilities/></env:Body></env:Envelope>").encode()


def with_bulk(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The device app plus ``GET /bench/bulk?mib=N`` (benchmark only)."""
    block = b"\xa5" * CHUNK

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/bench/bulk":
            mib = int(environ.get("QUERY_STRING", "mib=1").partition("=")[2] or 1)
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(mib * 1024 * 1024))])
            return (block for _ in range(mib * 1024 * 1024 // CHUNK))
        return app(environ, start_response)

    return wsgi


async def soap_rate(cloud: CloudListener, device: str, calls: int, concurrency: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(calls):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            response = await cloud.request(device, "POST", UPLINK_PATH,
                                           [("content-type", "application/soap+xml; charset=utf-8")], SOAP)
            assert response.status == 200, response.status

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - start)


async def bulk_rate(cloud: CloudListener, device: str, mib: int) -> float:
    channel = cloud.channel(device)
    start = time.perf_counter()
    stream_id, status, _ = await channel.open("GET", f"/bench/bulk?mib={mib}", timeout=120)
    assert status == 200, status
    total = 0
    async for chunk in channel.body(stream_id, timeout=120):
        total += len(chunk)
    elapsed = time.perf_counter() - start
    assert total == mib * 1024 * 1024, total
    return total / elapsed / 1e6


async def main(args: argparse.Namespace) -> None:
    ca = pki.make_ca("bench CA")
    cloud_leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1"])
    cloud = CloudListener(MtlsAuthenticator())
    ctx = server_context(cloud_leaf.cert_pem(), cloud_leaf.key_pem(), client_ca_pems=[ca.cert_pem()],
                         require_client_cert=True)
    server = await start_tls_server(cloud.handle, ("127.0.0.1", 0), ctx)
    port = server.sockets[0].getsockname()[1]
    executor = ThreadPoolExecutor(16)
    stop = asyncio.Event()
    tasks = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in ("https", "wss"):
            leaf = pki.make_leaf(ca, f"device-{scheme}", kind="client")
            store = DeviceStore(Path(tmp) / scheme)
            store.put_certificate("cert", leaf.cert_pem(), leaf.key_pem())
            store.put_policy("policy", [ca.cert_pem()])
            store.put_uplink(UplinkConfiguration(remote_address=f"{scheme}://localhost:{port}/uplink",
                                                 user_level=("Administrator",), certificate_id="cert",
                                                 cert_path_validation_policy_id="policy"), max_uplinks=8)
            app = with_bulk(build_device_app(UplinkServiceContext(store=store, capabilities=device_capabilities())))
            tasks.append(asyncio.create_task(UplinkAgent(store, app, executor=executor).run(stop)))
        for scheme in ("https", "wss"):
            await cloud.wait_for(f"device-{scheme}", timeout=30)
        # warm-up
        for scheme in ("https", "wss"):
            await soap_rate(cloud, f"device-{scheme}", 50, args.concurrency)
            await bulk_rate(cloud, f"device-{scheme}", 4)
        results: dict[str, dict[str, list[float]]] = {s: {"soap": [], "bulk": []} for s in ("https", "wss")}
        for rnd in range(args.rounds):
            order = ("https", "wss") if rnd % 2 == 0 else ("wss", "https")
            for scheme in order:
                results[scheme]["soap"].append(await soap_rate(cloud, f"device-{scheme}", args.calls,
                                                               args.concurrency))
                results[scheme]["bulk"].append(await bulk_rate(cloud, f"device-{scheme}", args.bulk_mib))
        stop.set()
        cloud.close_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.aclose()
        executor.shutdown(wait=False, cancel_futures=True)
    med = {s: {k: statistics.median(v) for k, v in r.items()} for s, r in results.items()}
    print(f"rounds={args.rounds} calls={args.calls} concurrency={args.concurrency} bulk={args.bulk_mib} MiB "
          f"(median of rounds; Python {sys.version.split()[0]})")
    print(f"{'':24}{'native https':>14}{'wss':>14}{'wss/native':>12}")
    print(f"{'SOAP calls/s':24}{med['https']['soap']:14.0f}{med['wss']['soap']:14.0f}"
          f"{med['wss']['soap'] / med['https']['soap']:12.2f}")
    print(f"{'bulk stream MB/s':24}{med['https']['bulk']:14.1f}{med['wss']['bulk']:14.1f}"
          f"{med['wss']['bulk'] / med['https']['bulk']:12.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bulk-mib", type=int, default=12, help="MiB per bulk response (H2Limits.max_body_size is 16 MiB)")
    asyncio.run(main(parser.parse_args()))
