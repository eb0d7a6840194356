"""Layer 7: ``iec62676 demo`` — an end-to-end run on loopback that a newcomer can read.

Part 1 drives a device's uplink configuration service directly with the zeep
client: capabilities, SetUplink, GetUplinks, the faults a vendor must handle
and access control. Part 2 is the cloud uplink: a cloud and three devices —
two with their own client certificates (native h2c-reverse), one over
WebSocket with an access token from an OAuth2 authorization server; the
devices dial out, the cloud calls their services *through the uplink* with
the same zeep client, the HTTP proxy lists them, then the cloud is killed and
restarted and the devices come back on their own. Part 3 is remote
management access: a lower VSS with a few hundred resources around a city,
reached through its uplink, answers a 100 m location query and then signals
an Offline change live. Part 4 is live video: a synthetic camera (GStreamer's
RTSP server, :mod:`.demo_camera`) behind a device, its stream URI asked with
Media2 through the cloud's HTTP proxy, and ffmpeg decoding frames from the
cloud's RTSP front. Part 5 is a hierarchy (clause 7.8.1): a regional VSS whose
lower system is that device re-exposes its resources and its camera under
remote tokens; a location query and Media2 at the VSS find the camera, and
ffmpeg decodes it through the VSS's RTSP relay. Part 6 is the forensic example
(clause 7.8.2) at the same VSS: ffmpeg records a few seconds of a test pattern
into the folder of a recording the device was configured with (edge storage:
the device replays what appears there), the video sources within 100 m are
asked, FindEvents over a time window scoped to the camera's remote token finds
the recording, GetReplayUri answers a URI on the VSS's RTSP front and ffmpeg
decodes the replay through it. Without GStreamer or ffmpeg, Parts 4, 5 and 6
print one line each saying what is missing and are skipped.
Every step prints what it shows; the run exits 0 only when every step behaved
as the standard says.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import zeep
from zeep.wsse.username import UsernameToken

from . import pki
from .client import SETTINGS, UplinkClient
from .demo_camera import HEIGHT, WIDTH, camera_missing, start_camera
from .domain.filters import LocationFilter, token_prefix
from .domain.media import MediaSource
from .domain.recordings import RecordingConfig
from .domain.registry import REGISTRY_FILE, ResourceRegistry
from .domain.resources import GeoLocation, Resource
from .errors import Iec62676Error
from .query import ResourceQueryClient
from .runtime.background import BackgroundService
from .runtime.cloud import CloudListener, DeviceInfo
from .runtime.cloud_server import CloudOptions, run_cloud
from .runtime.device import run_device
from .runtime.recording_files import save_recording_configs
from .runtime.zeep_transport import UplinkTransport
from .schemas import wsdl_path
from .services.media2 import TR2
from .services.recording import REPLAY_PATH, SEARCH_PATH, TRP, TSE
from .soap.fault import SoapFault
from .store import AuthServerConfig, DeviceStore
from .testing.authserver import DEFAULT_AUDIENCE, AuthServerOptions, OAuthClient, run_authserver
from .testing.sampledata import NANJING, generate
from .uplinkconfig import UplinkConfiguration
from .vss.lower import LowerStore, LowerSystem
from .vss.runtime import VssOptions, run_vss

Print = Callable[[str], None]

DEVICES = ("camera-0001", "camera-0002")
TOKEN_DEVICE = "camera-0003"
ALL_DEVICES = (*DEVICES, TOKEN_DEVICE)
ADMIN = ("admin", "admin-password")
VIEWER = ("viewer", "viewer-password")
#: The prefix under which the regional VSS of Part 5 exposes camera-0001.
LOWER_PREFIX = "site1"
#: Part 6: camera-0001's recording of its profile cam1, and the seconds of video recorded into it.
RECORDING = "rec1"
CLIP_SECONDS = 3


class DemoFailure(Iec62676Error):
    """A demo step did not behave as expected."""


def _expect_fault(call: Callable[[], object], subcodes: tuple[str, ...], out: Print) -> None:
    try:
        call()
    except SoapFault as fault:
        if tuple(fault.subcodes) != subcodes:
            raise DemoFailure(f"expected {subcodes}, got {fault}") from None
        out(f"    fault as expected: {fault}")
        return
    raise DemoFailure(f"expected the fault {'/'.join(subcodes)}, the call succeeded")


def _url(messages: list[str], pattern: str) -> str:
    for message in messages:
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    raise DemoFailure(f"no address matching {pattern!r} in {messages!r}")


@dataclass
class Material:
    ca: pki.CertKey
    folder: Path
    issuer: str = ""
    token_url: str = ""


def _pki(folder: Path) -> Material:
    ca = pki.make_ca("demo CA")
    ca.write(folder, "ca")
    pki.make_leaf(ca, "cloud.localhost", kind="server", sans=["localhost", "127.0.0.1"]).write(folder, "cloud")
    pki.make_ca("demo token signer").write(folder, "signer")
    return Material(ca=ca, folder=folder)


def _start_authserver(material: Material) -> BackgroundService:
    """An OAuth2 authorization server on loopback (TLS) that knows the token device (UPL-14)."""
    options = AuthServerOptions(listen="127.0.0.1:0", cert=material.folder / "cloud.pem",
                                key=material.folder / "cloud.key", signing_key=material.folder / "signer.key",
                                clients=[OAuthClient(TOKEN_DEVICE, "demo-secret", TOKEN_DEVICE)])
    service = BackgroundService(lambda stop, announce: run_authserver(options, stop, announce),
                                name="authorization server").start()
    base = _url(service.messages, r"on (https://\S+) \(")
    material.issuer = _url(service.messages, r"issuer (\S+),")
    material.token_url = f"{base}/token"
    return service


def _seed_device(data: Path, name: str, material: Material, cloud_port: int | None) -> None:
    cert = pki.make_leaf(material.ca, name, kind="client")
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        store.put_user(*VIEWER, "User")
        store.put_certificate(name, cert.cert_pem(), cert.key_pem())
        store.put_policy("cloud-ca", [material.ca.cert_pem()])
        if cloud_port is None:
            return
        if name == TOKEN_DEVICE:  # WebSocket uplink, access token instead of a client certificate
            store.put_auth_server(AuthServerConfig(token="demo-as", url=material.token_url, client_id=name,
                                                   client_secret="demo-secret", policy_id="cloud-ca"))
            uplink = UplinkConfiguration(remote_address=f"wss://localhost:{cloud_port}/uplink",
                                         user_level=("Operator",), authorization_server="demo-as",
                                         cert_path_validation_policy_id="cloud-ca")
        else:
            uplink = UplinkConfiguration(remote_address=f"https://localhost:{cloud_port}/uplink",
                                         user_level=("Operator",), certificate_id=name,
                                         cert_path_validation_policy_id="cloud-ca")
        store.put_uplink(uplink, max_uplinks=8)


def _start_device(data: Path, name: str) -> BackgroundService:
    return BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce),
                             name=name).start()


def _start_cloud(material: Material, listen: str, proxy: str) -> tuple[BackgroundService, CloudListener]:
    ready: list[CloudListener] = []
    options = CloudOptions(listen=listen, cert=material.folder / "cloud.pem", key=material.folder / "cloud.key",
                           client_cas=[material.folder / "ca.pem"], proxy=proxy, rtsp="127.0.0.1:0",
                           jwt_issuers=[material.issuer], jwt_audience=DEFAULT_AUDIENCE,
                           jwt_keys=f"{material.issuer}/jwks.json", jwt_keys_ca=[material.folder / "ca.pem"])
    service = BackgroundService(lambda stop, announce: run_cloud(options, stop, announce, ready=ready.append),
                                name="cloud", ready_after=3).start()
    return service, ready[0]


async def _devices(listener: CloudListener) -> list[DeviceInfo]:
    """The listener's device list, read on its own event loop."""
    return listener.devices()


def part_configuration(material: Material, tmp: Path, out: Print) -> None:
    out("Part 1 — the uplink configuration service, called directly")
    data = tmp / "standalone"
    _seed_device(data, "camera-0000", material, None)
    device = _start_device(data, "camera-0000")
    try:
        url = _url(device.messages, r"(http://\S+)")
        out(f"  {device.messages[0]}")
        admin = UplinkClient(url, username=ADMIN[0], password=ADMIN[1])
        caps = admin.get_service_capabilities()
        out(f"  GetServiceCapabilities: MaxUplinks={caps.max_uplinks} Protocols={' '.join(caps.protocols)}"
            f" AuthorizationModes={' '.join(caps.authorization_modes)}")
        remote = "https://127.0.0.1:9/uplink"
        admin.set_uplink(UplinkConfiguration(remote_address=remote, user_level=("Operator",),
                                             certificate_id="camera-0000", cert_path_validation_policy_id="cloud-ca",
                                             status="Connected"))
        for cfg in admin.get_uplinks():
            out(f"  GetUplinks: {cfg.remote_address} cert={cfg.certificate_id} level={' '.join(cfg.user_level)}"
                f" status={cfg.status} (the Status a client sends is ignored)")
        out("  Faults a client must handle (CFG-3, CFG-4):")
        _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
            remote_address="https://cloud.example.com/x", user_level=("User",), certificate_id="nope")),
            ("InvalidArgVal", "CertificateID"), out)
        _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
            remote_address="ftp://cloud.example.com/x", user_level=("User",), certificate_id="camera-0000")),
            ("InvalidArgs", "ProtocolNotSupported"), out)
        _expect_fault(lambda: admin.set_uplink(UplinkConfiguration(
            remote_address="https://cloud.example.com/x", user_level=("User",))),
            ("InvalidArgs", "MissingAuthentication"), out)
        _expect_fault(lambda: admin.delete_uplink("https://unknown.example.com/"), ("InvalidArgVal", "Address"), out)
        out("  Access control (SEC-1): a User may read but not write")
        viewer = UplinkClient(url, username=VIEWER[0], password=VIEWER[1])
        out(f"    viewer sees {len(viewer.get_uplinks())} uplink(s)")
        _expect_fault(lambda: viewer.delete_uplink(remote), ("NotAuthorized",), out)
        admin.delete_uplink(remote)
        out(f"  DeleteUplink: {len(admin.get_uplinks())} uplink(s) left")
    finally:
        device.stop()


