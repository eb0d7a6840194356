"""ANX-B-3, ANX-B-5, ADR-2, ADR-6: the pure rules behind searches through a VSS — which scope entries each
system of a joint search receives, and how a lower system's recording sources (SourceId, Address) are
adapted; the rest of a message stays as it was."""

from __future__ import annotations

import pytest
from lxml import etree

from iec62676_2_33.namespaces import TT
from iec62676_2_33.services.recording import TSE
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.vss.adaption import adapt_recording_sources
from iec62676_2_33.vss.searches import narrow_scope, scope_owners

LOWERS = frozenset({"cam", "yard"})
ROUTES = {"deep": "yard"}
NS = {"tse": TSE, "tt": TT}


def _find(*sources: str, recordings: tuple[str, ...] = ()) -> etree._Element:
    entries = "".join(f"<tt:IncludedSources><tt:Token>{s}</tt:Token></tt:IncludedSources>" for s in sources)
    entries += "".join(f"<tt:IncludedRecordings>{r}</tt:IncludedRecordings>" for r in recordings)
    return etree.fromstring(f'<tse:FindRecordings xmlns:tse="{TSE}" xmlns:tt="{TT}"><tse:Scope>{entries}'
                            "<tt:RecordingInformationFilter>boolean(//Track)</tt:RecordingInformationFilter>"
                            "</tse:Scope><tse:KeepAliveTime>PT10S</tse:KeepAliveTime></tse:FindRecordings>")


def _entries(operation: etree._Element) -> list[str]:
    return [str(e.findtext("tt:Token", namespaces=NS) or e.text) for e in operation.find("tse:Scope", NS)]


def test_scope_split_among_its_systems_anx_b_3() -> None:
    """ANX-B-3, ADR-2: the owners of a scope in the order met (``None``: the VSS's own; a learnt prefix counts
    for the lower system it is routed to); each system's copy keeps only its own entries (and the filter), the
    operation itself is untouched."""
    find = _find("cam:main", "lobby", "deep:main", recordings=("yard:rec-b", "cam:rec-a"))
    assert scope_owners(find, LOWERS, ROUTES) == ["cam", None, "yard"]
    assert _entries(narrow_scope(find, "cam", LOWERS, ROUTES)) == ["cam:main", "cam:rec-a", "boolean(//Track)"]
    assert _entries(narrow_scope(find, "yard", LOWERS, ROUTES)) == ["deep:main", "yard:rec-b", "boolean(//Track)"]
    assert _entries(narrow_scope(find, None, LOWERS, ROUTES)) == ["lobby", "boolean(//Track)"]
    assert len(_entries(find)) == 6
    assert scope_owners(_find(), LOWERS, ROUTES) == []


@pytest.mark.parametrize("token", ["gone:main", "cam:" + "x" * 61])
def test_scope_with_a_bad_token_is_refused_adr_6(token: str) -> None:
    """ADR-6, ADR-3: an unknown prefix or an over-long token in a scope is ``Sender/InvalidArgVal``."""
    with pytest.raises(SoapFault) as raised:
        scope_owners(_find("cam:main", token), LOWERS, ROUTES)
    assert (raised.value.code, tuple(raised.value.subcodes)) == ("Sender", ("InvalidArgVal",))


def _information(source_id: str, address: str) -> etree._Element:
    return etree.fromstring(
        f'<tse:GetRecordingInformationResponse xmlns:tse="{TSE}" xmlns:tt="{TT}"><tse:RecordingInformation>'
        "<tt:RecordingToken>cam:rec-a</tt:RecordingToken><tt:Source>"
        f"<tt:SourceId>{source_id}</tt:SourceId><tt:Name>n</tt:Name><tt:Location/><tt:Description/>"
        f"<tt:Address>{address}</tt:Address><tt:VideoSourceToken>cam:main</tt:VideoSourceToken></tt:Source>"
        "<tt:Content/></tse:RecordingInformation></tse:GetRecordingInformationResponse>")


@pytest.mark.parametrize("source_id, address, expected", [
    ("main", "http://10.0.0.7:80", ("cam%3Amain", "http://vss:8080")),  # a local token gets the prefix
    ("deep%3Amain", "https://10.0.0.7", ("deep%3Amain", "http://vss:8080")),  # a remote token keeps its own
    ("urn:uuid:6f1c", "rtsp://10.0.0.7/main", ("urn:uuid:6f1c", "rtsp://10.0.0.7/main")),  # names, kept
    ("", "", ("", "")),  # no source id, no address
])
def test_recording_sources_adapted_anx_b_5(source_id: str, address: str, expected: tuple[str, str]) -> None:
    """ANX-B-5, ADR-2: a scheme-less SourceId is the source's token, exposed as at the VSS and percent-encoded;
    one with a scheme is the creator's name and stays; an http(s) Address becomes the VSS's, another stays."""
    answer = _information(source_id, address)
    adapt_recording_sources(answer, "cam", "http://vss:8080")
    assert (answer.findtext(".//tt:SourceId", namespaces=NS) or "",
            answer.findtext(".//tt:Address", namespaces=NS) or "") == expected
    assert answer.findtext(".//tt:VideoSourceToken", namespaces=NS) == "cam:main"


def test_event_message_sources_untouched_anx_b_5() -> None:
    """ANX-B-5: a ``tt:Source`` of an event message (no SourceId/Address) is not a recording source."""
    message = etree.fromstring(f'<tt:Message xmlns:tt="{TT}" UtcTime="2026-01-01T12:00:00Z"><tt:Source>'
                               '<tt:SimpleItem Name="RecordingToken" Value="rec-a"/></tt:Source></tt:Message>')
    before = etree.tostring(message)
    adapt_recording_sources(message, "cam", "http://vss:8080")
    assert etree.tostring(message) == before
