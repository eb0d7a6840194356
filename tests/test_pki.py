"""UPL-6, UPL-11, UPL-13: certificates for the uplink's TLS and mTLS.

Certificates are built at test time and proven with real TLS handshakes over
loopback TCP (a thread plays the server; every socket wait is bounded), plus a
negative matrix: CN-only, expired, not yet valid, wrong EKU, unknown CA. The
``iec62676 pki`` CLI is driven end to end through ``cli.main``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import socket
import ssl
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iec62676_2_33 import pki
from iec62676_2_33.cli import main
from iec62676_2_33.errors import ConfigurationError

TIMEOUT = 10.0  # bound on every socket operation and on the server thread

# OpenSSL verify codes (x509_vfy.h); the messages vary between OpenSSL versions.
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_INVALID_PURPOSE = 26
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return pki.make_ca()


# --------------------------------------------------------------------------- TLS helpers


@dataclass
class Outcome:
    """What each side of one handshake saw."""

    client_error: BaseException | None = None
    server_error: BaseException | None = None
    server_saw_client_cn: str | None = None


def _server_context(
    tmp: Path, server: pki.CertKey, client_ca: pki.CertKey | None = None
) -> ssl.SSLContext:
    cert, key = server.write(tmp, "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert_pem().decode())
    return ctx


def _client_context(
    tmp: Path, trust: pki.CertKey, client: pki.CertKey | None = None
) -> ssl.SSLContext:
    cafile, _ = trust.write(tmp, "trust")
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.hostname_checks_common_name = False
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if client is not None:
        cert, key = client.write(tmp, "client")
        ctx.load_cert_chain(cert, key)
    return ctx


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> Outcome:
    """One TLS connection over loopback; the server answers b"ok" once the handshake is done."""
    outcome = Outcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert(binary_form=True)
                    if peer:
                        outcome.server_saw_client_cn = pki.subject_cn(
                            x509.load_der_x509_certificate(peer)
                        )
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                outcome.server_error = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            raw = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
            with raw, client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                assert tls.recv(2) == b"ok"
        except (ssl.SSLError, OSError) as exc:
            outcome.client_error = exc
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    return outcome


def _serve_leaf(tmp: Path, ca: pki.CertKey, leaf: pki.CertKey, hostname: str) -> Outcome:
    return _handshake(_server_context(tmp, leaf), _client_context(tmp, ca), hostname)


def _verify_error(exc: BaseException | None) -> ssl.SSLCertVerificationError:
    assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
    return exc


def expect_ok(outcome: Outcome) -> None:
    assert outcome.client_error is None, repr(outcome.client_error)
    assert outcome.server_error is None, repr(outcome.server_error)


# --------------------------------------------------------------------------- positive handshakes


@pytest.mark.parametrize(
    ("sans", "hostname"),
    [
        (["DNS:localhost"], "localhost"),
        (["IP:127.0.0.1"], "127.0.0.1"),
        (["localhost", "127.0.0.1"], "127.0.0.1"),
    ],
)
def test_server_leaf_verifies_by_san(
    tmp_path: Path, ca: pki.CertKey, sans: list[str], hostname: str
) -> None:
    """UPL-11: a server leaf is accepted by a SAN-only, strict-X.509 client."""
    leaf = pki.make_leaf(ca, "device.example", kind="server", sans=sans)
    expect_ok(_serve_leaf(tmp_path, ca, leaf, hostname))


def test_rsa_server_leaf_verifies(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: key_type="rsa" gives an RSA 2048 leaf that handshakes too."""
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["localhost"], key_type="rsa")
    assert isinstance(leaf.key, rsa.RSAPrivateKey) and leaf.key.key_size == 2048
    expect_ok(_serve_leaf(tmp_path, ca, leaf, "localhost"))


def test_mutual_tls_with_client_certificate(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-13: the listener requires a client certificate and sees its CN."""
    server = pki.make_leaf(ca, "cloud", kind="server", sans=["localhost"])
    client = pki.make_leaf(ca, "device-0001", kind="client")
    outcome = _handshake(
        _server_context(tmp_path, server, client_ca=ca),
        _client_context(tmp_path, ca, client),
        "localhost",
    )
    expect_ok(outcome)
    assert outcome.server_saw_client_cn == "device-0001"


# --------------------------------------------------------------------------- negative matrix


def test_cn_only_certificate_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11 (RFC 6125): a name only in the CN does not match a SAN-only client."""
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["localhost"], include_san=False)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    err = _verify_error(_serve_leaf(tmp_path, ca, leaf, "localhost").client_error)
    assert err.verify_code == X509_V_ERR_HOSTNAME_MISMATCH
    assert "Hostname mismatch" in err.verify_message


def test_wrong_san_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: a DNS SAN does not match an IP address."""
    leaf = pki.make_leaf(ca, "x", kind="server", sans=["DNS:localhost"])
    err = _verify_error(_serve_leaf(tmp_path, ca, leaf, "127.0.0.1").client_error)
    assert err.verify_code == X509_V_ERR_IP_ADDRESS_MISMATCH


def test_expired_certificate_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: an expired server certificate is refused."""
    now = dt.datetime.now(dt.UTC)
    leaf = pki.make_leaf(
        ca,
        "x",
        kind="server",
        sans=["localhost"],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    err = _verify_error(_serve_leaf(tmp_path, ca, leaf, "localhost").client_error)
    assert (err.verify_code, err.verify_message) == (
        X509_V_ERR_CERT_HAS_EXPIRED,
        "certificate has expired",
    )


def test_not_yet_valid_certificate_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: a certificate whose validity starts tomorrow is refused."""
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    leaf = pki.make_leaf(ca, "x", kind="server", sans=["localhost"], not_before=start)
    err = _verify_error(_serve_leaf(tmp_path, ca, leaf, "localhost").client_error)
    assert (err.verify_code, err.verify_message) == (
        X509_V_ERR_CERT_NOT_YET_VALID,
        "certificate is not yet valid",
    )


def test_server_certificate_with_client_eku_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: a server presenting a clientAuth-only certificate is refused."""
    leaf = pki.make_leaf(
        ca, "x", kind="server", sans=["localhost"], eku=[ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    err = _verify_error(_serve_leaf(tmp_path, ca, leaf, "localhost").client_error)
    assert err.verify_code == X509_V_ERR_INVALID_PURPOSE
    assert err.verify_message.endswith("certificate purpose")


def test_client_certificate_with_server_eku_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-13: the listener refuses a client certificate without clientAuth."""
    server = pki.make_leaf(ca, "cloud", kind="server", sans=["localhost"])
    client = pki.make_leaf(ca, "device", kind="client", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    outcome = _handshake(
        _server_context(tmp_path, server, client_ca=ca),
        _client_context(tmp_path, ca, client),
        "localhost",
    )
    err = _verify_error(outcome.server_error)
    assert err.verify_code == X509_V_ERR_INVALID_PURPOSE
    assert err.verify_message.endswith("certificate purpose")
    assert isinstance(outcome.client_error, ssl.SSLError)
    assert outcome.client_error.reason == "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"


def test_certificate_from_unknown_ca_is_refused(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: a leaf signed by another CA is refused."""
    leaf = pki.make_leaf(pki.make_ca("other CA"), "x", kind="server", sans=["localhost"])
    err = _verify_error(_serve_leaf(tmp_path, ca, leaf, "localhost").client_error)
    assert err.verify_code == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY


# --------------------------------------------------------------------------- building


def test_ca_extensions() -> None:
    """UPL-11: the CA is a critical-basicConstraints CA with keyCertSign + cRLSign and an SKI."""
    ca = pki.make_ca("Test Root", days=10)
    ext = ca.cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert bc.critical and bc.value.ca
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert pki.subject_cn(ca.cert) == "Test Root"
    assert ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc == dt.timedelta(days=10)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp256r1"


def test_leaf_extensions(ca: pki.CertKey) -> None:
    """UPL-11: SAN parsing, default EKU per kind, AKI equals the CA's SKI, explicit serial."""
    leaf = pki.make_leaf(
        ca, "dev", kind="server", sans=["DNS:a.example", "IP:::1", "10.0.0.1", "b"], serial=42
    )
    ext = leaf.cert.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["::1", "10.0.0.1"]
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.cert.serial_number == 42
    assert leaf.cert.issuer == ca.cert.subject
    client = pki.make_leaf(ca, "dev", kind="client")
    eku = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "peer"}, "certificate kind must be 'server' or 'client', not 'peer'"),
        ({"kind": "server", "sans": ["IP:300.1.1.1"]}, "bad subjectAltName 'IP:300.1.1.1'"),
        ({"kind": "server", "sans": ["DNS:"]}, "bad subjectAltName 'DNS:'"),
        ({"kind": "server", "key_type": "dsa"}, "key type must be 'ec' or 'rsa', not 'dsa'"),
        ({"kind": "server", "days": 0}, "before it starts"),
    ],
)
def test_make_leaf_rejects_bad_input(
    ca: pki.CertKey, kwargs: dict[str, object], message: str
) -> None:
    """UPL-11: bad parameters are ConfigurationErrors that say what was wrong."""
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        pki.make_leaf(ca, "x", **kwargs)  # type: ignore[arg-type]


