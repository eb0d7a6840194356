#!/usr/bin/env python3
"""Resource queries on 1,000,000 resources: R*Tree vs full scan (issue 4, benchmark 1).

1. In this process: a 100 m location query (RQ-6) on a registry of COUNT
   sample resources (:mod:`iec62676_2_33.testing.sampledata`, ``station_devices=0`` so
   no dense cluster sits at the centre), answered whole (every page) by
   ``ResourceRegistry.query`` (R*Tree candidates + exact check) and, as the
   baseline, by ``ResourceRegistry.query_full_scan`` (every row checked). Both
   answers are compared; the ratio is full scan / R*Tree. Goal: >= 100x.
2. A real device (``iec62676 device serve`` in a separate process, direct
   HTTP) on the same registry: the latency of CreatePullPointSubscription with
   that Location filter and of the first PullMessages (MessageLimit 100,
   Timeout PT0S), raw HTTP + lxml on the client. The baseline in the same run
   is a GetServiceCapabilities round trip to the same event service (HTTP +
   WS-Security + Spyne dispatch without any query).

The registry is generated once (about a minute) into a cache file under
``/tmp/iec62676-bench`` and reused; ``--rebuild`` makes it again.

Usage: ``python bench/bench_resources_query.py [--count 1000000] [--radius 100] [--points 5]``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import math
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from iec62676_2_33.domain.filters import EARTH_RADIUS_M, LocationFilter, ResourceQuery
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import RESOURCE_KINDS
from iec62676_2_33.testing.sampledata import NANJING, generate

CACHE_DIR = Path(os.environ.get("IEC62676_BENCH_CACHE", "/tmp/iec62676-bench"))
USER = ("bench", "bench-pw")
SAMPLE_OPTIONS = {"station_devices": 0}

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
TEV = "http://www.onvif.org/ver10/events/wsdl"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
TT = "http://www.onvif.org/ver10/schema"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
                   "#PasswordDigest")


def machine() -> str:
    import platform

    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------- the cached registry


def resource_database(count: int, *, rebuild: bool = False) -> Path:
    """The cached registry of ``count`` sample resources (built once, atomically)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    label = f"{count // 1_000_000}m" if count % 1_000_000 == 0 else str(count)
    path = CACHE_DIR / f"resources-{label}.db"
    if path.exists() and not rebuild:
        return path
    building = path.with_suffix(f".building-{os.getpid()}")
    print(f"building {path} ({count:,} resources, once) ...", flush=True)
    started = time.perf_counter()
    with ResourceRegistry(building) as registry:
        registry.upsert_many(generate(count, **SAMPLE_OPTIONS))  # type: ignore[arg-type]
        assert registry.count() == count
        registry._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(str(building) + suffix).unlink(missing_ok=True)
    building.replace(path)
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def device_data(database: Path) -> Path:
    """A fresh device data folder whose ``resources.db`` is the cached registry (hard link, else copy)."""
    from iec62676_2_33.store import DeviceStore

    data = Path(tempfile.mkdtemp(prefix="device-", dir=CACHE_DIR))
    try:
        os.link(database, data / "resources.db")
    except OSError:
        shutil.copy(database, data / "resources.db")
    with DeviceStore(data) as store:
        store.put_user(*USER, "User")
    return data


class DeviceProcess:
    """``python -m iec62676_2_33 device serve`` on 127.0.0.1 (direct HTTP only) in its own process."""

    def __init__(self, data: Path, *, extra_env: dict[str, str] | None = None,
                 argv: list[str] | None = None) -> None:
        cmd = argv or [sys.executable, "-m", "iec62676_2_33", "device", "serve", "--data", str(data),
                       "--listen", "127.0.0.1:0"]
        env = {**os.environ, **(extra_env or {})}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line or "http://" in line:
                break
        match = re.search(r"(http://[^/\s]+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the device did not start: {line!r}")
        self.base = match.group(1)
        self.pid = self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


