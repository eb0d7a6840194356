"""PROV-1, PROV-3, UPL-11, UPL-13, UPL-14: one-command enrolment of a device into a cloud over ONVIF, end to end.

A real device (``run_device``: direct HTTP and its uplink agent) and a real
cloud (``run_cloud``: mTLS listener and HTTP proxy; for the token variant a
JWT-validating listener) run on loopback, with the project's authorization
server (:mod:`iec62676_2_33.testing.authserver`, discovered through its RFC 8414
metadata) for access tokens; the enrolment talks to the device only through
its ONVIF services.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import one_line_error, run
from served_app import serve_app
from token_env import CLIENT_SECRET, TokenWorld

from iec62676_2_33.enroll import TokenClient, clock_offset, enroll, sign_csr
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.pki import load_ca_dir, make_ca
from iec62676_2_33.runtime.device import device_capabilities
from iec62676_2_33.security.oauth import METADATA_PATH
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import ADMIN, RunningCloud, RunningDevice, UplinkPki, seed_device

WAIT = 30.0


def fresh_device(data: Path) -> RunningDevice:
    """A device with an administrator and nothing in its keystore."""
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
    return RunningDevice(data)


def device_service(device: RunningDevice) -> str:
    assert device.url is not None
    return device.url.rsplit("/onvif/", 1)[0] + "/onvif/device_service"


def test_enroll_api_end_to_end_and_idempotent_prov_1_upl_13(tmp_path: Path) -> None:
    """PROV-1, UPL-11, UPL-13, CFG-3: the device generates its key, the cloud CA certifies its CSR (CN = the
    device's SerialNumber), trust anchor and policy are installed, SetUplink names them, and the cloud sees
    the device over mTLS; a second run creates nothing and keeps the same objects."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    device = fresh_device(tmp_path / "dev")
    try:
        assert cloud.proxy_url is not None
        first = enroll(device_service(device), username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                       remote_address=cloud.uplink_url(), user_level=["Operator"], cloud_proxy=cloud.proxy_url,
                       wait=WAIT)
        assert first.online is True
        assert cloud.device_ids() == [first.device_id]
        assert [c.split()[0] for c in first.created] == ["key", "certificate", "certificate", "policy"]
        with DeviceStore(tmp_path / "dev") as store:
            (uplink,) = store.list_uplinks()
            assert (uplink.certificate_id, uplink.cert_path_validation_policy_id, uplink.user_level) == (
                first.certificate_id, first.policy_id, ("Operator",))
            cert_pem, _ = store.get_certificate(first.certificate_id)  # type: ignore[misc]
            cert = x509.load_pem_x509_certificate(cert_pem)
            assert cert.subject.rfc4514_string() == f"CN={first.device_id}"
            objects = (len(store.list_keys()), len(store.list_certificates()), len(store.list_policies()))
        second = enroll(device_service(device), username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                        remote_address=cloud.uplink_url(), user_level=["Operator"])
        assert second.created == () and second.online is None
        assert (second.certificate_id, second.key_id, second.policy_id) == (
            first.certificate_id, first.key_id, first.policy_id)
        with DeviceStore(tmp_path / "dev") as store:
            assert (len(store.list_keys()), len(store.list_certificates()), len(store.list_policies())) == objects
            assert len(store.list_uplinks()) == 1
    finally:
        device.stop()
        cloud.stop()


def test_enroll_with_an_ecc_p256_device_key_prov_1_upl_13(tmp_path: Path) -> None:
    """PROV-1, UPL-13: enrolment with ``curve="secp256r1"``: the device generates a P-256 key
    (CreateECCKeyPair), its ECDSA-signed CSR is certified and the uplink's mutual TLS with that ECC key is
    accepted by the cloud, which knows the device by the certificate's CN."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    device = fresh_device(tmp_path / "dev")
    try:
        assert cloud.proxy_url is not None
        result = enroll(device_service(device), username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                        remote_address=cloud.uplink_url(), identity="ecc-cam", curve="secp256r1",
                        cloud_proxy=cloud.proxy_url, wait=WAIT)
        assert result.online is True and cloud.device_ids() == ["ecc-cam"]
        with DeviceStore(tmp_path / "dev") as store:
            cert_pem, _ = store.get_certificate(result.certificate_id or "")  # type: ignore[misc]
        public = x509.load_pem_x509_certificate(cert_pem).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    finally:
        device.stop()
        cloud.stop()


def test_enroll_cli_end_to_end_prov_1_upl_13(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PROV-1, UPL-13: ``iec62676 cloud enroll`` with an explicit identity and --wait reports the device
    connected, and the cloud knows it by that identity; run again (password from a file) it creates nothing;
    a usage error and a wrong password are one line, exit 2."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    device = fresh_device(tmp_path / "dev")
    try:
        assert cloud.proxy_url is not None
        argv = ["cloud", "enroll", "--device", device_service(device), "--user", ADMIN[0], "--password", ADMIN[1],
                "--ca", str(certs.dir), "--remote", cloud.uplink_url(), "--device-id", "gate-3"]
        code, _, err = run(capsys, *argv, "--wait", "5")
        assert code == 2 and "--cloud-proxy" in one_line_error(err)
        code, out, err = run(capsys, *argv, "--user-level", "User", "--wait", str(WAIT),
                             "--cloud-proxy", cloud.proxy_url)
        assert code == 0, err
        assert "device gate-3 enrolled" in out and "device gate-3 is connected to the cloud" in out
        assert cloud.device_ids() == ["gate-3"]
        (tmp_path / "pw").write_text(f"{ADMIN[1]}\n")
        by_file = [a for a in argv if a not in ("--password", ADMIN[1])] + ["--password-file", str(tmp_path / "pw")]
        code, out, _ = run(capsys, *by_file, "--user-level", "User")
        assert code == 0 and "created nothing new (already enrolled)" in out
        code, _, err = run(capsys, *argv[:-2], "--device-id", "gate-3", "--password", "wrong")
        assert code == 2 and one_line_error(err)
    finally:
        device.stop()
        cloud.stop()


def test_sign_csr_refuses_a_forged_request_prov_1(tmp_path: Path) -> None:
    """PROV-1: the cloud CA signs only a well-formed CSR whose signature its own key made."""
    ca = make_ca("enrol CA")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # a flipped bit in the signature
    for bad in (b"\x30\x00", bytes(der)):
        with pytest.raises(ConfigurationError):
            sign_csr(bad, ca, "cam")
    good = sign_csr(csr.public_bytes(serialization.Encoding.DER), ca, "cam")
    good.verify_directly_issued_by(ca.cert)
    assert good.subject.rfc4514_string() == "CN=cam"


def test_enroll_with_a_device_clock_one_hour_ahead_sec_2(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-2, PROV-1: the enrolment dates its UsernameTokens by the device's clock (GetSystemDateAndTime), so
    a device whose clock is an hour ahead accepts them; dated by the local clock they are refused."""
    data = tmp_path / "dev"
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
        app = build_device_app(UplinkServiceContext(store=store, capabilities=device_capabilities()),
                               clock=lambda: time.time() + 3600)
        with serve_app(app) as base:
            url = f"{base}/onvif/device_service"
            certs = UplinkPki(tmp_path / "pki")
            result = enroll(url, username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                            remote_address="https://cloud.example/uplink", identity="skewed")
            assert result.certificate_id and store.list_uplinks()[0].certificate_id == result.certificate_id
            monkeypatch.setattr("iec62676_2_33.enroll.clock_offset", lambda _utc, _now: timedelta(0))
            with pytest.raises(SoapFault) as info:
                enroll(url, username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                       remote_address="https://cloud.example/uplink", identity="skewed")
            assert "NotAuthorized" in info.value.subcodes


def test_clock_offset_follows_the_device_clock_sec_2() -> None:
    """SEC-2: the offset is GetSystemDateAndTime's UTCDateTime minus the local time (whole seconds)."""
    class _Part:
        def __init__(self, **kw: object) -> None:
            self.__dict__.update(kw)

    utc = _Part(Date=_Part(Year=2030, Month=1, Day=2), Time=_Part(Hour=3, Minute=4, Second=5))
    now = datetime(2030, 1, 2, 3, 0, 5, 999, tzinfo=UTC)
    assert clock_offset(utc, now) == timedelta(minutes=4)
    assert clock_offset(None, now) == timedelta(0)


def test_enroll_through_a_cloud_proxy_into_a_second_cloud_prov_1_upl_10(tmp_path: Path) -> None:
    """PROV-1, UPL-10, UPL-12, UPL-13: a device already connected to cloud A is enrolled into cloud B (another
    CA) through cloud A's proxy — every ONVIF call, addresses included, goes over the existing uplink — and
    then keeps both uplinks up."""
    certs_a, certs_b = UplinkPki(tmp_path / "pki-a"), UplinkPki(tmp_path / "pki-b")
    cloud_a, cloud_b = RunningCloud(certs_a), RunningCloud(certs_b)
    data = tmp_path / "dev"
    seed_device(data, certs_a, "cam-a", [(cloud_a.uplink_url(), ("Administrator",))])
    device = RunningDevice(data)
    try:
        cloud_a.wait_for("cam-a")
        via_a = f"{cloud_a.proxy_url}/devices/cam-a/onvif/device_service"
        result = enroll(via_a, username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs_b.dir),
                        remote_address=cloud_b.uplink_url(), identity="cam-b", cloud_proxy=cloud_b.proxy_url,
                        wait=WAIT)
        assert result.online is True
        assert cloud_b.device_ids() == ["cam-b"] and cloud_a.device_ids() == ["cam-a"]
    finally:
        device.stop()
        cloud_a.stop()
        cloud_b.stop()


