"""EVT-3, EVT-4, EVT-10: the event service's faults checked against the text of ONVIF Core's event chapter
(doc/Core.xml of the public onvif/specs repository) — the Detail element each operation table names, and
the one wsa:Action every event fault carries. Raw SOAP 1.2 against a running device.
"""

from __future__ import annotations

from conftest import RunningDevice
from helpers import fault_chain
from test_events_deviations import pull_body, with_headers
from test_events_service import NS, envelope, event_url, post, subscribe

from iec62676_2_33 import schemas

WSA_FAULT = "http://www.w3.org/2005/08/addressing/soap/fault"


def test_every_event_fault_carries_the_ws_addressing_fault_action_evt_3(device: RunningDevice) -> None:
    """EVT-3: ONVIF Core, Event handling, "SOAP Fault Messages": "All faults shall use the following URI for the
    WS-Addressing [action] Message Addressing Property: http://www.w3.org/2005/08/addressing/soap/fault" —
    for the service's own faults, a fault of the schema check, and one raised before any subscription is
    found; with a wsa:MessageID the fault also relates to it."""
    address = subscribe(device)
    cases = [
        (address, envelope(pull_body("PT9M")), ["env:Sender", "ter:InvalidArgVal", "ter:Timeout"]),
        (address + "x", envelope(pull_body()), ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]),
        (event_url(device), envelope(pull_body()), ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]),
        (address, envelope("<tev:PullMessages><tev:Timeout>soon</tev:Timeout><tev:MessageLimit>1</tev:MessageLimit>"
                           "</tev:PullMessages>"), ["env:Sender", "ter:InvalidArgs"]),
        (address, with_headers("<wsnt:Unsubscribe/>", "<wsa:Action>http://www.onvif.org/ver10/events/wsdl/"
                               "PullPointSubscription/PullMessagesRequest</wsa:Action>"
                               "<wsa:MessageID>urn:uuid:7</wsa:MessageID>"),
         ["env:Sender", "ter:InvalidArgVal", "ter:ActionMismatch"]),
    ]
    for url, data, chain in cases:
        status, root = post(url, data)
        assert (status, fault_chain(root)) == (400, chain), chain
        assert root.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT, chain
    assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:7"


def test_renew_and_unsubscribe_of_an_unknown_subscription_fault_resource_unknown_evt_4(
        device: RunningDevice) -> None:
    """EVT-4: ONVIF Core, Event handling, "Renew" and "Unsubscribe": their only fault message is
    ResourceUnknownFaultResponse ("The pull point reference is invalid"): wsrf-r:ResourceUnknownFault with its
    Timestamp in the Detail."""
    address = subscribe(device)
    status, _root = post(address, envelope("<wsnt:Unsubscribe/>"))
    assert status == 200
    for body in ("<wsnt:Renew><wsnt:TerminationTime>PT60S</wsnt:TerminationTime></wsnt:Renew>",
                 "<wsnt:Unsubscribe/>"):
        status, root = post(address, envelope(body))
        assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"])
        detail = root.find("env:Body/env:Fault/env:Detail/wsrf-r:ResourceUnknownFault", NS)
        schemas.validate(detail, "events")
        assert detail.findtext("{http://docs.oasis-open.org/wsrf/bf-2}Timestamp").endswith("Z")
        assert root.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT
