"""EVT-7, EVT-8, EVT-9, ADR-2, ADR-3, RQ-4, RQ-9: the deviations of issue 10, each on the wire or in the domain.

Raw SOAP 1.2 envelopes written by hand are POSTed to a running ``device serve``
(the helpers of ``test_events_service``); answers are validated against the
authored ``xsd/events.xsd``. The domain rules run against a real registry with
made-up times.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDevice
from helpers import fault_chain
from lxml import etree
from test_events_service import (
    NS,
    answer,
    envelope,
    event_url,
    events_of,
    post,
    pull,
    sample,
    subscribe,
    topic,
)

from iec62676_2_33 import schemas
from iec62676_2_33.domain.filters import ResourceQuery, SelectFilter
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import InvalidResource, Resource
from iec62676_2_33.domain.subscriptions import Notification, SubscriptionManager
from iec62676_2_33.namespaces import SOAP_ENV, TNS1, TT, WSA, WSNT

T0 = 1_700_000_000.0
PULL_ACTION = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest"


@pytest.fixture
def registry(device: RunningDevice) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(device.data / "resources.db") as reg:
        yield reg


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(tmp_path / "resources.db") as reg:
        yield reg


def pull_body(timeout: str = "PT0S", limit: int = 100) -> str:
    return (f"<tev:PullMessages><tev:Timeout>{timeout}</tev:Timeout>"
            f"<tev:MessageLimit>{limit}</tev:MessageLimit></tev:PullMessages>")


def with_headers(body: str, headers: str) -> bytes:
    """``envelope`` (Administrator UsernameToken) with WS-Addressing header blocks added."""
    data = envelope(body)
    return data.replace(b"<s:Header>", f'<s:Header xmlns:wsa="{WSA}">{headers}'.encode(), 1)


def ops(messages: list[Notification]) -> list[tuple[str, str]]:
    return [(m.operation, m.resource.token) for m in messages]


# --------------------------------------------------------------------------- (a) EVT-7


def test_concurrent_pull_is_refused_and_the_waiting_pull_keeps_waiting_evt_7_evt_3(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-7, EVT-3: a second PullMessages while one waits gets the concurrent-pull fault — ONVIF Core, Event
    handling, Real-time Pull-Point Notification Interface, "Pull messages": "A device should return an error
    (UnableToGetMessagesFault) when receiving a PullMessages request for a subscription where a blocking
    PullMessage request already exists" (wsnt:UnableToGetMessagesFault in the Detail, not the
    PullMessagesFaultResponse that clause keeps for a Timeout above the limit); the waiting pull is not
    answered empty early — it answers with the news that arrives later, within its Timeout."""
    address = subscribe(device, topic("tns1:Resource/Recording"))
    assert events_of(pull(address)) == []  # the (empty) enumeration is over
    result: list[etree._Element] = []
    waiting = threading.Thread(target=lambda: result.append(pull(address, "PT30S")))
    waiting.start()
    refused = None
    for _ in range(2000):  # bounded: until the first pull is registered as waiting
        status, root = post(address, envelope(pull_body()))
        if status != 200:
            refused = root
            break
        assert events_of(answer(root)) == []
    assert refused is not None, "a concurrent PullMessages was never refused"
    assert fault_chain(refused) == ["env:Receiver", "ter:Action", "ter:UnableToGetMessages"]
    detail = answer(refused).find("env:Detail/wsnt:UnableToGetMessagesFault", NS)
    schemas.validate(detail, "events")
    assert waiting.is_alive() and not result  # the waiting pull did not answer because of the second one
    registry.upsert(Resource("dev3:rec1", "Recording", "Archive"))
    waiting.join(35)
    assert not waiting.is_alive()
    assert events_of(result[0]) == [("Initialized", "tns1:Resource/Recording", "dev3:rec1")]
    assert events_of(pull(address)) == []  # the subscription takes pulls again


# --------------------------------------------------------------------------- (b) EVT-8