def _show_through_uplink(cloud: CloudListener, service: BackgroundService, out: Print) -> None:
    for name in ALL_DEVICES:
        client = UplinkClient(f"http://{name}/onvif/uplink_service",
                              transport=UplinkTransport(cloud, name, service.loop))
        caps = client.get_service_capabilities()
        [cfg] = client.get_uplinks()
        out(f"  {name} via its uplink: MaxUplinks={caps.max_uplinks}, Protocols={' '.join(caps.protocols)},"
            f" uplink {cfg.remote_address} is {cfg.status}")
        if cfg.status != "Connected":
            raise DemoFailure(f"{name} reports {cfg.status} over a live uplink")


def part_uplink(material: Material, tmp: Path, out: Print) -> None:
    out("Part 2 — the cloud uplink: devices behind NAT dial out, the cloud calls them")
    authserver = _start_authserver(material)
    out(f"  {authserver.messages[0].split(' (')[0]}")
    cloud, listener = _start_cloud(material, "127.0.0.1:0", "127.0.0.1:0")
    devices: list[BackgroundService] = []
    try:
        port = int(_url(cloud.messages, r"https://[^:]+:(\d+)/"))
        proxy = _url(cloud.messages, r"(http://\S+)/devices")
        for message in cloud.messages:
            out(f"  {message}")
        missing = camera_missing()
        for name in ALL_DEVICES:
            data = tmp / name
            _seed_device(data, name, material, port)
            if name == DEVICES[0] and missing is None:
                _configure_recording(data)
            devices.append(_start_device(data, name))
        for name in ALL_DEVICES:
            cloud.call(functools.partial(listener.wait_for, name, timeout=30), timeout=35)
        connected = cloud.call(lambda: _devices(listener))
        out("  all devices connected: " + ", ".join(f"{d.device_id} ({d.auth_mode})" for d in connected))
        _show_through_uplink(listener, cloud, out)
        out("  UserLevel of the uplink applies (UPL-12): an Operator uplink may not write")
        operator = UplinkClient(f"http://{DEVICES[0]}/onvif/uplink_service",
                                transport=UplinkTransport(listener, DEVICES[0], cloud.loop))
        _expect_fault(lambda: operator.delete_uplink(f"https://localhost:{port}/uplink"), ("NotAuthorized",), out)
        with urllib.request.urlopen(f"{proxy}/devices", timeout=10) as response:
            listing = json.loads(response.read())
        out(f"  proxy GET /devices: {[(d['id'], d['auth_mode']) for d in listing]}")
        out("  killing the cloud …")
        cloud.stop()
        direct = UplinkClient(_url(devices[0].messages, r"(http://\S+)"), username=ADMIN[0], password=ADMIN[1])
        [cfg] = direct.get_uplinks()
        out(f"  {DEVICES[0]} (asked directly) reports {cfg.status}: {cfg.error}")
        out("  restarting the cloud on the same port …")
        cloud, listener = _start_cloud(material, f"127.0.0.1:{port}", proxy.rsplit("/", 1)[-1].replace("//", ""))
        for name in ALL_DEVICES:
            cloud.call(functools.partial(listener.wait_for, name, timeout=60), timeout=65)
        out("  all devices came back on their own (individual ascending backoff, UPL-9)")
        _show_through_uplink(listener, cloud, out)
        part_resources(listener, cloud, tmp / DEVICES[0], out)
        part_video(cloud, tmp / DEVICES[0], _url(devices[0].messages, r"(http://\S+)"), missing, out)
    finally:
        for device in devices:
            device.stop()
        cloud.stop()
        authserver.stop()