def test_fingerprint_and_subject_cn(ca: pki.CertKey) -> None:
    """UPL-13: helpers other modules use to identify a peer certificate."""
    der = ca.cert.public_bytes(serialization.Encoding.DER)
    assert pki.fingerprint_sha256(ca.cert) == hashlib.sha256(der).hexdigest()
    assert pki.subject_cn(pki.make_leaf(ca, "dev-7", kind="client").cert) == "dev-7"
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "org")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(no_cn)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(1)
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .sign(ca.key, hashes.SHA256())
    )
    assert pki.subject_cn(cert) is None


# --------------------------------------------------------------------------- files


def test_write_and_load_round_trip(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-6: <stem>.pem + <stem>.key (0600, no temp files left) load back to the same pair."""
    cert_path, key_path = ca.write(tmp_path, "ca")
    assert (cert_path, key_path) == (tmp_path / "ca.pem", tmp_path / "ca.key")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = pki.load_ca_dir(tmp_path)
    assert loaded.cert == ca.cert
    assert loaded.key_pem() == ca.key_pem()
    pki.check_key_matches(loaded.cert, loaded.key)


def test_load_certs_pem_reads_a_bundle(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: a trust bundle with two CAs loads as two certificates, in order."""
    other = pki.make_ca("other")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.cert_pem() + other.cert_pem())
    assert pki.load_certs_pem(bundle) == [ca.cert, other.cert]
    assert pki.load_cert_pem(bundle) == ca.cert


def test_load_key_with_password(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-6: encrypted keys load with the right password and say what is wrong otherwise."""
    path = tmp_path / "enc.key"
    path.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert pki.load_key_pem(path, b"secret").private_numbers() == ca.key.private_numbers()
    with pytest.raises(
        ConfigurationError, match=f"^wrong password for private key {path}: check it$"
    ):
        pki.load_key_pem(path, b"wrong")
    with pytest.raises(ConfigurationError, match=f"^{path} is encrypted: give its password$"):
        pki.load_key_pem(path)
    ca.write(tmp_path, "plain")
    with pytest.raises(ConfigurationError, match="is not encrypted: give no password for it$"):
        pki.load_key_pem(tmp_path / "plain.key", b"secret")


def test_load_failures_name_the_file(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-6: missing, non-PEM and mismatched files are one-line ConfigurationErrors."""
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match=f"^cannot read certificate file {missing}: "):
        pki.load_cert_pem(missing)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(ConfigurationError, match=f"^{junk} is not a PEM certificate file"):
        pki.load_cert_pem(junk)
    with pytest.raises(ConfigurationError, match=f"^{junk} is not a PEM private key"):
        pki.load_key_pem(junk)
    with pytest.raises(ConfigurationError, match="does not match"):
        pki.check_key_matches(ca.cert, pki.make_ca().key)


def test_load_ca_dir_checks_pair_and_ca_flag(tmp_path: Path, ca: pki.CertKey) -> None:
    """UPL-11: a CA directory must hold a CA certificate and its own key."""
    with pytest.raises(ConfigurationError, match="does not exist: create it with 'iec62676 pki ca"):
        pki.load_ca_dir(tmp_path / "nope")
    ca.write(tmp_path, "ca")
    pki.make_ca().write(tmp_path, "other")
    (tmp_path / "ca.key").write_bytes((tmp_path / "other.key").read_bytes())
    with pytest.raises(
        ConfigurationError, match=f"^{tmp_path / 'ca.key'} does not match {tmp_path / 'ca.pem'}"
    ):
        pki.load_ca_dir(tmp_path)
    leaf = pki.make_leaf(ca, "leaf", kind="server")
    leaf.write(tmp_path, "ca")
    with pytest.raises(ConfigurationError, match="is not a CA certificate"):
        pki.load_ca_dir(tmp_path)


def test_create_ca_dir_refuses_to_overwrite(tmp_path: Path) -> None:
    """UPL-6: an existing CA key is never replaced silently."""
    out = tmp_path / "a" / "b"
    first = pki.create_ca_dir(out, cn="Root 1", days=30)
    with pytest.raises(ConfigurationError, match=f"^refusing to overwrite {out / 'ca.key'}"):
        pki.create_ca_dir(out)
    assert pki.load_ca_dir(out).cert == first.cert
    second = pki.create_ca_dir(out, cn="Root 2", force=True)
    assert pki.load_ca_dir(out).cert == second.cert


