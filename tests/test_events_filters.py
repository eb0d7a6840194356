"""EVT-2, EVT-9, RQ-9: the XPath subset of event filters — MessageContent ItemFilter expressions and Select
paths — parsed by the library's own bounded parser, then MessageContent filters on the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from conftest import RunningDevice
from helpers import fault_chain
from lxml import etree
from test_events_service import envelope, event_url, events_of, post, pull, sample, subscribe, topic

from iec62676_2_33.domain.event_filters import (
    MAX_DEPTH,
    MAX_EXPRESSION,
    MAX_TOKENS,
    EventItem,
    EventView,
    InvalidExpression,
    MessageContentFilter,
    compile_path,
)
from iec62676_2_33.domain.filters import ResourceQuery, resource_view
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import GeoLocation, Resource

ITEM_FILTER = "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
GATE = Resource("dev7:prof1", "MediaProfile", "Gate", GeoLocation(8.68, 50.11),
                ("onvif://www.onvif.org/location/city/frankfurt",), False)
VIEW = resource_view(GATE)


@pytest.fixture
def registry(device: RunningDevice) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(device.data / "resources.db") as reg:
        yield reg


@pytest.mark.parametrize(("expression", "expected"), [
    ('boolean(//tt:SimpleItem[@Name="Token" and @Value="dev7:prof1"])', True),
    ('boolean(//tt:SimpleItem[@Name="Token" and @Value="dev7:prof2"])', False),
    (("boolean(//tt:SimpleItem[@Name='Token' and @Value='dev7:prof2']) or "
      "boolean(//tt:SimpleItem[@Name='Token' and @Value='dev7:prof1'])"), True),
    ('not(boolean(//tt:SimpleItem[@Name="Token" and @Value="dev7:prof1"]))', False),
    ('boolean(//tt:SimpleItem[@Name="Offline" and @Value="false"]) and boolean(//tt:ElementItem[@Name="Location"])',
     True),
    ('boolean(/tt:Message/tt:Source/tt:SimpleItem[@Name="Name"])', False),  # Name is a Data item
    ('boolean(//tt:Data/tt:SimpleItem[@Name="Name"][@Value="Gate"])', True),
    ('boolean(//tt:SimpleItem[@Name="Token" and starts-with(@Value, "dev7:")])', True),
    ('boolean(//tt:SimpleItem[@Name="Token" and (@Value="a:b" or not(@Value!="dev7:prof1"))])', True),
    ('boolean(//tt:ElementItem[@Name="Location"]/tt:GeoLocation)', True),
    ("boolean(//*[@Name='Scope'])", True),
    ("boolean(//SimpleItem[@Name='Token'])", True),  # no prefix: still the message layout
])
def test_message_content_item_filter_expressions_evt_2_evt_9(expression: str, expected: bool) -> None:
    """EVT-2, EVT-9: boolean(path) over Source/Data items with @Name/@Value predicates, and/or/not."""
    assert MessageContentFilter(expression).matches(VIEW) is expected


def test_message_content_resolves_prefixes_in_scope_evt_2() -> None:
    """EVT-2: the prefix of a name test is resolved with the namespaces in scope; tt may be left unbound."""
    nsmap = {"o": "http://www.onvif.org/ver10/schema"}
    assert MessageContentFilter('boolean(//o:SimpleItem[@Name="Token"])', nsmap).matches(VIEW)
    with pytest.raises(InvalidExpression, match="not in the tt namespace"):
        MessageContentFilter('boolean(//x:SimpleItem[@Name="Token"])', {"x": "urn:other"})
    with pytest.raises(InvalidExpression, match="not bound"):
        MessageContentFilter('boolean(//y:SimpleItem[@Name="Token"])')


@pytest.mark.parametrize(("expression", "reason"), [
    ('count(//tt:SimpleItem) > 1', "unexpected character"),
    ('boolean(//tt:SimpleItem[@Foo="x"])', "items have @Name and @Value"),
    ('boolean(//tt:SimpleItem[position()=1])', "unexpected character '1'"),
    ('boolean(//tt:SimpleItem[last()])', "expected '@'"),
    ('boolean(/tt:Message/parent::node())', "expected"),
    ('boolean(//tt:SimpleItem[@Name="Token"]', r"expected '\)' at the end"),
    ("not(" * MAX_DEPTH + "boolean(//tt:SimpleItem)" + ")" * MAX_DEPTH, "nesting deeper"),
    ("boolean(/a/b/c/d/e/f/g/h/i)", "more than 8 steps"),
    ("x" * (MAX_EXPRESSION + 1), "the limit is 1024"),
    ("boolean(//tt:SimpleItem[" + " or ".join(['@Name="a"'] * 70) + "])", f"more than {MAX_TOKENS} tokens"),
    ("", "needs an expression"),
])
def test_message_content_outside_the_subset_is_refused_before_anything_runs_evt_2(
        expression: str, reason: str) -> None:
    """EVT-2: anything beyond the subset — other functions, axes, attributes — and over-long or over-deep
    expressions are refused by the bounded parser (no XPath engine ever sees client text)."""
    with pytest.raises(InvalidExpression, match=reason):
        MessageContentFilter(expression)


def test_paths_compile_against_the_message_layout_rq_9() -> None:
    """RQ-9: // is safe over the fixed layout; a path that reaches no node of a message is refused."""
    targets = {t.kind for t in compile_path("//tt:SimpleItem").targets}
    assert targets == {"Source/SimpleItem", "Data/SimpleItem"}
    assert {t.kind for t in compile_path("/tt:Message/tt:Data").targets} == {"Data"}
    with pytest.raises(InvalidExpression, match="reaches nothing"):
        compile_path("/tt:Message/tt:Colour")
    with pytest.raises(InvalidExpression, match="reaches nothing"):
        compile_path("/tt:Message[@Name='x']")  # @Name exists on items only


