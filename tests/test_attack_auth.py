"""Attacks on authentication (device and cloud) and on the device's keystore, on real loopback.

* SEC-2, SEC-3: a WS-Security UsernameToken whose ``wsu:Created`` is a well-formed ``xs:dateTime`` that no
  clock can hold (year 1 east of UTC, a 20-digit year) is a refused credential — 400 ``ter:NotAuthorized``,
  and a PRE_AUTH operation still runs as Anonymous — not an internal error.
* SEC-2, SEC-3: an HTTP Digest ``uri`` parameter that does not parse as a URI (an unclosed IPv6 bracket) is a
  refused credential answered with a fresh challenge (401), not an internal error.
* UPL-14: the cloud's JWKS URL is read within a budget (a 20 MiB set is refused, a trickle ends at the fetch
  timeout) and parsed defensively (an entry with an ``alg`` array is skipped, nesting too deep for the JSON
  parser is a failed fetch): a valid token still gets its 101, or — the keys unreadable — a 401, never a
  connection dropped without an answer or an upgrade that hangs.
* SEC-2: a device user whose name is not ASCII (``jörg``) logs in with HTTP Digest as a client following the
  challenge's ``charset=UTF-8`` sends it (the name's UTF-8 bytes in ``username``).
* PROV-1: ``enroll`` against a device whose GetAllCertificates lists something that is no DER certificate
  passes over it (it is not the cloud CA's certificate) instead of ending in a bare ``ValueError`` (a
  traceback of ``cloud enroll``).
* PROV-1: CreateSelfSignedCertificate with a validity period X.509 cannot write (before 1950, past 9999
  once in UTC) and CreateRSAKeyPair with a KeyLength of thousands of digits are the client's errors
  (``env:Sender/ter:InvalidArgVal/ter:InvalidDateTime`` resp. ``ter:KeyLength``), not the device's.
* PROV-1: CreateCertPathValidationPolicy naming one certificate as trust anchor again and again (each anchor
  row keeps a copy of the certificate: 11,000 times a 60 KB certificate in a 1 MB request wrote 1.8 GB) is
  ``env:Sender/ter:InvalidArgVal/ter:CertificateID``; nothing is stored.
* PROV-1: CreateSelfSignedCertificate with a Subject of 10,000 CommonNames (a 900 KB certificate) meets the
  keystore's certificate size bound as an upload does: ``ter:InvalidArgVal/ter:InvalidSubject``, nothing
  stored.
* PROV-1: CreateRSAKeyPair followed at once by DeleteKey, in a loop, does not pile up key generations: at
  most MaximumNumberOfKeys are in flight (the next is ``env:Receiver/ter:Action/ter:MaximumNumberOfKeysReached``)
  and a deleted placeholder is not generated.

Real parts: the device (``device`` fixture: run_device on loopback, users of every level, keystore
certificate cert-1), raw SOAP 1.2 envelopes over http.client; the device application on the library's HTTP
server with one answer replaced, enrolled with the zeep clients; the cloud listener with the access-token
authenticator on loopback TLS, a JWKS served over HTTPS by a server started here; every wait bounded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN, RunningDevice
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from helpers import fault_chain, http_serving
from lxml import etree
from served_app import serve_app
from test_access_token import AUDIENCE, Issuer, matrix_token
from test_security_service import SHA256_RSA, call, create_key, upload_body, wait_ok
from test_websocket_e2e import BOUND, Pki, running_cloud

from iec62676_2_33 import pki
from iec62676_2_33.enroll import enroll
from iec62676_2_33.namespaces import SOAP_ENV, TUP, WSSE, WSU
from iec62676_2_33.runtime.device import device_capabilities
from iec62676_2_33.security.jwt_auth import TokenAuthenticator, UrlJwks
from iec62676_2_33.security.keystore import DEVICE_KEYSTORE_LIMITS
from iec62676_2_33.security.wsse import PASSWORD_DIGEST
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.security import TAS
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import UplinkPki, wait_until
from iec62676_2_33.transport.contexts import client_context
from iec62676_2_33.transport.tls import connect_tls

NS = {"env": SOAP_ENV, "tup": TUP, "tas": TAS}
NOT_AUTHORIZED = ["env:Sender", "ter:NotAuthorized"]


def _envelope(body: str, header: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}">'
            f"<env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>").encode()


def _post(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", parts.path, data, {"Content-Type": "application/soap+xml; charset=utf-8",
                                                **(headers or {})})
        resp = conn.getresponse()
        seen: dict[str, list[str]] = {}
        for name, value in resp.getheaders():
            seen.setdefault(name.lower(), []).append(value)
        return resp.status, seen, resp.read()
    finally:
        conn.close()


def _username_token(user: str, password: str, created: str) -> str:
    """A PasswordDigest token with a right digest over ``created`` exactly as written."""
    nonce = os.urandom(16)
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    return (f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
            f"<wsse:Username>{user}</wsse:Username>"
            f'<wsse:Password Type="{PASSWORD_DIGEST}">{digest}</wsse:Password>'
            f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce><wsu:Created>{created}</wsu:Created>"
            "</wsse:UsernameToken></wsse:Security>")


@pytest.mark.parametrize("created", ["0001-01-01T00:00:00+01:00", "99999999999999999999-01-01T00:00:00Z",
                                     "9999-12-31T23:59:59-14:00"])
def test_sec2_created_beyond_any_clock_is_a_refused_credential(device: RunningDevice, created: str) -> None:
    """SEC-2, SEC-3: Created that fits xs:dateTime but no datetime refuses the request (400 NotAuthorized, the
    application not called); PRE_AUTH runs as Anonymous as for any refused token."""
    header = _username_token(*ADMIN, created)
    status, _, body = _post(device.url, _envelope("<tup:GetUplinks/>", header))
    assert status == 400, body[:200]
    assert fault_chain(etree.fromstring(body)) == NOT_AUTHORIZED
    status, _, body = _post(device.url, _envelope("<tup:GetServiceCapabilities/>", header))
    assert status == 200, body[:200]
    assert etree.fromstring(body).find("env:Body/tup:GetServiceCapabilitiesResponse", NS) is not None


def test_sec2_digest_uri_that_is_no_uri_gets_a_new_challenge(device: RunningDevice) -> None:
    """SEC-2, SEC-3: Digest credentials with a valid nonce of ours but a ``uri`` urlsplit cannot read are
    refused with 401 and fresh challenges, like any other wrong ``uri``."""
    status, headers, _ = _post(device.url, _envelope("<tup:GetUplinks/>"))
    assert status == 401
    challenge = headers["www-authenticate"][0]
    realm = re.search(r'realm="([^"]+)"', challenge)
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert realm and nonce
    for uri in ("http://[x/", "http://[::1/onvif/uplink_service"):
        authorization = (f'Digest username="{ADMIN[0]}", realm="{realm[1]}", nonce="{nonce[1]}", uri="{uri}", '
                         'response="00", qop=auth, nc=00000001, cnonce="c0ffee", algorithm=SHA-256')
        status, headers, body = _post(device.url, _envelope("<tup:GetUplinks/>"), {"Authorization": authorization})
        assert status == 401, body[:200]
        assert any(v.startswith("Digest ") for v in headers["www-authenticate"])
        assert fault_chain(etree.fromstring(body)) == NOT_AUTHORIZED


def test_sec2_digest_username_in_utf8_as_the_challenge_announces(device: RunningDevice) -> None:
    """SEC-2: Digest with ``username="jörg"`` in UTF-8 (RFC 7616 §4, charset=UTF-8) and the response over those
    bytes is the user jörg: the operation runs (200); a wrong password for the same name is still 401."""
    with DeviceStore(device.data) as store:
        store.put_user("jörg", "pässwort", "Administrator")
    status, headers, _ = _post(device.url, _envelope("<tup:GetUplinks/>"))
    assert status == 401
    challenge = next(v for v in headers["www-authenticate"] if "algorithm=SHA-256" in v)
    realm = re.search(r'realm="([^"]+)"', challenge)
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert realm and nonce
    path = urlsplit(device.url).path

    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    for password, expected in (("wrong", 401), ("pässwort", 200)):
        ha1 = sha256("jörg".encode() + f":{realm[1]}:".encode() + password.encode())
        response = sha256(f"{ha1}:{nonce[1]}:00000001:c0ffee:auth:{sha256(f'POST:{path}'.encode())}".encode())
        authorization = ('Digest username="jörg", ' + f'realm="{realm[1]}", nonce="{nonce[1]}", uri="{path}", '
                         f'response="{response}", qop=auth, nc=00000001, cnonce="c0ffee", algorithm=SHA-256')
        # http.client writes str headers as Latin-1: the UTF-8 bytes go as they are
        status, _, body = _post(device.url, _envelope("<tup:GetUplinks/>"),
                                {"Authorization": authorization.encode().decode("latin-1")})
        assert status == expected, body[:200]


_NOT_A_CERTIFICATE = (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tas="{TAS}"><env:Body>'
                      "<tas:GetAllCertificatesResponse><tas:Certificate><tas:CertificateID>cert-x</tas:CertificateID>"
                      "<tas:KeyID>key-x</tas:KeyID><tas:CertificateContent>AAEC</tas:CertificateContent>"
                      "</tas:Certificate></tas:GetAllCertificatesResponse></env:Body></env:Envelope>").encode()


def test_prov1_enroll_passes_over_a_listed_certificate_it_cannot_read(tmp_path: Path) -> None:
    """PROV-1: the device lists a "certificate" of three bytes; enrolment does not take it for the cloud CA's
    client certificate or anchor, and completes with a key, certificate and policy of its own."""
    data = tmp_path / "dev"
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        real = build_device_app(UplinkServiceContext(store=store, capabilities=device_capabilities()))

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            if b"GetAllCertificates" in body:
                start_response("200 OK", [("Content-Type", "application/soap+xml; charset=utf-8"),
                                          ("Content-Length", str(len(_NOT_A_CERTIFICATE)))])
                return [_NOT_A_CERTIFICATE]
            environ["wsgi.input"] = io.BytesIO(body)
            return real(environ, start_response)

        with serve_app(app) as base:
            result = enroll(f"{base}/onvif/device_service", username=ADMIN[0], password=ADMIN[1],
                            ca=pki.load_ca_dir(UplinkPki(tmp_path / "pki").dir),
                            remote_address="https://cloud.example/uplink", identity="odd", timeout=BOUND)
        assert result.certificate_id is not None and result.certificate_id != "cert-x"
        assert store.list_uplinks()[0].certificate_id == result.certificate_id


def _self_signed(key_id: str, validity: str) -> str:
    return ("<tas:CreateSelfSignedCertificate><tas:X509Version>3</tas:X509Version>"
            f"<tas:Subject><tas:CommonName>self</tas:CommonName></tas:Subject><tas:KeyID>{key_id}</tas:KeyID>"
            f"{validity}<tas:SignatureAlgorithm><tas:algorithm>{SHA256_RSA}</tas:algorithm>"
            "</tas:SignatureAlgorithm></tas:CreateSelfSignedCertificate>")


def test_prov1_unwritable_validity_and_huge_key_length_are_sender_faults(device: RunningDevice) -> None:
    """PROV-1: a validity period X.509 cannot hold is InvalidDateTime, a KeyLength of 5,000 digits is KeyLength,
    a 900 KB self-signed certificate is InvalidSubject (all env:Sender, HTTP 400); nothing is stored."""
    key_id = create_key(device)
    wait_ok(device, key_id)
    before = etree.tostring(call(device, "<tas:GetAllCertificates/>")[1])
    for validity in ("<tas:notValidBefore>1900-01-01T00:00:00Z</tas:notValidBefore>",
                     "<tas:notValidBefore>9999-12-31T00:00:00Z</tas:notValidBefore>",
                     "<tas:notValidBefore>0001-01-01T00:00:00+01:00</tas:notValidBefore>",
                     ("<tas:notValidBefore>2020-01-01T00:00:00Z</tas:notValidBefore>"
                      "<tas:notValidAfter>9999-12-31T23:59:59-14:00</tas:notValidAfter>")):
        status, root = call(device, _self_signed(key_id, validity))
        assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidDateTime"])
    status, root = call(device, "<tas:CreateRSAKeyPair><tas:KeyLength>" + "9" * 5000
                                + "</tas:KeyLength></tas:CreateRSAKeyPair>")
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:KeyLength"])
    assert etree.tostring(call(device, "<tas:GetAllCertificates/>")[1]) == before
    subject = "".join(f"<tas:CommonName>{i:060d}</tas:CommonName>" for i in range(10_000))
    status, root = call(device, _self_signed(key_id, "").replace("<tas:CommonName>self</tas:CommonName>", subject))
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidSubject"])
    assert etree.tostring(call(device, "<tas:GetAllCertificates/>")[1]) == before


def _large_certificate() -> bytes:
    """A CA certificate of about 60 KB (a private extension pads it), under the keystore's 64 KiB limit."""
    ca = pki.make_ca("large")
    padding = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x04\x82\xea\x60" + b"x" * 60000)
    cert = (x509.CertificateBuilder().subject_name(ca.cert.subject).issuer_name(ca.cert.subject)
            .public_key(ca.key.public_key()).serial_number(1)
            .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC)).not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
            .add_extension(padding, critical=False).sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_prov1_a_trust_anchor_named_twice_is_refused(device: RunningDevice) -> None:
    """PROV-1: a policy whose TrustAnchor list names one certificate 100 times is refused
    (InvalidArgVal/CertificateID) and stores nothing; naming it once is a policy."""
    status, root = call(device, upload_body(_large_certificate()))
    assert status == 200
    certificate_id = root.find("env:Body/tas:UploadCertificateResponse/tas:CertificateID", NS).text
    anchor = f"<tas:TrustAnchor><tas:CertificateID>{certificate_id}</tas:CertificateID></tas:TrustAnchor>"
    before = etree.tostring(call(device, "<tas:GetAllCertPathValidationPolicies/>")[1])
    status, root = call(device, "<tas:CreateCertPathValidationPolicy><tas:Alias>x</tas:Alias><tas:Parameters/>"
                                f"{anchor * 100}</tas:CreateCertPathValidationPolicy>")
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:CertificateID"])
    assert etree.tostring(call(device, "<tas:GetAllCertPathValidationPolicies/>")[1]) == before
    status, _ = call(device, "<tas:CreateCertPathValidationPolicy><tas:Alias>x</tas:Alias><tas:Parameters/>"
                             f"{anchor}</tas:CreateCertPathValidationPolicy>")
    assert status == 200


