"""Test helper (GEN-2 interop): stage the *official* ONVIF WSDLs offline.

Point ``ONVIF_SPECS_DIR`` at the ``wsdl/`` folder of a checkout of the public
onvif/specs repository. The remote imports of ``onvif.xsd`` and of the WSDLs
are pointed at the local copies the ``onvif-zeep-async`` wheel ships; the two
SOAP 1.2 envelope types ``onvif.xsd`` refers to come from a small stub written
here. Nothing of the official files is kept in this repository.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

SPECS = os.environ.get("ONVIF_SPECS_DIR")
SKIP_REASON = "ONVIF_SPECS_DIR (a checkout of onvif/specs wsdl/) is not set"

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

_LOCAL_COPIES = ("b-2.xsd", "bf-2.xsd", "t-1.xsd", "ws-addr.xsd", "xml.xsd", "xmlmime", "include", "r-2.xsd",
                 "rw-2.wsdl", "bw-2.wsdl")
_ONVIF_XSD_IMPORTS = (("https://www.w3.org/2005/05/xmlmime", "xmlmime"),
                      ("https://www.w3.org/2003/05/soap-envelope", "soap12.xsd"),
                      ("http://docs.oasis-open.org/wsn/b-2.xsd", "b-2.xsd"),
                      ("https://www.w3.org/2004/08/xop/include", "include"))
_WSDL_IMPORTS = (("http://docs.oasis-open.org/wsn/bw-2.wsdl", "../../schema/bw-2.wsdl"),
                 ("http://docs.oasis-open.org/wsrf/rw-2.wsdl", "../../schema/rw-2.wsdl"),
                 ("http://docs.oasis-open.org/wsn/b-2.xsd", "../../schema/b-2.xsd"),
                 ("http://www.w3.org/2005/08/addressing/ws-addr.xsd", "../../schema/ws-addr.xsd"),
                 ("http://docs.oasis-open.org/wsn/t-1.xsd", "../../schema/t-1.xsd"))


def stage(specs: Path, into: Path, wsdl: str) -> Path:
    """Stage ``ver10/<wsdl>`` (e.g. ``uplink/wsdl/uplink.wsdl``) and the schemas it needs; returns its path."""
    import onvif

    local = Path(onvif.__file__).parent / "wsdl"
    schema = into / "ver10/schema"
    schema.mkdir(parents=True)
    for name in _LOCAL_COPIES:
        if (local / name).exists():
            shutil.copy(local / name, schema / name)
    (schema / "soap12.xsd").write_text(SOAP12_STUB)
    shutil.copy(specs / "ver10/schema/common.xsd", schema / "common.xsd")
    text = (specs / "ver10/schema/onvif.xsd").read_text(encoding="utf-8")
    for remote, name in _ONVIF_XSD_IMPORTS:
        text = text.replace(f'schemaLocation="{remote}"', f'schemaLocation="{name}"')
    assert not re.search(r'schemaLocation="https?:', text), "a remote import was left in onvif.xsd"
    (schema / "onvif.xsd").write_text(text, encoding="utf-8")
    document = (specs / "ver10" / wsdl).read_text(encoding="utf-8")
    for remote, name in _WSDL_IMPORTS:
        document = document.replace(f'ocation="{remote}"', f'ocation="{name}"')  # location= and schemaLocation=
    remaining = re.findall(r'(?:schemaL|l)ocation="(https?:[^"]+)"', document)
    assert not remaining, f"remote imports left in {wsdl}: {remaining}"
    target = into / "ver10" / wsdl
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document, encoding="utf-8")
    return target