def test_message_content_filter_in_a_resource_query_evt_9() -> None:
    """EVT-9: a ResourceQuery with a MessageContent filter matches one source token only."""
    query = ResourceQuery(content=MessageContentFilter(
        'boolean(//tt:SimpleItem[@Name="Token" and @Value="dev7:prof1"])'))
    assert query.matches(GATE)
    assert not query.matches(Resource("dev7:prof2", "MediaProfile", "Gate"))


def test_generic_items_are_seen_by_the_same_evaluator_evt_2() -> None:
    """EVT-2: a message without a Data part (a Deleted) answers boolean(//tt:Data) false."""
    deleted = EventView((EventItem("Source", "Token", "dev7:p1"),), has_data=False)
    assert not MessageContentFilter("boolean(//tt:Data)").matches(deleted)
    assert MessageContentFilter("boolean(/tt:Message/tt:Source)").matches(deleted)


# --------------------------------------------------------------------------- on the wire


def content(expression: str) -> str:
    return f'<wsnt:MessageContent Dialect="{ITEM_FILTER}">{expression}</wsnt:MessageContent>'


def test_subscribe_to_one_source_token_with_message_content_evt_9_evt_2_rq_5(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-9, EVT-2, RQ-5: a MessageContent filter on the source token: the enumeration and the live changes
    carry that resource only."""
    sample(registry)
    address = subscribe(device, topic("tns1:Resource//.")
                        + content("boolean(//tt:SimpleItem[@Name=&quot;Token&quot; and "
                                  "@Value=&quot;dev7:prof2&quot;])"))
    assert events_of(pull(address)) == [("Initialized", "tns1:Resource/MediaProfile", "dev7:prof2")]
    result: list[etree._Element] = []
    waiting = threading.Thread(target=lambda: result.append(pull(address, "PT20S")))
    waiting.start()
    registry.upsert(Resource("dev7:prof1", "MediaProfile", "Gate renamed"))  # another token: not delivered
    registry.upsert(Resource("dev7:prof2", "MediaProfile", "Far away, renamed"))
    waiting.join(25)
    assert not waiting.is_alive()
    assert events_of(result[0]) == [("Changed", "tns1:Resource/MediaProfile", "dev7:prof2")]


def test_message_content_combinations_on_the_wire_evt_2(device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-2: or / not combinations select the resources Core's examples describe."""
    sample(registry)
    either = subscribe(device, content("boolean(//tt:SimpleItem[@Name='Token' and @Value='dev7:vs1']) or "
                                       "boolean(//tt:SimpleItem[@Name='Token' and @Value='dev8:prof1'])"))
    assert [t for _, _, t in events_of(pull(either))] == ["dev7:vs1", "dev8:prof1"]
    located = subscribe(device, content("not(boolean(//tt:ElementItem[@Name='Location']))"))
    assert [t for _, _, t in events_of(pull(located))] == ["dev8:prof1"]


def test_get_event_properties_names_the_item_filter_dialect_evt_5(device: RunningDevice) -> None:
    """EVT-5: the MessageContentFilterDialect the service evaluates is announced."""
    from test_events_service import NS, answer

    status, root = post(event_url(device), envelope("<tev:GetEventProperties/>"))
    assert status == 200
    assert answer(root).findtext("tev:MessageContentFilterDialect", namespaces=NS) == ITEM_FILTER


def test_bad_message_content_is_an_invalid_message_content_expression_fault_evt_2(device: RunningDevice) -> None:
    """EVT-2: an expression outside the subset gets InvalidMessageContentExpression."""
    status, root = post(event_url(device), envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter>{content('string(//tt:SimpleItem)')}</tev:Filter>"
        "</tev:CreatePullPointSubscription>"))
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:InvalidMessageContentExpression"]