def _keygen_threads() -> int:
    return sum(thread.name.startswith("keygen ") for thread in threading.enumerate())


def test_prov1_create_and_delete_in_a_loop_keeps_generations_bounded(device: RunningDevice) -> None:
    """PROV-1: 200 CreateRSAKeyPair + DeleteKey rounds never have more than MaximumNumberOfKeys generations in
    flight (a few more threads may be on their way out); a refused round is MaximumNumberOfKeysReached."""
    limit = DEVICE_KEYSTORE_LIMITS.max_keys
    peak = 0
    for _ in range(200):
        status, root = call(device, "<tas:CreateRSAKeyPair><tas:KeyLength>2048</tas:KeyLength></tas:CreateRSAKeyPair>")
        if status != 200:
            assert fault_chain(root) == ["env:Receiver", "ter:Action", "ter:MaximumNumberOfKeysReached"]
            continue
        key_id = root.find("env:Body/tas:CreateRSAKeyPairResponse/tas:KeyID", NS).text
        status, _ = call(device, f"<tas:DeleteKey><tas:KeyID>{key_id}</tas:KeyID></tas:DeleteKey>")
        assert status == 200
        peak = max(peak, _keygen_threads())
    assert peak <= limit + 4, f"{peak} key generations in flight"
    # deleted placeholders are skipped, not generated: the rest drains quickly (the bound is generous)
    wait_until(lambda: _keygen_threads() == 0, timeout=60.0, what="the key generations to end")