def test_offline_change_hidden_by_select_gives_no_changed_evt_8_rq_4_rq_9(local_registry: ResourceRegistry) -> None:
    """EVT-8, RQ-4, RQ-9: with Select /Name an Offline flip makes no Changed; a renamed resource does, and with
    /Offline selected the flip does too (the projected views are compared, not the raw records)."""
    local_registry.upsert_many([Resource("dev7:p1", "MediaProfile", "Gate", offline=False),
                                Resource("dev7:p2", "MediaProfile", "Yard", offline=False)])
    manager = SubscriptionManager(local_registry)
    names = manager.create(ResourceQuery(select=SelectFilter(["/Name"])), T0)
    both = manager.create(ResourceQuery(select=SelectFilter(["/Name", "/Offline"])), T0)
    assert len(manager.pull(names.id, 10, T0).messages) == 2
    assert len(manager.pull(both.id, 10, T0).messages) == 2
    local_registry.set_prefix_offline("dev7", True)
    assert manager.pull(names.id, 10, T0).messages == []
    flipped = manager.pull(both.id, 10, T0).messages
    assert ops(flipped) == [("Changed", "dev7:p1"), ("Changed", "dev7:p2")]
    assert all(m.resource.offline is True for m in flipped)
    local_registry.upsert(Resource("dev7:p1", "MediaProfile", "Main gate", offline=True))
    renamed = manager.pull(names.id, 10, T0).messages
    assert ops(renamed) == [("Changed", "dev7:p1")]
    assert renamed[0].resource == Resource("dev7:p1", "MediaProfile", "Main gate")


