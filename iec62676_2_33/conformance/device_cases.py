"""Conformance kit: the cases run against a device under test (TEST-1; UPL-1 … UPL-3, UPL-6 … UPL-13,
UPL-15, UPL-16, CFG-1 … CFG-5, SEC-1, SEC-3, SEC-4, STR-1).

The first four are the draft ONVIF uplink device test cases (onvif/testspecs,
branch ``uplink``), brought to the current standard: every SetUplink names a
client certificate from the device's keystore, since a configuration with
neither CertificateID nor AuthorizationServer now faults
(``ter:MissingAuthentication``). The ``EXT-*`` cases check what the draft leaves
out, each on the wire or through the device's own services. Every wait is
bounded; ``long`` cases (the 30 s silence rule, the reconnection intervals)
take as long as the rule they test and can be selected alone with ``--only``.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import shutil
import subprocess
import time
from urllib.parse import urlsplit

from lxml import etree

from ..namespaces import TDS, TUP
from ..services.media2 import TR2
from ..soap.fault import SoapFault
from .device_session import DeviceSession, wait_for
from .registry import Evidence, Registry
from .soapcheck import SoapAnswer
from .wire import ACK, PING, SETTINGS, Connection

DEVICE_CASES = Registry("device")
case = DEVICE_CASES.case

#: Seconds to wait for a PING ACK.
PING_TIMEOUT = 5.0
#: Seconds each bad cloud certificate is offered.
CERT_WINDOW = 8.0
#: UPL-9 gives 30 s as the example cap; intervals must level off at or below this.
BACKOFF_CAP_LIMIT = 30.0
#: Relative timing slack when comparing reconnection intervals.
BACKOFF_SLACK = 0.15
#: EXT-FAULTS fills the device up to MaxUplinks (and one beyond) only when it is at most this.
MAX_UPLINKS_PROBED = 16


def answered(ev: Evidence, answer: SoapAnswer, operation: str, response: str) -> SoapAnswer:
    ev.note(f"{operation} answer (HTTP {answer.status})", answer.text)
    ev.check(answer.fault is None, f"{operation} faulted: {answer.fault.chain() if answer.fault else ''} "
                                   f"{answer.fault.reason if answer.fault else ''}".strip())
    ev.check(answer.status == 200 and answer.name() == response,
             f"{operation} was not answered with {response} (HTTP {answer.status}, {answer.name()})")
    return answer


def _redacted(head: str) -> str:
    """The request head with credentials (an Authorization value, an access_token parameter) cut out."""
    head = re.sub(r"(?im)^(authorization:\s*\S+)\s+(\S+)", lambda m: f"{m[1]} <{len(m[2])} characters>", head)
    return re.sub(r"(access_token=)[^&\s]+", r"\1<redacted>", head)


def note_connection(ev: Evidence, conn: Connection, label: str = "connection") -> None:
    ev.note(f"{label}: request head from {conn.peer} ({conn.tls_version})",
            _redacted((conn.head or bytes(conn.inbound[:300])).decode("latin-1")))
    ev.note(f"{label}: the tool answered", conn.answer_line())


def device_xaddr(s: DeviceSession) -> str:
    return s.xaddrs().get(TDS, s.target.dut)


def _call_then_delete(s: DeviceSession, ev: Evidence, conn: Connection) -> None:
    """GetDeviceInformation over the uplink ``conn``, then DeleteUplink: the device must close ``conn`` in time."""
    answered(ev, s.tunnel(s.main, device_xaddr(s), TDS, "GetDeviceInformation"), "GetDeviceInformation",
             "GetDeviceInformationResponse")
    s.delete_uplink(s.main.url())
    try:
        s.wait_closed(conn, s.target.notice_timeout)
    except TimeoutError:
        ev.fail(f"the device kept the uplink open {s.target.notice_timeout:g} s after DeleteUplink")


# ---------------------------------------------------------------- the four draft cases

@case("UPLINK-1-1-1", "connect and disconnect", "TEST-1", "UPL-1", "UPL-2", "UPL-3", "UPL-16", "CFG-3", "CFG-4")
def connect_and_disconnect(s: DeviceSession, ev: Evidence) -> None:
    """Clear the uplinks, SetUplink to the tool's cloud, GetDeviceInformation over the uplink,
    DeleteUplink: the device must disconnect."""
    ev.note("deleted configurations (Annex A.2)", s.clear_uplinks() or "none")
    conn = s.connect()
    note_connection(ev, conn)
    _call_then_delete(s, ev, conn)
    ev.note("after DeleteUplink", "the device closed the uplink")


@case("UPLINK-2-1-1", "connect and stream (Media2, RtspOverHttp, H.264)", "TEST-1", "STR-1", "UPL-16")
def connect_and_stream(s: DeviceSession, ev: Evidence) -> None:
    """GetProfiles and GetStreamUri (RtspOverHttp) over the uplink, then decode H.264 through it."""
    media = s.xaddrs().get(TR2)
    if media is None:
        ev.skip("the device lists no Media2 service")
    s.connect()
    profiles = answered(ev, s.tunnel(s.main, media, TR2, "GetProfiles"), "GetProfiles", "GetProfilesResponse")
    assert profiles.body is not None
    tokens = [p.get("token") for p in profiles.body.findall(f"{{{TR2}}}Profiles") if p.get("token")]
    if not tokens:
        ev.skip("the device has no media profile (GetProfiles over the uplink listed none)")
    inner = f"<m:Protocol>RtspOverHttp</m:Protocol><m:ProfileToken>{tokens[0]}</m:ProfileToken>"
    answer = answered(ev, s.tunnel(s.main, media, TR2, "GetStreamUri", inner), "GetStreamUri",
                      "GetStreamUriResponse")
    assert answer.body is not None
    uri = answer.body.findtext(f"{{{TR2}}}Uri") or ""
    ev.check(uri, "GetStreamUriResponse carries no Uri")
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        ev.skip(f"GetStreamUri answered {uri}; decoding the stream needs ffprobe (FFmpeg) on the PATH")
    token = urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]
    probed = _probe_through_uplink(s, ffprobe, token)
    ev.note("ffprobe through the uplink", probed.stdout + probed.stderr[-1500:])
    ev.check(probed.returncode == 0 and "h264" in probed.stdout,
             f"no H.264 video came through the uplink (ffprobe exit {probed.returncode})")


def _probe_through_uplink(s: DeviceSession, ffprobe: str, token: str) -> subprocess.CompletedProcess[str]:
    """ffprobe on the RTSP front of the tool's cloud, which tunnels the session over the uplink."""
    from ..runtime.http_server import bind_listen
    from ..runtime.rtsp_front import RtspFront
    from ..transport.tcp import start_tcp_server

    assert s.main.listener is not None
    listener = s.main.listener
    sock = bind_listen("127.0.0.1", 0)
    port = sock.getsockname()[1]

    async def start() -> object:
        return await start_tcp_server(RtspFront(listener).handle, sock)

    server = s.cloud.call(start)
    try:
        url = f"rtsp://127.0.0.1:{port}/devices/{s.enrolment().device_id}/{token}"
        return subprocess.run([ffprobe, "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
                               "stream=codec_name,width,height", "-of", "csv=p=0", url],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        async def stop() -> None:
            await server.aclose()  # type: ignore[attr-defined]

        s.cloud.call(stop)


@case("UPLINK-3-1-1", "client certificate for uplink authentication", "TEST-1", "UPL-13", "PROV-1")
def client_certificate(s: DeviceSession, ev: Evidence) -> None:
    """The uplink's certificate from the keystore (through the Security service): the device connects
    with it, and the connecting certificate's CN is that certificate's."""
    security = s.security()
    if security is None:
        ev.fail("the device lists no Security (advancedsecurity) service: its keystore cannot be used")
    ev.note("deleted configurations (Annex A.2)", s.clear_uplinks() or "none")
    cred = s.enrolment()
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    chosen = None
    for item in security.GetAllCertificates() or ():
        if str(item.CertificateID) == cred.certificate_id:
            chosen = x509.load_der_x509_certificate(item.CertificateContent)
    ev.check(chosen is not None, f"GetAllCertificates does not list the uplink's certificate {cred.certificate_id}")
    assert chosen is not None
    names = chosen.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    ev.note("keystore certificate", f"{cred.certificate_id}: CN={cn}")
    conn = s.connect()
    note_connection(ev, conn)
    ev.check(conn.identity == cn, f"the device connected with CN {conn.identity!r}, not the configured "
                                  f"certificate's {cn!r}")
    _call_then_delete(s, ev, conn)


def _capabilities(element: etree._Element | None) -> dict[str, str] | None:
    if element is None:
        return None
    return {k: " ".join(v.split()) for k, v in sorted(element.attrib.items())}


@case("UPLINK-4-1-1", "GetServices and uplink GetServiceCapabilities agree", "TEST-1", "CFG-5")
def capabilities_consistency(s: DeviceSession, ev: Evidence) -> None:
    """GetServices without capabilities has none for the uplink service; with them, they equal
    what the uplink service's GetServiceCapabilities answers."""
    def uplink_service(answer: SoapAnswer) -> etree._Element:
        ev.check(answer.fault is None and answer.body is not None, "GetServices failed")
        assert answer.body is not None
        for service in answer.body:
            if (service.findtext(f"{{{TDS}}}Namespace") or "").strip() == TUP:
                return service
        ev.fail(f"GetServices lists no service with Namespace {TUP}")
        raise AssertionError  # unreachable

    without = s.get_services(False)
    ev.note("GetServices IncludeCapability=false", without.text)
    ev.check(uplink_service(without).find(f"{{{TDS}}}Capabilities") is None,
             "GetServices without IncludeCapability carries Capabilities for the uplink service")
    with_caps = s.get_services(True)
    ev.note("GetServices IncludeCapability=true", with_caps.text)
    service = uplink_service(with_caps)
    listed = _capabilities(service.find(f"{{{TDS}}}Capabilities/{{{TUP}}}Capabilities"))
    ev.check(listed is not None, "GetServices with IncludeCapability has no tup:Capabilities for the uplink service")
    xaddr = (service.findtext(f"{{{TDS}}}XAddr") or "").strip()
    answer = answered(ev, s.post(xaddr, TUP, "GetServiceCapabilities"), "GetServiceCapabilities",
                      "GetServiceCapabilitiesResponse")
    assert answer.body is not None
    direct = _capabilities(answer.body.find(f"{{{TUP}}}Capabilities"))
    ev.note("compared", f"GetServices: {listed}\nGetServiceCapabilities: {direct}")
    ev.check(listed == direct, f"GetServices lists {listed}, GetServiceCapabilities answers {direct}")


# ---------------------------------------------------------------- extended cases: the wire

@case("EXT-UPGRADE", "the exact upgrade request over TLS", "UPL-1", "UPL-2", "UPL-6")
def upgrade_request(s: DeviceSession, ev: Evidence) -> None:
    """TLS 1.2 or later, then ``GET <path of RemoteAddress> HTTP/1.1`` with ``Connection: Upgrade``,
    ``Upgrade: h2c-reverse``, the Host of the RemoteAddress and no body."""
    s.set_uplink(s.main.url())

    def latest() -> Connection | None:
        return next((c for c in reversed(list(s.main.connections))
                     if c.head is not None or c.closed_at is not None or c.switched_at is not None), None)

    try:
        conn = wait_for(latest, s.target.connect_timeout, "the device to connect")
    except TimeoutError:
        opened = next(reversed(list(s.main.connections)), None)
        ev.fail("the device made no connection to the tool's cloud" if opened is None else
                f"the device completed TLS but sent no upgrade request; its first bytes: {opened.first_bytes()}")
    note_connection(ev, conn)
    ev.check(conn.tls_version in ("TLSv1.2", "TLSv1.3"), f"TLS version {conn.tls_version} is below 1.2")
    if conn.head is None or not conn.head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1"):
        ev.fail(f"the device sent no HTTP/1.1 upgrade request after TLS; its first bytes: {conn.first_bytes()} "
                f"(the tool answered {conn.answer_line()!r})")
    line, _, rest = conn.head.decode("latin-1").partition("\r\n")
    fields: dict[str, list[str]] = {}
    for raw in rest.split("\r\n"):
        if ":" in raw:
            name, _, value = raw.partition(":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    expected_path = urlsplit(s.main.url()).path
    ev.check(line == f"GET {expected_path} HTTP/1.1", f"request line {line!r}, expected 'GET {expected_path} HTTP/1.1'")
    connection = [t.strip().lower() for v in fields.get("connection", []) for t in v.split(",")]
    ev.check("upgrade" in connection, f"Connection header {fields.get('connection')} lacks 'Upgrade'")
    ev.check(fields.get("upgrade") == ["h2c-reverse"], f"Upgrade header {fields.get('upgrade')}, "
                                                       "expected exactly ['h2c-reverse']")
    netloc = urlsplit(s.main.url()).netloc
    ev.check(fields.get("host", [""])[0].lower() in (netloc.lower(), netloc.rsplit(":", 1)[0].lower()),
             f"Host header {fields.get('host')} does not name {netloc}")
    ev.check(not fields.get("transfer-encoding") and fields.get("content-length", ["0"]) == ["0"],
             "the upgrade request carries a body")
    ev.check(conn.switched_at is not None, f"the tool did not switch protocols: it answered {conn.answer_line()!r}")


@case("EXT-PREFACE", "HTTP/2 roles and preface order after the 101", "UPL-3", "UPL-15")
def preface_order(s: DeviceSession, ev: Evidence) -> None:
    """After the 101 the cloud sends the client preface; the device answers as the HTTP/2 server:
    its first frame is SETTINGS (no client magic), and it acknowledges the cloud's SETTINGS."""
    conn = s.connect()
    note_connection(ev, conn)
    try:
        wait_for(lambda: any(f.type == SETTINGS and f.flags & ACK for f in conn.frames), 5.0,
                 "the device's SETTINGS ACK")
    except TimeoutError:
        pass
    frames = conn.frames
    ev.note("frames from the device", "\n".join(f.describe() for f in frames[:20]) or "(none)")
    after_head = bytes(conn.inbound).split(b"\r\n\r\n", 1)[-1]
    ev.check(not after_head.startswith(b"PRI "), "the device sent the HTTP/2 client preface: it took the client "
                                                 "role, but after the 101 the device is the HTTP/2 server")
    ev.check(frames, "the device sent no HTTP/2 frame after the 101")
    first = frames[0]
    ev.check(first.type == SETTINGS and not first.flags & ACK and first.stream_id == 0,
             f"the device's first frame is {first.describe()}, not its SETTINGS")
    ev.check(any(f.type == SETTINGS and f.flags & ACK for f in frames),
             "the device did not acknowledge the cloud's SETTINGS within 5 s")


@case("EXT-PING", "PING answered over the uplink", "UPL-7", "UPL-15")
def ping_answered(s: DeviceSession, ev: Evidence) -> None:
    """The cloud sends PING with a random payload; the device answers PING ACK with that payload."""
    conn = s.connect()
    channel = s.cloud.channel(s.main, s.enrolment().device_id)
    ev.check(channel is not None, "the device is not connected")
    assert channel is not None
    opaque = secrets.token_bytes(8)

    async def ping() -> None:
        channel.role.ping(opaque)
        channel.driver.kick()

    sent = time.monotonic()
    s.cloud.call(ping)
    ev.note("PING sent", opaque.hex())
    try:
        ack = wait_for(lambda: next((f for f in conn.frames if f.type == PING and f.flags & ACK
                                     and f.payload == opaque), None), PING_TIMEOUT, "the PING ACK")
    except TimeoutError:
        ev.fail(f"no PING ACK with payload {opaque.hex()} within {PING_TIMEOUT:g} s")
    ev.note("PING ACK", f"{ack.describe()} after {ack.at - sent:.3f} s")


@case("EXT-WSS", "WebSocket uplink when Protocols lists wss", "UPL-4", "UPL-5")
def websocket_uplink(s: DeviceSession, ev: Evidence) -> None:
    """A device whose Protocols capability lists ``wss`` connects to a wss RemoteAddress with the WebSocket
    upgrade (subprotocol h2c-reverse) and serves requests through it."""
    caps = s.uplink().get_service_capabilities()
    ev.note("Protocols", " ".join(caps.protocols))
    if "wss" not in caps.protocols:
        ev.skip("the device does not list wss among its Protocols")
    https, wss = s.main.url(), "wss://" + s.main.url().split("://", 1)[1]
    s.enrolment()
    if s.status(https) is not None:
        s.delete_uplink(https)  # one identity, one uplink at a time on this endpoint
    try:
        since = time.monotonic()
        s.set_uplink(wss)
        conn = s.wait_connected(s.main, since)
        note_connection(ev, conn)
        kind = getattr(conn.request, "kind", None)
        ev.check(kind == "websocket", f"the device asked for a {kind!r} upgrade on a wss RemoteAddress")
        protocols = next((v for k, v in getattr(conn.request, "headers", ()) if k == "sec-websocket-protocol"), "")
        ev.check("h2c-reverse" in protocols, f"Sec-WebSocket-Protocol {protocols!r} lacks h2c-reverse")
        answered(ev, s.tunnel(s.main, device_xaddr(s), TDS, "GetDeviceInformation"), "GetDeviceInformation",
                 "GetDeviceInformationResponse")
    finally:
        if s.status(wss) is not None:
            s.delete_uplink(wss)
        s.connect()


# ---------------------------------------------------------------- extended cases: services

@case("EXT-USERLEVEL", "UserLevel enforced over the uplink", "UPL-12", "SEC-1", "SEC-3", "SEC-4")
def user_level(s: DeviceSession, ev: Evidence) -> None:
    """With UserLevel User, READ_SYSTEM (GetUplinks) is answered over the uplink and WRITE_SYSTEM
    (DeleteUplink) is refused with env:Sender/ter:NotAuthorized, without authentication headers."""
    conn = s.connect(user_level=("User",))
    note_connection(ev, conn)
    uplink_xaddr = s.xaddrs()[TUP]
    try:
        answered(ev, s.tunnel(s.main, uplink_xaddr, TUP, "GetUplinks"), "GetUplinks (READ_SYSTEM)",
                 "GetUplinksResponse")
        probe = "https://conformance-probe.invalid/uplink"
        answer = s.tunnel(s.main, uplink_xaddr, TUP, "DeleteUplink", f"<m:RemoteAddress>{probe}</m:RemoteAddress>")
        ev.note(f"DeleteUplink (WRITE_SYSTEM) answer (HTTP {answer.status})", answer.text)
        if answer.fault is None:
            ev.fail("DeleteUplink (WRITE_SYSTEM) was executed over an uplink whose UserLevel is User")
        ev.check(answer.fault.code == "Sender" and "NotAuthorized" in answer.fault.subcodes,
                 f"DeleteUplink over a User uplink answered {answer.fault.chain()}: it was not refused as "
                 "env:Sender/ter:NotAuthorized (the UserLevel was not applied)")
    finally:
        s.connect()  # back to Administrator for the following cases


def _expect_fault(s: DeviceSession, ev: Evidence, what: str, call: object, expected: tuple[str, ...],
                  address: str | None) -> str | None:
    try:
        call()  # type: ignore[operator]
    except SoapFault as exc:
        chain = "/".join([f"env:{exc.code}", *(f"ter:{x}" for x in exc.subcodes)])
        ev.note(what, f"{chain}: {exc.reason}")
        want = "/".join(["env:Sender", *(f"ter:{x}" for x in expected)])
        if (exc.code, tuple(exc.subcodes)) != ("Sender", expected):
            return f"{what}: {chain}, expected {want}"
    else:
        ev.note(what, "accepted")
        return f"{what}: accepted, expected a fault env:Sender/" + "/".join(f"ter:{x}" for x in expected)
    if address is not None and s.status(address) is not None:
        return f"{what}: faulted but stored the configuration"
    return None


@case("EXT-FAULTS", "SetUplink and DeleteUplink fault chains", "CFG-3", "CFG-4", "CFG-5")
def fault_chains(s: DeviceSession, ev: Evidence) -> None:
    """Every SetUplink fault of the standard (full subcode chain, nothing stored), one SetUplink beyond
    MaxUplinks (when it is at most 16), and DeleteUplink of an unknown address."""
    from ..uplinkconfig import UplinkConfiguration

    client = s.uplink()
    good = s.configuration("https://conformance-probe.invalid/faults")
    caps = client.get_service_capabilities()
    ev.note("capabilities", caps)

    def attempt(**changes: object) -> object:
        values = {"remote_address": good.remote_address, "user_level": good.user_level,
                  "certificate_id": good.certificate_id,
                  "cert_path_validation_policy_id": good.cert_path_validation_policy_id, **changes}
        return lambda: client.set_uplink(UplinkConfiguration(**values))  # type: ignore[arg-type]

    checks: list[tuple[str, object, tuple[str, ...], str | None]] = [
        ("unknown CertificateID", attempt(certificate_id="no-such-certificate"), ("InvalidArgVal", "CertificateID"),
         good.remote_address),
        ("unknown CertPathValidationPolicyID", attempt(cert_path_validation_policy_id="no-such-policy"),
         ("InvalidArgVal", "CertPathValidationPolicyID"), good.remote_address),
        ("neither CertificateID nor AuthorizationServer", attempt(certificate_id=None),
         ("InvalidArgs", "MissingAuthentication"), good.remote_address),
        ("both CertificateID and AuthorizationServer", attempt(authorization_server="conformance-as"),
         ("InvalidArgs", "AmbiguousAuthentication"), good.remote_address),
        ("unsupported protocol", attempt(remote_address="ftp://conformance-probe.invalid/uplink"),
         ("InvalidArgs", "ProtocolNotSupported"), "ftp://conformance-probe.invalid/uplink"),
        ("DeleteUplink of an unknown address",
         lambda: client.delete_uplink("https://conformance-probe.invalid/never-set"), ("InvalidArgVal", "Address"),
         None),
    ]
    if "AccessToken" in caps.authorization_modes:
        checks.append(("unknown AuthorizationServer", attempt(certificate_id=None, authorization_server="no-such-as"),
                       ("InvalidArgVal", "AuthorizationServerConfigurationToken"), good.remote_address))
    problems = [p for p in (_expect_fault(s, ev, *c) for c in checks) if p]
    if 0 < caps.max_uplinks <= MAX_UPLINKS_PROBED:
        problems += _max_uplinks(s, ev, caps.max_uplinks)
    ev.check(not problems, "; ".join(problems))


def _max_uplinks(s: DeviceSession, ev: Evidence, max_uplinks: int) -> list[str]:
    """CFG-3: one SetUplink beyond MaxUplinks faults and stores nothing (the probes are deleted after)."""
    from ..uplinkconfig import UplinkConfiguration

    client = s.uplink()
    present = {cfg.remote_address for cfg in client.get_uplinks()}
    added: list[str] = []
    try:
        n = 0
        while len(present) + len(added) < max_uplinks:
            address = f"https://conformance-probe.invalid/max-{n}"
            n += 1
            if address not in present:
                s.set_uplink(address)
                added.append(address)
        extra = s.configuration("https://conformance-probe.invalid/max-extra")
        try:
            client.set_uplink(UplinkConfiguration(remote_address=extra.remote_address, user_level=extra.user_level,
                                                  certificate_id=extra.certificate_id,
                                                  cert_path_validation_policy_id=extra.cert_path_validation_policy_id))
        except SoapFault as exc:
            ev.note(f"SetUplink number {max_uplinks + 1} (MaxUplinks {max_uplinks})", str(exc))
        else:
            s.created_addresses.add(extra.remote_address)
            return [f"SetUplink beyond MaxUplinks ({max_uplinks}) was accepted"]
        if s.status(extra.remote_address) is not None:
            return ["SetUplink beyond MaxUplinks faulted but stored the configuration"]
        return []
    finally:
        for address in added:
            s.delete_uplink(address)


@case("EXT-STATUS", "Status and Error in GetUplinks while connected and refused", "CFG-1", "CFG-2", "UPL-8")
def status_and_error(s: DeviceSession, ev: Evidence) -> None:
    """Connected while up; after the cloud closes the uplink and refuses reconnection, Status leaves
    Connected (Error says why); Connected again once the cloud accepts."""
    address = s.main.url()
    conn = s.connect()
    try:
        status = wait_for(lambda: (st := s.status(address)) and st[0] == "Connected" and st, s.target.notice_timeout,
                          "Status Connected")
    except TimeoutError:
        ev.fail(f"GetUplinks does not report Status Connected for {address} while the uplink is up: "
                f"{s.status(address)}")
    ev.note("GetUplinks while connected", status)
    path = urlsplit(address).path
    s.main.refuse_paths.add(path)
    try:
        channel = s.cloud.channel(s.main, s.enrolment().device_id)
        if channel is not None:
            async def close() -> None:
                channel.close("the conformance tool closed the uplink")
            s.cloud.call(close)
        s.wait_closed(conn, s.target.notice_timeout)
        try:
            seen = wait_for(lambda: (st := s.status(address)) and st[0] != "Connected" and st, s.target.notice_timeout,
                            "Status to leave Connected")
        except TimeoutError:
            ev.fail(f"GetUplinks still reports Status Connected {s.target.notice_timeout:g} s after the cloud closed the "
                    "uplink and refused every reconnection")
        ev.note("GetUplinks after the cloud closed and refused", seen)
        try:
            refused = wait_for(lambda: any(c.refused for c in list(s.main.connections) if c.opened_at > conn.opened_at),
                               s.target.backoff_window, "a refused reconnection")
            ev.note("a reconnection was refused", refused)
            with_error = wait_for(lambda: (st := s.status(address)) and st[0] != "Connected" and st[1] and st, 5.0,
                                  "an Error text")
            ev.note("GetUplinks while refused", with_error)
        except TimeoutError:
            ev.note("Error", "no Error text reported while refused (Error is optional)")
    finally:
        s.main.refuse_paths.discard(path)
    since = time.monotonic()
    s.wait_connected(s.main, since, timeout=s.target.backoff_window)
    back = wait_for(lambda: (st := s.status(address)) and st[0] == "Connected" and st, s.target.notice_timeout,
                    "Status Connected again")
    ev.note("GetUplinks after the cloud accepts again", back)


# ---------------------------------------------------------------- extended cases: trust

@case("EXT-CLOUD-CERT", "refuses a cloud certificate with a wrong name, an untrusted issuer, expired",
      "UPL-11", "UPL-6")
def cloud_certificate(s: DeviceSession, ev: Evidence) -> None:
    """For each bad server certificate the device must break off the TLS handshake: no upgrade request
    may reach a cloud it cannot verify (RFC 6125 name, the policy's trust anchors, validity)."""
    problems: list[str] = []
    for label, leaf in s.pki.bad_certificates().items():
        endpoint = s.cloud.add_endpoint(f"bad: {label}", s.pki.context(leaf), serve=False)
        address = endpoint.url("/uplink")
        try:
            s.set_uplink(address)
            try:
                wait_for(lambda e=endpoint: e.connections or e.handshake_failures, CERT_WINDOW,  # type: ignore[misc]
                         "a connection attempt")
                time.sleep(0.3)  # a handshake that completes is handed to the handler right after
            except TimeoutError:
                problems.append(f"{label}: the device made no connection attempt within {CERT_WINDOW:g} s")
                continue
            if endpoint.connections:
                conn = endpoint.connections[0]
                note_connection(ev, conn, label)
                problems.append(f"{label}: the device accepted the certificate and went on "
                                f"(sent {conn.first_bytes(60)})")
            else:
                status = s.status(address)
                ev.note(label, f"handshake broken off by the device ({endpoint.handshake_failures} attempt(s)); "
                               f"GetUplinks: {status}")
        finally:
            s.delete_uplink(address)
            s.cloud.remove_endpoint(endpoint)
    ev.check(not problems, "; ".join(problems))


# ---------------------------------------------------------------- extended cases: timing (long)

@case("EXT-SILENCE", "closes after more than 30 s of silence, not before", "UPL-8", "UPL-7", long=True)
def silence(s: DeviceSession, ev: Evidence) -> None:
    """The cloud falls silent (answers nothing, not even PING); the device must close the uplink more than
    30 s after the last byte it received, and not much later."""
    rule, grace = s.target.silence_rule, s.target.silence_grace
    conn = s.connect()
    time.sleep(0.2)  # let the SETTINGS exchange finish

    async def mute() -> float:
        conn.muted = True
        return conn.last_write_at or time.monotonic()

    last = s.cloud.call(mute)
    ev.note("the cloud fell silent", f"on the connection from {conn.peer}; waiting up to {rule + grace:g} s for the "
                                     "device to close it")
    try:
        closed = s.wait_closed(conn, rule + grace + 1)
    except TimeoutError:
        ev.fail(f"the device kept the uplink open {rule + grace:g} s after the cloud fell silent "
                f"(UPL-8: close after more than {rule:g} s)")
    silent = closed - last
    pings = [f for f in conn.frames if f.type == PING and not f.flags & ACK and f.at > last]
    ev.note("silence", f"the device closed {silent:.2f} s after the cloud's last byte; "
                       f"it sent {len(pings)} PING(s) meanwhile; {conn.dropped_bytes} bytes withheld")
    ev.check(silent > rule, f"the device closed after {silent:.1f} s of silence, before the {rule:g} s of UPL-8")
    ev.check(silent <= rule + grace, f"the device closed only after {silent:.1f} s of silence")
    s.wait_connected(s.main, closed, timeout=s.target.backoff_window)


@case("EXT-BACKOFF", "reconnection intervals ascend and level off", "UPL-9", "UPL-10", long=True)
def backoff(s: DeviceSession, ev: Evidence) -> None:
    """A second uplink to a path the cloud refuses: the intervals between the device's attempts must
    ascend and then level off at a cap (at most 30 s); the first uplink stays up meanwhile (UPL-10)."""
    path = "/conformance-backoff"
    address = s.main.url(path)
    s.main.refuse_paths.add(path)
    since = time.monotonic()
    try:
        s.set_uplink(address)
        deadline = since + s.target.backoff_window
        intervals: list[float] = []
        while time.monotonic() < deadline:
            intervals = refused_intervals(s, path, since)
            if _levelled(intervals) or _constant(intervals) or len(intervals) >= 10:
                break
            time.sleep(0.05)
        ev.note("intervals between attempts (s)", ", ".join(f"{i:.2f}" for i in intervals) or "none")
        ev.check(len(intervals) >= 3, f"only {len(intervals) + 1} attempt(s) in {s.target.backoff_window:g} s")
        problem = not_ascending(intervals)
        if problem:
            ev.fail(problem)
        ev.check(_levelled(intervals), f"the intervals did not level off within {s.target.backoff_window:g} s: "
                                       f"{', '.join(f'{i:.2f}' for i in intervals)}")
        ev.check(intervals[-1] <= BACKOFF_CAP_LIMIT * (1 + BACKOFF_SLACK),
                 f"the intervals level off at {intervals[-1]:.1f} s, above {BACKOFF_CAP_LIMIT:g} s")
        ev.check(s.cloud.channel(s.main, s.enrolment().device_id) is not None,
                 "the first uplink did not stay connected beside the refused one (UPL-10)")
    finally:
        s.main.refuse_paths.discard(path)
        s.delete_uplink(address)


def refused_intervals(s: DeviceSession, path: str, since: float) -> list[float]:
    """The intervals between the device's refused attempts on ``path`` of the main endpoint since ``since``."""
    attempts = [c.opened_at for c in list(s.main.connections) if c.refused and c.path == path and c.opened_at >= since]
    return [b - a for a, b in itertools.pairwise(attempts)]


def not_ascending(intervals: list[float]) -> str | None:
    """Why ``intervals`` (at least two) do not ascend (UPL-9), or None when they do."""
    shrinking = [(a, b) for a, b in itertools.pairwise(intervals) if b < a * (1 - BACKOFF_SLACK) - 0.02]
    if shrinking:
        return f"the intervals do not ascend: {shrinking[0][1]:.2f} s after {shrinking[0][0]:.2f} s"
    if not intervals[-1] > intervals[0] * (1 + 2 * BACKOFF_SLACK) + 0.02:
        return f"the intervals do not ascend: {', '.join(f'{i:.2f}' for i in intervals)} s (constant)"
    return None


def _constant(intervals: list[float]) -> bool:
    """Four intervals, all equal to the first (within the slack): no ascent is coming."""
    return len(intervals) >= 4 and all(math.isclose(i, intervals[0], rel_tol=BACKOFF_SLACK, abs_tol=0.03)
                                       for i in intervals)


def _levelled(intervals: list[float]) -> bool:
    """The last two intervals are equal (within the slack) after at least one ascent."""
    if len(intervals) < 3:
        return False
    a, b = intervals[-2], intervals[-1]
    return math.isclose(a, b, rel_tol=BACKOFF_SLACK, abs_tol=0.03) and b > intervals[0] * (1 + 2 * BACKOFF_SLACK)