@contextlib.contextmanager
def _jwks_server(material: Pki, body: bytes, *, trickle: bool = False) -> Iterator[str]:
    """An HTTPS server on loopback answering every GET with ``body`` (``trickle``: a byte every 0.1 s)."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up
                if not trickle:
                    self.wfile.write(body)
                for byte in body if trickle else b"":
                    if stop.wait(0.1):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    with http_serving(Handler, material.server_ctx(client_certs="none")) as port:
        try:
            yield f"https://localhost:{port}/jwks.json"
        finally:
            stop.set()  # ends a trickle before the server shuts down


async def _upgrade_head(material: Pki, port: int, token: str) -> bytes:
    """The cloud's answer head to one h2c-reverse upgrade carrying ``token`` (``<closed>`` if it hung up)."""
    tls = await connect_tls("127.0.0.1", port, client_context(cafile_pems=[material.ca.cert_pem()]),
                            server_hostname="localhost", timeout=BOUND)
    try:
        await tls.write(f"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse"
                        f"\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = await asyncio.wait_for(tls.read(65536), BOUND)
            if not chunk:
                return answer + b"<closed>"
            answer += chunk
        return answer.partition(b"\r\n\r\n")[0]
    finally:
        tls.abort()


def _jwks_body(issuer: Issuer, case: str) -> bytes:
    if case == "an entry with an alg array":
        return json.dumps({"keys": [{**issuer.jwk, "kid": "odd", "alg": ["RS256"]}, issuer.jwk]}).encode()
    body = json.dumps({"keys": [issuer.jwk]}).encode()[:-1]
    if case == "nesting too deep":
        return body + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert case in ("20 MiB", "a trickle")
    return body + b', "pad": "' + b"x" * (20 * 1024 * 1024 if case == "20 MiB" else 4096) + b'"}'


@pytest.mark.parametrize(("case", "status"), [("an entry with an alg array", b"101"), ("nesting too deep", b"401"),
                                              ("20 MiB", b"401"), ("a trickle", b"401")])
async def test_upl14_jwks_read_within_budget_and_parsed_defensively(case: str, status: bytes) -> None:
    """UPL-14: whatever the JWKS URL answers, a device's upgrade with a valid token is answered: 101 when the
    set still holds its key, else 401 invalid_token (the keys could not be read) — not a dropped connection,
    and not a wait for a JWKS that never ends."""
    material, issuer = Pki(), Issuer()
    with _jwks_server(material, _jwks_body(issuer, case), trickle=case == "a trickle") as url:
        keys = UrlJwks(url, cafile_pems=[material.ca.cert_pem()], timeout=1.0)
        authenticator = TokenAuthenticator(keys, issuers=[issuer.ISS], audience=AUDIENCE)
        async with running_cloud(material.server_ctx(client_certs="none"), authenticator) as cloud:
            head = await _upgrade_head(material, cloud.port, matrix_token(issuer, "valid"))
    assert head.startswith(b"HTTP/1.1 " + status + b" "), head[:200]
    if status == b"401":
        assert b'error="invalid_token"' in head
