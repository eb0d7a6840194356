"""Layer 5: the ONVIF Security (advancedsecurity) service at ``/onvif/security_service``
(PROV-1, PROV-2, PROV-3, UPL-13).

The keystore (keys, certificates), certification path validation policies and
authorization server configurations that an uplink names by CertificateID,
CertPathValidationPolicyID and AuthorizationServer (PROV-1). The rules live in
:mod:`..security.keystore`, the objects in :mod:`..store`; this module only
reads requests and writes answers.

Theory of operation
-------------------
Requests arrive parsed, authorised (access table :data:`OPERATION_ACCESS`) and
validated against ``xsd/security.xsd`` (:mod:`..soap.spyne_glue`); each
operation reads its already-validated element with lxml and hands back the
answer element, which :class:`_SecurityEndpoint` puts into the envelope — the
same hand-over as the event service, chosen because the answers are nested
ONVIF types with attributes and lists that a tree states more plainly than
Spyne models. Every answer validates against the authored XSD (tests check).
No operation returns a private key: keys are reported by ID, status and
whether a private part exists.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from spyne import rpc

from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TT
from ..security.access import AccessClass
from ..security.keystore import (
    AUTH_SERVER_TYPES,
    CLIENT_AUTH_METHODS,
    SIGNATURE_ALGORITHMS,
    AuthServerSettings,
    Keystore,
    KeystoreError,
    subject_name,
)
from ..soap.answer_xml import xs_boolean
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, request_operation, service_context
from ..store import CertificateRecord, KeyRecord, PolicyRecord

__all__ = ["OPERATION_ACCESS", "SECURITY_PATH", "TAS", "capabilities_element", "security_endpoint"]

#: Namespace of the Security service (wire contract, prefix ``tas``).
TAS = "http://www.onvif.org/ver10/advancedsecurity/wsdl"
SECURITY_PATH = "/onvif/security_service"

_W = AccessClass.WRITE_SYSTEM
_R = AccessClass.READ_SYSTEM_SECRET
#: SEC-1: access classes of the Security service's access table (reads of keystore objects are
#: READ_SYSTEM_SECRET, every change WRITE_SYSTEM; capabilities PRE_AUTH).
OPERATION_ACCESS = {
    (TAS, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TAS, "CreateRSAKeyPair"): _W,
    (TAS, "CreateECCKeyPair"): _W,
    (TAS, "GetKeyStatus"): _R,
    (TAS, "GetPrivateKeyStatus"): _R,
    (TAS, "GetAllKeys"): _R,
    (TAS, "UploadKeyPairInPKCS8"): _W,
    (TAS, "DeleteKey"): _W,
    (TAS, "CreatePKCS10CSR"): _R,
    (TAS, "CreateSelfSignedCertificate"): _W,
    (TAS, "UploadCertificate"): _W,
    (TAS, "GetCertificate"): _R,
    (TAS, "GetAllCertificates"): _R,
    (TAS, "DeleteCertificate"): _W,
    (TAS, "CreateCertPathValidationPolicy"): _W,
    (TAS, "GetCertPathValidationPolicy"): _R,
    (TAS, "GetAllCertPathValidationPolicies"): _R,
    (TAS, "DeleteCertPathValidationPolicy"): _W,
    (TAS, "GetAuthorizationServerConfigurations"): _R,
    (TAS, "CreateAuthorizationServerConfiguration"): _W,
    (TAS, "SetAuthorizationServerConfiguration"): _W,
    (TAS, "DeleteAuthorizationServerConfiguration"): _W,
}

_ANSWER_KEY = "iec62676.security_answer"
#: PKCS#5 PBES2 (what an encrypted PKCS#8 key pair for UploadKeyPairInPKCS8 uses).
PBES2 = "1.2.840.113549.1.5.13"
_NSMAP = {"env": SOAP_ENV, "tas": TAS, "tt": TT}


# --------------------------------------------------------------------------- reading requests

def _q(name: str) -> str:
    return f"{{{TAS}}}{name}"


def _text(parent: etree._Element, name: str) -> str | None:
    child = parent.find(_q(name))
    return None if child is None else (child.text or "").strip()


def _bool(parent: etree._Element, name: str) -> bool | None:
    text = _text(parent, name)
    return None if text is None else text in ("true", "1")


def _der(text: str | None) -> bytes:
    return base64.b64decode("".join((text or "").split()))


def _time(parent: etree._Element, name: str) -> dt.datetime | None:
    text = _text(parent, name)
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise KeystoreError(f"{name} is not a date and time this device reads", "InvalidArgVal",
                            "InvalidDateTime") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _subject(request: etree._Element) -> x509.Name:
    subject = request.find(_q("Subject"))
    parts = [] if subject is None else [(etree.QName(c).localname, (c.text or "").strip())
                                       for c in subject if isinstance(c.tag, str)]
    return subject_name(parts)


def _algorithm(request: etree._Element) -> str:
    return _text(request.find(_q("SignatureAlgorithm")), "algorithm") or ""


def _auth_settings(data: etree._Element) -> AuthServerSettings:
    return AuthServerSettings(
        server_uri=_text(data, "ServerUri") or "", type=data.get("Type", ""), client_auth=data.get("ClientAuth"),
        client_id=_text(data, "ClientID"), client_secret=_text(data, "ClientSecret"), scope=_text(data, "Scope"),
        certificate_id=_text(data, "CertificateID"), policy_id=_text(data, "CertPathValidationPolicyID"))


# --------------------------------------------------------------------------- writing answers

def _sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    child = etree.SubElement(parent, _q(name), **attrs)
    if text is not None:
        child.text = text
    return child


def capabilities_element(keystore: Keystore) -> etree._Element:
    """``tas:Capabilities``: what the keystore really supports (PROV-2: AuthorizationServer MaxConfigurations)."""
    limits = keystore.limits
    caps = etree.Element(_q("Capabilities"), nsmap={"tas": TAS})
    curves = " ".join(limits.elliptic_curves)
    store_caps = _sub(
        caps, "KeystoreCapabilities", MaximumNumberOfKeys=str(limits.max_keys),
        MaximumNumberOfCertificates=str(limits.max_certificates), RSAKeyPairGeneration="true",
        ECCKeyPairGeneration=xs_boolean(bool(curves)), KeyPairGeneration="RSA ECC" if curves else "RSA",
        RSAKeyLengths=" ".join(map(str, limits.rsa_key_lengths)), **({"EllipticCurves": curves} if curves else {}),
        PKCS10ExternalCertificationWithRSA="true", PKCS10="true", SelfSignedCertificateCreationWithRSA="true",
        SelfSignedCertificateCreation="true", X509Versions="3", MaximumNumberOfPassphrases="0",
        PasswordBasedEncryptionAlgorithms=PBES2,
        PKCS8RSAKeyPairUpload="true", PKCS12CertificateWithRSAPrivateKeyUpload="false", MaximumNumberOfCRLs="0",
        MaximumNumberOfCertificationPathValidationPolicies=str(limits.max_policies), NoPrivateKeySharing="false")
    for oid in SIGNATURE_ALGORITHMS:
        _sub(_sub(store_caps, "SignatureAlgorithms"), "algorithm", oid)
    _sub(caps, "TLSServerCapabilities")
    _sub(caps, "AuthorizationServer", MaxConfigurations=str(limits.max_auth_servers),
         ConfigurationTypesSupported=" ".join(AUTH_SERVER_TYPES),
         ClientAuthenticationMethodsSupported=" ".join(CLIENT_AUTH_METHODS))
    return caps


def _key(parent: etree._Element, key: KeyRecord) -> None:
    item = _sub(parent, "KeyAttribute")
    _sub(item, "KeyID", key.key_id)
    if key.alias is not None:
        _sub(item, "Alias", key.alias)
    _sub(item, "hasPrivateKey", xs_boolean(key.has_private_key))
    _sub(item, "KeyStatus", key.status)
    _sub(item, "externallyGenerated", xs_boolean(key.external))
    _sub(item, "securelyStored", "false")  # sealed in software, not in a secure element


def _certificate(parent: etree._Element, cert: CertificateRecord) -> None:
    item = _sub(parent, "Certificate")
    _sub(item, "CertificateID", cert.certificate_id)
    _sub(item, "KeyID", cert.key_id)
    if cert.alias is not None:
        _sub(item, "Alias", cert.alias)
    der = x509.load_pem_x509_certificates(cert.cert_pem)[0].public_bytes(serialization.Encoding.DER)
    _sub(item, "CertificateContent", base64.b64encode(der).decode())


def _policy(parent: etree._Element, policy: PolicyRecord) -> None:
    item = _sub(parent, "CertPathValidationPolicy")
    _sub(item, "CertPathValidationPolicyID", policy.policy_id)
    if policy.alias is not None:
        _sub(item, "Alias", policy.alias)
    params = _sub(item, "Parameters")
    if policy.require_client_auth_eku is not None:
        _sub(params, "RequireTLSWWWClientAuthExtendedKeyUsage", xs_boolean(policy.require_client_auth_eku))
    if policy.use_delta_crls is not None:
        _sub(params, "UseDeltaCRLs", xs_boolean(policy.use_delta_crls))
    for certificate_id in policy.anchors:
        _sub(_sub(item, "TrustAnchor"), "CertificateID", certificate_id)


def _auth_server(parent: etree._Element, token: str, s: AuthServerSettings) -> None:
    """One configuration; the ClientSecret is write-only (never answered)."""
    attrs = {"Type": s.type} | ({"ClientAuth": s.client_auth} if s.client_auth else {})
    data = _sub(_sub(parent, "Configuration", token=token), "Data", **attrs)
    _sub(data, "ServerUri", s.server_uri)
    for name, value in (("ClientID", s.client_id), ("Scope", s.scope), ("CertificateID", s.certificate_id),
                        ("CertPathValidationPolicyID", s.policy_id)):
        if value is not None:
            _sub(data, name, value)


# --------------------------------------------------------------------------- the service

Handler = Callable[[Keystore, etree._Element, etree._Element], None]


def _op(handler: Handler) -> Any:
    """A Spyne operation named like ``handler`` that runs it on the request and keeps the answer."""
    name = handler.__name__

    def method(ctx: Any) -> None:
        answer = etree.Element(_q(f"{name}Response"), nsmap={"tas": TAS})
        try:
            handler(service_context(ctx), request_operation(ctx), answer)
        except KeystoreError as exc:
            raise SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc)) from None
        ctx.transport.req_env[_ANSWER_KEY] = answer

    method.__name__ = name
    return rpc(_returns=None, _body_style="bare")(method)


def GetServiceCapabilities(ks: Keystore, _req: etree._Element, answer: etree._Element) -> None:
    answer.append(capabilities_element(ks))


def CreateRSAKeyPair(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    digits = (_text(req, "KeyLength") or "0").lstrip("+")
    if len(digits.lstrip("0")) > 9:  # an xs:nonNegativeInteger may have any number of digits; int() stops at 4300
        raise KeystoreError(f"KeyLength has {len(digits)} digits: no supported RSA key length", "InvalidArgVal",
                            "KeyLength")
    key_id, seconds = ks.create_rsa_key_pair(int(digits), _text(req, "Alias"))
    _sub(answer, "KeyID", key_id)
    _sub(answer, "EstimatedCreationTime", f"PT{seconds}S")


def CreateECCKeyPair(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    key_id, seconds = ks.create_ecc_key_pair(_text(req, "EllipticCurve") or "", _text(req, "Alias"))
    _sub(answer, "KeyID", key_id)
    _sub(answer, "EstimatedCreationTime", f"PT{seconds}S")


def GetKeyStatus(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    _sub(answer, "KeyStatus", ks.key(_text(req, "KeyID") or "").status)


def GetPrivateKeyStatus(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    _sub(answer, "hasPrivateKey", xs_boolean(ks.key(_text(req, "KeyID") or "").has_private_key))


def GetAllKeys(ks: Keystore, _req: etree._Element, answer: etree._Element) -> None:
    for key in ks.list_keys():
        _key(answer, key)


def UploadKeyPairInPKCS8(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    _sub(answer, "KeyID", ks.upload_key_pair_pkcs8(_der(_text(req, "KeyPair")), alias=_text(req, "Alias"),
                                                   passphrase=req.findtext(_q("EncryptionPassphrase"))))


def DeleteKey(ks: Keystore, req: etree._Element, _answer: etree._Element) -> None:
    ks.delete_key(_text(req, "KeyID") or "")


def CreatePKCS10CSR(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    der = ks.create_pkcs10_csr(_subject(req), _text(req, "KeyID") or "", _algorithm(req))
    _sub(answer, "PKCS10CSR", base64.b64encode(der).decode())


def CreateSelfSignedCertificate(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    version = _text(req, "X509Version")
    if version not in (None, "3"):
        raise KeystoreError("only X.509 version 3 certificates are created", "InvalidArgVal",
                            "UnsupportedX509Version")
    certificate_id = ks.create_self_signed_certificate(
        _subject(req), _text(req, "KeyID") or "", _algorithm(req), alias=_text(req, "Alias"),
        not_before=_time(req, "notValidBefore"), not_after=_time(req, "notValidAfter"))
    _sub(answer, "CertificateID", certificate_id)


def UploadCertificate(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    certificate_id, key_id = ks.upload_certificate(_der(_text(req, "Certificate")), alias=_text(req, "Alias"),
                                                   private_key_required=bool(_bool(req, "PrivateKeyRequired")))
    _sub(answer, "CertificateID", certificate_id)
    _sub(answer, "KeyID", key_id)


def GetCertificate(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    _certificate(answer, ks.certificate(_text(req, "CertificateID") or ""))


def GetAllCertificates(ks: Keystore, _req: etree._Element, answer: etree._Element) -> None:
    for cert in ks.certificates():
        _certificate(answer, cert)


def DeleteCertificate(ks: Keystore, req: etree._Element, _answer: etree._Element) -> None:
    ks.delete_certificate(_text(req, "CertificateID") or "")


def CreateCertPathValidationPolicy(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    params = req.find(_q("Parameters"))
    anchors = [_text(a, "CertificateID") or "" for a in req.findall(_q("TrustAnchor"))]
    policy_id = ks.create_policy(
        anchors, alias=_text(req, "Alias"),
        require_client_auth_eku=None if params is None else _bool(params, "RequireTLSWWWClientAuthExtendedKeyUsage"),
        use_delta_crls=None if params is None else _bool(params, "UseDeltaCRLs"))
    _sub(answer, "CertPathValidationPolicyID", policy_id)


def GetCertPathValidationPolicy(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    _policy(answer, ks.policy(_text(req, "CertPathValidationPolicyID") or ""))


def GetAllCertPathValidationPolicies(ks: Keystore, _req: etree._Element, answer: etree._Element) -> None:
    for policy in ks.policies():
        _policy(answer, policy)


def DeleteCertPathValidationPolicy(ks: Keystore, req: etree._Element, _answer: etree._Element) -> None:
    ks.delete_policy(_text(req, "CertPathValidationPolicyID") or "")


def GetAuthorizationServerConfigurations(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    token = _text(req, "Token")
    for t in ks.auth_server_tokens() if token is None else [token]:
        _auth_server(answer, t, ks.auth_server(t))


def CreateAuthorizationServerConfiguration(ks: Keystore, req: etree._Element, answer: etree._Element) -> None:
    _sub(answer, "Token", ks.create_auth_server(_auth_settings(req.find(_q("Configuration")))))


def SetAuthorizationServerConfiguration(ks: Keystore, req: etree._Element, _answer: etree._Element) -> None:
    configuration = req.find(_q("Configuration"))
    assert configuration is not None  # the XSD requires it
    ks.set_auth_server(configuration.get("token", ""), _auth_settings(configuration.find(_q("Data"))))


def DeleteAuthorizationServerConfiguration(ks: Keystore, req: etree._Element, _answer: etree._Element) -> None:
    ks.delete_auth_server(_text(req, "Token") or "")


_HANDLERS: tuple[Handler, ...] = (
    GetServiceCapabilities, CreateRSAKeyPair, CreateECCKeyPair, GetKeyStatus, GetPrivateKeyStatus, GetAllKeys, UploadKeyPairInPKCS8,
    DeleteKey,
    CreatePKCS10CSR, CreateSelfSignedCertificate, UploadCertificate, GetCertificate, GetAllCertificates,
    DeleteCertificate, CreateCertPathValidationPolicy, GetCertPathValidationPolicy, GetAllCertPathValidationPolicies,
    DeleteCertPathValidationPolicy, GetAuthorizationServerConfigurations, CreateAuthorizationServerConfiguration,
    SetAuthorizationServerConfiguration, DeleteAuthorizationServerConfiguration,
)


#: The operations of the Security service we serve (one port type; see wsdl/security.wsdl).
SecurityService: type[SoapService] = type("SecurityService", (SoapService,), {
    "__service_name__": "SecurityService", "__port_types__": ["SecurityPort"],
    "__module__": __name__, **{h.__name__: _op(h) for h in _HANDLERS}})


StartResponse = Callable[..., Any]


class _SecurityEndpoint(SoapEndpoint):
    """A :class:`SoapEndpoint` whose answers are the elements the operations built."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        body = b"".join(super().__call__(environ, capture))
        answer = environ.pop(_ANSWER_KEY, None)
        if answer is not None and captured["status"].startswith("200"):
            envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=_NSMAP)
            etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body").append(answer)
            body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
            captured["headers"] = [("Content-Type", SOAP12_CONTENT_TYPE), ("Content-Length", str(len(body)))]
        start_response(captured["status"], captured["headers"])
        return [body]


def security_endpoint(keystore: Keystore) -> SoapEndpoint:
    """The WSGI app of the Security service (no access control: see :mod:`.app`)."""
    return _SecurityEndpoint([SecurityService], TAS, xsd="security", context=keystore, name="SecurityService")