def test_offline_change_hidden_by_select_on_the_wire_evt_8(device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-8: the same rule through PullMessages: a Select of /Name sees nothing of set_prefix_offline."""
    sample(registry)
    address = subscribe(device, topic("tns1:Resource/MediaProfile")
                        + "<tt:SelectFilter><tt:Path>/Name</tt:Path></tt:SelectFilter>")
    assert len(events_of(pull(address))) == 3
    registry.set_prefix_offline("dev7", True)
    assert events_of(pull(address, "PT0.5S")) == []


# --------------------------------------------------------------------------- (c) ADR-2, ADR-3


@pytest.mark.parametrize(("token", "reason"), [
    ("cam1", "has no ':' separator"),
    (":cam1", "has an empty prefix"),
    ("dev7:" + "x" * 37, "the limit is 36"),
])
def test_registry_refuses_tokens_that_are_not_remote_tokens_adr_2_adr_3(
        local_registry: ResourceRegistry, token: str, reason: str) -> None:
    """ADR-2, ADR-3: where resources enter the registry the remote-token rule of domain.tokens applies:
    a prefix is required and the local part has at most 36 characters; nothing is stored."""
    with pytest.raises(InvalidResource, match=reason):
        local_registry.upsert(Resource(token, "MediaProfile"))
    assert local_registry.count() == 0


def test_registry_load_names_the_line_of_a_bad_token_and_keeps_hierarchies_adr_2_adr_3(
        local_registry: ResourceRegistry, tmp_path: Path) -> None:
    """ADR-2, ADR-3: a file with a token without prefix is refused whole, naming its line; an upper VSS's
    ``Upper:Lower:token`` (a colon in the local part) is a remote token and is stored."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"token": "dev1:a", "kind": "MediaProfile"}\n{"token": "naked", "kind": "MediaProfile"}\n')
    with pytest.raises(InvalidResource, match="line 2: remote token 'naked' has no ':' separator"):
        local_registry.load_jsonl(bad)
    assert local_registry.count() == 0
    local_registry.upsert(Resource("upper:lower:prof1", "MediaProfile"))
    assert local_registry.get("upper:lower:prof1") is not None


# --------------------------------------------------------------------------- (d) EVT-9


def test_changed_only_suppresses_initialized_and_deleted_evt_9_rq_4(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-9, RQ-4: with tev:ChangedOnly the enumeration's Initialized, a new resource's Initialized and a
    removal's Deleted are not sent; a change of a signalled resource is."""
    sample(registry)
    status, root = post(event_url(device), envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter>{topic('tns1:Resource/MediaProfile')}</tev:Filter>"
        "<tev:SubscriptionPolicy><tev:ChangedOnly>true</tev:ChangedOnly></tev:SubscriptionPolicy>"
        "</tev:CreatePullPointSubscription>"))
    assert status == 200, etree.tostring(root)
    address = answer(root).findtext("tev:SubscriptionReference/wsa:Address", namespaces=NS)
    assert events_of(pull(address)) == []
    registry.upsert(Resource("dev9:new", "MediaProfile", "New"))
    registry.remove("dev7:prof2")
    registry.upsert(Resource("dev8:prof1", "MediaProfile", "Renamed"))
    assert events_of(pull(address, "PT5S")) == [("Changed", "tns1:Resource/MediaProfile", "dev8:prof1")]


def test_changed_only_enumerates_silently_in_pages_not_one_query_per_resource_evt_9(
        local_registry: ResourceRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """EVT-9: the silent enumeration of a ChangedOnly pull point reads the registry in pages of at least
    1,000 whatever the MessageLimit: with MessageLimit 1 it was one query per resource (0.95 s of a pull for
    100,000 resources); a change of an enumerated resource still comes as Changed."""
    local_registry.upsert_many([Resource(f"dev1:cam{i:04d}", "MediaProfile", f"c{i}") for i in range(2500)])
    queries = []
    real_query = local_registry.query

    def counting(*args: object, **kwargs: object) -> list[Resource]:
        queries.append(kwargs.get("limit"))
        return real_query(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local_registry, "query", counting)
    sub = SubscriptionManager(local_registry).create(ResourceQuery(), T0, T0 + 600, changed_only=True)
    assert sub.pull(1, T0) == []
    assert len(queries) == 3
    local_registry.upsert(Resource("dev1:cam2499", "MediaProfile", "renamed"))
    assert [(m.operation, m.resource.token) for m in sub.pull(1, T0)] == [("Changed", "dev1:cam2499")]  # type: ignore[union-attr]


def test_notifications_carry_the_event_service_as_producer_reference_evt_9_evt_6(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-9, EVT-6: every NotificationMessage names the event service in wsnt:ProducerReference."""
    sample(registry)
    response = pull(subscribe(device, topic("tns1:Resource/VideoSource")))
    holders = response.findall("wsnt:NotificationMessage", NS)
    assert len(holders) == 1
    assert holders[0].findtext("wsnt:ProducerReference/wsa:Address", namespaces=NS) == event_url(device)


def test_text_writer_matches_lxml_with_producer_reference_evt_6_evt_9() -> None:
    """EVT-6, EVT-9: the fast text writer and the lxml writer give the same infoset with a ProducerReference."""
    from iec62676_2_33.services.events import notification_element, notification_xml, producer_xml

    message = Notification("Changed", Resource("dev7:p1", "MediaProfile", "A & B", offline=True), T0)
    nsmap = {"wsnt": WSNT, "tt": TT, "tns1": TNS1, "wsa": WSA}
    built = etree.Element("holder", nsmap=nsmap)  # type: ignore[arg-type]
    notification_element(built, message, "http://h/onvif/event_service?a&b")
    declarations = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in nsmap.items())
    text = notification_xml(message, producer=producer_xml("http://h/onvif/event_service?a&b"))
    written = etree.fromstring(f"<holder {declarations}>{text}</holder>".encode())
    assert etree.tostring(written, method="c14n") == etree.tostring(built, method="c14n")


# --------------------------------------------------------------------------- (e) WS-Addressing


def test_pull_sent_to_the_event_service_with_wsa_to_runs_on_the_subscription_evt_3_evt_4(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-3, EVT-4: PullMessages, Renew and Unsubscribe POSTed to the event service address with the
    subscription's address in wsa:To work as if sent to that address; the answers relate to the MessageID."""
    sample(registry)
    address = subscribe(device, topic("tns1:Resource/VideoSource"))
    status, root = post(event_url(device), with_headers(
        pull_body(), f"<wsa:Action>{PULL_ACTION}</wsa:Action><wsa:To>{address}</wsa:To>"
                     "<wsa:MessageID>urn:uuid:1</wsa:MessageID>"))
    assert status == 200, etree.tostring(root)
    assert events_of(answer(root)) == [("Initialized", "tns1:Resource/VideoSource", "dev7:vs1")]
    assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:1"
    status, root = post(event_url(device), with_headers(
        "<wsnt:Renew><wsnt:TerminationTime>PT90S</wsnt:TerminationTime></wsnt:Renew>", f"<wsa:To>{address}</wsa:To>"))
    assert status == 200 and answer(root).tag == f"{{{WSNT}}}RenewResponse"
    status, root = post(event_url(device), with_headers("<wsnt:Unsubscribe/>", f"<wsa:To>{address}</wsa:To>"))
    assert status == 200 and answer(root).tag == f"{{{WSNT}}}UnsubscribeResponse"
    status, root = post(address, envelope(pull_body()))
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]


def test_subscription_operation_at_the_event_service_without_wsa_to_faults_evt_4(device: RunningDevice) -> None:
    """EVT-4: a PullMessages at the event service address naming no subscription gets ResourceUnknown (the
    documented fault), never an empty answer or ActionNotSupported."""
    status, root = post(event_url(device), envelope(pull_body()))
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]


def test_answers_and_faults_relate_to_the_message_id_and_a_contradicting_action_is_refused_evt_3(
        device: RunningDevice) -> None:
    """EVT-3: with a wsa:MessageID, answers and faults carry wsa:RelatesTo; a wsa:Action naming another
    operation than the Body is refused (the Body decides what runs, and nothing runs)."""
    address = subscribe(device)
    status, root = post(address, with_headers(pull_body("PT9M"), "<wsa:MessageID>urn:uuid:2</wsa:MessageID>"))
    assert status == 400
    assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:2"
    status, root = post(address, with_headers(
        "<wsnt:Unsubscribe/>", "<wsa:Action>http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/"
                               "PullMessagesRequest</wsa:Action><wsa:MessageID>urn:uuid:3</wsa:MessageID>"))
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ActionMismatch"]
    assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:3"
    assert events_of(pull(address)) == []  # the subscription was not unsubscribed


# --------------------------------------------------------------------------- (f) RQ-9 XPath subset


def test_select_paths_are_an_xpath_subset_over_the_message_rq_9(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """RQ-9: Select entries are XPath over the message layout: predicates on SimpleItem Name/Value and //."""
    sample(registry)
    address = subscribe(device, topic("tns1:Resource/MediaProfile")
                        + "<tt:PrefixFilter><tt:Prefix>dev7</tt:Prefix></tt:PrefixFilter>"
                        + "<tt:SelectFilter><tt:Path>//tt:SimpleItem[@Name='Scope' and "
                          "starts-with(@Value, 'onvif://www.onvif.org/name/')]</tt:Path>"
                          "<tt:Path>/tt:Message/tt:Data/tt:ElementItem[@Name=\"Location\"]</tt:Path>"
                          "</tt:SelectFilter>")
    response = pull(address)
    messages = response.findall(".//tt:Message", NS)
    assert len(messages) == 2
    data = messages[0].find("tt:Data", NS)
    assert [(i.get("Name"), i.get("Value")) for i in data.findall("tt:SimpleItem", NS)] == [
        ("Scope", "onvif://www.onvif.org/name/gate")]
    assert data.find("tt:ElementItem[@Name='Location']/tt:GeoLocation", NS) is not None


@pytest.mark.parametrize("path", [
    "//tt:SimpleItem[position()=1]",
    "/tt:Message/ancestor::node()",
    "//tt:SimpleItem[@Name='Scope']" + " or @Name='x'" * 60,
    "/Data/Colour",
])
def test_select_outside_the_subset_or_too_long_is_an_invalid_filter_rq_9(device: RunningDevice, path: str) -> None:
    """RQ-9: functions, other axes, over-long expressions and paths that reach nothing are InvalidFilter."""
    status, root = post(event_url(device), envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter><tt:SelectFilter><tt:Path>{path}</tt:Path></tt:SelectFilter>"
        "</tev:Filter></tev:CreatePullPointSubscription>"))
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:InvalidFilter"]


def test_select_entry_count_is_bounded_rq_9(device: RunningDevice) -> None:
    """RQ-9: at most 16 Path entries in one Select filter."""
    paths = "<tt:Path>/Name</tt:Path>" * 17
    status, root = post(event_url(device), envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter><tt:SelectFilter>{paths}</tt:SelectFilter>"
        "</tev:Filter></tev:CreatePullPointSubscription>"))
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:InvalidFilter"]
    assert "at most 16" in root.findtext(f".//{{{SOAP_ENV}}}Text")


