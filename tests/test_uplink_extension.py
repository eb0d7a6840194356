"""PROV-5, CFG-1, CFG-2, CFG-3, CFG-6: the ``xs:any ##any`` tail of ``tup:Configuration``, on the wire.

The official schema ends tup:Configuration with ``xs:any namespace="##any"``:
a SetUplink carrying a future ``tup:`` element (or a vendor element) after
the known items is accepted, the extension kept (bounded) and written back by
GetUplinks after Error. Everything the authored schema refused before is
still refused. Raw SOAP 1.2 envelopes go to a running device on loopback; a
device store written before the extension column existed is opened and keeps
its uplinks.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import ADMIN, RunningDevice
from helpers import fault_chain
from lxml import etree
from test_uplink_service import NS, answer, envelope, post

from iec62676_2_33 import schemas
from iec62676_2_33.client import UplinkClient
from iec62676_2_33.namespaces import TUP
from iec62676_2_33.services.uplink import schema_view
from iec62676_2_33.soap import extension
from iec62676_2_33.store import DB_NAME, DeviceStore
from iec62676_2_33.uplinkconfig import MAX_EXTENSION, UplinkConfiguration

KNOWN = ("<tup:RemoteAddress>https://cloud.example.com/up</tup:RemoteAddress>"
         "<tup:CertificateID>cert-1</tup:CertificateID><tup:UserLevel>Operator</tup:UserLevel>")
FUTURE = "<tup:FutureThing>x</tup:FutureThing>"
VENDOR = '<v:Tuning xmlns:v="urn:vendor:uplink" v:mode="eco"><v:Rate>5</v:Rate></v:Tuning>'
KNOWN_TAGS = frozenset(f"{{{TUP}}}{name}" for name in ("RemoteAddress", "CertificateID", "UserLevel", "Status",
                                                        "CertPathValidationPolicyID", "AuthorizationServer",
                                                        "Error"))


def set_uplink(content: str) -> str:
    return f"<tup:SetUplink><tup:Configuration>{content}</tup:Configuration></tup:SetUplink>"


def stored_configurations(device: RunningDevice) -> list[etree._Element]:
    status, root = post(device.url, envelope("<tup:GetUplinks/>"))
    assert status == 200
    response = answer(root)
    schemas.validate(schema_view(response), "uplink")
    return response.findall("tup:Configuration", NS)


def tail(configuration: etree._Element) -> list[etree._Element]:
    """Everything GetUplinks wrote after the known items."""
    last = max(i for i, child in enumerate(configuration) if child.tag in KNOWN_TAGS)
    return list(configuration)[last + 1:]


def shape(element: etree._Element) -> tuple[object, ...]:
    """An element as names, attributes, text and children (prefixes are the serialiser's choice)."""
    return element.tag, dict(element.attrib), element.text or "", [shape(child) for child in element]


@pytest.mark.parametrize("extra", [FUTURE, FUTURE + VENDOR, VENDOR])
def test_extension_after_known_items_is_stored_and_echoed_prov_5(device: RunningDevice, extra: str) -> None:
    """PROV-5, CFG-2, CFG-3: a future tup: element (and a vendor element, as before) after the known items is
    accepted; GetUplinks writes the same elements back after Error: names, attributes and content."""
    status, root = post(device.url, envelope(set_uplink(KNOWN + extra)))
    assert status == 200, etree.tostring(root)
    [configuration] = stored_configurations(device)
    assert configuration.findtext("tup:UserLevel", namespaces=NS) == "Operator"
    sent = etree.fromstring(f'<w xmlns:tup="{TUP}">{extra}</w>')
    assert [shape(e) for e in tail(configuration)] == [shape(e) for e in sent]


def test_our_client_reads_an_echoed_extension_cfg_2(device: RunningDevice) -> None:
    """CFG-2: the library's client (zeep, authored WSDL) still reads GetUplinks when it carries extensions."""
    status, _ = post(device.url, envelope(set_uplink(KNOWN + FUTURE + VENDOR)))
    assert status == 200
    [cfg] = UplinkClient(device.url, username=ADMIN[0], password=ADMIN[1]).get_uplinks()
    assert (cfg.remote_address, cfg.user_level, cfg.certificate_id) == \
        ("https://cloud.example.com/up", ("Operator",), "cert-1")


def test_replacing_a_configuration_replaces_its_extension_cfg_3(device: RunningDevice) -> None:
    """CFG-3: SetUplink replaces the whole entry keyed by RemoteAddress, its extension included."""
    assert post(device.url, envelope(set_uplink(KNOWN + FUTURE)))[0] == 200
    assert post(device.url, envelope(set_uplink(KNOWN)))[0] == 200
    [configuration] = stored_configurations(device)
    assert tail(configuration) == []


def test_extension_over_budget_is_refused_nothing_stored_prov_5(device: RunningDevice) -> None:
    """PROV-5, CFG-3: more than MAX_EXTENSION bytes of extension XML is a clear Sender fault; nothing is stored;
    the reason does not repeat the content."""
    big = f"<tup:FutureThing>{'y' * MAX_EXTENSION}</tup:FutureThing>"
    for extra in (big, VENDOR.replace(">5<", f">{'5' * MAX_EXTENSION}<")):
        status, root = post(device.url, envelope(set_uplink(KNOWN + extra)))
        assert status == 400
        assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal"]
        reason = root.findtext(".//env:Reason/env:Text", namespaces=NS)
        assert reason is not None and str(MAX_EXTENSION) in reason and "yyyy" not in reason
    assert stored_configurations(device) == []


@pytest.mark.parametrize("content", [
    # a future element before or between the known items: the official schema refuses it too
    ("<tup:RemoteAddress>https://c.example/</tup:RemoteAddress><tup:FutureThing/>"
     "<tup:CertificateID>cert-1</tup:CertificateID><tup:UserLevel>User</tup:UserLevel>"),
    FUTURE + KNOWN,
    # a known item repeated after the others
    KNOWN + FUTURE + "<tup:UserLevel>Administrator</tup:UserLevel>",
    KNOWN + "<tup:UserLevel>Administrator</tup:UserLevel>",
    # character data next to an extension element
    KNOWN + FUTURE + "text",
    KNOWN + "text" + FUTURE,
    # a foreign element shadowing a known item's name (Spyne would read it)
    KNOWN + '<o:UserLevel xmlns:o="urn:x">Administrator</o:UserLevel>',
])
def test_what_the_schema_refused_is_still_refused_prov_5(device: RunningDevice, content: str) -> None:
    """PROV-5, CFG-3: only future tup: elements after the known items are newly accepted; misplaced ones,
    repeated known items, character data and shadowing names are refused as before; nothing is stored."""
    status, root = post(device.url, envelope(set_uplink(content)))
    assert status == 400
    assert fault_chain(root)[:2] == ["env:Sender", "ter:InvalidArgs"]
    assert stored_configurations(device) == []


@pytest.mark.parametrize("body", [
    f"<tup:SetUplink><tup:Configuration>{KNOWN}</tup:Configuration>{FUTURE}</tup:SetUplink>",
    f"<tup:GetUplinks>{FUTURE}</tup:GetUplinks>",
    f"<tup:DeleteUplink><tup:RemoteAddress>https://c.example/</tup:RemoteAddress>{FUTURE}</tup:DeleteUplink>",
])
def test_future_elements_outside_configuration_are_refused_prov_5(device: RunningDevice, body: str) -> None:
    """PROV-5: the extension point is tup:Configuration's tail only; messages without xs:any stay closed."""
    status, root = post(device.url, envelope(body))
    assert status == 400
    assert fault_chain(root)[:2] == ["env:Sender", "ter:InvalidArgs"]


def test_store_written_before_the_extension_column_opens_cfg_6(tmp_path: Path) -> None:
    """CFG-6: a device store whose uplinks table predates the extension column is migrated on opening: its
    uplinks survive (with no extension) and new extensions are kept across reopening."""
    data = tmp_path / "old"
    data.mkdir(mode=0o700)
    db = sqlite3.connect(data / DB_NAME)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE uplinks (remote_address TEXT PRIMARY KEY, position INTEGER NOT NULL, user_level TEXT NOT NULL,
                              certificate_id TEXT, cert_path_validation_policy_id TEXT, authorization_server TEXT);
        INSERT INTO uplinks VALUES ('https://old.example/up', 1, 'User', 'cert-1', NULL, NULL);
    """)
    db.close()
    (data / DB_NAME).chmod(0o600)
    with DeviceStore(data) as store:
        assert store.list_uplinks() == [UplinkConfiguration(remote_address="https://old.example/up",
                                                            user_level=("User",), certificate_id="cert-1")]
        store.put_uplink(UplinkConfiguration(remote_address="https://new.example/up", user_level=("User",),
                                             certificate_id="cert-1", extension="<x/>"), max_uplinks=8)
    with DeviceStore(data) as store:  # the second opening finds the column in place
        assert [cfg.extension for cfg in store.list_uplinks()] == ["", "<x/>"]


def test_kept_extension_declares_what_it_uses_prov_5() -> None:
    """PROV-5: the kept text declares the namespaces the extension's names and QName-like values use, not
    every namespace of the envelope (those would eat the budget); a request without extension is not copied."""
    envelope_ns = " ".join(f'xmlns:n{i}="urn:unused:{i}"' for i in range(40))
    root = etree.fromstring(
        f'<env:Envelope xmlns:env="urn:env" xmlns:tt="urn:tt" xmlns:tup="{TUP}" {envelope_ns}><env:Body>'
        f'<tup:SetUplink><tup:Configuration>{KNOWN}<tup:FutureThing kind="tt:Mode">tt:Eco</tup:FutureThing>'
        '</tup:Configuration></tup:SetUplink></env:Body></env:Envelope>')
    operation = root[0][0]
    configuration = operation[0]
    kept = extension.serialise(configuration, extension.extension_tail(configuration, KNOWN_TAGS))
    assert "urn:unused" not in kept and 'xmlns:tt="urn:tt"' in kept
    [future] = extension.elements(kept)
    assert (future.get("kind"), future.text, future.nsmap.get("tt")) == ("tt:Mode", "tt:Eco", "urn:tt")
    view = schema_view(operation)
    assert view is not operation and view.find(f"{{{TUP}}}Configuration/{{{TUP}}}FutureThing") is None
    assert len(configuration) == 4  # the one tree keeps its extension
    plain = etree.fromstring(f'<tup:SetUplink xmlns:tup="{TUP}"><tup:Configuration>{KNOWN}{VENDOR}'
                             '</tup:Configuration></tup:SetUplink>')
    assert schema_view(plain) is plain