def part_resources(cloud: CloudListener, service: BackgroundService, data: Path, out: Print) -> None:
    """Clause 7 through the uplink: a location query, then a live Offline change (RQ-4 … RQ-6, RQ-10)."""
    out(f"Part 3 — remote management access: {DEVICES[0]} acts as a lower VSS with resources around Nanjing")
    with ResourceRegistry(data / REGISTRY_FILE) as registry:
        registry.upsert_many(generate(400))
        total = registry.count()
    out(f"  {total} resources loaded into its registry (what `iec62676 device resources load` does)")
    client = ResourceQueryClient(f"http://{DEVICES[0]}/onvif/event_service",
                                 transport=UplinkTransport(cloud, DEVICES[0], service.loop), pull_timeout=5.0)
    near = LocationFilter(lon=NANJING.lon, lat=NANJING.lat, radius=100.0)
    with client.subscribe(["MediaProfile"], location=near) as subscription:
        found = list(subscription.resources())
        out(f"  MediaProfiles within 100 m of ({NANJING.lat}, {NANJING.lon}), asked through the uplink:")
        for resource in found[:5]:
            where = resource.location
            out(f"    {resource.token}  {resource.name}  at ({where.lat:.5f}, {where.lon:.5f})" if where else
                f"    {resource.token}  {resource.name}")
        if len(found) > 5:
            out(f"    … {len(found) - 5} more")
        if not found:
            raise DemoFailure("no resource within 100 m of the city centre")
        prefix = token_prefix(found[0].token) or ""
        with ResourceRegistry(data / REGISTRY_FILE) as other_process:
            other_process.set_prefix_offline(prefix, True)
        out(f"  device {prefix} goes offline (written by another connection, as the CLI would) …")
        for _ in range(6):
            changes = [c for c in subscription.pull() if c.resource.offline]
            if changes:
                for change in changes[:3]:
                    out(f"    live: {change.operation} {change.resource.token} Offline={change.resource.offline}")
                return
            out("    (empty pull at its timeout: the server is alive, RQ-10)")
        raise DemoFailure("the Offline change did not arrive")


