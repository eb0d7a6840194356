"""PROV-1, PROV-2, PROV-3, SEC-1: the Security (advancedsecurity) service on the wire.

Raw SOAP 1.2 envelopes are POSTed to a running device (the ``device`` fixture);
every answer is validated against the authored ``xsd/security.xsd`` and every
refusal is checked for its full subcode chain.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN, OPERATOR, USER, RunningDevice
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import fault_chain
from lxml import etree
from served_app import soap_call

from iec62676_2_33 import pki, schemas
from iec62676_2_33.domain.sealed import SECRET_FILE
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TER, TUP
from iec62676_2_33.runtime.device import device_capabilities
from iec62676_2_33.security.keystore import Keystore, KeystoreError, KeystoreLimits
from iec62676_2_33.services.security import OPERATION_ACCESS, SECURITY_PATH, TAS
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningCloud, UplinkPki, seed_device
from iec62676_2_33.testing.harness import RunningDevice as Device

NS = {"env": SOAP_ENV, "tas": TAS, "ter": TER, "tds": TDS, "tup": TUP}
SHA256_RSA = "1.2.840.113549.1.1.11"
WAIT = 30.0


def call(device: RunningDevice, body: str, *, user: tuple[str, str] | None = ADMIN,
         path: str = SECURITY_PATH) -> tuple[int, etree._Element]:
    return soap_call(device.base + path, body, NS, user=user)


def ok(device: RunningDevice, body: str, **kw: object) -> etree._Element:
    """The answer element of a successful call, validated against the authored XSD."""
    status, root = call(device, body, **kw)  # type: ignore[arg-type]
    assert status == 200, etree.tostring(root)
    response = root.find("env:Body", NS)[0]
    schemas.validate(response, "security")
    return response


def refused(device: RunningDevice, body: str, **kw: object) -> list[str]:
    status, root = call(device, body, **kw)  # type: ignore[arg-type]
    assert status in (400, 500)
    return fault_chain(root)


def create_key(device: RunningDevice, length: int = 2048) -> str:
    answer = ok(device, f"<tas:CreateRSAKeyPair><tas:KeyLength>{length}</tas:KeyLength>"
                        "<tas:Alias>enrol</tas:Alias></tas:CreateRSAKeyPair>")
    assert answer.findtext("tas:EstimatedCreationTime", namespaces=NS).startswith("PT")
    return answer.findtext("tas:KeyID", namespaces=NS)


def wait_ok(device: RunningDevice, key_id: str) -> None:
    """Poll GetKeyStatus, as the standard has a client do, until the key is ``ok`` (bounded)."""
    deadline = threading.Event()
    timer = threading.Timer(WAIT, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            status = ok(device, f"<tas:GetKeyStatus><tas:KeyID>{key_id}</tas:KeyID></tas:GetKeyStatus>")
            if status.findtext("tas:KeyStatus", namespaces=NS) == "ok":
                return
            deadline.wait(0.05)
    finally:
        timer.cancel()
    pytest.fail(f"key {key_id} did not reach status ok within {WAIT} s")


def csr_body(key_id: str, cn: str = "device-7") -> str:
    return (f"<tas:CreatePKCS10CSR><tas:Subject><tas:Organization>ACME</tas:Organization>"
            f"<tas:CommonName>{cn}</tas:CommonName></tas:Subject><tas:KeyID>{key_id}</tas:KeyID>"
            f"<tas:SignatureAlgorithm><tas:algorithm>{SHA256_RSA}</tas:algorithm></tas:SignatureAlgorithm>"
            "</tas:CreatePKCS10CSR>")


def upload_body(der: bytes, *, required: bool = False) -> str:
    return (f"<tas:UploadCertificate><tas:Certificate>{base64.b64encode(der).decode()}</tas:Certificate>"
            f"<tas:Alias>up</tas:Alias><tas:PrivateKeyRequired>{str(required).lower()}</tas:PrivateKeyRequired>"
            "</tas:UploadCertificate>")


def sign(csr_der: bytes, ca: pki.CertKey) -> bytes:
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.is_signature_valid
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC)).not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_capabilities_and_get_services_prov_1_prov_2(device: RunningDevice) -> None:
    """PROV-1, PROV-2: GetServices lists the Security service with its capabilities (the same as its own
    GetServiceCapabilities); AccessToken is advertised because AuthorizationServer MaxConfigurations > 0."""
    caps = ok(device, "<tas:GetServiceCapabilities/>", user=None).find("tas:Capabilities", NS)
    keystore = caps.find("tas:KeystoreCapabilities", NS)
    assert keystore.get("RSAKeyLengths").split() == ["2048", "3072", "4096"]
    assert keystore.get("PKCS10ExternalCertificationWithRSA") == "true"
    assert int(keystore.get("MaximumNumberOfKeys")) > 0
    assert int(keystore.get("MaximumNumberOfCertificationPathValidationPolicies")) > 0
    max_as = int(caps.find("tas:AuthorizationServer", NS).get("MaxConfigurations"))
    assert max_as > 0
    status, root = call(device, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability>"
                                "</tds:GetServices>", path="/onvif/device_service", user=None)
    assert status == 200
    services = {s.findtext("tds:Namespace", namespaces=NS): s for s in root.iter(f"{{{TDS}}}Service")}
    entry = services[TAS]
    assert entry.findtext("tds:XAddr", namespaces=NS).endswith(SECURITY_PATH)
    listed = entry.find("tds:Capabilities/tas:Capabilities", NS)
    assert etree.tostring(listed, method="c14n", exclusive=True) == etree.tostring(caps, method="c14n", exclusive=True)
    uplink_caps = services[TUP].find("tds:Capabilities/tup:Capabilities", NS)
    assert "AccessToken" in uplink_caps.get("AuthorizationModes").split()


def test_key_generation_csr_upload_and_listing_prov_1(device: RunningDevice) -> None:
    """PROV-1, UPL-13: CreateRSAKeyPair runs asynchronously to status ok; the CSR carries the key's public half
    and the subject; an uploaded certificate is matched to that key; nothing returns a private key."""
    key_id = create_key(device)
    wait_ok(device, key_id)
    has = ok(device, f"<tas:GetPrivateKeyStatus><tas:KeyID>{key_id}</tas:KeyID></tas:GetPrivateKeyStatus>")
    assert has.findtext("tas:hasPrivateKey", namespaces=NS) == "true"
    csr_der = base64.b64decode(ok(device, csr_body(key_id)).findtext("tas:PKCS10CSR", namespaces=NS))
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.subject.rfc4514_string() == "CN=device-7,O=ACME"
    assert isinstance(csr.public_key(), rsa.RSAPublicKey) and csr.public_key().key_size == 2048
    cert_der = sign(csr_der, device.ca)
    uploaded = ok(device, upload_body(cert_der, required=True))
    cert_id = uploaded.findtext("tas:CertificateID", namespaces=NS)
    assert uploaded.findtext("tas:KeyID", namespaces=NS) == key_id
    got = ok(device, f"<tas:GetCertificate><tas:CertificateID>{cert_id}</tas:CertificateID></tas:GetCertificate>")
    assert base64.b64decode(got.findtext("tas:Certificate/tas:CertificateContent", namespaces=NS)) == cert_der
    all_certs = ok(device, "<tas:GetAllCertificates/>")
    ids = {c.findtext("tas:CertificateID", namespaces=NS) for c in all_certs}
    assert {"cert-1", cert_id} <= ids  # the CLI-stored certificate and the uploaded one: one keystore
    keys = ok(device, "<tas:GetAllKeys/>")
    ours = next(k for k in keys if k.findtext("tas:KeyID", namespaces=NS) == key_id)
    assert ours.findtext("tas:KeyStatus", namespaces=NS) == "ok"
    assert ours.findtext("tas:Alias", namespaces=NS) == "enrol"
    assert ours.findtext("tas:externallyGenerated", namespaces=NS) == "false"
    for answer in (all_certs, keys, got):
        assert b"PRIVATE KEY" not in etree.tostring(answer)
    # The private key is sealed at rest: the database never holds it in the clear.
    secret = device.data / SECRET_FILE
    assert secret.stat().st_mode & 0o777 == 0o600
    raw = b"".join(p.read_bytes() for p in device.data.glob("device.db*"))
    assert b"PRIVATE KEY" not in raw


def test_self_signed_policy_and_reference_exists_prov_1(device: RunningDevice) -> None:
    """PROV-1, CFG-3: a self-signed certificate, a policy whose trust anchor is an uploaded CA certificate;
    uploading a certificate the keystore holds is Duplicate (Advanced Security, Keystore Operations ›
    UploadCertificate, faults); objects an uplink or a policy references cannot be deleted (ReferenceExists,
    › DeleteCertificate / DeleteKey / DeleteCertPathValidationPolicy), others can."""
    key_id = create_key(device)
    wait_ok(device, key_id)
    self_signed = ok(device, "<tas:CreateSelfSignedCertificate><tas:X509Version>3</tas:X509Version>"
                             "<tas:Subject><tas:CommonName>self</tas:CommonName></tas:Subject>"
                             f"<tas:KeyID>{key_id}</tas:KeyID><tas:Alias>mine</tas:Alias>"
                             f"<tas:SignatureAlgorithm><tas:algorithm>{SHA256_RSA}</tas:algorithm>"
                             "</tas:SignatureAlgorithm></tas:CreateSelfSignedCertificate>")
    own_id = self_signed.findtext("tas:CertificateID", namespaces=NS)
    assert refused(device, upload_body(device.ca.cert.public_bytes(serialization.Encoding.DER))) == [
        "env:Sender", "ter:InvalidArgVal", "ter:Duplicate"]  # policy-1's anchor is this CA already
    ca_id = ok(device, upload_body(pki.make_ca("cloud CA").cert.public_bytes(serialization.Encoding.DER))).findtext(
        "tas:CertificateID", namespaces=NS)
    policy_id = ok(device, "<tas:CreateCertPathValidationPolicy><tas:Alias>cloud</tas:Alias><tas:Parameters/>"
                           f"<tas:TrustAnchor><tas:CertificateID>{ca_id}</tas:CertificateID></tas:TrustAnchor>"
                           "</tas:CreateCertPathValidationPolicy>").findtext(
        "tas:CertPathValidationPolicyID", namespaces=NS)
    policy = ok(device, "<tas:GetCertPathValidationPolicy><tas:CertPathValidationPolicyID>"
                        f"{policy_id}</tas:CertPathValidationPolicyID></tas:GetCertPathValidationPolicy>")
    assert policy.findtext(".//tas:TrustAnchor/tas:CertificateID", namespaces=NS) == ca_id
    all_policies = ok(device, "<tas:GetAllCertPathValidationPolicies/>")
    assert len(all_policies) == 2  # policy-1 (stored by the CLI, anchors listed by CertificateID) and ours
    status, _ = call(device, f"<tup:SetUplink xmlns:tup='{TUP}'><tup:Configuration>"
                             "<tup:RemoteAddress>https://cloud.example/up</tup:RemoteAddress>"
                             f"<tup:CertificateID>{own_id}</tup:CertificateID><tup:UserLevel>Operator</tup:UserLevel>"
                             f"<tup:CertPathValidationPolicyID>{policy_id}</tup:CertPathValidationPolicyID>"
                             "</tup:Configuration></tup:SetUplink>", path="/onvif/uplink_service")
    assert status == 200
    in_use = ["env:Sender", "ter:InvalidArgVal", "ter:ReferenceExists"]
    assert refused(device, f"<tas:DeleteCertificate><tas:CertificateID>{own_id}</tas:CertificateID>"
                           "</tas:DeleteCertificate>") == in_use
    assert refused(device, f"<tas:DeleteCertificate><tas:CertificateID>{ca_id}</tas:CertificateID>"
                           "</tas:DeleteCertificate>") == in_use
    assert refused(device, f"<tas:DeleteKey><tas:KeyID>{key_id}</tas:KeyID></tas:DeleteKey>") == in_use
    assert refused(device, "<tas:DeleteCertPathValidationPolicy><tas:CertPathValidationPolicyID>"
                           f"{policy_id}</tas:CertPathValidationPolicyID></tas:DeleteCertPathValidationPolicy>") == in_use
    status, _ = call(device, f"<tup:DeleteUplink xmlns:tup='{TUP}'><tup:RemoteAddress>https://cloud.example/up"
                             "</tup:RemoteAddress></tup:DeleteUplink>", path="/onvif/uplink_service")
    assert status == 200
    ok(device, "<tas:DeleteCertPathValidationPolicy><tas:CertPathValidationPolicyID>"
               f"{policy_id}</tas:CertPathValidationPolicyID></tas:DeleteCertPathValidationPolicy>")
    for cid in (own_id, ca_id):
        ok(device, f"<tas:DeleteCertificate><tas:CertificateID>{cid}</tas:CertificateID></tas:DeleteCertificate>")
    ok(device, f"<tas:DeleteKey><tas:KeyID>{key_id}</tas:KeyID></tas:DeleteKey>")
    assert refused(device, f"<tas:GetKeyStatus><tas:KeyID>{key_id}</tas:KeyID></tas:GetKeyStatus>") == [
        "env:Sender", "ter:InvalidArgVal", "ter:KeyID"]


def test_authorization_server_configurations_prov_3(device: RunningDevice) -> None:
    """PROV-3, PROV-1: Create/Get/Set/Delete of authorization server configurations on the store's table;
    the ClientSecret is write-only; an uplink can name the token and, while it does, the configuration stays;
    unsupported values are InvalidConfig, an unknown token NoConfig (Advanced Security, Authorization Server
    Configuration › Create/Set/Get/DeleteAuthorizationServerConfiguration, faults)."""
    data = ("<tas:Data Type='OAuthClientCredentials' ClientAuth='client_secret_post'>"
            "<tas:ServerUri>https://as.example/.well-known/oauth-authorization-server</tas:ServerUri>"
            "<tas:ClientID>cam-1</tas:ClientID><tas:ClientSecret>s3cret</tas:ClientSecret>"
            "<tas:Scope>uplink</tas:Scope></tas:Data>")
    created = ok(device, "<tas:CreateAuthorizationServerConfiguration>"
                         + data.replace("tas:Data", "tas:Configuration")
                         + "</tas:CreateAuthorizationServerConfiguration>")
    token = created.findtext("tas:Token", namespaces=NS)
    listed = ok(device, "<tas:GetAuthorizationServerConfigurations/>")
    (cfg,) = listed
    assert cfg.get("token") == token
    assert cfg.find("tas:Data", NS).get("ClientAuth") == "client_secret_post"
    assert cfg.findtext("tas:Data/tas:Scope", namespaces=NS) == "uplink"
    assert b"s3cret" not in etree.tostring(listed)
    with DeviceStore(device.data) as store:
        assert store.get_auth_server(token).client_secret == "s3cret"  # type: ignore[union-attr]
    ok(device, f"<tas:SetAuthorizationServerConfiguration><tas:Configuration token='{token}'>"
               + data.replace("client_secret_post", "client_secret_basic") +
               "</tas:Configuration></tas:SetAuthorizationServerConfiguration>")
    one = ok(device, f"<tas:GetAuthorizationServerConfigurations><tas:Token>{token}</tas:Token>"
                     "</tas:GetAuthorizationServerConfigurations>")
    assert one[0].find("tas:Data", NS).get("ClientAuth") == "client_secret_basic"
    bad_type = data.replace("OAuthClientCredentials", "Magic").replace("tas:Data", "tas:Configuration")
    assert refused(device, f"<tas:CreateAuthorizationServerConfiguration>{bad_type}"
                           "</tas:CreateAuthorizationServerConfiguration>") == ["env:Sender", "ter:InvalidArgVal",
                                                                                 "ter:InvalidConfig"]
    plain_http = data.replace("https://", "http://").replace("tas:Data", "tas:Configuration")
    assert refused(device, f"<tas:CreateAuthorizationServerConfiguration>{plain_http}"
                           "</tas:CreateAuthorizationServerConfiguration>") == ["env:Sender", "ter:InvalidArgVal",
                                                                                 "ter:InvalidConfig"]
    assert refused(device, "<tas:SetAuthorizationServerConfiguration><tas:Configuration token='as-none'>"
                           + data + "</tas:Configuration></tas:SetAuthorizationServerConfiguration>") == [
        "env:Sender", "ter:InvalidArgVal", "ter:NoConfig"]
    uplink = (f"<tup:SetUplink xmlns:tup='{TUP}'><tup:Configuration><tup:RemoteAddress>https://cloud.example/up"
              f"</tup:RemoteAddress><tup:UserLevel>User</tup:UserLevel><tup:AuthorizationServer>{token}"
              "</tup:AuthorizationServer></tup:Configuration></tup:SetUplink>")
    assert call(device, uplink, path="/onvif/uplink_service")[0] == 200  # PROV-1: the uplink names the token
    delete = (f"<tas:DeleteAuthorizationServerConfiguration><tas:Token>{token}</tas:Token>"
              "</tas:DeleteAuthorizationServerConfiguration>")
    assert refused(device, delete) == ["env:Sender", "ter:InvalidArgVal", "ter:ReferenceExists"]
    assert call(device, f"<tup:DeleteUplink xmlns:tup='{TUP}'><tup:RemoteAddress>https://cloud.example/up"
                        "</tup:RemoteAddress></tup:DeleteUplink>", path="/onvif/uplink_service")[0] == 200
    ok(device, delete)
    assert refused(device, f"<tas:GetAuthorizationServerConfigurations><tas:Token>{token}</tas:Token>"
                           "</tas:GetAuthorizationServerConfigurations>") == [
        "env:Sender", "ter:InvalidArgVal", "ter:NoConfig"]
    assert refused(device, delete) == ["env:Sender", "ter:InvalidArgVal", "ter:NoConfig"]


@pytest.mark.parametrize("operation", sorted(op for _, op in OPERATION_ACCESS if op != "GetServiceCapabilities"))
@pytest.mark.parametrize("user", [None, USER, OPERATOR])
def test_keystore_needs_administrator_sec_1(device: RunningDevice, operation: str,
                                           user: tuple[str, str] | None) -> None:
    """SEC-1, PROV-1: every keystore, policy and authorization-server operation needs Administrator rights
    (READ_SYSTEM_SECRET / WRITE_SYSTEM): anonymous, User and Operator requests are refused before the request
    is even read, and change nothing."""
    status, root = call(device, f"<tas:{operation}/>", user=user)
    assert status in (400, 401)
    assert fault_chain(root)[1] == "ter:NotAuthorized"
    with DeviceStore(device.data) as store:  # the seeded cert-1's key and policy-1's anchor: nothing new
        assert len(store.list_keys()) == 2 and len(store.list_certificates()) == 2


def test_negative_requests_prov_1(device: RunningDevice) -> None:
    """PROV-1: a CSR for a key still generating, a certificate matching no private key, malformed DER and PEM,
    an oversized certificate and an unsupported key length are refused with the subcodes the Advanced Security
    specification lists (Keystore Operations › CreateRSAKeyPair: KeyLength; › UploadCertificate:
    env:Receiver/ter:Action/ter:NoMatchingPrivateKey, BadCertificate) and leave nothing stored."""
    ks_status = ok(device, "<tas:GetAllCertificates/>")
    before = len(ks_status)
    assert refused(device, "<tas:CreateRSAKeyPair><tas:KeyLength>1024</tas:KeyLength></tas:CreateRSAKeyPair>") == [
        "env:Sender", "ter:InvalidArgVal", "ter:KeyLength"]
    stranger = pki.make_leaf(device.ca, "stranger", kind="client").cert.public_bytes(serialization.Encoding.DER)
    assert refused(device, upload_body(stranger, required=True)) == [
        "env:Receiver", "ter:Action", "ter:NoMatchingPrivateKey"]
    assert refused(device, upload_body(b"\x30\x03\x02\x01\x01")) == [
        "env:Sender", "ter:InvalidArgVal", "ter:BadCertificate"]
    pem = device.ca.cert.public_bytes(serialization.Encoding.PEM)  # PEM where DER belongs
    assert refused(device, upload_body(pem)) == ["env:Sender", "ter:InvalidArgVal", "ter:BadCertificate"]
    assert refused(device, upload_body(os.urandom(100 * 1024))) == [
        "env:Sender", "ter:InvalidArgVal", "ter:BadCertificate"]
    assert refused(device, "<tas:UploadCertificate><tas:Certificate>not base64!</tas:Certificate>"
                           "</tas:UploadCertificate>") == ["env:Sender", "ter:InvalidArgs"]
    assert len(ok(device, "<tas:GetAllCertificates/>")) == before
    status, _ = call(device, upload_body(os.urandom(1024 * 1024)))  # 1 MiB: over the SOAP size limit
    assert status == 413
    assert len(ok(device, "<tas:GetAllCertificates/>")) == before


def test_csr_for_generating_key_and_interrupted_generation_prov_1(tmp_path: Path) -> None:
    """PROV-1: while a key is generating, a CSR is refused with InvalidKeyStatus; a generation the process
    never finished leaves no key behind once the keystore starts again (nothing partial)."""
    with DeviceStore(tmp_path) as store:
        store.add_key("key-half", alias=None, public_der=None, private_pem=None, max_keys=8, generating=True)
        keystore = Keystore(store)
        assert store.key("key-half") is None  # the start-up removed the placeholder of the dead generation
        store.add_key("key-gen", alias=None, public_der=None, private_pem=None, max_keys=8, generating=True)
        with pytest.raises(KeystoreError) as info:
            keystore.create_pkcs10_csr(x509.Name([]), "key-gen", SHA256_RSA)
        assert info.value.subcodes == ("InvalidArgVal", "InvalidKeyStatus")
        key_id, _ = keystore.create_rsa_key_pair(2048)
        assert keystore.wait_generated(key_id, WAIT)
        assert keystore.key(key_id).status == "ok"
        pem = store.private_key(key_id)
        assert pem is not None and b"PRIVATE KEY" in pem


def test_uplink_3_1_1_client_certificate_from_keystore_test_1(tmp_path: Path) -> None:
    """TEST-1 (UPLINK-3-1-1), UPL-13, PROV-1: GetServices lists the Security service; GetAllCertificates and
    GetPrivateKeyStatus pick the certificate that has a private key; SetUplink with that CertificateID; the
    cloud (a real listener on loopback, mTLS) sees that certificate's CN as the device's identity."""
    certs = UplinkPki(tmp_path / "pki")
    seed_device(tmp_path / "dev", certs, "camera-311")  # keystore: 'cert' (with key) and the CA anchor (without)
    cloud = RunningCloud(certs)
    device = Device(tmp_path / "dev")
    try:
        assert device.url is not None
        dut = RunningDevice(data=tmp_path / "dev", url=device.url, ca=certs.ca)
        status, root = call(dut, "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability>"
                                 "</tds:GetServices>", path="/onvif/device_service")
        assert status == 200
        assert TAS in [s.findtext("tds:Namespace", namespaces=NS) for s in root.iter(f"{{{TDS}}}Service")]
        with_key = []
        for cert in ok(dut, "<tas:GetAllCertificates/>"):
            key_id = cert.findtext("tas:KeyID", namespaces=NS)
            has = ok(dut, f"<tas:GetPrivateKeyStatus><tas:KeyID>{key_id}</tas:KeyID></tas:GetPrivateKeyStatus>")
            if has.findtext("tas:hasPrivateKey", namespaces=NS) == "true":
                content = base64.b64decode(cert.findtext("tas:CertificateContent", namespaces=NS))
                with_key.append((cert.findtext("tas:CertificateID", namespaces=NS), x509.load_der_x509_certificate(
                    content).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value))
        assert len(with_key) == 1  # the CA anchor has no private key and is not a candidate
        certificate_id, cn = with_key[0]
        status, _ = call(dut, f"<tup:SetUplink xmlns:tup='{TUP}'><tup:Configuration>"
                              f"<tup:RemoteAddress>{cloud.uplink_url()}</tup:RemoteAddress>"
                              f"<tup:CertificateID>{certificate_id}</tup:CertificateID>"
                              "<tup:UserLevel>Administrator</tup:UserLevel>"
                              "<tup:CertPathValidationPolicyID>policy</tup:CertPathValidationPolicyID>"
                              "</tup:Configuration></tup:SetUplink>", path="/onvif/uplink_service")
        assert status == 200
        cloud.wait_for(cn)
        assert cn == "camera-311" and cloud.device_ids() == ["camera-311"]
    finally:
        device.stop()
        cloud.stop()


def test_access_token_mode_follows_authorization_server_capability_prov_2() -> None:
    """PROV-2: AccessToken is among the uplink's AuthorizationModes only while the Security service reports
    AuthorizationServer MaxConfigurations > 0."""
    assert device_capabilities().authorization_modes == ("mTLS", "AccessToken")
    assert device_capabilities(KeystoreLimits(max_auth_servers=0)).authorization_modes == ("mTLS",)


def _serve(data: Path) -> tuple[subprocess.Popen[str], RunningDevice]:
    """``iec62676 device serve`` as a process of its own (so it can be killed), and its address."""
    proc = subprocess.Popen([sys.executable, "-m", "iec62676_2_33", "device", "serve", "--data", str(data),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(WAIT)
    match = re.search(r"(http://\S+)", lines[0] if lines else "")
    if match is None:
        proc.kill()
        pytest.fail(f"device serve did not announce its address: {lines!r}")
    return proc, RunningDevice(data=data, url=match.group(1), ca=pki.make_ca("unused"))


def test_kill_9_during_key_generation_leaves_no_half_key_prov_1(tmp_path: Path) -> None:
    """PROV-1, CFG-6: a device killed (SIGKILL) while it generates a key leaves only the placeholder (no key
    material), and the restarted device removes it: no key in status ``generating``, nothing partial."""
    data = tmp_path / "dev"
    with DeviceStore(data) as store:
        store.put_user(*ADMIN, "Administrator")
    proc, dut = _serve(data)
    try:
        key_id = create_key(dut, 4096)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
    with DeviceStore(data) as store:
        assert store.integrity_check() == "ok"
        left = store.key(key_id)  # a 4096-bit pair takes far longer than the kill came after the answer
        assert left is not None and left.status == "generating"
        assert left.public_der is None and not left.has_private_key
    proc, dut = _serve(data)
    try:
        keys = ok(dut, "<tas:GetAllKeys/>")
        statuses = {k.findtext("tas:KeyID", namespaces=NS): k.findtext("tas:KeyStatus", namespaces=NS) for k in keys}
        assert key_id not in statuses and "generating" not in statuses.values()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)


def test_upload_key_pair_pkcs8_with_passphrase_prov_1(device: RunningDevice) -> None:
    """PROV-1: UploadKeyPairInPKCS8 takes a passphrase-protected PKCS#8 RSA key pair (a wrong passphrase is
    BadPKCS8File, a non-RSA key UnsupportedPublicKeyAlgorithm — the deprecated operation lists no faults; these
    follow UploadCertificateWithPrivateKeyInPKCS12's — and stores nothing); a certificate for it then finds its
    private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b" pass phrase "))
    body = ("<tas:UploadKeyPairInPKCS8><tas:KeyPair>{}</tas:KeyPair><tas:Alias>imported</tas:Alias>"
            "<tas:EncryptionPassphrase>{}</tas:EncryptionPassphrase></tas:UploadKeyPairInPKCS8>")
    before = len(ok(device, "<tas:GetAllKeys/>"))
    bad = ["env:Sender", "ter:InvalidArgVal", "ter:BadPKCS8File"]
    assert refused(device, body.format(base64.b64encode(der).decode(), "pass phrase")) == bad  # spaces matter
    ec_der = pki.make_ca("ec").key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())
    assert refused(device, f"<tas:UploadKeyPairInPKCS8><tas:KeyPair>{base64.b64encode(ec_der).decode()}"
                           "</tas:KeyPair></tas:UploadKeyPairInPKCS8>") == [
        "env:Sender", "ter:InvalidArgVal", "ter:UnsupportedPublicKeyAlgorithm"]  # in the clear, but not RSA
    assert len(ok(device, "<tas:GetAllKeys/>")) == before
    key_id = ok(device, body.format(base64.b64encode(der).decode(), " pass phrase ")).findtext(
        "tas:KeyID", namespaces=NS)
    has = ok(device, f"<tas:GetPrivateKeyStatus><tas:KeyID>{key_id}</tas:KeyID></tas:GetPrivateKeyStatus>")
    assert has.findtext("tas:hasPrivateKey", namespaces=NS) == "true"
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    cert_der = sign(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER), device.ca)
    assert ok(device, upload_body(cert_der, required=True)).findtext("tas:KeyID", namespaces=NS) == key_id