# --------------------------------------------------------------------------- raw SOAP client


def username_token() -> str:
    """A WS-Security UsernameToken with PasswordDigest (OASIS UsernameToken Profile 1.0)."""
    nonce = secrets.token_bytes(16)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = b64encode(hashlib.sha1(nonce + created.encode() + USER[1].encode()).digest()).decode()
    return (f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
            f"<wsse:Username>{USER[0]}</wsse:Username>"
            f'<wsse:Password Type="{PASSWORD_DIGEST}">{digest}</wsse:Password>'
            f"<wsse:Nonce>{b64encode(nonce).decode()}</wsse:Nonce><wsu:Created>{created}</wsu:Created>"
            f"</wsse:UsernameToken></wsse:Security>")


def envelope(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tev="{TEV}" '
            f'xmlns:wsnt="{WSNT}" xmlns:tt="{TT}"><s:Header>{username_token()}</s:Header>'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


class RawClient:
    """Keep-alive HTTP/1.1 connection, hand-written envelopes, lxml parsing."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)

    def call(self, url: str, body: str) -> etree._Element:
        self.conn.request("POST", urlsplit(url).path, envelope(body),
                          {"Content-Type": "application/soap+xml; charset=utf-8"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {data[:400]!r}")
        return etree.fromstring(data, _PARSER).find(f"{{{SOAP_ENV}}}Body")[0]

    def subscribe(self, base: str, location: LocationFilter | None) -> str:
        flt = ""
        if location is not None:
            flt = (f"<tev:Filter><tt:LocationFilter><tt:lon>{location.lon!r}</tt:lon><tt:lat>{location.lat!r}</tt:lat>"
                   f"<tt:radius>{location.radius!r}</tt:radius></tt:LocationFilter></tev:Filter>")
        answer = self.call(base + "/onvif/event_service",
                           f"<tev:CreatePullPointSubscription>{flt}<tev:InitialTerminationTime>PT120S"
                           "</tev:InitialTerminationTime></tev:CreatePullPointSubscription>")
        return answer.findtext(f"{{{TEV}}}SubscriptionReference/{{{WSA}}}Address") or ""

    def pull(self, address: str, limit: int) -> list[str]:
        answer = self.call(address, f"<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout>"
                                    f"<tev:MessageLimit>{limit}</tev:MessageLimit></tev:PullMessages>")
        return [item.get("Value") or "" for item in answer.iterfind(
            f"{{{WSNT}}}NotificationMessage/{{{WSNT}}}Message/{{{TT}}}Message/{{{TT}}}Source/{{{TT}}}SimpleItem")]

    def unsubscribe(self, address: str) -> None:
        self.call(address, "<wsnt:Unsubscribe/>")

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- the benchmark


def query_points(n: int, seed: int = 4) -> list[tuple[float, float]]:
    """The city centre and ``n - 1`` random points within 4 km of it (the resources fill 5 km)."""
    rng = random.Random(seed)
    points = [(NANJING.lon, NANJING.lat)]
    for _ in range(n - 1):
        distance, bearing = 4000 * math.sqrt(rng.random()), 2 * math.pi * rng.random()
        north, east = distance * math.cos(bearing), distance * math.sin(bearing)
        lat = NANJING.lat + math.degrees(north / EARTH_RADIUS_M)
        lon = NANJING.lon + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(NANJING.lat))))
        points.append((lon, lat))
    return points


def whole_answer(method, query: ResourceQuery, page: int = 1000) -> list[str]:  # type: ignore[no-untyped-def]
    tokens: list[str] = []
    after = None
    while True:
        batch = method(query, after_token=after, limit=page)
        tokens.extend(r.token for r in batch)
        if len(batch) < page:
            return tokens
        after = batch[-1].token


def timed(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """Median wall time of ``repeat`` calls (seconds) and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def registry_part(database: Path, radius: float, points: list[tuple[float, float]], repeat: int) -> None:
    print(f"\n1. {radius:g} m location query, {len(points)} points, whole answer (pages of 1000)")
    print(f"   {'point':>24} {'matches':>8} {'R*Tree ms':>10} {'full scan ms':>13} {'ratio':>8}")
    rtree_total = scan_total = 0.0
    ratios = []
    with ResourceRegistry(database) as registry:
        total = registry.count()
        for lon, lat in points:
            query = ResourceQuery(kinds=frozenset(RESOURCE_KINDS), location=LocationFilter(lon, lat, radius))
            rtree_s, rtree_tokens = timed(lambda q=query: whole_answer(registry.query, q), repeat)
            scan_s, scan_tokens = timed(lambda q=query: whole_answer(registry.query_full_scan, q), 1)
            assert rtree_tokens == scan_tokens, "the R*Tree and the full scan disagree"
            rtree_total += rtree_s
            scan_total += scan_s
            ratios.append(scan_s / rtree_s)
            print(f"   {lon:11.6f},{lat:11.6f} {len(rtree_tokens):>9} {rtree_s * 1e3:>10.2f} {scan_s * 1e3:>13.0f}"
                  f" {scan_s / rtree_s:>7.0f}x", flush=True)
    print(f"   registry: {total:,} resources; median ratio {statistics.median(ratios):.0f}x, "
          f"min {min(ratios):.0f}x (goal >= 100x)")


def device_part(database: Path, radius: float, points: list[tuple[float, float]], repeat: int) -> None:
    print(f"\n2. through a device process (direct HTTP, raw SOAP + lxml client), {repeat} rounds per point")
    data = device_data(database)
    device = DeviceProcess(data)
    client = RawClient(device.base)
    try:
        base = device.base
        caps_times = []
        for _ in range(repeat * len(points)):
            started = time.perf_counter()
            client.call(base + "/onvif/event_service", "<tev:GetServiceCapabilities/>")
            caps_times.append(time.perf_counter() - started)
        sub_times, pull_times, sizes = [], [], []
        for lon, lat in points:
            for _ in range(repeat):
                started = time.perf_counter()
                address = client.subscribe(base, LocationFilter(lon, lat, radius))
                subscribed = time.perf_counter()
                page = client.pull(address, 100)
                pulled = time.perf_counter()
                client.unsubscribe(address)
                sub_times.append(subscribed - started)
                pull_times.append(pulled - subscribed)
                sizes.append(len(page))
        caps = statistics.median(caps_times)
        first = statistics.median(pull_times)
        p95 = sorted(pull_times)[int(0.95 * (len(pull_times) - 1))]
        print(f"   GetServiceCapabilities (baseline)       median {caps * 1e3:7.2f} ms")
        print(f"   CreatePullPointSubscription (Location)  median {statistics.median(sub_times) * 1e3:7.2f} ms")
        print(f"   first PullMessages, MessageLimit 100    median {first * 1e3:7.2f} ms, p95 {p95 * 1e3:.2f} ms, "
              f"{min(sizes)}..{max(sizes)} messages")
        print(f"   first page / baseline round trip: {first / caps:.1f}x")
    finally:
        client.close()
        device.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--radius", type=float, default=100.0, help="metres")
    parser.add_argument("--points", type=int, default=5, help="query centres (the city centre first)")
    parser.add_argument("--repeat", type=int, default=20, help="R*Tree queries / device rounds per point")
    parser.add_argument("--rebuild", action="store_true", help="make the cached registry again")
    parser.add_argument("--no-device", action="store_true", help="skip the device part")
    args = parser.parse_args()
    print(f"bench_resources_query: {args.count:,} resources; {machine()}")
    database = resource_database(args.count, rebuild=args.rebuild)
    points = query_points(args.points)
    registry_part(database, args.radius, points, args.repeat)
    if not args.no_device:
        device_part(database, args.radius, points, args.repeat)


if __name__ == "__main__":
    main()