def part_video(service: BackgroundService, data: Path, device_url: str, missing: str | None, out: Print) -> None:
    """Parts 4, 5 and 6 play the synthetic camera and a recording; when ``missing`` names what this host lacks
    (:func:`.demo_camera.camera_missing`), each says so."""
    if missing is not None:
        for part in (PART_4, PART_5, PART_6):
            out(part)
            out(f"  skipped: {missing} not installed")
        return
    with start_camera() as camera:
        part_live_video(service, data, camera.url, out)
        part_hierarchy(data, device_url, out)


PART_4 = f"Part 4 — live video: a synthetic camera behind {DEVICES[0]}, played through the cloud"
PART_5 = f"Part 5 — a hierarchy (clause 7.8.1): a regional VSS re-exposes {DEVICES[0]} under the prefix {LOWER_PREFIX}"
PART_6 = f"Part 6 — forensic (clause 7.8.2): a recording of {DEVICES[0]} found and replayed at the regional VSS"


def part_live_video(service: BackgroundService, data: Path, camera_url: str, out: Print) -> None:
    """Live video through the uplink (STR-1): camera -> device -> uplink -> cloud RTSP front -> ffmpeg."""
    out(PART_4)
    proxy = _url(service.messages, r"(http://\S+)/devices")
    with DeviceStore(data) as store:
        store.put_media_source(MediaSource(token="cam1", name="Demo camera", rtsp_url=camera_url,
                                           width=WIDTH, height=HEIGHT))
    out(f"  media source cam1 -> {camera_url} (what `iec62676 device media add` does)")
    media2 = zeep.Client(str(wsdl_path("media2")), settings=SETTINGS,
                         transport=zeep.Transport(timeout=30, operation_timeout=30))
    uri = media2.create_service(f"{{{TR2}}}Media2Binding", f"{proxy}/devices/{DEVICES[0]}/onvif/media2_service"
                                ).GetStreamUri(Protocol="RTSP", ProfileToken="cam1")
    out(f"  Media2 GetStreamUri through the cloud's HTTP proxy: {uri}")
    out(f"  ffmpeg decoded {_decode(uri, 100)} from the camera, through {DEVICES[0]}, its uplink and the cloud's "
        "RTSP front")


def part_hierarchy(device_data: Path, device_url: str, out: Print) -> None:
    """Clause 7.8.1 one level up (GEN-1, ADR-6, ANX-B-1): a VSS whose lower system is the camera device answers
    a location query over the mirrored resources and GetStreamUri under the remote token, relayed."""
    out(PART_5)
    vss_data = device_data.parent / "regional-vss"
    with DeviceStore(vss_data) as store:
        store.put_user(*ADMIN, "Administrator")
    lower_url = "{0.scheme}://{0.netloc}/onvif/device_service".format(urlsplit(device_url))
    with LowerStore(vss_data) as lowers:
        lowers.put(LowerSystem(prefix=LOWER_PREFIX, url=lower_url, username=ADMIN[0], password=ADMIN[1]))
    out(f"  lower system {LOWER_PREFIX} -> {lower_url} (what `iec62676 vss lower add` does)")
    vss = BackgroundService(lambda stop, announce: run_vss(vss_data, "127.0.0.1:0", stop, announce,
                                                           options=VssOptions(rtsp="127.0.0.1:0")),
                            name="regional VSS", ready_after=2).start()
    try:
        base = _url(vss.messages, r"device serving (http://[^/\s]+)")
        out(f"  regional VSS serving {base} (what `iec62676 vss serve` does)")
        found = _nearby(base, "MediaProfile", bool)
        out(f"  {len(found)} MediaProfiles within 100 m, asked at the regional VSS (mirrored from {DEVICES[0]}; "
            f"remote tokens keep their prefix, e.g. {found[0]})")
        media2 = _service(base, "media2", f"{{{TR2}}}Media2Binding", "/onvif/media2_service")
        tokens = [profile.token for profile in media2.GetProfiles()]
        token = f"{LOWER_PREFIX}:cam1"
        if token not in tokens:
            raise DemoFailure(f"GetProfiles at the regional VSS lists {tokens}, not {token}")
        out(f"  Media2 GetProfiles at the regional VSS: {', '.join(tokens)}")
        uri = media2.GetStreamUri(Protocol="RTSP", ProfileToken=token)
        out(f"  GetStreamUri({token}) at the regional VSS: {uri}")
        played = uri.replace("rtsp://", f"rtsp://{ADMIN[0]}:{ADMIN[1]}@", 1)  # the VSS's front asks for its users
        out(f"  ffmpeg decoded {_decode(played, 50)} through the regional VSS's relay from the camera of {DEVICES[0]}")
        part_forensic(base, device_data, out)
    finally:
        vss.stop()