def test_uplink_4_1_1_get_services_capabilities_equal_each_service_test_1(device: RunningDevice) -> None:
    """TEST-1 (UPLINK-4-1-1), PROV-1: for every service GetServices lists (the Security service among them),
    the capabilities it carries equal what that service's own GetServiceCapabilities answers."""
    status, root = call(device, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability>"
                                "</tds:GetServices>", path="/onvif/device_service")
    assert status == 200
    services = list(root.iter(f"{{{TDS}}}Service"))
    assert TAS in [s.findtext("tds:Namespace", namespaces=NS) for s in services]
    for service in services:
        namespace = service.findtext("tds:Namespace", namespaces=NS)
        listed = service.find("tds:Capabilities", NS)
        assert listed is not None and len(listed) == 1, namespace
        path = urlsplit(service.findtext("tds:XAddr", namespaces=NS)).path
        status, own = call(device, f"<s:GetServiceCapabilities xmlns:s='{namespace}'/>", path=path)
        assert status == 200, namespace
        (answered,) = own.find("env:Body", NS)[0]
        assert _shape(listed[0]) == _shape(answered), namespace


def _shape(element: etree._Element) -> tuple[object, ...]:
    """An element as names, attributes, text and children: equal whatever prefixes the XML used."""
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(),
            [_shape(child) for child in element if isinstance(child.tag, str)])


ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def test_ecc_key_pair_csr_and_upload_prov_1(device: RunningDevice) -> None:
    """PROV-1: KeystoreCapabilities advertise ECC generation and the curves truthfully; CreateECCKeyPair
    (P-256) runs to status ok; the CSR is ECDSA-signed over that key; the certificate finds its private key.
    An unknown curve is UnsupportedEllipticCurve (Advanced Security, Keystore Operations › CreateECCKeyPair,
    faults); an RSA signature algorithm for an ECC key is KeySignatureAlgorithmMismatch and an unknown
    algorithm UnsupportedSignatureAlgorithm (› CreatePKCS10CSR, faults)."""
    caps = ok(device, "<tas:GetServiceCapabilities/>", user=None).find("tas:Capabilities/tas:KeystoreCapabilities",
                                                                        NS)
    assert caps.get("ECCKeyPairGeneration") == "true" and caps.get("KeyPairGeneration").split() == ["RSA", "ECC"]
    curves = caps.get("EllipticCurves").split()
    assert curves == ["secp256r1", "secp384r1"]
    assert ECDSA_SHA256 in [a.findtext("tas:algorithm", namespaces=NS) for a in caps.iter(f"{{{TAS}}}SignatureAlgorithms")]
    assert refused(device, "<tas:CreateECCKeyPair><tas:EllipticCurve>x25519</tas:EllipticCurve>"
                           "</tas:CreateECCKeyPair>") == ["env:Sender", "ter:InvalidArgVal", "ter:UnsupportedEllipticCurve"]
    for curve in curves:
        answer = ok(device, f"<tas:CreateECCKeyPair><tas:EllipticCurve>{curve}</tas:EllipticCurve>"
                            "<tas:Alias>ecc</tas:Alias></tas:CreateECCKeyPair>")
        assert answer.findtext("tas:EstimatedCreationTime", namespaces=NS).startswith("PT")
        key_id = answer.findtext("tas:KeyID", namespaces=NS)
        wait_ok(device, key_id)
        assert refused(device, csr_body(key_id)) == ["env:Sender", "ter:InvalidArgVal",
                                                     "ter:KeySignatureAlgorithmMismatch"]
        assert refused(device, csr_body(key_id).replace(SHA256_RSA, "1.2.3.4")) == [
            "env:Sender", "ter:InvalidArgVal", "ter:UnsupportedSignatureAlgorithm"]
        der = base64.b64decode(ok(device, csr_body(key_id, cn=f"ecc-{curve}").replace(SHA256_RSA, ECDSA_SHA256))
                               .findtext("tas:PKCS10CSR", namespaces=NS))
        public = x509.load_der_x509_csr(der).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == curve
        uploaded = ok(device, upload_body(sign(der, device.ca), required=True))
        assert uploaded.findtext("tas:KeyID", namespaces=NS) == key_id


