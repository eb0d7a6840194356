"""Benchmark (issue 9, STR-1): live video through the uplink vs straight from the camera, same run.

Real parts, each in its own process: the synthetic camera (GStreamer's RTSP server, H.264,
``tests/camera.py`` under Debian's ``/usr/bin/python3``), ``iec62676 device serve`` with that
camera as a media source and a native uplink, and ``iec62676 cloud serve --rtsp``. Players are
minimal asyncio RTSP clients in this process (DESCRIBE, SETUP interleaved over TCP, PLAY, then
count bytes) and ffmpeg for the first decoded frame. Measured:

1. throughput of one stream through the uplink vs the same player on the camera directly
   (a ``--bitrate`` kbit/s snow picture: x264 fills the rate; the source is live, so the goal is
   to keep up: ratio >= 0.9);
2. concurrent streams of ``--stream-kbit`` kbit/s through one uplink: per step the bytes
   received vs what the camera sent (and as many players on the camera directly: the
   camera and this process are limits too), the cloud process's CPU (one core = 100 %; the
   device's beside it) and RSS; it saturates where players get less than 95 % of the rate or the CPU
   reaches 95 % (one uplink carries at most the device's 128 concurrent streams);
3. time to the first decoded frame (``ffmpeg -frames:v 1``), through the uplink vs direct,
   median of ``--runs`` (goal <= 1.5x).

Nothing is asserted; not run by the test suite.

    python3 bench/bench_video.py [--seconds 5] [--streams 1,10,25,50] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from camera import start_camera

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import UplinkPki, seed_device

TOKEN = "main"
DEVICE = "bench-cam"


@contextmanager
def _process(args: list[str], pattern: str, timeout: float = 30.0) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A CLI process; yields it and the first stdout match of ``pattern`` (bounded wait)."""
    proc = subprocess.Popen([sys.executable, "-m", "iec62676_2_33", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            match = re.search(pattern, line)
            if match:
                yield proc, match.group(1)
                return
            if not line and proc.poll() is not None:
                break
        raise RuntimeError(f"{args[:2]} did not announce {pattern!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def setup(tmp: Path, kbit: int) -> Iterator[tuple[str, str, int, int]]:
    """Camera, cloud (--rtsp), device over a native uplink; yields (direct URL, uplink URL, cloud pid,
    device pid)."""
    certs = UplinkPki(tmp / f"pki{kbit}")
    with start_camera(pattern="snow", bitrate=kbit) as cam, \
            _process(["cloud", "serve", "--listen", "127.0.0.1:0", "--cert", str(certs.cert), "--key", str(certs.key),
                      "--client-ca", str(certs.ca_file), "--rtsp", "127.0.0.1:0"],
                     r"https://127\.0\.0\.1:(\d+)/") as (cloud, port), \
            _rtsp_base(cloud) as base:
        data = tmp / f"dev{kbit}"
        seed_device(data, certs, DEVICE, [(f"https://localhost:{port}/uplink", ("User",))])
        with DeviceStore(data) as store:
            store.put_media_source(MediaSource(token=TOKEN, name="bench", rtsp_url=cam.url))
        with _process(["device", "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
                      r"(http://\S+)") as (device, _):
            url = f"{base}/devices/{DEVICE}/{TOKEN}"
            deadline = time.monotonic() + 30
            while asyncio.run(_status(url)) != 200:  # until the uplink is up
                if time.monotonic() > deadline:
                    raise RuntimeError("the device did not connect")
                time.sleep(0.2)
            yield cam.url, url, cloud.pid, device.pid


@contextmanager
def _rtsp_base(cloud: subprocess.Popen[str]) -> Iterator[str]:
    assert cloud.stdout is not None
    for _ in range(5):
        match = re.search(r"(rtsp://\S+)/devices", cloud.stdout.readline())
        if match:
            yield match.group(1)
            return
    raise RuntimeError("the cloud did not announce its RTSP front")


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str,
                   *headers: str) -> tuple[int, dict[str, str], bytes]:
    writer.write(("\r\n".join([line, *headers]) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await reader.readexactly(int(fields.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), fields, body


async def _status(url: str) -> int:
    host, port = url.removeprefix("rtsp://").split("/", 1)[0].split(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
    except OSError:
        return 0
    try:
        return (await _request(reader, writer, f"DESCRIBE {url} RTSP/1.0", "CSeq: 1"))[0]
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return 0
    finally:
        writer.close()


async def _play(url: str, seconds: float, counts: list[int]) -> None:
    """One player: PLAY, then count received bytes for ``seconds`` (appended to ``counts``)."""
    host, port = url.removeprefix("rtsp://").split("/", 1)[0].split(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
    try:
        for attempt in range(10):  # a shared GStreamer media being torn down answers 503 for a moment
            status, head, sdp = await _request(reader, writer, f"DESCRIBE {url} RTSP/1.0", f"CSeq: {attempt + 1}")
            if status == 200:
                break
            await asyncio.sleep(0.3)
        else:
            raise RuntimeError(f"DESCRIBE {url}: {status}")
        base = head.get("content-base", url + "/").rstrip("/")
        control = next(x[10:] for x in sdp.decode().splitlines() if x.startswith("a=control:") and x != "a=control:*")
        track = control if control.startswith("rtsp://") else f"{base}/{control}"
        _, head, _ = await _request(reader, writer, f"SETUP {track} RTSP/1.0", "CSeq: 20",
                                    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        session = head["session"].split(";")[0]
        await _request(reader, writer, f"PLAY {base} RTSP/1.0", "CSeq: 21", f"Session: {session}")
        await asyncio.sleep(0.5)  # past the start-up burst
        while True:  # drop what arrived so far
            try:
                await asyncio.wait_for(reader.read(1 << 20), 0.001)
            except TimeoutError:
                break
        got, end = 0, time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                got += len(await asyncio.wait_for(reader.read(1 << 20), left))
            except TimeoutError:
                break
        counts.append(got)
    finally:
        writer.close()


async def _players(url: str, n: int, seconds: float) -> list[int]:
    counts: list[int] = []
    await asyncio.gather(*(_play(url, seconds, counts) for _ in range(n)))
    return counts


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _first_frame(url: str) -> float:
    start = time.monotonic()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-frames:v", "1",
                    "-f", "null", "-"], check=True, timeout=60, capture_output=True)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bitrate", type=int, default=20000, help="kbit/s of the single-stream camera")
    parser.add_argument("--stream-kbit", type=int, default=4000)
    parser.add_argument("--streams", default="1,10,25,50")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-video-") as folder:
        tmp = Path(folder)
        with setup(tmp, args.bitrate) as (direct, uplink, _cloud, _device):
            print(f"1. one stream, {args.bitrate} kbit/s camera, {args.seconds:g} s each, alternating:")
            rates: dict[str, list[float]] = {"direct": [], "uplink": []}
            for _ in range(3):
                for name, url in (("direct", direct), ("uplink", uplink)):
                    [got] = asyncio.run(_players(url, 1, args.seconds))
                    rates[name].append(got * 8 / args.seconds / 1e6)
            d, u = statistics.median(rates["direct"]), statistics.median(rates["uplink"])
            print(f"   direct {d:.2f} Mbit/s, through the uplink {u:.2f} Mbit/s: ratio {u / d:.2f} (goal >= 0.9)")
            print(f"3. time to first decoded frame, median of {args.runs}:")
            firsts = {"direct": [_first_frame(direct) for _ in range(args.runs)],
                      "uplink": [_first_frame(uplink) for _ in range(args.runs)]}
            fd, fu = statistics.median(firsts["direct"]), statistics.median(firsts["uplink"])
            print(f"   direct {fd * 1000:.0f} ms, through the uplink {fu * 1000:.0f} ms: ratio {fu / fd:.2f}"
                  " (goal <= 1.5)")
        with setup(tmp, args.stream_kbit) as (direct, uplink, pid, device_pid):
            print(f"2. concurrent {args.stream_kbit} kbit/s streams through one uplink ({args.seconds:g} s each step):")
            [ref] = asyncio.run(_players(direct, 1, args.seconds))
            print(f"   one player on the camera directly: {ref * 8 / args.seconds / 1e6:.2f} Mbit/s")
            base_rss = _rss_mib(pid)
            for n in (int(x) for x in args.streams.split(",")):
                cpu0, dev0, t0 = _cpu_seconds(pid), _cpu_seconds(device_pid), time.monotonic()
                counts = asyncio.run(_players(uplink, n, args.seconds))
                took = time.monotonic() - t0
                cpu = (_cpu_seconds(pid) - cpu0) / took * 100
                dev = (_cpu_seconds(device_pid) - dev0) / took * 100
                share = min(counts) / ref if ref else 0.0
                rss = _rss_mib(pid)
                direct_share = min(asyncio.run(_players(direct, n, args.seconds))) / ref if ref else 0.0
                print(f"   {n:4d} streams: slowest player {share:.2f} of the camera's rate (direct, same "
                      f"number of players: {direct_share:.2f}), aggregate "
                      f"{sum(counts) * 8 / args.seconds / 1e6:.1f} Mbit/s, cloud CPU {cpu:.0f} % (device {dev:.0f} %), "
                      f"cloud RSS {rss:.0f} MiB "
                      f"({(rss - base_rss) / n * 1024:.0f} KiB/stream over idle)")


if __name__ == "__main__":
    main()