# --------------------------------------------------------------------------- token variant

@pytest.mark.parametrize("server_uri", ["metadata", "issuer"])
def test_enroll_token_variant_end_to_end_prov_3_upl_14(tmp_path: Path, server_uri: str) -> None:
    """PROV-3, UPL-14, PROV-1: CreateAuthorizationServerConfiguration (ServerUri = the RFC 8414 metadata URL or
    the issuer) and SetUplink with AuthorizationServer; the device discovers the token endpoint, gets a token
    and appears on the cloud under the token's subject; a second run updates the same configuration and
    creates nothing."""
    certs = UplinkPki(tmp_path / "pki")
    world = TokenWorld(certs, tmp_path)
    device = fresh_device(tmp_path / "dev")
    try:
        uri = world.app.issuer + (METADATA_PATH if server_uri == "metadata" else "")
        client = TokenClient(server_uri=uri, client_id="cam-t", client_secret=CLIENT_SECRET,
                             client_auth="client_secret_post", scope="uplink")
        first = enroll(device_service(device), username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                       remote_address=world.uplink_url, token=client, cloud_proxy=world.proxy_url, wait=WAIT)
        assert first.online is True and first.device_id == "cam-t"
        assert first.certificate_id is None and first.authorization_server is not None
        assert [c.split()[0] for c in first.created] == ["certificate", "policy", "authorization"]
        assert world.app.issued >= 1
        second = enroll(device_service(device), username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                        remote_address=world.uplink_url, token=client)
        assert second.created == () and second.authorization_server == first.authorization_server
        with DeviceStore(tmp_path / "dev") as store:
            (uplink,) = store.list_uplinks()
            assert (uplink.authorization_server, uplink.certificate_id, uplink.cert_path_validation_policy_id) == (
                first.authorization_server, None, first.policy_id)
            assert store.list_auth_servers() == [first.authorization_server]
            assert not any(k.has_private_key for k in store.list_keys())  # no key pair was generated
    finally:
        device.stop()
        world.stop()


