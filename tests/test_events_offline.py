"""RQ-4, EVT-5, EVT-6, EVT-9: a resource's Offline flips as the generic topic
``tns1:Monitoring/Resource/Offline`` — described by GetEventProperties, published from the registry's change
log (only real flips: a name change or a repeated state is no event), selectable per resource with a
MessageContent filter. The event service runs in a real HTTP server on loopback (``served`` fixture of
test_events_generic).
"""

from __future__ import annotations

from dataclasses import replace

from test_events_generic import Served, content, messages, served, subscribe, topic  # noqa: F401 - fixture
from test_events_service import NS, answer, envelope, post, pull

from iec62676_2_33.domain.generic_events import OfflineFlips
from iec62676_2_33.domain.resources import Resource, ResourceEvent

OFFLINE_TOPIC = "tns1:Monitoring/Resource/Offline"


def test_get_event_properties_describes_the_offline_topic_evt_5(served: Served) -> None:  # noqa: F811
    """EVT-5: the topic set carries tns1:Monitoring/Resource/Offline, not a property, with its items."""
    status, root = post(served.events, envelope("<tev:GetEventProperties/>"))
    assert status == 200
    description = answer(root).find(
        "wstop:TopicSet/tns1:Monitoring/tns1:Resource/tns1:Offline/tt:MessageDescription", NS)
    assert description.get("IsProperty") == "false"
    assert [(d.get("Name"), d.get("Type")) for d in description.find("tt:Source", NS)] == [
        ("Token", "tt:ReferenceToken"), ("Kind", "xs:string")]
    assert [(d.get("Name"), d.get("Type")) for d in description.find("tt:Data", NS)] == [("Offline", "xs:boolean")]


def test_offline_flips_are_published_per_resource_rq_4_evt_6_evt_9(served: Served) -> None:  # noqa: F811
    """RQ-4, EVT-6, EVT-9: a prefix going offline and back gives one event per resource and flip; a change
    that leaves Offline as it was gives none; a MessageContent filter on the Token picks one resource; a
    resource query pull point (no TopicExpression) gets no Monitoring events."""
    registry, context = served.registry, served.context
    cam = Resource("dev7:cam1", "MediaProfile", "Gate", offline=False)
    registry.upsert_many([cam, Resource("dev7:cam2", "MediaProfile", "Yard", offline=False)])
    context.poll_changes()  # new online resources: not news
    every = subscribe(served.events, topic(OFFLINE_TOPIC))
    gate = subscribe(served.events, topic("tns1:Monitoring//.") + content(
        "boolean(//tt:SimpleItem[@Name='Token' and @Value='dev7:cam1'])"))
    resources = subscribe(served.events)
    pull(resources)  # the enumeration of the resource query

    registry.set_prefix_offline("dev7", True)
    context.poll_changes()
    assert messages(pull(every)) == [
        (OFFLINE_TOPIC, None, {"Token": "dev7:cam1", "Kind": "MediaProfile"}, {"Offline": "true"}),
        (OFFLINE_TOPIC, None, {"Token": "dev7:cam2", "Kind": "MediaProfile"}, {"Offline": "true"})]
    assert messages(pull(gate)) == [
        (OFFLINE_TOPIC, None, {"Token": "dev7:cam1", "Kind": "MediaProfile"}, {"Offline": "true"})]

    registry.upsert(replace(cam, name="Gate 2", offline=True))  # renamed, still offline
    context.poll_changes()
    assert messages(pull(every)) == []
    registry.set_prefix_offline("dev7", False)
    context.poll_changes()
    assert [(m[2]["Token"], m[3]["Offline"]) for m in messages(pull(every))] == [
        ("dev7:cam1", "false"), ("dev7:cam2", "false")]
    assert all(m[0].startswith("tns1:Resource/") for m in messages(pull(resources)))


def test_offline_flips_memory_is_bounded_rq_4() -> None:
    """RQ-4: OfflineFlips remembers at most max_known resources; a forgotten one's change counts as a flip,
    a new online resource never does, a deletion or a resource without Offline is forgotten."""
    flips = OfflineFlips(max_known=2)

    def feed(token: str, offline: bool | None, operation: str = "Changed") -> bool | None:
        return flips.feed(ResourceEvent(operation, Resource(token, "MediaProfile", offline=offline), 0))  # type: ignore[arg-type]

    assert feed("p:a", False, "Initialized") is None
    assert feed("p:b", True, "Initialized") is True
    assert (feed("p:a", False), feed("p:a", True), feed("p:a", True)) == (None, True, None)
    assert feed("p:c", False) is False  # unknown previous state: reported
    assert len(flips) == 2  # p:b, the least recently changed, was forgotten
    assert feed("p:b", True) is True
    assert feed("p:c", None) is None and feed("p:b", True, "Deleted") is None
    assert len(flips) == 0