def test_issue_to_dir(tmp_path: Path) -> None:
    """UPL-13: issue writes cert.pem, key.pem (0600) and the CA's ca.pem."""
    ca = pki.create_ca_dir(tmp_path / "ca")
    leaf = pki.issue_to_dir(tmp_path / "ca", "device-9", "client", [], tmp_path / "dev", days=5)
    out = tmp_path / "dev"
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert pki.load_cert_pem(out / "cert.pem") == leaf.cert
    assert pki.load_cert_pem(out / "ca.pem") == ca.cert
    pki.check_key_matches(leaf.cert, pki.load_key_pem(out / "key.pem"))


# --------------------------------------------------------------------------- CLI


def _one_line(text: str) -> str:
    assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
    return text


def test_cli_end_to_end_mtls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-11, UPL-13: files written by `pki ca` / `pki issue` carry a real mTLS handshake."""
    ca_dir, srv, dev = tmp_path / "ca", tmp_path / "srv", tmp_path / "dev"
    assert main(["pki", "ca", "--out", str(ca_dir), "--cn", "CLI Root", "--days", "30"]) == 0
    ca = pki.load_ca_dir(ca_dir)
    assert _one_line(capsys.readouterr().out) == (
        f"wrote CA {ca_dir / 'ca.pem'} and {ca_dir / 'ca.key'} (sha256 {pki.fingerprint_sha256(ca.cert)})\n"
    )
    assert pki.subject_cn(ca.cert) == "CLI Root"
    argv = [
        "pki",
        "issue",
        "--ca",
        str(ca_dir),
        "--cn",
        "cloud",
        "--server",
        "--san",
        "DNS:localhost",
        "--san",
        "127.0.0.1",
        "--out",
        str(srv),
    ]
    assert main(argv) == 0
    assert _one_line(capsys.readouterr().out).startswith(
        f"wrote server certificate {srv / 'cert.pem'}, "
    )
    assert (
        main(
            ["pki", "issue", "--ca", str(ca_dir), "--cn", "device-1", "--client", "--out", str(dev)]
        )
        == 0
    )
    assert _one_line(capsys.readouterr().out).startswith(
        f"wrote client certificate {dev / 'cert.pem'}, "
    )

    san = pki.load_cert_pem(srv / "cert.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(srv / "cert.pem", srv / "key.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=srv / "ca.pem")
    client_ctx = ssl.create_default_context(cafile=dev / "ca.pem")
    client_ctx.hostname_checks_common_name = False
    client_ctx.load_cert_chain(dev / "cert.pem", dev / "key.pem")
    for host in ("localhost", "127.0.0.1"):
        outcome = _handshake(server_ctx, client_ctx, host)
        expect_ok(outcome)
        assert outcome.server_saw_client_cn == "device-1"


def _cli_error(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting exit status 2; return its one-line stderr."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse errors exit from parse_args
        status = exc.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    return _one_line(captured.err)


def test_cli_missing_ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-6: an unreadable CA directory is a one-line error, exit status 2."""
    nope = tmp_path / "nope"
    err = _cli_error(
        ["pki", "issue", "--ca", str(nope), "--cn", "x", "--server", "--out", str(tmp_path / "o")],
        capsys,
    )
    assert (
        err
        == f"iec62676: error: CA directory {nope} does not exist: create it with 'iec62676 pki ca --out {nope}'\n"
    )
    assert not (tmp_path / "o").exists()


def test_cli_not_a_pem_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-6: a CA directory whose ca.pem is not PEM is a one-line error, exit status 2."""
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    (tmp_path / "ca.key").write_text("not a key\n")
    err = _cli_error(
        [
            "pki",
            "issue",
            "--ca",
            str(tmp_path),
            "--cn",
            "x",
            "--client",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert err.startswith(f"iec62676: error: {tmp_path / 'ca.pem'} is not a PEM certificate file")


def test_cli_refuses_to_overwrite_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-6: `pki ca` does not replace an existing CA key without --force."""
    assert main(["pki", "ca", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    before = (tmp_path / "ca.key").read_bytes()
    err = _cli_error(["pki", "ca", "--out", str(tmp_path)], capsys)
    assert (
        err
        == f"iec62676: error: refusing to overwrite {tmp_path / 'ca.key'}: remove it or use --force\n"
    )
    assert (tmp_path / "ca.key").read_bytes() == before
    assert main(["pki", "ca", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "ca.key").read_bytes() != before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "one of the arguments --server --client is required"),
        (["--server", "--client"], "argument --client: not allowed with argument --server"),
        (["--server", "--days", "0"], "argument --days: must be at least 1, not 0"),
    ],
)
def test_cli_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """UPL-13: the role flag is required and exclusive; usage errors are one line, status 2."""
    argv = ["pki", "issue", "--ca", str(tmp_path), "--cn", "x", "--out", str(tmp_path), *extra]
    assert _cli_error(argv, capsys) == f"iec62676: error: {message}\n"
