"""PROV-1, PROV-2, SEC-1, GEN-2: a zeep client built from the *official* ONVIF advancedsecurity WSDL (not ours)
drives the Security service of ``device serve`` unmodified: capabilities, an RSA key generated on the device,
its status, a self-signed certificate on it, the listings, the fault for deleting a key a certificate still
uses, and clean-up.

Like ``test_interop_official_wsdl.py``: point ``ONVIF_SPECS_DIR`` at the ``wsdl/`` folder of a checkout of the
public onvif/specs repository (staged offline by tests/onvif_specs.py); without it the test is skipped and says
why.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zeep
import zeep.exceptions
from conftest import ADMIN, RunningDevice
from onvif_specs import SKIP_REASON, SPECS, stage

TAS = "http://www.onvif.org/ver10/advancedsecurity/wsdl"


@pytest.mark.skipif(not SPECS, reason=SKIP_REASON)
def test_official_advancedsecurity_wsdl_drives_the_keystore_prov_1_prov_2(device: RunningDevice,
                                                                          tmp_path: Path) -> None:
    """PROV-1, PROV-2, GEN-2: the official WSDL, loaded offline, drives our Security service unchanged."""
    wsdl = stage(Path(str(SPECS)), tmp_path / "onvif", "advancedsecurity/wsdl/advancedsecurity.wsdl")
    from zeep.wsse.username import UsernameToken

    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True)
    client = zeep.Client(str(wsdl), settings=settings, wsse=UsernameToken(*ADMIN, use_digest=True))
    keystore = client.create_service(f"{{{TAS}}}KeystoreBinding", device.base + "/onvif/security_service")
    advanced = client.create_service(f"{{{TAS}}}AdvancedSecurityServiceBinding",
                                     device.base + "/onvif/security_service")

    caps = advanced.GetServiceCapabilities()
    assert caps.KeystoreCapabilities.MaximumNumberOfKeys > 0
    assert "2048" in str(caps.KeystoreCapabilities.RSAKeyLengths)

    created = keystore.CreateRSAKeyPair(KeyLength=2048)
    key_id = created.KeyID
    deadline = time.monotonic() + 60
    while keystore.GetKeyStatus(KeyID=key_id) != "ok":  # generation is asynchronous (PROV-1)
        assert time.monotonic() < deadline, "the key never became ok"
        time.sleep(0.2)
    assert keystore.GetPrivateKeyStatus(KeyID=key_id) is True
    assert key_id in [k.KeyID for k in keystore.GetAllKeys()]

    cert_id = keystore.CreateSelfSignedCertificate(
        Subject={"CommonName": ["official-wsdl"]}, KeyID=key_id,
        SignatureAlgorithm={"algorithm": "1.2.840.113549.1.1.11"})  # sha256WithRSAEncryption
    certificate = keystore.GetCertificate(CertificateID=cert_id)
    assert certificate.KeyID == key_id and certificate.CertificateContent
    assert cert_id in [c.CertificateID for c in keystore.GetAllCertificates()]

    with pytest.raises(zeep.exceptions.Fault) as info:
        keystore.DeleteKey(KeyID=key_id)  # a certificate still refers to it
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "ReferenceExists"]
    keystore.DeleteCertificate(CertificateID=cert_id)
    keystore.DeleteKey(KeyID=key_id)
    assert key_id not in [k.KeyID for k in keystore.GetAllKeys()]
