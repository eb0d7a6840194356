"""Layer 5 (clients): enrol a device into a cloud over ONVIF, from the cloud side (PROV-1, UPL-11, UPL-13).

What a cloud or VMS does to configure a camera's uplink remotely, as one call
(:func:`enroll`) and one command (``iec62676 cloud enroll``): the device
generates its key pair, the cloud's CA signs the device's CSR, the
certificate, the cloud CA (as trust anchor) and a validation policy are
installed through the device's Security service, and only then SetUplink names
them. zeep clients load the authored WSDLs offline (:mod:`.client`).

Theory of operation
-------------------
1. GetSystemDateAndTime (PRE_AUTH) gives the device's clock, so the
   WS-Security UsernameTokens carry a Created time the device accepts even when
   its clock is off; GetServices finds the Security and uplink service
   addresses (the device builds them from the request, so they work through a
   proxy too).
2. *Client certificate* (UPL-13): a certificate already in the keystore that
   our CA issued to this identity, still valid and with a private key, is
   reused; otherwise CreateRSAKeyPair (CreateECCKeyPair with ``curve``), GetKeyStatus until ``ok`` (bounded),
   CreatePKCS10CSR, the CA signs (CN = the device identity the cloud uses,
   EKU clientAuth; the CSR's signature is checked first) and
   UploadCertificate with PrivateKeyRequired.
3. *Trust anchor* (UPL-11): the CA certificate already in the keystore is
   reused, else uploaded; a policy whose only trust anchor is it is reused,
   else created.
4. SetUplink (keyed by RemoteAddress, so a repeat replaces, never adds).
5. Optionally, ``GET /devices`` on the cloud's proxy until the identity shows.

So a second run finds every object in place and changes nothing but the
(identical) uplink entry: enrolment is idempotent.

*Token variant* (PROV-3, UPL-14; ``token=TokenClient(...)``): instead of step
2 the device gets an authorization server configuration — ServerUri (RFC 8414
metadata URL or issuer), ClientID, ClientSecret, client authentication
method, Scope and the trust policy of step 3 for the server's certificate.
With ``client_auth="tls_client_auth"`` (RFC 8705) there is no secret: step 2
runs as for the uplink (a key generated on the device, a certificate from our
CA with CN = ``identity``, default the ClientID) and the configuration names
that certificate as CertificateID, the device's TLS client certificate at the
token endpoint; the authorization server must trust our CA and know the
client by that subject. A
configuration with the same ServerUri and ClientID is updated with
SetAuthorizationServerConfiguration (the secret is write-only, so it is always
sent), else one is created; SetUplink then names it as AuthorizationServer.
The cloud knows the device by its token's subject, which the authorization
server decides: ``identity`` (default: the ClientID) is only what step 5
waits for.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import zeep
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .bounded_http import BoundedTransport
from .client import MAX_ANSWER, SETTINGS, UplinkClient, mapped_errors, username_token
from .errors import ConfigurationError, TransportError
from .namespaces import TDS, TUP
from .pki import CertKey
from .schemas import wsdl_path
from .services.security import TAS
from .uplinkconfig import UplinkConfiguration

__all__ = ["EnrollmentResult", "TokenClient", "clock_offset", "enroll", "sign_csr"]

log = logging.getLogger(__name__)

SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
#: How often GetKeyStatus and GET /devices are asked while waiting.
POLL_INTERVAL = 0.1
CERT_DAYS = 825


@dataclass(frozen=True, kw_only=True)
class EnrollmentResult:
    """What the device now uses for the uplink; ``created`` names the objects this run made."""

    device_id: str
    remote_address: str
    certificate_id: str | None  # token variant: None, or the tls_client_auth certificate
    key_id: str | None
    policy_id: str
    created: tuple[str, ...]
    online: bool | None  # None: not waited for
    authorization_server: str | None = None  # the token variant's configuration token


@dataclass(frozen=True, kw_only=True)
class TokenClient:
    """The device's OAuth client at an authorization server (token variant, PROV-3); no secret with
    ``client_auth="tls_client_auth"`` (the device's certificate authenticates it, RFC 8705)."""

    server_uri: str
    client_id: str
    client_secret: str | None = None
    client_auth: str = "client_secret_basic"
    scope: str | None = None

    def __post_init__(self) -> None:
        if (self.client_secret is None) != (self.client_auth == "tls_client_auth"):
            raise ConfigurationError(f"client authentication {self.client_auth} "
                                     + ("sends no client secret" if self.client_secret is not None
                                        else "needs the client secret"))

    def __repr__(self) -> str:  # never show the secret
        return f"TokenClient(server_uri={self.server_uri!r}, client_id={self.client_id!r})"


def sign_csr(csr_der: bytes, ca: CertKey, identity: str, *, days: int = CERT_DAYS) -> x509.Certificate:
    """The device's client certificate: the CSR's public key, CN = ``identity``, EKU clientAuth."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        raise ConfigurationError("the device sent a CSR that is not DER-encoded PKCS#10") from None
    if not csr.is_signature_valid:
        raise ConfigurationError("the device's CSR is not signed by its own key; refusing to certify it")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    public = csr.public_key()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
               .issuer_name(ca.cert.subject).public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.cert.public_key()), critical=False))  # type: ignore[arg-type]
    return builder.sign(ca.key, hashes.SHA256())


def clock_offset(utc: Any, now: dt.datetime) -> dt.timedelta:
    """Device time minus local time from a ``tt:DateTime`` (GetSystemDateAndTime's UTCDateTime)."""
    if utc is None:
        return dt.timedelta(0)
    device = dt.datetime(utc.Date.Year, utc.Date.Month, utc.Date.Day, utc.Time.Hour, utc.Time.Minute,
                         utc.Time.Second, tzinfo=dt.UTC)
    return device - now.replace(microsecond=0)


def _issued_to(cert: x509.Certificate, ca: CertKey, identity: str, now: dt.datetime) -> bool:
    """True for a still-valid certificate our CA issued with CN = ``identity``."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cert.issuer != ca.cert.subject or not names or names[0].value != identity:
        return False
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc - dt.timedelta(days=1):
        return False
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class _Device:
    """zeep clients of one device's device, Security and uplink services (WS-Security digest, SEC-2)."""

    def __init__(self, device_url: str, username: str, password: str, timeout: float) -> None:
        self.timeout = timeout
        self.device_url = device_url
        # each exchange whole within ``timeout`` and a byte budget: a device that trickles cannot hold the enrolment
        transport = BoundedTransport(timeout, max_bytes=MAX_ANSWER)
        device = zeep.Client(str(wsdl_path("devicemgmt")), settings=SETTINGS, transport=transport)
        self.device = device.create_service(f"{{{TDS}}}DeviceBinding", device_url)
        # SEC-2: the UsernameToken's Created follows the device's clock (PRE_AUTH, as ONVIF clients do).
        now = self._call(device_url, self.device.GetSystemDateAndTime)
        self.time_offset = clock_offset(now.UTCDateTime, dt.datetime.now(dt.UTC))
        wsse = username_token(username, password, self.time_offset)
        device.wsse = wsse
        services = self._call(device_url, lambda: self.device.GetServices(IncludeCapability=False))
        xaddrs = {s.Namespace: s.XAddr for s in services or ()}
        if TAS not in xaddrs:
            raise ConfigurationError(f"the device at {device_url} lists no Security service ({TAS}); it cannot be "
                                     "enrolled remotely: install a certificate with 'device keystore add' instead")
        if TUP not in xaddrs:
            raise ConfigurationError(f"the device at {device_url} lists no uplink service ({TUP})")
        self.security_url = str(xaddrs[TAS])
        security = zeep.Client(str(wsdl_path("security")), settings=SETTINGS, transport=transport, wsse=wsse)
        self.security = security.create_service(f"{{{TAS}}}SecurityBinding", self.security_url)
        self.uplink = UplinkClient(str(xaddrs[TUP]), username=username, password=password,
                                   time_offset=self.time_offset, transport=transport)

    @staticmethod
    def _call(what: str, fn: Any) -> Any:
        with mapped_errors(what):
            return fn()

    def serial_number(self) -> str:
        return str(self._call(self.device_url, self.device.GetDeviceInformation).SerialNumber)

    def sec(self, operation: str, **kwargs: Any) -> Any:
        return self._call(f"{operation} at {self.security_url}",
                          lambda: getattr(self.security, operation)(**kwargs))


def _wait(condition: Any, timeout: float, what: str) -> Any:
    """Ask ``condition`` every :data:`POLL_INTERVAL` until it is truthy; ConfigurationError after ``timeout``."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        while True:
            value = condition()
            if value or stop.is_set():
                break
            stop.wait(POLL_INTERVAL)
    finally:
        timer.cancel()
    if not value:
        raise TransportError(f"gave up after {timeout:g} s waiting for {what}")
    return value


def _client_certificate(dev: _Device, ca: CertKey, identity: str, key_length: int, curve: str | None,
                        key_timeout: float, created: list[str]) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    for item in dev.sec("GetAllCertificates") or ():
        try:
            cert = x509.load_der_x509_certificate(item.CertificateContent)
        except ValueError:  # whatever the device holds there, it is no certificate of ours
            continue
        if _issued_to(cert, ca, identity, now) and dev.sec("GetPrivateKeyStatus", KeyID=item.KeyID):
            log.info("reusing certificate %s of %s", item.CertificateID, identity)
            return str(item.CertificateID), str(item.KeyID)
    if curve is None:
        key = dev.sec("CreateRSAKeyPair", KeyLength=key_length, Alias=f"uplink {identity}")
    else:
        key = dev.sec("CreateECCKeyPair", EllipticCurve=curve, Alias=f"uplink {identity}")
    key_id = str(key.KeyID)
    created.append(f"key {key_id}")
    _wait(lambda: dev.sec("GetKeyStatus", KeyID=key_id) == "ok", key_timeout, f"key {key_id} to be generated")
    csr = dev.sec("CreatePKCS10CSR", Subject={"CommonName": [identity]}, KeyID=key_id,
                  SignatureAlgorithm={"algorithm": SHA256_WITH_RSA if curve is None else ECDSA_WITH_SHA256})
    cert = sign_csr(csr, ca, identity)
    uploaded = dev.sec("UploadCertificate", Certificate=cert.public_bytes(serialization.Encoding.DER),
                       Alias=f"uplink {identity}", PrivateKeyRequired=True)
    created.append(f"certificate {uploaded.CertificateID}")
    return str(uploaded.CertificateID), key_id


def _trust_policy(dev: _Device, ca: CertKey, created: list[str]) -> str:
    ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
    anchor = next((str(c.CertificateID) for c in dev.sec("GetAllCertificates") or ()
                   if bytes(c.CertificateContent) == ca_der), None)
    if anchor is None:
        anchor = str(dev.sec("UploadCertificate", Certificate=ca_der, Alias="cloud CA").CertificateID)
        created.append(f"certificate {anchor}")
    for policy in dev.sec("GetAllCertPathValidationPolicies") or ():
        if [str(t.CertificateID) for t in policy.TrustAnchor] == [anchor]:
            return str(policy.CertPathValidationPolicyID)
    policy_id = str(dev.sec("CreateCertPathValidationPolicy", Alias="cloud", Parameters={},
                            TrustAnchor=[{"CertificateID": anchor}]))
    created.append(f"policy {policy_id}")
    return policy_id


def _authorization_server(dev: _Device, token: TokenClient, policy_id: str, certificate_id: str | None,
                          created: list[str]) -> str:
    data = {"Type": "OAuthClientCredentials", "ClientAuth": token.client_auth, "ServerUri": token.server_uri,
            "ClientID": token.client_id, "ClientSecret": token.client_secret, "Scope": token.scope,
            "CertificateID": certificate_id, "CertPathValidationPolicyID": policy_id}
    for item in dev.sec("GetAuthorizationServerConfigurations") or ():
        if (str(item.Data.ServerUri), str(item.Data.ClientID)) == (token.server_uri, token.client_id):
            dev.sec("SetAuthorizationServerConfiguration", Configuration={"token": item.token, "Data": data})
            return str(item.token)
    made = str(dev.sec("CreateAuthorizationServerConfiguration", Configuration=data))
    created.append(f"authorization server {made}")
    return made


def _online(proxy: str, identity: str, timeout: float) -> bool:
    if urlsplit(proxy).scheme not in ("http", "https"):
        raise ConfigurationError(f"the cloud proxy must be an http(s) URL such as http://127.0.0.1:8080, not {proxy!r}")
    url = proxy.rstrip("/") + "/devices"

    def listed() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return any(d.get("id") == identity for d in json.load(resp))
        except (OSError, ValueError):
            return False

    return bool(_wait(listed, timeout, f"{identity} to appear at {url}"))


def enroll(device_url: str, *, username: str, password: str, ca: CertKey, remote_address: str,
           identity: str | None = None, user_level: Sequence[str] = ("Administrator",), key_length: int = 2048,
           curve: str | None = None, token: TokenClient | None = None, cloud_proxy: str | None = None, wait: float = 0.0,
           timeout: float = 10.0, key_timeout: float = 60.0) -> EnrollmentResult:
    """Enrol the device at ``device_url`` (its device service) into the cloud at ``remote_address``.

    ``identity`` is the CN the cloud will know the device by (default: the
    device's SerialNumber from GetDeviceInformation). ``curve`` (e.g. ``secp256r1``) has the device generate an
    ECC key pair instead of an RSA one of ``key_length`` bits. With ``token`` the uplink
    authenticates with access tokens from that authorization server instead of
    a client certificate (``ca`` then only provides the trust anchor). With
    ``cloud_proxy`` and ``wait > 0`` the call returns once
    ``GET <cloud_proxy>/devices`` lists the device (or raises
    :class:`TransportError` after ``wait`` seconds).
    """
    dev = _Device(device_url, username, password, timeout)
    created: list[str] = []
    certificate_id = key_id = auth_server = None
    if token is not None:
        identity = identity or token.client_id
    elif identity is None:
        identity = dev.serial_number()
    if token is None or token.client_auth == "tls_client_auth":
        certificate_id, key_id = _client_certificate(dev, ca, identity, key_length, curve, key_timeout, created)
    policy_id = _trust_policy(dev, ca, created)
    if token is not None:
        auth_server = _authorization_server(dev, token, policy_id, certificate_id, created)
    dev.uplink.set_uplink(UplinkConfiguration(
        remote_address=remote_address, user_level=tuple(user_level),
        certificate_id=certificate_id if token is None else None,
        cert_path_validation_policy_id=policy_id, authorization_server=auth_server))
    online = _online(cloud_proxy, identity, wait) if cloud_proxy and wait > 0 else None
    return EnrollmentResult(device_id=identity, remote_address=remote_address, certificate_id=certificate_id,
                            key_id=key_id, policy_id=policy_id, created=tuple(created), online=online,
                            authorization_server=auth_server)