def _configure_recording(data: Path) -> None:
    """The recording of Part 6 (ANX-B-5: made by the profile cam1), configured as ``iec62676 recordings add`` does
    before the device starts — a device starts its replay server for the recordings configured — with an empty
    folder that Part 6 records into (the store looks at the folder again when it changes)."""
    folder = _recording_folder(data)
    folder.mkdir()
    save_recording_configs(data, [RecordingConfig(token=RECORDING, source_token="cam1", folder=str(folder),
                                                  name="Demo camera")])


def _recording_folder(data: Path) -> Path:
    return data.parent / f"{data.name}-recordings"


def _record(folder: Path, seconds: int) -> Path:
    """``seconds`` of ffmpeg's test pattern as H.264 in ``folder``, named with its UTC start (which is now minus
    ``seconds``); written beside and moved in, so the store never probes a half-written file."""
    start = datetime.fromtimestamp(int(time.time()) - seconds, UTC)
    path = folder / f"cam1_{start:%Y%m%dT%H%M%SZ}.mp4"
    partial = folder.parent / f"{path.name}.part.mp4"
    proc = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                           "testsrc=size=320x240:rate=10", "-t", str(seconds), "-c:v", "libx264", "-preset",
                           "ultrafast", "-pix_fmt", "yuv420p", "-g", "10", "-y", str(partial)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise DemoFailure(f"ffmpeg could not record: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    os.replace(partial, path)
    return path


def part_forensic(base: str, device_data: Path, out: Print) -> None:
    """Clause 7.8.2 at the regional VSS of Part 5 (GEN-1, ADR-6, ANX-B-3, RQ-5): the video sources near a point,
    FindEvents over a time window scoped to the remote token found, GetReplayUri for the recording found, and
    ffmpeg decodes the replay through the VSS's RTSP front."""
    out(PART_6)
    clip = _record(_recording_folder(device_data), CLIP_SECONDS)
    out(f"  ffmpeg recorded {CLIP_SECONDS} s of a test pattern into recording {RECORDING} of {DEVICES[0]}: {clip.name}"
        " (configured as `iec62676 recordings add` does, before the device started)")
    source = f"{LOWER_PREFIX}:cam1"  # a registry holds remote tokens: the device names cam1 with its own prefix
    with ResourceRegistry(device_data / REGISTRY_FILE) as registry:
        registry.upsert_many([Resource(source, "VideoSource", name="Demo camera",
                                       location=GeoLocation(NANJING.lon, NANJING.lat))])
    out(f"  video source {source} placed at the city centre in {DEVICES[0]}'s registry")
    found = _nearby(base, "VideoSource", lambda tokens: source in tokens)
    out(f"  {len(found)} VideoSources within 100 m, asked at the regional VSS; {source} is the demo camera")
    search = _service(base, "search", f"{{{TSE}}}SearchBinding", SEARCH_PATH)
    now = datetime.now(UTC).replace(microsecond=0)
    window = (now - timedelta(minutes=5), now + timedelta(minutes=1))
    token = search.FindEvents(StartPoint=window[0], EndPoint=window[1], Scope={"IncludedSources": [{"Token": source}]},
                              SearchFilter={}, IncludeStartState=False, KeepAliveTime=timedelta(seconds=30))
    try:
        results = search.GetEventSearchResults(SearchToken=token, WaitTime=timedelta(seconds=5))
    finally:
        search.EndSearch(SearchToken=token)
    hits = sorted({(r.RecordingToken, r.TrackToken, r.Time) for r in results.Result or ()}, key=lambda h: h[2])
    if not hits:
        raise DemoFailure(f"FindEvents scoped to {source} found nothing in {window[0]:%H:%M:%S}–{window[1]:%H:%M:%S}")
    recording = hits[0][0]
    out(f"  FindEvents {window[0]:%H:%M:%S}–{window[1]:%H:%M:%S} UTC scoped to {source} (search {token}): "
        + ", ".join(f"{rec} track {track} at {when:%H:%M:%S}" for rec, track, when in hits[:4]))
    replay = _service(base, "replay", f"{{{TRP}}}ReplayBinding", REPLAY_PATH)
    uri = replay.GetReplayUri(StreamSetup={"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                              RecordingToken=recording)
    out(f"  GetReplayUri({recording}) at the regional VSS: {uri}")
    played = uri.replace("rtsp://", f"rtsp://{ADMIN[0]}:{ADMIN[1]}@", 1)
    deadline = time.monotonic() + 15  # the replay server mounts a new file within a few seconds
    while True:
        try:
            decoded = _decode(played, 20)
            break
        except DemoFailure:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    out(f"  ffmpeg decoded {decoded} of the replay from its start through the regional VSS's RTSP front "
        "(ffmpeg cannot ask for a Range: clock= time)")


def _nearby(base: str, kind: str, done: Callable[[list[str]], bool]) -> list[str]:
    """The tokens of the ``kind`` resources within 100 m of the city centre at the VSS on ``base``, asked again
    until ``done`` says they are complete (the VSS mirrors its lower systems' resources once it reaches them)."""
    client = ResourceQueryClient(f"{base}/onvif/event_service", username=ADMIN[0], password=ADMIN[1],
                                 pull_timeout=5.0)
    near = LocationFilter(lon=NANJING.lon, lat=NANJING.lat, radius=100.0)
    deadline = time.monotonic() + 30
    while True:
        with client.subscribe([kind], location=near) as subscription:
            found = [resource.token for resource in subscription.resources()]
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise DemoFailure(f"the regional VSS did not mirror the {kind}s of its lower system within 30 s")
        time.sleep(0.5)


def _service(base: str, wsdl: str, binding: str, path: str) -> zeep.proxy.ServiceProxy:
    """A zeep service for ``binding`` of ``wsdl`` at ``base`` + ``path``, as the VSS's Administrator."""
    service: zeep.proxy.ServiceProxy = zeep.Client(
        str(wsdl_path(wsdl)), settings=SETTINGS, wsse=UsernameToken(*ADMIN, use_digest=True),
        transport=zeep.Transport(timeout=30, operation_timeout=30)).create_service(binding, base + path)
    return service


def _decode(uri: str, frames: int) -> str:
    """Decode ``frames`` video frames of ``uri`` with ffmpeg; e.g. ``100 frames (h264 640x360)``."""
    proc = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "tcp", "-i", uri,
                           "-frames:v", str(frames), "-f", "null", "-"], capture_output=True, text=True, timeout=120,
                          check=False)
    decoded = [int(n) for n in re.findall(r"frame=\s*(\d+)", proc.stderr)]
    video = re.search(r"Video: (\w+).*?, (\d+)x(\d+)", proc.stderr)
    if proc.returncode != 0 or not decoded or decoded[-1] < frames or video is None:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DemoFailure(f"ffmpeg could not play {uri}: {last}")
    return f"{decoded[-1]} frames ({video[1]} {video[2]}x{video[3]})"


def run(out: Print = print) -> int:
    """Run the demo; 0 when every step behaved as expected."""
    with tempfile.TemporaryDirectory(prefix="iec62676-demo-") as folder:
        tmp = Path(folder)
        material = _pki(tmp)
        part_configuration(material, tmp, out)
        part_uplink(material, tmp, out)
    out("demo finished: every step behaved as the standard says")
    return 0
