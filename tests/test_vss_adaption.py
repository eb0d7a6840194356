"""ADR-2, ADR-3, ADR-4, ADR-6, ANX-B-1, ANX-B-2: token adaption driven by the authored XSD — where the tokens
of a message are (Media2, and PTZ with no code of its own), the clause 6 rule for requests (prefix
stripped, learnt routes, unknown prefix, over-long token, mixed systems) and answers (local tokens
prefixed, remote tokens kept and their prefixes learnt, no truncation)."""

from __future__ import annotations

import pytest
from lxml import etree

from iec62676_2_33 import schemas
from iec62676_2_33.namespaces import TT
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.vss.adaption import TokenIndex, prefix_response, route_request, token_index

TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
XS = "http://www.w3.org/2001/XMLSchema"


def xml(text: str) -> etree._Element:
    return etree.fromstring(text.replace("TR2", TR2).replace("TT", TT).replace("TPTZ", TPTZ))


def tokens(element: etree._Element, index: TokenIndex | None = None) -> list[str]:
    return [(e.get(a) if a else e.text) or "" for e, a in (index or token_index()).sites(element)]


PROFILES = """<tr2:GetProfilesResponse xmlns:tr2="TR2" xmlns:tt="TT">
  <tr2:Profiles token="main" fixed="true"><tr2:Name>Main</tr2:Name><tr2:Configurations>
    <tr2:VideoSource token="main"><tt:Name>x</tt:Name><tt:UseCount>1</tt:UseCount>
      <tt:SourceToken>vs1</tt:SourceToken><tt:Bounds x="0" y="0" width="1" height="1"/></tr2:VideoSource>
  </tr2:Configurations></tr2:Profiles>
  <tr2:Profiles token="site:cam:sub" fixed="true"><tr2:Name>Sub</tr2:Name></tr2:Profiles>
</tr2:GetProfilesResponse>"""


def test_sites_come_from_the_schema() -> None:
    """ANX-B-1, ANX-B-2: Media2 attributes and elements, and a PTZ operation found with no PTZ code here."""
    assert tokens(xml(PROFILES)) == ["main", "main", "vs1", "site:cam:sub"]
    move = xml('<tptz:AbsoluteMove xmlns:tptz="TPTZ" xmlns:tt="TT"><tptz:ProfileToken>p:1</tptz:ProfileToken>'
               '<tptz:Position><tt:PanTilt x="0" y="0"/></tptz:Position></tptz:AbsoluteMove>')
    assert tokens(move) == ["p:1"]
    assert tokens(xml('<tr2:GetStreamUri xmlns:tr2="TR2"><tr2:Protocol>RTSP</tr2:Protocol>'
                      '<tr2:ProfileToken>a:b</tr2:ProfileToken></tr2:GetStreamUri>')) == ["a:b"]


def test_derived_token_types_count() -> None:
    """ADR-1: a simple type restricting tt:ReferenceToken (at any depth) carries tokens too."""
    schema = etree.fromstring(f"""<xs:schema xmlns:xs="{XS}" xmlns:tt="{TT}" xmlns:x="urn:x" targetNamespace="urn:x">
      <xs:simpleType name="RecordingToken"><xs:restriction base="tt:ReferenceToken"/></xs:simpleType>
      <xs:simpleType name="Narrow"><xs:restriction base="x:RecordingToken"/></xs:simpleType>
      <xs:complexType name="Base"><xs:sequence><xs:element name="A" type="x:Narrow"/></xs:sequence></xs:complexType>
      <xs:complexType name="Derived"><xs:complexContent><xs:extension base="x:Base">
        <xs:sequence><xs:element name="B" type="xs:string"/></xs:sequence>
        <xs:attribute name="t" type="x:RecordingToken"/></xs:extension></xs:complexContent></xs:complexType>
      <xs:element name="Op"><xs:complexType><xs:sequence><xs:element name="D" type="x:Derived"/></xs:sequence>
      </xs:complexType></xs:element></xs:schema>""")
    common = etree.parse(str(schemas.xsd_path("common"))).getroot()
    index = TokenIndex([common, schema])
    op = etree.fromstring('<x:Op xmlns:x="urn:x"><x:D t="attr"><x:A>text</x:A><x:B>plain</x:B></x:D></x:Op>')
    assert sorted(tokens(op, index)) == ["attr", "text"]


def test_request_routing() -> None:
    """ADR-2, ADR-6: a configured prefix is stripped; a learnt one routes unchanged; own tokens stay."""
    op = xml('<tr2:GetStreamUri xmlns:tr2="TR2"><tr2:Protocol>RTSP</tr2:Protocol>'
             '<tr2:ProfileToken>site:main</tr2:ProfileToken></tr2:GetStreamUri>')
    assert route_request(op, {"site"}, {}).lower == "site"
    assert op.findtext(f"{{{TR2}}}ProfileToken") == "main"
    op = xml('<tr2:GetStreamUri xmlns:tr2="TR2"><tr2:Protocol>RTSP</tr2:Protocol>'
             '<tr2:ProfileToken>cam7:main</tr2:ProfileToken></tr2:GetStreamUri>')
    assert route_request(op, {"site"}, {"cam7": "site"}).lower == "site"
    assert op.findtext(f"{{{TR2}}}ProfileToken") == "cam7:main"
    op = xml('<tr2:GetProfiles xmlns:tr2="TR2"><tr2:Token>lobby</tr2:Token></tr2:GetProfiles>')
    assert route_request(op, {"site"}, {}).lower is None


@pytest.mark.parametrize("token, why", [
    ("elsewhere:main", "no lower system has the prefix"),
    ("site:" + "x" * 60, "the limit is 64"),
])
def test_request_refusals(token: str, why: str) -> None:
    """ADR-3, ADR-6: unknown prefix and over-long token: Sender/InvalidArgVal, nothing truncated."""
    op = xml(f'<tr2:GetProfiles xmlns:tr2="TR2"><tr2:Token>{token}</tr2:Token></tr2:GetProfiles>')
    with pytest.raises(SoapFault) as caught:
        route_request(op, {"site"}, {})
    assert (caught.value.code, list(caught.value.subcodes)) == ("Sender", ["InvalidArgVal"])
    assert why in caught.value.reason


def test_profiles_answer_prefixed_and_routes_learnt() -> None:
    """ADR-2, ADR-4: local tokens get the lower's prefix; a remote token keeps its own (learnt as a route)."""
    answer = xml(PROFILES)
    assert prefix_response(answer, "gate") == {"site"}
    assert tokens(answer) == ["gate:main", "gate:main", "gate:vs1", "site:cam:sub"]


def test_answer_token_too_long_for_a_prefix() -> None:
    """ADR-3: a 36-character local token under a long prefix would pass 64 characters: a Receiver fault,
    never a truncated token."""
    answer = xml(f'<tr2:GetProfilesResponse xmlns:tr2="TR2"><tr2:Profiles token="{"u" * 36}" fixed="true">'
                 '<tr2:Name>n</tr2:Name></tr2:Profiles></tr2:GetProfilesResponse>')
    with pytest.raises(SoapFault) as caught:
        prefix_response(answer, "p" * 30)
    assert caught.value.code == "Receiver"
    assert "64" in caught.value.reason
