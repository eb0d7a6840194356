"""Layer 5: the keystore rules of the Security (advancedsecurity) service (PROV-1, PROV-2, PROV-3, UPL-13).

One place decides what may enter the device's keystore and how: the SOAP
service (:mod:`..services.security`) calls it, and the objects land in the
store (:mod:`..store`, whose raw ``device keystore|policy|authserver`` CLI
paths keep the same tables and references). No network client lives here.

Theory of operation
-------------------
*Keys.* ``create_rsa_key_pair`` (``create_ecc_key_pair``) checks the length
(the curve, by its IANA TLS Supported Groups name), stores a placeholder with
status ``generating`` (counted against MaximumNumberOfKeys inside the same
transaction) and generates the pair on a worker thread; the pair is written in
one transaction (status ``ok``, private part sealed under the device secret).
A generation that fails, or a process that dies meanwhile, leaves no key: the
placeholder is removed (on failure, or when the next keystore starts).
At most :data:`GENERATORS` pairs are generated at once; the others wait, at
most MaximumNumberOfKeys of them (a placeholder deleted while it waits is
skipped, but counts until its turn came).

*Certificates.* An uploaded certificate (DER, at most
``max_certificate_bytes``) is matched to a stored key by its
SubjectPublicKeyInfo; without a match a public-only key is stored beside it,
unless ``PrivateKeyRequired``. Private keys are used on the device only
(CSR and self-signed signatures, TLS client authentication); no operation
returns one.

*Faults.* :class:`KeystoreError` carries the SOAP code and subcodes the
Advanced Security specification lists for each operation (its "faults" rows
under Keystore Operations and Authorization Server Configuration):
``InvalidArgVal/KeyID``, ``InvalidArgVal/ReferenceExists``,
``Action/MaximumNumberOfKeysReached``, ``InvalidArgVal/KeySignatureAlgorithmMismatch``,
``Action/NoMatchingPrivateKey``, ``InvalidArgVal/InvalidConfig``, ``InvalidArgVal/NoConfig`` …
The deprecated UploadKeyPairInPKCS8 lists none; it uses ``BadPKCS8File`` for
input it cannot read (the name the PKCS#12 upload's ``BadPKCS12File`` pairs with)
and ``UnsupportedPublicKeyAlgorithm`` for a key type it does not take.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from ..errors import ConfigurationError, Iec62676Error
from ..store import (
    KEY_GENERATING,
    AuthServerConfig,
    AuthServerDetails,
    CapacityReached,
    CertificateRecord,
    DeviceStore,
    KeyRecord,
    PolicyRecord,
    ReferenceExists,
)
from .oauth import token_endpoint

__all__ = [
    "AUTH_SERVER_TYPES",
    "CLIENT_AUTH_METHODS",
    "CURVES",
    "DEVICE_KEYSTORE_LIMITS",
    "GENERATORS",
    "SIGNATURE_ALGORITHMS",
    "AuthServerSettings",
    "Keystore",
    "KeystoreError",
    "KeystoreLimits",
    "generate_key",
    "subject_name",
]

log = logging.getLogger(__name__)

#: Key pairs generated at the same time; more requests wait their turn (a 4096-bit RSA key
#: takes about a second of one core).
GENERATORS = 2

#: Signature algorithms by OID (tas:AlgorithmIdentifier/algorithm), with the key type they need.
SIGNATURE_ALGORITHMS: dict[str, tuple[type, hashes.HashAlgorithm]] = {
    "1.2.840.113549.1.1.11": (rsa.RSAPrivateKey, hashes.SHA256()),
    "1.2.840.113549.1.1.12": (rsa.RSAPrivateKey, hashes.SHA384()),
    "1.2.840.113549.1.1.13": (rsa.RSAPrivateKey, hashes.SHA512()),
    "1.2.840.10045.4.3.2": (ec.EllipticCurvePrivateKey, hashes.SHA256()),
    "1.2.840.10045.4.3.3": (ec.EllipticCurvePrivateKey, hashes.SHA384()),
}

#: PROV-3: authorization server types and client authentication methods we serve.
AUTH_SERVER_TYPES = ("OAuthClientCredentials",)
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "tls_client_auth")

MAX_ALIAS = 64
MAX_TEXT = 1024

_DN_ATTRIBUTES = {
    "Country": NameOID.COUNTRY_NAME, "Organization": NameOID.ORGANIZATION_NAME,
    "OrganizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME, "DistinguishedNameQualifier": NameOID.DN_QUALIFIER,
    "StateOrProvinceName": NameOID.STATE_OR_PROVINCE_NAME, "CommonName": NameOID.COMMON_NAME,
    "SerialNumber": NameOID.SERIAL_NUMBER, "Locality": NameOID.LOCALITY_NAME, "Title": NameOID.TITLE,
    "Surname": NameOID.SURNAME, "GivenName": NameOID.GIVEN_NAME, "Initials": NameOID.INITIALS,
    "Pseudonym": NameOID.PSEUDONYM, "GenerationQualifier": NameOID.GENERATION_QUALIFIER,
}


class KeystoreError(ConfigurationError):
    """A keystore request was refused; ``code``/``subcodes`` name the SOAP 1.2 fault."""

    def __init__(self, message: str, *subcodes: str, code: str = "Sender") -> None:
        super().__init__(message)
        self.code = code
        self.subcodes: tuple[str, ...] = subcodes


@dataclass(frozen=True, kw_only=True)
class KeystoreLimits:
    """What the keystore supports (reported by GetServiceCapabilities, enforced on every write)."""

    max_keys: int = 32
    max_certificates: int = 32
    max_policies: int = 8
    max_auth_servers: int = 4
    rsa_key_lengths: tuple[int, ...] = (2048, 3072, 4096)
    #: Elliptic curves by their IANA TLS Supported Groups names (CreateECCKeyPair, EllipticCurves).
    elliptic_curves: tuple[str, ...] = ("secp256r1", "secp384r1")
    max_certificate_bytes: int = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class AuthServerSettings:
    """tas:AuthorizationServerConfigurationData (PROV-3) as the keystore takes it."""

    server_uri: str
    type: str
    client_auth: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    certificate_id: str | None = None
    policy_id: str | None = None


#: The keystore limits of this device (GetServiceCapabilities; PROV-2 derives AccessToken from them).
DEVICE_KEYSTORE_LIMITS = KeystoreLimits()


#: The curves this keystore can generate, by IANA TLS Supported Groups name.
CURVES: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}


def generate_key(kind: str, size: int | str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A fresh private key: ``("RSA", 2048)`` or ``("EC", "secp256r1")``."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size))
    return ec.generate_private_key(CURVES[str(size)])


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _alias(alias: str | None) -> str | None:
    if alias is not None and len(alias) > MAX_ALIAS:
        raise KeystoreError(f"an Alias has at most {MAX_ALIAS} characters", "InvalidArgVal", "Alias")
    return alias or None


def subject_name(parts: Sequence[tuple[str, str]]) -> x509.Name:
    """An X.500 name from (tas:DistinguishedName child, value) pairs, in the order given."""
    attributes = []
    for name, value in parts:
        oid = _DN_ATTRIBUTES.get(name)
        if oid is None:
            raise KeystoreError(f"distinguished name attribute {name!r} is not supported",
                                "InvalidArgVal", "InvalidSubject")
        try:
            attributes.append(x509.NameAttribute(oid, value))
        except ValueError as exc:
            raise KeystoreError(f"{name}: {exc}", "InvalidArgVal", "InvalidSubject") from None
    return x509.Name(attributes)


class Keystore:
    """The keystore of one device (thread-safe; the store serialises writes)."""

    def __init__(self, store: DeviceStore, limits: KeystoreLimits | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.limits = limits or KeystoreLimits()
        self._clock = clock
        self._generators = threading.BoundedSemaphore(GENERATORS)
        self._done: dict[str, threading.Event] = {}
        self._done_lock = threading.Lock()
        discarded = store.discard_generating_keys()
        if discarded:
            log.warning("removed %d key(s) whose generation never finished", discarded)

    def _now(self) -> dt.datetime:
        if self._clock is None:
            return dt.datetime.now(dt.UTC)
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # -- keys --------------------------------------------------------------
    def create_rsa_key_pair(self, length: int, alias: str | None = None) -> tuple[str, int]:
        """Start generating an RSA pair; (KeyID, estimated seconds). Status ``generating`` → ``ok``."""
        if length not in self.limits.rsa_key_lengths:
            raise KeystoreError(f"RSA key length {length} is not supported; supported: "
                                f"{' '.join(map(str, self.limits.rsa_key_lengths))}", "InvalidArgVal", "KeyLength")
        return self._start("RSA", length, alias), max(1, length // 1024 - 1)

    def create_ecc_key_pair(self, curve: str, alias: str | None = None) -> tuple[str, int]:
        """Start generating an ECC pair on ``curve`` (IANA TLS Supported Groups name); (KeyID, estimated seconds)."""
        if curve not in self.limits.elliptic_curves or curve not in CURVES:
            raise KeystoreError(f"elliptic curve {curve[:40]!r} is not supported; supported: "
                                f"{' '.join(self.limits.elliptic_curves)}", "InvalidArgVal", "UnsupportedEllipticCurve")
        return self._start("EC", curve, alias), 1

    def _start(self, kind: str, size: int | str, alias: str | None) -> str:
        key_id = _new_id("key")
        done = threading.Event()
        with self._done_lock:  # a placeholder deleted meanwhile still has its generation in flight: count those too
            if len(self._done) >= self.limits.max_keys:
                raise KeystoreError(f"{len(self._done)} key pairs are still being generated; wait for them",
                                    "Action", "MaximumNumberOfKeysReached", code="Receiver")
            self._done[key_id] = done
        started = False
        try:
            self.store.add_key(key_id, alias=_alias(alias), public_der=None, private_pem=None,
                               max_keys=self.limits.max_keys, generating=True, external=False)
            threading.Thread(target=self._generate, args=(key_id, kind, size, done), name=f"keygen {key_id}",
                             daemon=True).start()
            started = True
        except CapacityReached as exc:
            raise KeystoreError(str(exc), "Action", "MaximumNumberOfKeysReached", code="Receiver") from None
        finally:
            if not started:
                with self._done_lock:
                    self._done.pop(key_id, None)
        return key_id

    def _generate(self, key_id: str, kind: str, size: int | str, done: threading.Event) -> None:
        try:
            with self._generators:
                if self.store.key(key_id) is None:  # deleted while it waited for a generator: nothing to make
                    return
                key = generate_key(kind, size)
                private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())
                if not self.store.complete_key(key_id, _public_der(key.public_key()), private_pem):
                    log.info("key %s was deleted while it was generated", key_id)
        except (ValueError, OSError, sqlite3.Error, Iec62676Error) as exc:  # leave no placeholder behind
            log.warning("generating key %s failed (%s: %s); it is removed", key_id, type(exc).__name__, exc)
            try:
                self.store.delete_key(key_id)
            except (sqlite3.Error, Iec62676Error) as cleanup:  # the store closed at shutdown: next start cleans
                log.info("key %s stays a placeholder until the next start: %s", key_id, cleanup)
        finally:
            done.set()
            with self._done_lock:
                self._done.pop(key_id, None)

    def wait_generated(self, key_id: str, timeout: float) -> bool:
        """Block until a generation started here has ended (True) or ``timeout`` passed (False)."""
        with self._done_lock:
            done = self._done.get(key_id)
        return True if done is None else done.wait(timeout)

    def upload_key_pair_pkcs8(self, der: bytes, *, alias: str | None = None,
                              passphrase: str | None = None) -> str:
        """Store an RSA key pair given as PKCS#8 DER (encrypted under ``passphrase``, or in the clear);
        the private key is sealed like a generated one and never leaves the device again."""
        if len(der) > self.limits.max_certificate_bytes:
            raise KeystoreError("the PKCS#8 key pair is too large", "InvalidArgVal", "BadPKCS8File")
        try:
            key = serialization.load_der_private_key(der, None if passphrase is None else passphrase.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeystoreError("the key pair is not PKCS#8 DER that opens with the given passphrase",
                                "InvalidArgVal", "BadPKCS8File") from None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size not in self.limits.rsa_key_lengths:
            raise KeystoreError(f"only RSA key pairs of {' '.join(map(str, self.limits.rsa_key_lengths))} bits "
                                "are accepted", "InvalidArgVal", "UnsupportedPublicKeyAlgorithm")
        key_id = _new_id("key")
        try:
            self.store.add_key(key_id, alias=_alias(alias), public_der=_public_der(key.public_key()),
                               private_pem=key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()),
                               max_keys=self.limits.max_keys)
        except CapacityReached as exc:
            raise KeystoreError(str(exc), "Action", "MaximumNumberOfKeysReached", code="Receiver") from None
        return key_id

    def key(self, key_id: str) -> KeyRecord:
        record = self.store.key(key_id)
        if record is None:
            raise KeystoreError(f"no key {key_id!r} in the keystore", "InvalidArgVal", "KeyID")
        return record

    def list_keys(self) -> list[KeyRecord]:
        return self.store.list_keys()

    def delete_key(self, key_id: str) -> None:
        try:
            found = self.store.delete_key(key_id)
        except ReferenceExists as exc:
            raise KeystoreError(str(exc), "InvalidArgVal", "ReferenceExists") from None
        if not found:
            raise KeystoreError(f"no key {key_id!r} in the keystore", "InvalidArgVal", "KeyID")

    def _signing_key(self, key_id: str, algorithm: str) -> tuple[object, hashes.HashAlgorithm]:
        record = self.key(key_id)
        if record.status == KEY_GENERATING:
            raise KeystoreError(f"key {key_id!r} is still being generated; wait until its status is ok",
                                "InvalidArgVal", "InvalidKeyStatus")
        pem = self.store.private_key(key_id)
        if pem is None:  # "not an asymmetric key pair": the KeyID fault of CreatePKCS10CSR
            raise KeystoreError(f"key {key_id!r} has no private key on this device", "InvalidArgVal", "KeyID")
        key = serialization.load_pem_private_key(pem, password=None)
        wanted = SIGNATURE_ALGORITHMS.get(algorithm)
        if wanted is None:
            raise KeystoreError(f"signature algorithm {algorithm[:60]!r} is not supported; supported: "
                                f"{' '.join(SIGNATURE_ALGORITHMS)}", "InvalidArgVal", "UnsupportedSignatureAlgorithm")
        if not isinstance(key, wanted[0]):
            raise KeystoreError(f"signature algorithm {algorithm} does not fit key {key_id!r}",
                                "InvalidArgVal", "KeySignatureAlgorithmMismatch")
        return key, wanted[1]

    def create_pkcs10_csr(self, subject: x509.Name, key_id: str, algorithm: str) -> bytes:
        """A PKCS#10 request (DER) signed with the key's private part (which stays here)."""
        key, digest = self._signing_key(key_id, algorithm)
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, digest)  # type: ignore[arg-type]
        return csr.public_bytes(serialization.Encoding.DER)

    def create_self_signed_certificate(self, subject: x509.Name, key_id: str, algorithm: str, *,
                                       alias: str | None = None, not_before: dt.datetime | None = None,
                                       not_after: dt.datetime | None = None) -> str:
        key, digest = self._signing_key(key_id, algorithm)
        try:  # a year X.509 cannot write (before 1950, or beyond 9999 once in UTC) is the client's error
            start = not_before or self._now() - dt.timedelta(minutes=5)
            end = not_after or start + dt.timedelta(days=365)
            if end <= start:
                raise KeystoreError("notValidAfter must be later than notValidBefore", "InvalidArgVal",
                                    "InvalidDateTime")
            builder = x509.CertificateBuilder().not_valid_before(start).not_valid_after(end)
        except (ValueError, OverflowError) as exc:
            raise KeystoreError(f"the validity period cannot be written in a certificate ({exc})", "InvalidArgVal",
                                "InvalidDateTime") from None
        cert = (builder.subject_name(subject).issuer_name(subject)
                .public_key(key.public_key())  # type: ignore[attr-defined]
                .serial_number(x509.random_serial_number())
                .sign(key, digest))  # type: ignore[arg-type]
        size = len(cert.public_bytes(serialization.Encoding.DER))
        if size > self.limits.max_certificate_bytes:  # the bound an uploaded certificate meets (a Subject may be long)
            raise KeystoreError(f"the certificate would have {size} bytes; at most {self.limits.max_certificate_bytes} "
                                "are kept", "InvalidArgVal", "InvalidSubject")
        certificate_id = _new_id("cert")
        self._add_certificate(certificate_id, key_id, alias, cert)
        return certificate_id

    # -- certificates --------------------------------------------------------
    def _parse(self, der: bytes) -> x509.Certificate:
        if len(der) > self.limits.max_certificate_bytes:
            raise KeystoreError(f"the certificate has {len(der)} bytes; at most "
                                f"{self.limits.max_certificate_bytes} are accepted", "InvalidArgVal", "BadCertificate")
        try:
            return x509.load_der_x509_certificate(der)
        except (ValueError, UnsupportedAlgorithm):
            raise KeystoreError("the certificate is not a DER-encoded X.509 certificate",
                                "InvalidArgVal", "BadCertificate") from None

    def _add_certificate(self, certificate_id: str, key_id: str, alias: str | None, cert: x509.Certificate) -> None:
        try:
            self.store.add_certificate(certificate_id, key_id=key_id, alias=_alias(alias),
                                       cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                                       max_certificates=self.limits.max_certificates)
        except CapacityReached as exc:
            raise KeystoreError(str(exc), "Action", "MaximumNumberOfCertificatesReached", code="Receiver") from None

    def upload_certificate(self, der: bytes, *, alias: str | None = None,
                           private_key_required: bool = False) -> tuple[str, str]:
        """Store a certificate, matched to its key by public key; (CertificateID, KeyID)."""
        cert = self._parse(der)
        try:
            public_key = cert.public_key()
        except (UnsupportedAlgorithm, ValueError):
            public_key = None
        if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise KeystoreError("the certificate's public key type is not supported (RSA and ECC are)",
                                "InvalidArgVal", "UnsupportedPublicKeyAlgorithm")
        public = _public_der(public_key)
        der_pem = cert.public_bytes(serialization.Encoding.PEM)
        if any(c.cert_pem == der_pem for c in self.store.list_certificate_records()):
            raise KeystoreError("the keystore already holds this certificate", "InvalidArgVal", "Duplicate")
        record = self.store.key_by_public(public)
        if private_key_required and (record is None or not record.has_private_key):
            raise KeystoreError("no key with a private part in the keystore matches the certificate's public key",
                                "Action", "NoMatchingPrivateKey", code="Receiver")
        certificate_id = _new_id("cert")
        if record is None:
            key_id = _new_id("key")
            try:
                self.store.add_key(key_id, alias=None, public_der=public, private_pem=None,
                                   max_keys=self.limits.max_keys)
            except CapacityReached as exc:
                raise KeystoreError(str(exc), "Action", "MaximumNumberOfKeysReached", code="Receiver") from None
            try:
                self._add_certificate(certificate_id, key_id, alias, cert)
            except KeystoreError:
                self.store.delete_key(key_id)  # nothing partial stays
                raise
        else:
            key_id = record.key_id
            self._add_certificate(certificate_id, key_id, alias, cert)
        return certificate_id, key_id

    def certificate(self, certificate_id: str) -> CertificateRecord:
        record = self.store.certificate(certificate_id)
        if record is None:
            raise KeystoreError(f"no certificate {certificate_id!r} in the keystore", "InvalidArgVal", "CertificateID")
        return record

    def certificates(self) -> list[CertificateRecord]:
        return self.store.list_certificate_records()

    def delete_certificate(self, certificate_id: str) -> None:
        try:
            found = self.store.delete_certificate(certificate_id)
        except ReferenceExists as exc:
            raise KeystoreError(str(exc), "InvalidArgVal", "ReferenceExists") from None
        if not found:
            raise KeystoreError(f"no certificate {certificate_id!r} in the keystore", "InvalidArgVal", "CertificateID")

    # -- certification path validation policies -------------------------------
    def create_policy(self, anchors: Sequence[str], *, alias: str | None = None,
                      require_client_auth_eku: bool | None = None, use_delta_crls: bool | None = None) -> str:
        if not anchors:
            raise KeystoreError("a policy needs at least one trust anchor", "InvalidArgVal", "CertificateID")
        seen: set[str] = set()
        for certificate_id in anchors:  # each anchor row keeps a copy of its certificate: no repeats
            if certificate_id in seen:
                raise KeystoreError(f"trust anchor {certificate_id[:64]!r} is named more than once", "InvalidArgVal",
                                    "CertificateID")
            seen.add(certificate_id)
        for certificate_id in anchors:
            self.certificate(certificate_id)
        policy_id = _new_id("policy")
        try:
            self.store.add_policy(PolicyRecord(policy_id=policy_id, alias=_alias(alias), anchors=tuple(anchors),
                                               require_client_auth_eku=require_client_auth_eku,
                                               use_delta_crls=use_delta_crls),
                                  max_policies=self.limits.max_policies)
        except CapacityReached as exc:
            raise KeystoreError(str(exc), "Action", "MaximumNumberOfCertPathValidationPoliciesReached",
                                code="Receiver") from None
        except ConfigurationError as exc:  # an anchor deleted meanwhile
            raise KeystoreError(str(exc), "InvalidArgVal", "CertificateID") from None
        return policy_id

    def policy(self, policy_id: str) -> PolicyRecord:
        record = self.store.policy(policy_id)
        if record is None:
            raise KeystoreError(f"no certification path validation policy {policy_id!r}",
                                "InvalidArgVal", "CertPathValidationPolicyID")
        return record

    def policies(self) -> list[PolicyRecord]:
        return [r for r in map(self.store.policy, self.store.list_policies()) if r is not None]

    def delete_policy(self, policy_id: str) -> None:
        try:
            found = self.store.delete_policy(policy_id)
        except ReferenceExists as exc:
            raise KeystoreError(str(exc), "InvalidArgVal", "ReferenceExists") from None
        if not found:
            raise KeystoreError(f"no certification path validation policy {policy_id!r}",
                                "InvalidArgVal", "CertPathValidationPolicyID")

    # -- authorization server configurations (PROV-3) ---------------------------
    def _checked(self, s: AuthServerSettings) -> AuthServerSettings:
        try:  # the same URL rules as `device authserver add` (https, a host, no user info)
            if len(s.server_uri) > MAX_TEXT:
                raise ConfigurationError(f"at most {MAX_TEXT} characters")
            token_endpoint(s.server_uri)
        except ConfigurationError as exc:
            raise _invalid_config(f"ServerUri: {exc}") from None
        if s.type not in AUTH_SERVER_TYPES:
            raise _invalid_config(f"Type {s.type!r} is not supported; supported: {' '.join(AUTH_SERVER_TYPES)}")
        method = s.client_auth or "client_secret_basic"
        if method not in CLIENT_AUTH_METHODS:
            raise _invalid_config(f"ClientAuth {method!r} is not supported; supported: {' '.join(CLIENT_AUTH_METHODS)}")
        if any(v is not None and len(v) > MAX_TEXT for v in (s.client_id, s.client_secret, s.scope)):
            raise _invalid_config(f"ClientID, ClientSecret and Scope have at most {MAX_TEXT} characters")
        if not s.client_id:
            raise _invalid_config("ClientID is required")
        if method == "tls_client_auth":
            if s.certificate_id is None or not self.store.has_certificate(s.certificate_id):
                raise _invalid_config("tls_client_auth needs the CertificateID of a certificate with a private key")
        elif not s.client_secret:
            raise _invalid_config(f"{method} needs a ClientSecret")
        if s.policy_id is not None and self.store.policy(s.policy_id) is None:
            raise _invalid_config(f"no certification path validation policy {s.policy_id!r}")
        return s

    def _store_auth_server(self, token: str, s: AuthServerSettings, *, replace: bool) -> None:
        s = self._checked(s)
        try:
            self.store.add_auth_server(
                AuthServerConfig(token=token, url=s.server_uri, client_id=s.client_id or "",
                                 client_secret=s.client_secret or "", policy_id=s.policy_id),
                AuthServerDetails(type=s.type, client_auth=s.client_auth, scope=s.scope,
                                  certificate_id=s.certificate_id),
                max_configurations=self.limits.max_auth_servers, replace=replace)
        except CapacityReached as exc:
            raise KeystoreError(str(exc), "Action", "MaxAuthorizationServers", code="Receiver") from None
        except ConfigurationError as exc:  # Set of a token that is not stored
            raise KeystoreError(str(exc), "InvalidArgVal", "NoConfig") from None

    def create_auth_server(self, settings: AuthServerSettings) -> str:
        token = _new_id("as")
        self._store_auth_server(token, settings, replace=False)
        return token

    def set_auth_server(self, token: str, settings: AuthServerSettings) -> None:
        self._store_auth_server(token, settings, replace=True)

    def auth_server(self, token: str) -> AuthServerSettings:
        cfg = self.store.get_auth_server(token)
        if cfg is None:
            raise KeystoreError(f"no authorization server configuration {token!r}", "InvalidArgVal", "NoConfig")
        details = self.store.auth_server_details(token) or AuthServerDetails(type=AUTH_SERVER_TYPES[0])
        return AuthServerSettings(server_uri=cfg.url, type=details.type, client_auth=details.client_auth,
                                  client_id=cfg.client_id or None, client_secret=cfg.client_secret or None,
                                  scope=details.scope, certificate_id=details.certificate_id,
                                  policy_id=cfg.policy_id)

    def auth_server_tokens(self) -> list[str]:
        return self.store.list_auth_servers()

    def delete_auth_server(self, token: str) -> None:
        try:
            found = self.store.delete_auth_server(token)
        except ReferenceExists as exc:
            raise KeystoreError(str(exc), "InvalidArgVal", "ReferenceExists") from None
        if not found:
            raise KeystoreError(f"no authorization server configuration {token!r}", "InvalidArgVal", "NoConfig")


def _invalid_config(message: str) -> KeystoreError:
    """Create/SetAuthorizationServerConfiguration: "the configuration parameters are not possible to set"."""
    return KeystoreError(message, "InvalidArgVal", "InvalidConfig")
