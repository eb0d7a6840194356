"""SEC-2, SEC-3: an attacker's pass over the one SOAP message access control and the services share.

Access control decides on one parsed message and the service runs that
message; these tests attack the edges of that rule that the single-parse
tests leave open: *when* the decision is taken (a body trickled in after the
head must not have its UsernameToken or Digest answer judged, and its nonce
looked up, as of the head; nor may a late check find a nonce forgotten that a
later one dropped), and the labels around the bytes that another reader could take
differently from the device (a second byte order mark hiding the XML
declaration from its check, a repeated ``charset`` parameter, a repeated
``Content-Type`` field). Each runs against the device application in process,
the last over HTTP.
"""

from __future__ import annotations

import http.client
import io
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN, RunningDevice, seed_device
from helpers import fault_chain
from lxml import etree

from iec62676_2_33.namespaces import SOAP_ENV, TUP
from iec62676_2_33.security.httpdigest import digest_response
from iec62676_2_33.security.wsse import NonceCache, build_username_token
from iec62676_2_33.services.app import REALM, UPLINK_PATH, build_device_app
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.soap.envelope import parse_request
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.store import DeviceStore

SOAP_CT = "application/soap+xml; charset=utf-8"
EVIL = "https://evil.example.com/uplink"
GET_UPLINKS = "<tup:GetUplinks/>"
SET_UPLINK = (f"<tup:SetUplink><tup:Configuration><tup:RemoteAddress>{EVIL}</tup:RemoteAddress>"
              "<tup:CertificateID>cert-1</tup:CertificateID><tup:UserLevel>Administrator</tup:UserLevel>"
              "</tup:Configuration></tup:SetUplink>")
#: The device's default UsernameToken freshness and Digest nonce lifetime (seconds).
FRESHNESS = 300.0


def envelope(operation: str, security: Any = None) -> bytes:
    header = "" if security is None else f"<env:Header>{etree.tostring(security).decode()}</env:Header>"
    return (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}">{header}'
            f"<env:Body>{operation}</env:Body></env:Envelope>").encode()


def admin_token(at: float, nonce: bytes | None = None) -> Any:
    return build_username_token(ADMIN[0], ADMIN[1], datetime.fromtimestamp(at, tz=UTC), nonce)


def digest_authorization(app: Any, at: float) -> str:
    """An Administrator's HTTP Digest answer to a challenge the device issued at ``at``."""
    nonce = re.search(r'nonce="([^"]+)"', app.routes[UPLINK_PATH].digest.challenge(at))
    assert nonce is not None
    response = digest_response(algorithm="SHA-256", username=ADMIN[0], realm=REALM, password=ADMIN[1],
                               method="POST", uri=UPLINK_PATH, nonce=nonce.group(1), nc="00000001", cnonce="c0ffee")
    return (f'Digest username="{ADMIN[0]}", realm="{REALM}", nonce="{nonce.group(1)}", uri="{UPLINK_PATH}", '
            f'algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c0ffee", response="{response}"')


def call(app: Any, data: bytes, stream: Any = None, authorization: str | None = None) -> tuple[int, bytes]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": SOAP_CT,
        "wsgi.input": stream if stream is not None else io.BytesIO(data), "wsgi.url_scheme": "http",
        "HTTP_HOST": "cam.local", "SERVER_NAME": "cam.local", "SERVER_PORT": "80", "SCRIPT_NAME": "",
        "PATH_INFO": UPLINK_PATH, "REMOTE_ADDR": "192.0.2.7"}
    if authorization is not None:
        env["HTTP_AUTHORIZATION"] = authorization
    got: dict[str, str] = {}
    out = b"".join(app(env, lambda status, headers, exc_info=None: got.setdefault("status", status)))
    return int(got["status"].split()[0]), out


class TrickledBody(io.RawIOBase):
    """A request body that arrives slowly: before its first bytes are handed over, ``meanwhile`` runs
    (the clock moves on, other clients are served)."""

    def __init__(self, data: bytes, meanwhile: Any) -> None:
        super().__init__()
        self.data = data
        self.meanwhile = meanwhile

    def read(self, size: int = -1) -> bytes:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        size = len(self.data) if size < 0 else size
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


# --------------------------------------------------------------------------- the time of the decision


@pytest.mark.parametrize("scheme", ["UsernameToken", "Digest"])
def test_sec2_a_trickled_body_cannot_replay_captured_credentials(tmp_path: Path, scheme: str) -> None:
    """SEC-2, SEC-3: an Administrator's captured UsernameToken (or HTTP Digest answer), replayed in a request
    whose head arrives while it is still fresh but whose body arrives a minute later (after other clients'
    requests made the replay memory forget its nonce), is refused: credentials are judged when the body is
    there; the SetUplink the attacker put in the body never runs."""
    seed_device(tmp_path / "d")
    clock = [time.time()]
    start = clock[0]
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store), clock=lambda: clock[0])

        def honest_call(at: float, nonce: bytes | None = None) -> tuple[bytes, str | None]:
            """(envelope, Authorization) of an honest GetUplinks at ``at``; it runs (200)."""
            if scheme == "Digest":
                data, authorization = envelope(GET_UPLINKS), digest_authorization(app, at)
            else:
                data, authorization = envelope(GET_UPLINKS, admin_token(at, nonce)), None
            assert call(app, data, authorization=authorization)[0] == 200
            return data, authorization

        seen, authorization = honest_call(start, b"captured-nonce-1")  # what the attacker captured
        captured = etree.fromstring(seen).find(f"{{{SOAP_ENV}}}Header/{{*}}Security")

        def a_minute_passes() -> None:  # the device serves an honest client meanwhile
            clock[0] = start + FRESHNESS + 60
            honest_call(clock[0])

        clock[0] = start + FRESHNESS - 1  # the attacker's head: the credentials are still fresh
        replay = envelope(SET_UPLINK, captured)
        status, body = call(app, replay, TrickledBody(replay, a_minute_passes), authorization)
        assert status in (400, 401) and fault_chain(etree.fromstring(body))[:2] == ["env:Sender", "ter:NotAuthorized"]
        assert store.list_uplinks() == []


