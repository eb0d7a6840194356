"""GEN-1, GEN-3, ANX-B-1, ANX-B-3, STR-1, STR-2, STR-5: a site VSS that is itself on an uplink (behind NAT) serves the
streams of its lower systems through that uplink — camera → device (by URL) → site VSS —uplink→ regional VSS
(embedded cloud listener, RTSP front) → client. GetStreamUri and GetReplayUri through the regional VSS answer
a URI on the regional VSS's front under the site VSS's uplink (``/devices/<site>/<relay id>``: the site VSS
was told that base and answered it instead of its own front), and ffmpeg, logged in with the regional VSS's
RTSP Digest, decodes frames of the camera and of the device's recording through the regional front, the uplink
and the site VSS's relay; RtspOverHttp through the regional VSS plays the same way. The site VSS runs with and
without an RTSP front of its own: over the uplink it needs none; its uplink service says StreamingOverUplink.

Real parts on loopback: the GStreamer camera (tests/camera.py), ffmpeg, the device's replay RTSP server with a
recording made by ffmpeg, TLS with certificates made here, ``run_device`` and two ``run_vss`` (the site VSS's
uplink agent dials the regional one); every wait bounded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from camera import start_camera
from helpers import fault_chain
from lxml import etree
from recording_env import T0, make_video, stamp
from rtsp_env import decode_frames, decoded_frames, needs_camera
from vss_env import ADMIN, add_lower, answer, seed, soap, start_device, start_vss, stream_uri
from vss_uris_env import play, with_user

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.recordings import RecordingConfig
from iec62676_2_33.namespaces import SOAP_ENV, TUP
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions
from iec62676_2_33.runtime.recording_files import save_recording_configs
from iec62676_2_33.runtime.replay_server import replay_available
from iec62676_2_33.security.wsse import build_username_token
from iec62676_2_33.services.media2 import RTSP_BASE_HEADER, TR2
from iec62676_2_33.services.recording import REPLAY_PATH, TRP
from iec62676_2_33.testing.harness import FAST, UplinkPki, seed_device, wait_until
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

pytestmark = [needs_camera, pytest.mark.skipif(not replay_available(),
                                               reason="GStreamer's RTSP server is not installed (.ci/run)")]

#: The site VSS's uplink identity (its client certificate's) and so its prefix at the regional VSS.
SITE = "site-vss"
#: The device's prefix at the site VSS (kept at the regional VSS: a remote token keeps its prefix).
CAM = "cam"


@dataclass
class Chain:
    regional: str  # the regional VSS's base URL
    front: str  # its RTSP front, rtsp://host:port
    site: str  # the site VSS's base URL
    site_front: str | None  # its own RTSP front, if it runs one


def _announced(service: BackgroundService, pattern: str) -> str:
    text = wait_until(lambda: next((m for m in service.messages if re.search(pattern, m)), None), 15, what=pattern)
    return re.search(pattern, text).group(1)  # type: ignore[union-attr]


def _profiles(base: str) -> int:
    """GetProfiles at ``base`` (merged: the regional VSS learns the device's prefix from the site VSS's answer)."""
    return soap(base, "/onvif/media2_service", "<tr2:GetProfiles/>")[0]


@pytest.fixture(scope="module", params=["site front", "no site front"])
def chain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("uplinkstreams")
    certs = UplinkPki(root / "pki")
    (root / "rec").mkdir()
    make_video(root / "rec" / f"cam_{stamp(T0)}.mp4", 4)
    services: list[BackgroundService] = []
    with start_camera() as cam:
        try:
            seed(root / "dev", sources=(MediaSource(token="main", name="Gate camera", rtsp_url=cam.url,
                                                    width=cam.width, height=cam.height),))
            save_recording_configs(root / "dev", [RecordingConfig(token="rec-a", source_token="main",
                                                                  folder=str(root / "rec"))])
            device, device_url = start_device(root / "dev")
            services.append(device)

            seed(root / "regional")
            add_lower(root / "regional", LowerSystem(prefix=SITE, uplink=SITE))
            uplink = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file])
            regional, regional_url = start_vss(root / "regional", VssOptions(rtsp="127.0.0.1:0", uplink=uplink,
                                                                             timeout=10, mirror_retry=0.3))
            services.append(regional)
            port = _announced(regional, r"cloud listening for uplinks on https://127\.0\.0\.1:(\d+)/")
            front = _announced(regional, r"VSS RTSP front on (rtsp://\S+)")

            seed_device(root / "site", certs, SITE, [(f"https://localhost:{port}/uplink", ("User",))])
            seed(root / "site")
            add_lower(root / "site", LowerSystem(prefix=CAM, url=f"{device_url}/onvif/device_service",
                                                 username=ADMIN[0], password=ADMIN[1]))
            own_front = "127.0.0.1:0" if request.param == "site front" else None
            site, site_url = start_vss(root / "site", VssOptions(rtsp=own_front, timeout=5, mirror_retry=0.3, settings=FAST))
            services.append(site)
            wait_until(lambda: _profiles(regional_url) == 200 and stream_uri(regional_url, f"{CAM}:main")[0] == 200,
                       30, interval=0.3, what="the camera through the site VSS's uplink")
            site_front = _announced(site, r"VSS RTSP front on (rtsp://\S+)") if own_front else None
            yield Chain(regional_url, front, site_url, site_front)
        finally:
            for service in reversed(services):
                service.stop()


def _uri(root: etree._Element) -> str:
    uri = answer(root).findtext("{*}Uri")
    assert uri, etree.tostring(root)[:2000]
    return uri


def test_stream_of_a_site_vss_on_an_uplink_plays_through_the_regional_front(chain: Chain) -> None:
    """ANX-B-1, GEN-3, STR-1: GetStreamUri through the regional VSS answers the regional front's path of the
    site VSS's uplink (asking twice gives one URI); ffmpeg with the regional VSS's user decodes the camera's
    frames over the uplink; without credentials the front refuses."""
    status, root = stream_uri(chain.regional, f"{CAM}:main")
    assert status == 200, root
    uri = _uri(root)
    assert re.fullmatch(rf"{re.escape(chain.front)}/devices/{SITE}/[a-z2-7]{{16}}", uri), uri
    assert _uri(stream_uri(chain.regional, f"{CAM}:main")[1]) == uri
    run = decode_frames(with_user(uri, ADMIN), 50)
    assert run.returncode == 0, run.stderr[-2000:]
    assert decoded_frames(run.stderr) >= 50
    refused = play(uri, 5)
    assert refused.returncode != 0 and "401" in refused.stderr


def test_rtsp_over_http_through_the_regional_vss(chain: Chain) -> None:
    """STR-2, ANX-B-1: RtspOverHttp through the regional VSS answers the same path on its HTTP port; ffmpeg
    tunnels RTSP over HTTP there (HTTP Digest of the regional VSS's user) and decodes the camera's frames."""
    status, root = stream_uri(chain.regional, f"{CAM}:main", "RtspOverHttp")
    assert status == 200, root
    uri = _uri(root)
    assert re.fullmatch(rf"{re.escape(chain.regional)}/devices/{SITE}/[a-z2-7]{{16}}", uri), uri
    run = play(with_user(uri, ADMIN), 30, transport="http")
    assert run.returncode == 0, run.stderr[-2000:]
    assert decoded_frames(run.stderr) >= 30


def test_replay_of_a_site_vss_on_an_uplink_anx_b_3(chain: Chain) -> None:
    """ANX-B-3: GetReplayUri of the device's recording through the regional VSS answers the regional front's
    path of the site VSS's uplink; ffmpeg decodes the recording through it."""
    body = (f'<trp:GetReplayUri xmlns:trp="{TRP}"><trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>'
            "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup>"
            f"<trp:RecordingToken>{CAM}:rec-a</trp:RecordingToken></trp:GetReplayUri>")
    status, root = soap(chain.regional, REPLAY_PATH, body)
    assert status == 200, etree.tostring(root)[:2000]
    uri = _uri(root)
    assert re.fullmatch(rf"{re.escape(chain.front)}/devices/{SITE}/[a-z2-7]{{16}}", uri), uri
    run = decode_frames(with_user(uri, ADMIN), 20)
    assert run.returncode == 0, run.stderr[-2000:]
    assert decoded_frames(run.stderr) >= 20



def test_site_vss_announces_streaming_over_uplink_str_5(chain: Chain) -> None:
    """STR-5: the site VSS has no media source of its own, but its uplinks relay its lower systems' streams, so
    its uplink service says StreamingOverUplink."""
    status, root = soap(chain.site, "/onvif/uplink_service", f'<tup:GetServiceCapabilities xmlns:tup="{TUP}"/>',
                        user=None)
    assert status == 200, etree.tostring(root)[:2000]
    assert root.find(f"{{*}}Body/{{{TUP}}}GetServiceCapabilitiesResponse/{{{TUP}}}Capabilities") \
        .get("StreamingOverUplink") == "true"


def test_site_vss_asked_directly_answers_its_own_front(chain: Chain) -> None:
    """ANX-B-1: a client of the site VSS itself (not over its uplink; an RTSP base header it sends counts
    for nothing) gets the site VSS's own front, or, where it runs none, ``Receiver/Action/NoRtspFront``."""
    token = etree.tostring(build_username_token(*ADMIN, datetime.now(UTC))).decode()
    envelope = (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}"><env:Header>{token}</env:Header><env:Body>'
                f"<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>{CAM}:main</tr2:ProfileToken>"
                "</tr2:GetStreamUri></env:Body></env:Envelope>")
    response = httpx.post(f"{chain.site}/onvif/media2_service", content=envelope, timeout=30,
                          headers={"content-type": "application/soap+xml", RTSP_BASE_HEADER: f"{chain.front}/devices/"
                                   f"{SITE}", "x-forwarded-host": "cloud.example"})
    status, root = response.status_code, etree.fromstring(response.content)
    if chain.site_front is None:
        assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:Action", "ter:NoRtspFront"])
    else:
        assert status == 200 and re.fullmatch(rf"{re.escape(chain.site_front)}/relay/[a-z2-7]{{16}}", _uri(root))
