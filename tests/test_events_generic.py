"""EVT-2, EVT-4, EVT-5, EVT-6, EVT-9, RQ-5: generic events — a topic published through
:meth:`EventServiceContext.publish`, described by GetEventProperties and delivered to pull points with
topic and MessageContent filters — and the device's own ``tns1:Monitoring/Uplink/Status``.

The event service runs in a real HTTP server on loopback (``serve_wsgi``) around a context the test
holds, so the test publishes like a backend would; the uplink status test runs the whole device.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import seed_device
from helpers import fault_chain
from lxml import etree
from test_events_service import NS, answer, envelope, post, pull

from iec62676_2_33.domain.generic_events import UPLINK_STATUS, InvalidEvent, TopicDescription
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.device import device_capabilities, run_device
from iec62676_2_33.runtime.http_server import bind_listen, serve_wsgi, wait_event
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.events import EventServiceContext, UplinkStatusEvents
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.uplinkconfig import UplinkConfiguration

ITEM_FILTER = "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
ONVIF_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
DOOR = TopicDescription("Door/State", source=(("DoorToken", "tt:ReferenceToken"),), data=(("State", "xs:string"),))
ALARM = TopicDescription("Device/Trigger/Alarm", source=(("Input", "xs:string"),), data=(("Level", "xs:int"),),
                         is_property=False)


@dataclass
class Served:
    url: str
    context: EventServiceContext
    registry: ResourceRegistry

    @property
    def events(self) -> str:
        return self.url + "/onvif/event_service"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data = tmp_path / "device"
    seed_device(data)
    registry = ResourceRegistry(data / "resources.db")
    context = EventServiceContext.create(registry)
    context.declare(DOOR)
    context.declare(ALARM)
    UplinkStatusEvents(context)  # declares tns1:Monitoring/Uplink/Status

    async def serve(stop, announce):  # type: ignore[no-untyped-def]
        sock = bind_listen("127.0.0.1", 0)
        with DeviceStore(data) as store:
            app = build_device_app(UplinkServiceContext(store=store, capabilities=device_capabilities()),
                                   events=context)
            announce(f"http://127.0.0.1:{sock.getsockname()[1]}")
            try:
                await serve_wsgi(app, sock, lambda: wait_event(stop))
            finally:
                context.close()

    service = BackgroundService(serve, name="events").start()
    try:
        yield Served(service.messages[0], context, registry)
    finally:
        service.stop()
        registry.close()


def subscribe(url: str, filter_xml: str = "", policy: str = "") -> str:
    flt = f"<tev:Filter>{filter_xml}</tev:Filter>" if filter_xml else ""
    status, root = post(url, envelope(f"<tev:CreatePullPointSubscription>{flt}{policy}"
                                      "</tev:CreatePullPointSubscription>"))
    assert status == 200, etree.tostring(root)
    return answer(root).findtext("tev:SubscriptionReference/wsa:Address", namespaces=NS)


def topic(text: str) -> str:
    return f'<wsnt:TopicExpression Dialect="{ONVIF_SET}">{text}</wsnt:TopicExpression>'


def content(expression: str) -> str:
    return f'<wsnt:MessageContent Dialect="{ITEM_FILTER}">{expression}</wsnt:MessageContent>'


def messages(response: etree._Element) -> list[tuple[str, str | None, dict[str, str], dict[str, str]]]:
    """(topic, PropertyOperation, source items, data items) of every notification."""
    out = []
    for holder in response.findall("wsnt:NotificationMessage", NS):
        message = holder.find("wsnt:Message/tt:Message", NS)
        items = {part: {i.get("Name"): i.get("Value") for i in message.findall(f"tt:{part}/tt:SimpleItem", NS)}
                 for part in ("Source", "Data")}
        out.append((holder.findtext("wsnt:Topic", namespaces=NS), message.get("PropertyOperation"),
                    items["Source"], items["Data"]))
    return out


def test_get_event_properties_describes_generic_topics_evt_5(served: Served) -> None:
    """EVT-5: each declared topic sits in the topic set, marked wstop:topic, with its message description."""
    status, root = post(served.events, envelope("<tev:GetEventProperties/>"))
    assert status == 200
    topic_set = answer(root).find("wstop:TopicSet", NS)
    door = topic_set.find("tns1:Door/tns1:State", NS)
    assert door.get("{http://docs.oasis-open.org/wsn/t-1}topic") == "true"
    description = door.find("tt:MessageDescription", NS)
    assert description.get("IsProperty") == "true"
    assert [(d.get("Name"), d.get("Type")) for d in description.find("tt:Source", NS)] == [
        ("DoorToken", "tt:ReferenceToken")]
    alarm = topic_set.find("tns1:Device/tns1:Trigger/tns1:Alarm/tt:MessageDescription", NS)
    assert alarm.get("IsProperty") == "false"
    uplink = topic_set.find("tns1:Monitoring/tns1:Uplink/tns1:Status/tt:MessageDescription", NS)
    assert [d.get("Name") for d in uplink.find("tt:Data", NS)] == ["Status", "Error"]
    assert topic_set.find("tns1:Resource/tns1:MediaProfile", NS) is not None


def test_published_events_reach_pull_points_through_topic_and_message_content_filters_evt_2_evt_6_evt_9(
        served: Served) -> None:
    """EVT-2, EVT-6, EVT-9, RQ-5: a topic filter picks the generic topic (no resource events then), a
    MessageContent filter picks one source, a waiting pull is woken by publish; a pull point without a
    TopicExpression stays a resource query."""
    served.registry.upsert(Resource("dev7:prof1", "MediaProfile", "Gate"))
    front = subscribe(served.events, topic("tns1:Door/State") + content(
        "boolean(//tt:SimpleItem[@Name='DoorToken' and @Value='front'])"))
    doors = subscribe(served.events, topic("tns1:Door//."))
    everything = subscribe(served.events, topic("tns1:Door//.|tns1:Device//.|tns1:Resource//."))
    resources_only = subscribe(served.events)  # no TopicExpression: a resource query (RQ-5)
    assert messages(pull(front)) == []
    result: list[etree._Element] = []
    waiting = threading.Thread(target=lambda: result.append(pull(front, "PT20S")))
    waiting.start()
    assert served.context.publish("Door/State", {"DoorToken": "back"}, {"State": "Open"}) == 2
    assert served.context.publish(DOOR, {"DoorToken": "front"}, {"State": "Open"}) == 3
    waiting.join(25)
    assert not waiting.is_alive()
    assert messages(result[0]) == [("tns1:Door/State", "Initialized", {"DoorToken": "front"}, {"State": "Open"})]
    assert [m[2]["DoorToken"] for m in messages(pull(doors))] == ["back", "front"]
    seen = messages(pull(everything))
    assert [m[0] for m in seen] == ["tns1:Door/State", "tns1:Door/State", "tns1:Resource/MediaProfile"]
    served.context.publish(ALARM, {"Input": "1"}, {"Level": "3"})
    assert messages(pull(everything)) == [("tns1:Device/Trigger/Alarm", None, {"Input": "1"}, {"Level": "3"})]
    assert messages(pull(doors)) == []
    assert [m[0] for m in messages(pull(resources_only))] == ["tns1:Resource/MediaProfile"]


def test_property_state_goes_to_new_subscribers_and_on_synchronization_evt_4_evt_9(served: Served) -> None:
    """EVT-4, EVT-9: a property topic's current state is Initialized for a new subscriber and again after
    SetSynchronizationPoint; a change is Changed; with ChangedOnly only the change comes."""
    served.context.publish(DOOR, {"DoorToken": "front"}, {"State": "Closed"})
    address = subscribe(served.events, topic("tns1:Door/State"))
    changed_only = subscribe(served.events, topic("tns1:Door/State"),
                             "<tev:SubscriptionPolicy><tev:ChangedOnly>true</tev:ChangedOnly></tev:SubscriptionPolicy>")
    assert messages(pull(address)) == [("tns1:Door/State", "Initialized", {"DoorToken": "front"}, {"State": "Closed"})]
    served.context.publish(DOOR, {"DoorToken": "front"}, {"State": "Open"})
    assert messages(pull(address)) == [("tns1:Door/State", "Changed", {"DoorToken": "front"}, {"State": "Open"})]
    assert messages(pull(changed_only)) == [("tns1:Door/State", "Changed", {"DoorToken": "front"}, {"State": "Open"})]
    status, _root = post(address, envelope("<tev:SetSynchronizationPoint/>"))
    assert status == 200
    assert messages(pull(address)) == [("tns1:Door/State", "Initialized", {"DoorToken": "front"}, {"State": "Open"})]


def test_unknown_topics_and_items_are_refused_evt_2_evt_5(served: Served) -> None:
    """EVT-2, EVT-5: a topic nobody declared is TopicNotSupported; publishing outside a description fails."""
    status, root = post(served.events, envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter>{topic('tns1:Door/Colour')}</tev:Filter>"
        "</tev:CreatePullPointSubscription>"))
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:TopicNotSupported"]
    with pytest.raises(InvalidEvent, match="not declared"):
        served.context.publish("Door/Colour", {}, {})
    with pytest.raises(InvalidEvent, match="not in the description"):
        served.context.publish(DOOR, {"Handle": "x"}, {})
    with pytest.raises(InvalidEvent, match="resource queries' own"):
        TopicDescription("Resource/Door", source=(), data=())


def test_uplink_status_updates_become_events_evt_6() -> None:
    """EVT-6: UplinkStatusEvents turns Status changes into Initialized / Changed / Deleted, nothing else."""
    published: list[tuple[str, dict[str, str], dict[str, str], str | None]] = []

    class Recorder:
        def declare(self, _topic: TopicDescription) -> None:
            pass

        def publish(self, topic, source, data, operation=None):  # type: ignore[no-untyped-def]
            published.append((topic.path, source, data, operation))
            return 1

    watcher = UplinkStatusEvents(Recorder())  # type: ignore[arg-type]
    watcher.update({"https://a": ("Connecting", None)})
    watcher.update({"https://a": ("Connecting", None)})
    watcher.update({"https://a": ("Offline", "refused")})
    watcher.update({})
    assert published == [
        (UPLINK_STATUS.path, {"RemoteAddress": "https://a"}, {"Status": "Connecting"}, "Initialized"),
        (UPLINK_STATUS.path, {"RemoteAddress": "https://a"}, {"Status": "Offline", "Error": "refused"}, "Changed"),
        (UPLINK_STATUS.path, {"RemoteAddress": "https://a"}, {"Status": "Offline"}, "Deleted"),
    ]


def test_device_publishes_its_uplink_status_evt_6_evt_2(tmp_path: Path) -> None:
    """EVT-6, EVT-2: a running device (uplinks on) signals its configured uplink on
    tns1:Monitoring/Uplink/Status, selectable by topic; the cloud is a closed loopback port."""
    data = tmp_path / "device"
    seed_device(data)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    address = f"https://127.0.0.1:{closed}/uplink"
    with DeviceStore(data) as store:
        store.put_uplink(UplinkConfiguration(remote_address=address, user_level=("Administrator",),
                                             certificate_id="cert-1"), max_uplinks=4)
    service = BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce),
                                name="device").start()
    try:
        base = re.search(r"(http://\S+)/onvif/", service.messages[0]).group(1)  # type: ignore[union-attr]
        sub = subscribe(base + "/onvif/event_service", topic("tns1:Monitoring/Uplink/Status"))
        seen = messages(pull(sub, "PT20S"))
        assert seen, "no uplink status event within the pull's Timeout"
        name, operation, source, data_items = seen[0]
        assert (name, operation, source) == ("tns1:Monitoring/Uplink/Status", "Initialized",
                                             {"RemoteAddress": address})
        assert data_items["Status"] in ("Offline", "Connecting")
    finally:
        service.stop()
