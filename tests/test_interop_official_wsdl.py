"""CFG-2 … CFG-5, GEN-2: a zeep client built from the *official* ONVIF uplink WSDL
(not ours) works unmodified against ``device serve`` — all four operations and
the fault subcodes.

The official files are not redistributable here; point ``ONVIF_SPECS_DIR`` at a
checkout of the public onvif/specs repository (its ``wsdl/`` folder). The
remote schema imports of ``onvif.xsd`` are staged offline from the local copies
that the ``onvif-zeep-async`` wheel ships; the SOAP 1.2 envelope types it needs
are replaced by a small stub written here. Without the checkout the test is
skipped and says why; ``docs/interop.md`` records the last run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import zeep
import zeep.exceptions
from conftest import ADMIN, RunningDevice

SPECS = os.environ.get("ONVIF_SPECS_DIR")

SOAP12_STUB = """<?xml version="1.0" encoding="utf-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="http://www.w3.org/2003/05/soap-envelope"
           elementFormDefault="qualified">
  <xs:complexType name="Envelope"><xs:sequence>
    <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
  <xs:complexType name="Fault"><xs:sequence>
    <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
</xs:schema>
"""


def stage(specs: Path, into: Path) -> Path:
    """Copy the official uplink WSDL and schemas into ``into`` with every remote import made local."""
    import onvif

    local = Path(onvif.__file__).parent / "wsdl"
    (into / "ver10/uplink/wsdl").mkdir(parents=True)
    (into / "ver10/schema").mkdir(parents=True)
    shutil.copy(specs / "ver10/uplink/wsdl/uplink.wsdl", into / "ver10/uplink/wsdl/uplink.wsdl")
    shutil.copy(specs / "ver10/schema/common.xsd", into / "ver10/schema/common.xsd")
    for name in ("b-2.xsd", "bf-2.xsd", "t-1.xsd", "ws-addr.xsd", "xml.xsd", "xmlmime", "include"):
        shutil.copy(local / name, into / "ver10/schema" / name)
    (into / "ver10/schema/soap12.xsd").write_text(SOAP12_STUB)
    text = (specs / "ver10/schema/onvif.xsd").read_text(encoding="utf-8")
    for remote, name in (("https://www.w3.org/2005/05/xmlmime", "xmlmime"),
                         ("https://www.w3.org/2003/05/soap-envelope", "soap12.xsd"),
                         ("http://docs.oasis-open.org/wsn/b-2.xsd", "b-2.xsd"),
                         ("https://www.w3.org/2004/08/xop/include", "include")):
        text = text.replace(f'schemaLocation="{remote}"', f'schemaLocation="{name}"')
    assert not re.search(r'schemaLocation="https?:', text), "a remote import was left in onvif.xsd"
    (into / "ver10/schema/onvif.xsd").write_text(text, encoding="utf-8")
    return into / "ver10/uplink/wsdl/uplink.wsdl"


@pytest.mark.skipif(not SPECS, reason="ONVIF_SPECS_DIR (a checkout of onvif/specs wsdl/) is not set")
def test_official_uplink_wsdl_client_all_operations_cfg_2_cfg_3_cfg_4_cfg_5(device: RunningDevice,
                                                                             tmp_path: Path) -> None:
    """CFG-2..5, GEN-2: the official WSDL, loaded offline, drives our device unchanged."""
    wsdl = stage(Path(str(SPECS)), tmp_path / "onvif")
    from zeep.wsse.username import UsernameToken

    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True)
    client = zeep.Client(str(wsdl), settings=settings, wsse=UsernameToken(*ADMIN, use_digest=True))
    service = client.create_service("{http://www.onvif.org/ver10/uplink/wsdl}UplinkBinding", device.url)
    caps = service.GetServiceCapabilities()
    assert (caps.MaxUplinks, caps.Protocols, caps.AuthorizationModes) == (8, ["https", "wss"], ["mTLS", "AccessToken"])
    service.SetUplink(Configuration={"RemoteAddress": "https://cloud.example.com/up", "CertificateID": "cert-1",
                                     "UserLevel": ["Operator"], "Status": "Connected"})
    [cfg] = service.GetUplinks()
    assert (cfg.RemoteAddress, cfg.CertificateID, cfg.UserLevel, cfg.Status) == (
        "https://cloud.example.com/up", "cert-1", ["Operator"], "Offline")
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.SetUplink(Configuration={"RemoteAddress": "https://c.example/", "CertificateID": "nope",
                                         "UserLevel": ["User"]})
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "CertificateID"]
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.DeleteUplink(RemoteAddress="https://nowhere.example/")
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "Address"]
    service.DeleteUplink(RemoteAddress="https://cloud.example.com/up")
    assert service.GetUplinks() == []
