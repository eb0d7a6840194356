"""Tool module: X.509 material for the uplink's TLS (UPL-6, UPL-11, UPL-13).

Not one of the protocol layers: the ``iec62676 pki`` CLI and the tests use it
to build a small certificate authority and to issue server and client
certificates for the uplink's TLS and mTLS, all with ``cryptography``.
Certificates are RFC 5280 profiles that pass OpenSSL's strict X.509 checks:
the CA carries basicConstraints, keyUsage and a subject key identifier; a leaf
carries an authority key identifier, an extended key usage for its role and
(unless asked not to) a subjectAltName, since RFC 6125 clients match names
against SANs only.

Every failure a user can meet (a missing or unreadable file, a file that is
not PEM, a wrong password, a key that does not belong to its certificate)
raises :class:`~iec62676_2_33.errors.ConfigurationError` with one line naming
the file and what to do. Private keys are written with mode 0600, atomically
(temporary file then :func:`os.replace`), so a crash leaves the old file or the
new one, never a torn key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .domain.private_files import write_atomic
from .errors import ConfigurationError

__all__ = [
    "CertKey",
    "PrivateKey",
    "check_key_matches",
    "create_ca_dir",
    "fingerprint_sha256",
    "issue_to_dir",
    "load_ca_dir",
    "load_cert_pem",
    "load_certs_pem",
    "load_key_pem",
    "make_ca",
    "make_leaf",
    "subject_cn",
]

#: The private key types this module creates and accepts.
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: How far ``notBefore`` is moved into the past, to absorb peers' clock skew.
_BACKDATE = dt.timedelta(minutes=5)

#: PEM headers of an encrypted private key: PKCS#8, and traditional OpenSSL.
_ENCRYPTED_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")

_DEFAULT_EKU = {
    "server": (ExtendedKeyUsageOID.SERVER_AUTH,),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key in unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.pem`` and ``<stem>.key`` (mode 0600) into *directory*.

        Returns the certificate path and the key path.
        """
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        write_atomic(key_path, self.key_pem(), 0o600)
        write_atomic(cert_path, self.cert_pem(), 0o644)
        return cert_path, key_path


# --------------------------------------------------------------------------- building


