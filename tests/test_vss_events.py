"""ANX-B-4, GEN-1, EVT-2, EVT-6: events of a lower system (not only resource properties) reach the subscribers
of the upper VSS — the topic is declared there with the lower system's description, the tokens in the
Source part are adapted (a local token gets the lower system's prefix) and a MessageContent filter on the
adapted source token picks the event.

Real servers on loopback: the lower system is ``run_device`` (its event service publishes a topic the
test declares through the runtime's ``compose`` hook), the VSS ``run_vss``; every wait bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from vss_env import add_lower, answer, seed, soap, start_vss

from iec62676_2_33.domain.generic_events import TopicDescription
from iec62676_2_33.namespaces import TEV, TT, WSA, WSNT
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.device import run_device
from iec62676_2_33.services.events import EventServiceContext
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

RELAY = TopicDescription("Device/Trigger/Relay", source=(("RelayToken", "tt:ReferenceToken"),),
                         data=(("LogicalState", "xs:string"),))
ONVIF_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
ITEM_FILTER = "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"
NS = {"tev": TEV, "wsnt": WSNT, "wsa": WSA, "tt": TT}
EVENTS = "/onvif/event_service"


@dataclass
class Env:
    vss: str
    lower_events: EventServiceContext


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    seed(tmp_path / "cam")
    found: dict[str, Any] = {}

    def compose(app: Any, events: EventServiceContext) -> None:
        events.declare(RELAY)
        found["events"] = events

    device = BackgroundService(lambda stop, announce: run_device(tmp_path / "cam", "127.0.0.1:0", stop, announce,
                                                                 uplinks=False, compose=compose),
                               name="device").start()
    lower = device.messages[0].split("device serving ")[1].split("/onvif/")[0]
    seed(tmp_path / "vss")
    add_lower(tmp_path / "vss", LowerSystem(prefix="gate", url=f"{lower}/onvif/device_service",
                                            username="admin", password="admin-pw"))
    vss, base = start_vss(tmp_path / "vss", VssOptions(timeout=3, mirror_retry=0.3))
    try:
        yield Env(base, found["events"])
    finally:
        vss.stop()
        device.stop()


def ev(base: str, body: str) -> etree._Element:
    status, root = soap(base, EVENTS, body.replace("NSDECL", f'xmlns:tev="{TEV}" xmlns:wsnt="{WSNT}"'))
    assert status == 200, etree.tostring(root)
    return answer(root)


def topics(base: str) -> str:
    return etree.tostring(ev(base, "<tev:GetEventProperties NSDECL/>")).decode()


def test_lower_events_forwarded_with_adapted_source_tokens(env: Env) -> None:
    """ANX-B-4, EVT-2, EVT-6: the VSS describes the lower system's topic, and a pull point with a
    MessageContent filter on the adapted token gets that relay's event only, RelayToken prefixed."""
    wait_until(lambda: "Relay" in topics(env.vss), 20, interval=0.2, what="the lower system's topic at the VSS")
    created = ev(env.vss, f'<tev:CreatePullPointSubscription NSDECL><tev:Filter>'
                          f'<wsnt:TopicExpression Dialect="{ONVIF_SET}" xmlns:tns1="http://www.onvif.org/ver10/topics">'
                          f'tns1:Device/Trigger/Relay</wsnt:TopicExpression>'
                          f'<wsnt:MessageContent Dialect="{ITEM_FILTER}">'
                          "boolean(//tt:SimpleItem[@Name='RelayToken' and @Value='gate:door'])</wsnt:MessageContent>"
                          "</tev:Filter></tev:CreatePullPointSubscription>")
    address = created.findtext("tev:SubscriptionReference/wsa:Address", namespaces=NS)
    path = "/" + address.split("/", 3)[3]
    deadline = time.monotonic() + 20
    seen: list[tuple[str, dict[str, str]]] = []
    while time.monotonic() < deadline and not seen:
        env.lower_events.publish(RELAY, {"RelayToken": "lamp"}, {"LogicalState": "active"})
        env.lower_events.publish(RELAY, {"RelayToken": "door"}, {"LogicalState": "active"})
        status, root = soap(env.vss, path, f'<tev:PullMessages xmlns:tev="{TEV}"><tev:Timeout>PT1S</tev:Timeout>'
                                           "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>")
        assert status == 200, etree.tostring(root)
        for holder in answer(root).findall("wsnt:NotificationMessage", NS):
            message = holder.find("wsnt:Message/tt:Message", NS)
            seen.append((holder.findtext("wsnt:Topic", namespaces=NS),
                         {i.get("Name"): i.get("Value") for i in message.iterfind("tt:Source/tt:SimpleItem", NS)}))
    assert seen, "no event reached the VSS's pull point"
    assert {s["RelayToken"] for _, s in seen} == {"gate:door"}
    assert {t for t, _ in seen} == {"tns1:Device/Trigger/Relay"}