def test_certificate_creation_fault_names_prov_1(device: RunningDevice) -> None:
    """PROV-1: the subcodes Advanced Security lists for certificate creation (Keystore Operations ›
    CreateSelfSignedCertificate and CreatePKCS10CSR, faults): UnsupportedX509Version, InvalidDateTime,
    InvalidSubject; a CSR for a key without a private part is the KeyID fault ("not an asymmetric key pair");
    GetKeyStatus of an unknown key is KeyID."""
    key_id = create_key(device)
    wait_ok(device, key_id)
    body = ("<tas:CreateSelfSignedCertificate><tas:X509Version>{v}</tas:X509Version>"
            "<tas:Subject><tas:CommonName>self</tas:CommonName></tas:Subject>"
            f"<tas:KeyID>{key_id}</tas:KeyID>"
            "<tas:notValidBefore>{nb}</tas:notValidBefore><tas:notValidAfter>2030-01-01T00:00:00Z</tas:notValidAfter>"
            f"<tas:SignatureAlgorithm><tas:algorithm>{SHA256_RSA}</tas:algorithm></tas:SignatureAlgorithm>"
            "</tas:CreateSelfSignedCertificate>")
    assert refused(device, body.format(v="1", nb="2025-01-01T00:00:00Z")) == [
        "env:Sender", "ter:InvalidArgVal", "ter:UnsupportedX509Version"]
    assert refused(device, body.format(v="3", nb="2031-01-01T00:00:00Z")) == [
        "env:Sender", "ter:InvalidArgVal", "ter:InvalidDateTime"]
    assert refused(device, csr_body(key_id).replace("<tas:Organization>ACME</tas:Organization>",
                                                    "<tas:Country>Germany</tas:Country>")) == [
        "env:Sender", "ter:InvalidArgVal", "ter:InvalidSubject"]
    stranger = pki.make_leaf(device.ca, "stranger", kind="client").cert.public_bytes(serialization.Encoding.DER)
    public_only = ok(device, upload_body(stranger)).findtext("tas:KeyID", namespaces=NS)
    assert refused(device, csr_body(public_only)) == ["env:Sender", "ter:InvalidArgVal", "ter:KeyID"]
    assert refused(device, "<tas:GetKeyStatus><tas:KeyID>key-none</tas:KeyID></tas:GetKeyStatus>") == [
        "env:Sender", "ter:InvalidArgVal", "ter:KeyID"]