def test_capabilities_announce_subscription_policy_support_evt_9(device: RunningDevice) -> None:
    """EVT-9: the ChangedOnly subscription policy exists, so WSSubscriptionPolicySupport is true."""
    status, root = post(event_url(device), envelope("<tev:GetServiceCapabilities/>", user=None))
    assert status == 200
    assert answer(root).find("tev:Capabilities", NS).get("WSSubscriptionPolicySupport") == "true"


def test_view_digests_survive_sorted_runs_and_compaction_evt_8(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVT-8: the per-token view digest (kept with a Select filter) stays right across the set's sorted runs,
    removals, re-additions and compaction."""
    from iec62676_2_33.domain import subscriptions

    monkeypatch.setattr(subscriptions._TokenSet, "_RUN", 100)
    tokens = subscriptions._TokenSet(views=True)
    for i in range(1050):
        tokens.add(f"d:{i}", i * 7)
    for i in range(0, 1050, 3):
        tokens.discard(f"d:{i}")
    tokens.add("d:3", -5)
    tokens.add("d:4", 44)
    tokens._compact()
    assert [tokens.get(f"d:{i}") for i in range(7)] == [None, 7, 14, -5, 44, 35, None]
    assert tokens.get("d:1049") == 1049 * 7 and tokens.get("d:1050") is None
