"""STR-2, ANX-B-1, SEC-1, SEC-3: RTSP over HTTP through a VSS. GetStreamUri with Protocol RtspOverHttp at the VSS
answers a URI on the VSS's own HTTP port (never a lower system's address) for a lower system reached by URL and
for one on an uplink of the VSS's embedded cloud listener; ffmpeg ``-rtsp_transport http`` decodes frames
through it (the GET/POST tunnel → the VSS's RTSP relay → the camera, or → the uplink → the device → the camera).
The tunnel is decided by the VSS's access control (HTTP Digest of its users, READ_MEDIA): without credentials or
as an Anonymous-level user it is refused and nothing plays.

Real parts on loopback: the GStreamer camera, two ``run_device``, ``run_vss`` with an RTSP front and an embedded
cloud listener (TLS with certificates made here); every wait bounded."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from rtsp_env import decoded_frames, needs_camera
from vss_env import ADMIN
from vss_uris_env import GUEST, UPLINK_DEVICE, URL_PREFIX, VIEWER, Hierarchy, hierarchy, play, with_user

pytestmark = needs_camera


@pytest.fixture
def vss(tmp_path: Path) -> Iterator[Hierarchy]:
    with hierarchy(tmp_path) as running:
        yield running


def _get(uri: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    parts = urlsplit(uri)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", parts.path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_rtsp_over_http_through_the_vss_str_2_anx_b_1(vss: Hierarchy, caplog: pytest.LogCaptureFixture) -> None:
    """STR-2, ANX-B-1: RtspOverHttp URIs of both lower systems point at the VSS's HTTP port (``/relay/<id>``,
    ``/devices/<id>/<token>``); ffmpeg tunnels RTSP over HTTP there with a User of the VSS and decodes frames;
    the sessions end without a traceback in the log."""
    caplog.set_level(logging.INFO)
    relayed = vss.uri(f"{URL_PREFIX}:main", "RtspOverHttp")
    on_uplink = vss.uri(f"{UPLINK_DEVICE}:main", "RtspOverHttp")
    assert relayed.startswith(f"{vss.vss}/relay/")
    assert on_uplink == f"{vss.vss}/devices/{UPLINK_DEVICE}/main"
    assert vss.uri(f"{URL_PREFIX}:main", "RtspOverHttp") == relayed  # one URI per stream
    for uri in (relayed, on_uplink):
        run = play(with_user(uri, VIEWER), transport="http")
        assert run.returncode == 0, run.stderr[-2000:]
        assert decoded_frames(run.stderr) >= 50
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_the_tunnel_needs_read_media_sec_1(vss: Hierarchy) -> None:
    """SEC-1, SEC-3: a GET channel without credentials gets 401 with Digest challenges; ffmpeg without credentials or
    as an Anonymous-level user decodes nothing; a User without an ``x-sessioncookie`` gets 400."""
    uri = vss.uri(f"{URL_PREFIX}:main", "RtspOverHttp")
    status, headers = _get(uri, {"x-sessioncookie": "c1", "accept": "application/x-rtsp-tunnelled"})
    assert status == 401 and "Digest" in headers["www-authenticate"]
    for player in ("rtsp://" + uri.split("://", 1)[1], with_user(uri, GUEST), with_user(uri, (ADMIN[0], "wrong"))):
        run = play(player, transport="http")
        assert run.returncode != 0 and decoded_frames(run.stderr) == 0, player
    # a real Digest exchange (httpx answers the challenge) for a GET without its cookie
    refused = httpx.get(uri, auth=httpx.DigestAuth(*VIEWER), timeout=10)
    assert refused.status_code == 400


def test_the_tunnel_is_bounded_sec_1(vss: Hierarchy) -> None:
    """SEC-1, STR-2: a POST channel of a User whose cookie names no waiting GET channel is 404; GET channels
    of one user waiting for their POST are bounded (8 a user, 64 in all): the user's next one is refused with
    503 while they wait."""
    uri = vss.uri(f"{URL_PREFIX}:main", "RtspOverHttp")
    tunnelled = {"accept": "application/x-rtsp-tunnelled"}
    with httpx.Client(auth=httpx.DigestAuth(*VIEWER), timeout=10,
                      limits=httpx.Limits(max_connections=80, max_keepalive_connections=0)) as client:
        alone = client.post(uri, content=b"", headers={**tunnelled, "x-sessioncookie": "nobody-waits"})
        assert alone.status_code == 404
        waiting = []
        try:
            for i in range(8):
                channel = client.stream("GET", uri, headers={**tunnelled, "x-sessioncookie": f"waiting-{i}"})
                response = channel.__enter__()
                waiting.append(channel)
                assert response.status_code == 200, i
            refused = client.get(uri, headers={**tunnelled, "x-sessioncookie": "one-too-many"})
            assert refused.status_code == 503
        finally:
            for channel in waiting:
                channel.__exit__(None, None, None)
