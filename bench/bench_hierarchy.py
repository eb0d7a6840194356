"""Added latency per hierarchy level (GEN-1, ANX-B-1): Media2 GetStreamUri and a 100 m resource query at 1, 2
and 3 levels; resource enumeration at a device and through a VSS above it, and the rate of the VSS's resource
mirror.

Level 1 asks the device directly; level 2 asks a VSS whose lower system is that
device; level 3 asks a VSS whose lower system is the level-2 VSS (all by URL,
on loopback, one process each in threads of this one). Every level is measured
in the same run, sequential calls on one kept-alive HTTP/1.1 connection, and
the result is printed as the median per call and the ratio to level 1.
Usage: ``python bench/bench_hierarchy.py [--calls N] [--queries N] [--resources N]``.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lxml import etree
from vss_env import ADMIN, FAR, HERE, NEAR, add_lower, seed, start_device, start_vss

from iec62676_2_33.domain.filters import LocationFilter
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.namespaces import SOAP_ENV
from iec62676_2_33.query import ResourceQueryClient
from iec62676_2_33.security.wsse import build_username_token
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions


def body(token: str) -> bytes:
    security = etree.tostring(build_username_token(*ADMIN, datetime.now(UTC))).decode()
    return (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}"><env:Header>{security}</env:Header><env:Body>'
            f"<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>{token}</tr2:ProfileToken>"
            "</tr2:GetStreamUri></env:Body></env:Envelope>").encode()


def measure(base: str, token: str, calls: int) -> float:
    """Median seconds per GetStreamUri (after 20 warm-up calls)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    times = []
    try:
        for i in range(calls + 20):
            data = body(token)
            started = time.perf_counter()
            conn.request("POST", "/onvif/media2_service", data, {"Content-Type": "application/soap+xml"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise SystemExit(f"{base}: HTTP {response.status}: {answer[:300]!r}")
            if i >= 20:
                times.append(time.perf_counter() - started)
    finally:
        conn.close()
    return statistics.median(times)


def learn_routes(base: str) -> None:
    """One GetProfiles: the VSS learns which lower system answers for the prefixes below it."""
    security = etree.tostring(build_username_token(*ADMIN, datetime.now(UTC))).decode()
    data = (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}"><env:Header>{security}</env:Header>'
            "<env:Body><tr2:GetProfiles/></env:Body></env:Envelope>").encode()
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", "/onvif/media2_service", data, {"Content-Type": "application/soap+xml"})
        answer = conn.getresponse().read()
        if b'token="cam:main"' not in answer:
            raise SystemExit(f"{base}: GetProfiles did not list cam:main: {answer[:300]!r}")
    finally:
        conn.close()


#: Resources of the device in the latency part: a few near the query point, most 2 km away.
QUERY_NEAR, QUERY_FAR = 20, 480


def query_latency(base: str, calls: int) -> float:
    """Median seconds of one resource query (subscribe with a 100 m location filter, read the matching
    resources, unsubscribe) after 5 warm-up queries."""
    client = ResourceQueryClient(f"{base}/onvif/event_service", username=ADMIN[0], password=ADMIN[1],
                                 message_limit=100, timeout=30)
    near = LocationFilter(HERE.lon, HERE.lat, 100.0)
    times = []
    for i in range(calls + 5):
        started = time.perf_counter()
        with client.subscribe(["VideoSource"], location=near) as subscription:
            count = sum(1 for _ in subscription.resources())
        if count != QUERY_NEAR:
            raise SystemExit(f"{base}: the query found {count} resources, not {QUERY_NEAR}")
        if i >= 5:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def wait_mirrored(data: Path, expected: int) -> None:
    """Until the VSS whose data folder is ``data`` holds ``expected`` resources (bounded)."""
    deadline = time.perf_counter() + 120
    with ResourceRegistry(data / REGISTRY_FILE) as registry:
        while registry.count() < expected:
            if time.perf_counter() > deadline:
                raise SystemExit(f"{data.name}: mirrored {registry.count()} of {expected} in 120 s")
            time.sleep(0.05)


def enumerate_rate(base: str, expected: int) -> float:
    """Resources per second of one enumeration (resource query, no filter) at ``base``."""
    client = ResourceQueryClient(f"{base}/onvif/event_service", username=ADMIN[0], password=ADMIN[1],
                                 message_limit=1000, timeout=60)
    started = time.perf_counter()
    with client.subscribe() as subscription:
        count = sum(1 for _ in subscription.resources())
    elapsed = time.perf_counter() - started
    if count < expected:
        raise SystemExit(f"{base}: enumerated {count} of {expected} resources")
    return count / elapsed


def resources(n: int) -> None:
    """Enumeration at the device and through a VSS (after its mirror took them), and the mirror's rate."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seed(root / "cam", resources=tuple(Resource(f"cam:r{i:07d}", "VideoSource", name=f"Camera {i}")
                                           for i in range(n)))
        device, device_url = start_device(root / "cam")
        seed(root / "vss")
        add_lower(root / "vss", LowerSystem(prefix="cam", url=f"{device_url}/onvif/device_service",
                                            username=ADMIN[0], password=ADMIN[1]))
        try:
            direct = enumerate_rate(device_url, n)
            started = time.perf_counter()
            vss, vss_url = start_vss(root / "vss", VssOptions())
            try:
                with ResourceRegistry(root / "vss" / REGISTRY_FILE) as registry:
                    while registry.count() < n:
                        if time.perf_counter() - started > 600:
                            raise SystemExit(f"the mirror took {registry.count()} of {n} in 600 s")
                        time.sleep(0.05)
                mirrored = n / (time.perf_counter() - started)
                through = enumerate_rate(vss_url, n)
            finally:
                vss.stop()
        finally:
            device.stop()
    print(f"Resource enumeration of {n} resources (one subscription, pages of 1,000)")
    print(f"  at the device:            {direct:9.0f} resources/s")
    print(f"  at a VSS above it:        {through:9.0f} resources/s ({through / direct:4.2f}x)")
    print(f"  the VSS's mirror, start to all mirrored: {mirrored:9.0f} resources/s ({mirrored / direct:4.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50, help="resource queries per level")
    parser.add_argument("--resources", type=int, default=20000, help="resources for the enumeration part (0: skip)")
    args = parser.parse_args()
    if args.resources:
        resources(args.resources)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        located = tuple(Resource(f"cam:v{i:04d}", "VideoSource", name=f"Camera {i}",
                                 location=NEAR if i < QUERY_NEAR else FAR) for i in range(QUERY_NEAR + QUERY_FAR))
        seed(root / "cam", sources=(MediaSource(token="main", name="Camera", rtsp_url="rtsp://127.0.0.1:9/main"),),
             resources=located)
        device, device_url = start_device(root / "cam")
        seed(root / "site")
        add_lower(root / "site", LowerSystem(prefix="cam", url=f"{device_url}/onvif/device_service",
                                             username=ADMIN[0], password=ADMIN[1]))
        site, site_url = start_vss(root / "site", VssOptions(rtsp="127.0.0.1:0"))
        seed(root / "regional")
        add_lower(root / "regional", LowerSystem(prefix="site", url=f"{site_url}/onvif/device_service",
                                                 username=ADMIN[0], password=ADMIN[1]))
        regional, regional_url = start_vss(root / "regional", VssOptions(rtsp="127.0.0.1:0"))
        try:
            one = measure(device_url, "main", args.calls)
            two = measure(site_url, "cam:main", args.calls)
            learn_routes(regional_url)  # the regional VSS exposes the site's "cam:main" as is (clause 6)
            three = measure(regional_url, "cam:main", args.calls)
            for data in (root / "site", root / "regional"):
                wait_mirrored(data, len(located))
            queries = [query_latency(url, args.queries) for url in (device_url, site_url, regional_url)]
        finally:
            for service in (regional, site, device):
                service.stop()
    print(f"GetStreamUri, median of {args.calls} sequential calls")
    for level, value in ((1, one), (2, two), (3, three)):
        print(f"  {level} level(s): {value * 1e3:7.2f} ms  ({value / one:4.1f}x level 1)")
    print(f"  added per VSS level: {(three - one) / 2 * 1e3:.2f} ms")
    print(f"Resource query (100 m, {QUERY_NEAR} of {QUERY_NEAR + QUERY_FAR} resources), median of {args.queries}")
    for level, value in enumerate(queries, start=1):
        print(f"  {level} level(s): {value * 1e3:7.2f} ms  ({value / queries[0]:4.1f}x level 1)")


if __name__ == "__main__":
    main()