def make_ca(
    cn: str = "iec62676 test CA",
    *,
    days: int = 3650,
    key_type: str = "ec",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CertKey:
    """A self-signed CA certificate (basicConstraints CA:true, keyCertSign + cRLSign)."""
    key = _new_key(key_type)
    start, end = _validity(days, not_before, not_after)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return CertKey(builder.sign(key, hashes.SHA256()), key)


def make_leaf(
    ca: CertKey,
    cn: str,
    *,
    kind: str,
    sans: Sequence[str] = (),
    days: int = 825,
    key_type: str = "ec",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    include_san: bool = True,
    serial: int | None = None,
) -> CertKey:
    """A server or client certificate signed by *ca*.

    *kind* ``"server"`` gets EKU serverAuth, ``"client"`` clientAuth, unless
    *eku* overrides it (an empty *eku* leaves the extension out). *sans* are
    ``"DNS:name"``, ``"IP:addr"`` or bare (an IP address if it parses as one,
    else a DNS name). ``include_san=False`` builds a CN-only certificate.
    """
    if kind not in _DEFAULT_EKU:
        raise ConfigurationError(f"certificate kind must be 'server' or 'client', not {kind!r}")
    names = [_general_name(entry) for entry in sans]
    usages = _DEFAULT_EKU[kind] if eku is None else tuple(eku)
    key = _new_key(key_type)
    start, end = _validity(days, not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key_encipherment=key_type == "rsa"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if include_san and names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def _new_key(key_type: str) -> PrivateKey:
    """A fresh P-256 (``"ec"``) or RSA 2048 (``"rsa"``) private key."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ConfigurationError(f"key type must be 'ec' or 'rsa', not {key_type!r}")


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    """The validity period: explicit bounds win, else now (backdated) plus *days*."""
    start = dt.datetime.now(dt.UTC) - _BACKDATE if not_before is None else not_before
    end = start + dt.timedelta(days=days) if not_after is None else not_after
    if end <= start:
        raise ConfigurationError(
            f"certificate would expire ({end:%Y-%m-%d %H:%M}) before it starts "
            f"({start:%Y-%m-%d %H:%M}): give a positive number of days"
        )
    return start, end


def _key_usage(*, cert_sign: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    """keyUsage for a CA (*cert_sign*) or a leaf (digitalSignature, + keyEncipherment)."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca: CertKey) -> x509.AuthorityKeyIdentifier:
    """AKI from the CA's SKI extension, or from its public key when it has none."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _general_name(entry: str) -> x509.GeneralName:
    """``"DNS:name"``, ``"IP:addr"`` or a bare name/address as a subjectAltName entry."""
    prefix, sep, value = entry.partition(":")
    tag = prefix.upper() if sep else ""
    try:
        if tag == "IP":
            return x509.IPAddress(ipaddress.ip_address(value))
        if tag == "DNS":
            return _dns_name(value)
        try:
            return x509.IPAddress(ipaddress.ip_address(entry))
        except ValueError:
            return _dns_name(entry)
    except ValueError as exc:
        raise ConfigurationError(
            f"bad subjectAltName {entry!r} ({exc}): use DNS:<name> or IP:<address>"
        ) from None


def _dns_name(value: str) -> x509.DNSName:
    """A non-empty ASCII (A-label) DNS name."""
    if not value or not value.isascii() or any(c.isspace() for c in value):
        raise ValueError("a DNS name must be non-empty ASCII without spaces")
    return x509.DNSName(value)


# --------------------------------------------------------------------------- loading


def load_cert_pem(path: Path | str) -> x509.Certificate:
    """The first certificate of the PEM file at *path*."""
    return load_certs_pem(path)[0]


def load_certs_pem(path: Path | str) -> list[x509.Certificate]:
    """Every certificate of the PEM bundle at *path* (at least one)."""
    data = _read(Path(path), "certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigurationError(
            f"{path} is not a PEM certificate file: give a file with "
            "'-----BEGIN CERTIFICATE-----' blocks"
        ) from None


def load_key_pem(path: Path | str, password: bytes | None = None) -> PrivateKey:
    """The EC or RSA private key in the PEM file at *path*, decrypted with *password*."""
    data = _read(Path(path), "private key")
    encrypted = any(marker in data for marker in _ENCRYPTED_MARKERS)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        hint = "give its password" if encrypted else "give no password for it"
        raise ConfigurationError(
            f"{path} is {'' if encrypted else 'not '}encrypted: {hint}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if encrypted and password is not None:
            raise ConfigurationError(f"wrong password for private key {path}: check it") from None
        raise ConfigurationError(
            f"{path} is not a PEM private key: give a file with '-----BEGIN PRIVATE KEY-----'"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}: use an EC or RSA key")
    return key


def check_key_matches(
    cert: x509.Certificate,
    key: PrivateKey,
    *,
    cert_name: str = "the certificate",
    key_name: str = "the private key",
) -> None:
    """Raise :class:`ConfigurationError` unless *key* is the private half of *cert*'s key."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigurationError(
            f"{key_name} does not match {cert_name}: use the key issued with that certificate"
        )


def load_ca_dir(ca_dir: Path | str) -> CertKey:
    """The CA in *ca_dir* (``ca.pem`` + ``ca.key``), checked to be a CA and to match."""
    ca_dir = Path(ca_dir)
    if not ca_dir.is_dir():
        raise ConfigurationError(
            f"CA directory {ca_dir} does not exist: create it with 'iec62676 pki ca --out {ca_dir}'"
        )
    cert_path, key_path = ca_dir / "ca.pem", ca_dir / "ca.key"
    cert, key = load_cert_pem(cert_path), load_key_pem(key_path)
    check_key_matches(cert, key, cert_name=str(cert_path), key_name=str(key_path))
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigurationError(f"{cert_path} is not a CA certificate: give a CA directory")
    return CertKey(cert, key)


def _read(path: Path, what: str) -> bytes:
    """The bytes of *path*, or a ConfigurationError naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} file {path}: {exc.strerror or exc}; check the path"
        ) from None


# --------------------------------------------------------------------------- directories


def create_ca_dir(
    out: Path | str,
    cn: str = "iec62676 test CA",
    days: int = 3650,
    *,
    force: bool = False,
) -> CertKey:
    """Create *out* and write a new CA into it as ``ca.pem`` + ``ca.key``.

    Refuses to overwrite an existing ``ca.key`` unless *force*.
    """
    out = Path(out)
    if (out / "ca.key").exists() and not force:
        raise ConfigurationError(
            f"refusing to overwrite {out / 'ca.key'}: remove it or use --force"
        )
    _make_dir(out)
    ca = make_ca(cn, days=days)
    ca.write(out, "ca")
    return ca


def issue_to_dir(
    ca_dir: Path | str,
    cn: str,
    kind: str,
    sans: Sequence[str],
    out: Path | str,
    days: int = 825,
) -> CertKey:
    """Issue a *kind* certificate from the CA in *ca_dir* into *out*.

    Writes ``cert.pem``, ``key.pem`` (mode 0600) and a copy of the CA
    certificate as ``ca.pem`` (the trust anchor for the peer).
    """
    ca = load_ca_dir(ca_dir)
    leaf = make_leaf(ca, cn, kind=kind, sans=sans, days=days)
    out = Path(out)
    _make_dir(out)
    write_atomic(out / "key.pem", leaf.key_pem(), 0o600)
    write_atomic(out / "cert.pem", leaf.cert_pem(), 0o644)
    write_atomic(out / "ca.pem", ca.cert_pem(), 0o644)
    return leaf


def _make_dir(path: Path) -> None:
    """Create *path* (and its parents) or say why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create directory {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- helpers


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of *cert*'s DER encoding, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def subject_cn(cert: x509.Certificate) -> str | None:
    """The first commonName of *cert*'s subject, or ``None``."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