def test_sec2_nonce_memory_forgets_nothing_a_late_check_would_accept() -> None:
    """SEC-2: a check whose ``now`` lags behind another's (it waited for a worker or the user store) does not
    find a nonce the later check dropped: a token created before the window of the latest time is refused."""
    cache = NonceCache(max_entries=100, window=305.0)
    assert cache.check_and_add(b"captured", 1000.0, 1000.0)
    assert cache.check_and_add(b"later", 1400.0, 1400.0)  # drops "captured": outside the window of 1400
    assert not cache.check_and_add(b"captured", 1000.0, 1299.0)
    assert cache.check_and_add(b"fresh", 1299.0, 1299.0)  # inside the window of the latest time: accepted


def test_sec2_a_clock_set_back_locks_nobody_out() -> None:
    """SEC-2: after the clock is set back by more than two windows (a clock that ran ahead, corrected), new
    tokens are accepted although the cache was full and had a floor: every token it remembered was created
    after now + the window, which the freshness check refuses anyway."""
    cache = NonceCache(max_entries=3, window=305.0)
    for i in range(5):  # full, and evictions inside the window raised the floor
        assert cache.check_and_add(b"n%d" % i, 10000.0 + i, 10000.0 + i)
    assert cache.floor >= 10000.0
    assert cache.check_and_add(b"new", 6400.0, 6400.0)
    assert cache.check_and_add(b"newer", 6401.0, 6401.0)
    assert not cache.check_and_add(b"new", 6400.0, 6402.0)  # replays are caught again from there


# --------------------------------------------------------------------------- labels another reader may take


def test_sec3_a_second_byte_order_mark_cannot_hide_the_declaration(tmp_path: Path) -> None:
    """SEC-3: two byte order marks before a declaration naming another encoding are refused (lxml skips the
    second mark, so the declaration escaped its check while a conforming reader refuses or reads UTF-7)."""
    declaration = b'<?xml version="1.0" encoding="utf-7"?>'
    utf16 = '\ufeff\ufeff<?xml version="1.0" encoding="UTF-8"?>' + envelope(GET_UPLINKS).decode()
    for data in (b"\xef\xbb\xbf\xef\xbb\xbf" + declaration + envelope(GET_UPLINKS), utf16.encode("utf-16-le")):
        with pytest.raises(SoapFault) as info:
            parse_request("application/soap+xml", data)
        assert info.value.code == "Sender" and "byte order mark" in info.value.reason
    seed_device(tmp_path / "d")
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        smuggled = b"\xef\xbb\xbf\xef\xbb\xbf" + declaration + envelope(SET_UPLINK, admin_token(time.time()))
        status, body = call(app, smuggled)
        assert status == 400 and fault_chain(etree.fromstring(body))[0] == "env:Sender"
        assert store.list_uplinks() == []


@pytest.mark.parametrize("content_type", [
    "application/soap+xml; charset=utf-8; charset=utf-7",
    "application/soap+xml; charset=utf-8; charset*=utf-8''utf-7",
    "application/soap+xml; charset=utf-8; CHARSET=utf-8",
])
def test_sec3_a_repeated_charset_parameter_is_refused(content_type: str) -> None:
    """SEC-3: a Content-Type with two charset parameters is refused (the email package takes the first, other
    readers the last)."""
    with pytest.raises(SoapFault) as info:
        parse_request(content_type, envelope(GET_UPLINKS))
    assert info.value.code == "Sender" and "more than once" in info.value.reason


def test_sec3_a_repeated_content_type_field_is_refused(device: RunningDevice) -> None:
    """SEC-3: over HTTP, a request with two Content-Type fields is refused whichever order they come in: the
    second no longer silently replaces the first; nothing runs."""
    parts = urlsplit(device.url)
    data = envelope(SET_UPLINK, admin_token(time.time()))
    for first, second in (("utf-7", "utf-8"), ("utf-8", "utf-7")):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.putrequest("POST", parts.path)
            conn.putheader("Content-Type", f"application/soap+xml; charset={first}")
            conn.putheader("Content-Type", f"application/soap+xml; charset={second}")
            conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            response = conn.getresponse()
            status, body = response.status, response.read()
        finally:
            conn.close()
        assert status in (400, 415) and fault_chain(etree.fromstring(body))[0] == "env:Sender", (first, body[:200])
    with DeviceStore(device.data) as store:
        assert EVIL not in [cfg.remote_address for cfg in store.list_uplinks()]