def test_enroll_token_variant_with_tls_client_auth_prov_3_upl_14(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """PROV-3, UPL-14, PROV-1 (RFC 8705 tls_client_auth): ``cloud enroll --client-auth tls_client_auth`` has
    the device generate a key and our CA certify it (CN = the client id), names that certificate in the
    authorization server configuration without a secret, and the device, authenticated at the project's
    authorization server by that certificate alone, gets a token and appears on the cloud under its subject;
    the uplink itself names no certificate. A secret given with tls_client_auth is a usage error."""
    certs = UplinkPki(tmp_path / "pki")
    world = TokenWorld(certs, tmp_path)
    device = fresh_device(tmp_path / "dev")
    try:
        assert "tls_client_auth" in world.app.metadata()["token_endpoint_auth_methods_supported"]
        argv = ["cloud", "enroll", "--device", device_service(device), "--user", ADMIN[0], "--password", ADMIN[1],
                "--ca", str(certs.dir), "--remote", world.uplink_url, "--token-server", world.app.issuer,
                "--client-id", "cam-m", "--client-auth", "tls_client_auth"]
        code, _, err = run(capsys, *argv, "--client-secret", "x")
        assert code == 2 and "sends no client secret" in one_line_error(err)
        code, out, err = run(capsys, *argv, "--wait", str(WAIT), "--cloud-proxy", world.proxy_url)
        assert code == 0, err
        assert "device cam-m enrolled" in out and "device cam-m is connected to the cloud" in out
        assert world.app.issued >= 1
        result = enroll(device_service(device), username=ADMIN[0], password=ADMIN[1], ca=load_ca_dir(certs.dir),
                        remote_address=world.uplink_url,
                        token=TokenClient(server_uri=world.app.issuer, client_id="cam-m",
                                          client_auth="tls_client_auth"))
        assert result.created == ()  # the second run finds key, certificate, policy and configuration in place
        with DeviceStore(tmp_path / "dev") as store:
            (uplink,) = store.list_uplinks()
            assert (uplink.authorization_server, uplink.certificate_id) == (result.authorization_server, None)
            config = store.get_auth_server(result.authorization_server or "")
            details = store.auth_server_details(result.authorization_server or "")
            assert config is not None and not config.client_secret
            assert details is not None and details.client_auth == "tls_client_auth"
            assert details.certificate_id == result.certificate_id
            cert_pem, _ = store.get_certificate(result.certificate_id or "")  # type: ignore[misc]
        assert x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string() == "CN=cam-m"
    finally:
        device.stop()
        world.stop()


def test_enroll_token_variant_cli_prov_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PROV-3, UPL-14: ``cloud enroll --token-server … --client-id … --client-secret-file …`` enrols with
    access tokens and waits until the device is on; token options without --token-server are a usage error."""
    certs = UplinkPki(tmp_path / "pki")
    world = TokenWorld(certs, tmp_path)
    device = fresh_device(tmp_path / "dev")
    try:
        (tmp_path / "secret").write_text(CLIENT_SECRET + "\n")
        argv = ["cloud", "enroll", "--device", device_service(device), "--user", ADMIN[0], "--password", ADMIN[1],
                "--ca", str(certs.dir), "--remote", world.uplink_url]
        code, _, err = run(capsys, *argv, "--client-id", "cam-t")
        assert code == 2 and "--token-server" in one_line_error(err)
        code, out, err = run(capsys, *argv, "--token-server", world.app.issuer + METADATA_PATH, "--client-id",
                             "cam-t", "--client-secret-file", str(tmp_path / "secret"), "--wait", str(WAIT),
                             "--cloud-proxy", world.proxy_url)
        assert code == 0, err
        assert "device cam-t enrolled" in out and "with authorization server as-" in out
        assert "device cam-t is connected to the cloud" in out and CLIENT_SECRET not in out + err
    finally:
        device.stop()
        world.stop()
