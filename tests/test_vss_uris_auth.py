"""SEC-1, SEC-2, SEC-3, STR-1, ANX-B-1: the VSS's RTSP front asks players for the VSS's own users (RTSP Digest, level
READ_MEDIA). ffmpeg (``qop=auth``) and GStreamer's rtspsrc (``user-id``/``user-pw``, RFC 2069 form) play
``/relay/<id>`` (a lower system by URL) and ``/devices/<id>/<token>`` (one on an uplink) with a User of the VSS;
without credentials, with a wrong password or as an Anonymous-level user a player gets 401 and nothing is
relayed; the player's ``Authorization`` never goes upstream.

Real parts on loopback: the GStreamer camera, two ``run_device``, ``run_vss`` with an RTSP front and an embedded
cloud listener (TLS with certificates made here); every wait bounded."""

from __future__ import annotations

import asyncio
import gc
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from camera import SYSTEM_PYTHON
from rtsp_env import PLAYER_TIMEOUT, RawPlayer, decoded_frames, needs_camera
from vss_env import ADMIN
from vss_uris_env import GUEST, UPLINK_DEVICE, URL_PREFIX, VIEWER, Hierarchy, hierarchy, play, with_user

from iec62676_2_33.vss.rtsp import VssRtspFront
from iec62676_2_33.vss.rtsp_auth import WithoutCredentials

UNITS = 30

_GSTREAMER = r"""
import sys
import time
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
url, user, password, wanted, deadline = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
pipeline = Gst.parse_launch("rtspsrc name=src protocols=tcp latency=0 ! rtph264depay ! h264parse ! "
                            "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false")
src = pipeline.get_by_name("src")
src.set_property("location", url)
src.set_property("user-id", user)
src.set_property("user-pw", password)
sink = pipeline.get_by_name("sink")
pipeline.set_state(Gst.State.PLAYING)
units, end = 0, time.monotonic() + deadline
while units < wanted and time.monotonic() < end:
    sample = sink.emit("try-pull-sample", Gst.SECOND)
    if sample is None:
        if sink.get_property("eos"):
            break
        continue
    units += 1
pipeline.set_state(Gst.State.NULL)
print("UNITS", units)
"""


def gstreamer_units(url: str, user: tuple[str, str], units: int = UNITS, deadline: float = 30.0) -> int:
    run = subprocess.run([SYSTEM_PYTHON, "-c", _GSTREAMER, url, *user, str(units), str(deadline)],
                         capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return int(dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line).get("UNITS", "0"))


def front(uri: str) -> VssRtspFront:
    """The VSS front that answers ``uri`` (the VSS runs in a background thread of this process)."""
    fronts = [o for o in gc.get_objects() if isinstance(o, VssRtspFront) and uri.startswith(o.table.front_base + "/")]
    assert len(fronts) == 1
    return fronts[0]


def relayed(uri: str) -> int:
    """Sessions the front of ``uri`` opened towards a stream (relay and uplink tunnels)."""
    running = front(uri)
    return running.relay.stats.opened + (running.cloud_front.stats.opened if running.cloud_front else 0)


@pytest.fixture
def vss(tmp_path: Path) -> Iterator[Hierarchy]:
    with hierarchy(tmp_path) as running:
        yield running


@needs_camera
def test_players_log_in_with_the_vss_users_sec_1_str_1(vss: Hierarchy) -> None:
    """SEC-1, SEC-2, STR-1: ffmpeg (Digest with qop) and GStreamer rtspsrc (Digest without qop) play both kinds
    of URI with a User of the VSS; the URIs themselves carry no credentials."""
    uris = [vss.uri(f"{URL_PREFIX}:main"), vss.uri(f"{UPLINK_DEVICE}:main")]
    assert "/relay/" in uris[0] and uris[1].endswith(f"/devices/{UPLINK_DEVICE}/main")
    assert not any("@" in uri for uri in uris)
    for uri in uris:
        run = play(with_user(uri, VIEWER))
        assert run.returncode == 0, run.stderr[-2000:]
        assert decoded_frames(run.stderr) >= 50
        assert gstreamer_units(uri, VIEWER) >= UNITS


@needs_camera
def test_no_stream_without_read_media_sec_1(vss: Hierarchy) -> None:
    """SEC-1, SEC-3: no credentials, a wrong password, an unknown user or an Anonymous-level user: 401 with Digest
    challenges (CSeq echoed), ffmpeg decodes nothing, and the front opens no session towards a stream."""
    uri = vss.uri(f"{URL_PREFIX}:main")
    before = relayed(uri)
    player = RawPlayer(uri)
    try:
        status, headers, _ = player.request("OPTIONS", uri)
        assert status == 401 and headers["cseq"] == "1" and "Digest" in headers["www-authenticate"]
        status, _, _ = player.request("DESCRIBE", uri, 'Authorization: Digest username="admin", realm="x", '
                                      'nonce="n", uri="/", response="0"')
        assert status == 401
    finally:
        player.close()
    for user in (None, (ADMIN[0], "wrong"), ("nobody", "pw"), GUEST):
        run = play(uri if user is None else with_user(uri, user))
        assert run.returncode != 0 and decoded_frames(run.stderr) == 0, user
    assert relayed(uri) == before


def test_player_credentials_do_not_go_upstream_sec_1() -> None:
    """SEC-1: the requests a front hands on lose the player's ``Authorization``; other headers, bodies and
    interleaved frames pass unchanged."""
    request = (b"DESCRIBE rtsp://vss/relay/x RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Digest username=\"viewer\"\r\n"
               b"Accept: application/sdp\r\n\r\n")
    frame = b"$\x01\x00\x04abcd"

    class Chunks:
        def __init__(self, *parts: bytes) -> None:
            self.parts = list(parts)

        async def read(self, max_bytes: int = 65536) -> bytes:
            return self.parts.pop(0) if self.parts else b""

    async def run() -> bytes:
        stream = WithoutCredentials(Chunks(request[:20], request[20:] + frame))
        out = b""
        while data := await stream.read():
            out += data
        return out

    out = asyncio.run(run())
    assert out == request.replace(b'Authorization: Digest username="viewer"\r\n', b"") + frame
