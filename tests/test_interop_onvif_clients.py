"""GEN-2, GEN-3, RQ-1, RQ-3, RQ-4, RQ-5, RQ-6, EVT-1, EVT-3, EVT-4, EVT-6: ONVIF clients not written by
us run the resource-query pull-point workflow against our device, directly and through the cloud proxy.

* **onvif-zeep-async** (the async ONVIF client library of Home Assistant and
  others), *unmodified*, with the WSDLs it ships: ``ONVIFCamera`` →
  ``update_xaddrs()`` (GetSystemDateAndTime, GetServices) →
  ``create_pullpoint_manager()`` (``create_events_service()`` +
  ``CreatePullPointSubscription`` with an InitialTerminationTime and *no*
  filter, then ``create_subscription_service()`` and
  ``create_pullpoint_service()`` at the returned address) → ``PullMessages``
  → the ``tns1:Resource/<kind>`` property events of every resource in the
  device's registry (``Initialized``), then a live change and a removal
  (``Changed``, ``Deleted``), Renew, SetSynchronizationPoint and the
  manager's shutdown (Unsubscribe), after which a pull faults
  ``InvalidArgVal/ResourceUnknown``.

  Through the cloud proxy (``/devices/<id>/…``, the device reached over its
  uplink) everything after the bootstrap works unchanged because the device
  builds its XAddrs and subscription addresses from ``X-Forwarded-*``. The
  bootstrap needs one workaround, on the caller's side: the library builds
  the device-service address itself as ``f"{host}:{port}/onvif/device_service"``
  (``ONVIFCamera.get_definition``), so it cannot be told a path prefix. The
  test passes ``host="http://<proxy>/devices/<id>/onvif/device_service#"``:
  the appended ``:<port>/onvif/device_service`` lands in the URL fragment,
  which HTTP clients never send. A proxy that routes by host name or port
  would let the library bootstrap with a bare host.

* **Raw SOAP 1.2 envelopes written by hand** from the ONVIF event-handling
  and resource-query documents (WS-Addressing headers with
  ``mustUnderstand``, a WS-Security UsernameToken whose digest is computed
  here, the ``tt`` resource filters): CreatePullPointSubscription with a
  LocationFilter and PullMessages pages return exactly the resources within
  the radius (2-D, and 3-D with ``height`` plus ``includeUnknown``).

* The notification messages of PullMessages are written as text (the fast path
  of large enumerations, ``notification_xml``); they are checked to be the same
  infoset as the lxml-built ``notification_element``, escaping included, so
  every client above reads the same messages as before.

Resources sit due north of a centre point, so their great-circle distance is
exactly the arc ``d`` chosen (R = 6,371,008.8 m).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import math
import os
import secrets
import uuid
from base64 import b64encode
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import zeep.exceptions
from conftest import ADMIN, RunningDevice
from helpers import soap_post, uplinked_registry
from lxml import etree

from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import GeoLocation, Resource

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
TEV = "http://www.onvif.org/ver10/events/wsdl"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
TT = "http://www.onvif.org/ver10/schema"
TNS1 = "http://www.onvif.org/ver10/topics"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS = {"env": SOAP_ENV, "tev": TEV, "wsnt": WSNT, "tt": TT, "wsa": WSA}

R = 6_371_008.8
CENTRE = (8.6821, 50.1109)  # lon, lat
GROUND = 100.0  # elevation of the located resources, metres

#: per onvif-zeep-async PullPointManager.start(): how long the library will wait for any call
CALL_TIMEOUT = 30.0


def north(metres: float) -> GeoLocation:
    return GeoLocation(CENTRE[0], CENTRE[1] + math.degrees(metres / R), GROUND)


def sample(prefix: str) -> list[Resource]:
    """Resources at known distances from CENTRE (and one without a location)."""
    city = "onvif://www.onvif.org/location/city/frankfurt"
    return [
        Resource(f"{prefix}:p000", "MediaProfile", "Gate main", north(0.0), (city,), False),
        Resource(f"{prefix}:p040", "MediaProfile", "Gate sub", north(40.0), (city,)),
        Resource(f"{prefix}:r040", "Recording", "Gate recording", north(40.0)),
        Resource(f"{prefix}:v099", "VideoSource", "Hall sensor", north(99.5)),
        Resource(f"{prefix}:p101", "MediaProfile", "Yard main", north(100.5)),
        Resource(f"{prefix}:v250", "VideoSource", "Street sensor", north(250.0)),
        Resource(f"{prefix}:unk", "MediaProfile", "Mobile unit"),
    ]


@pytest.fixture
def registry(device: RunningDevice) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(device.data / "resources.db") as reg:
        reg.upsert_many(sample("dev7"))
        yield reg


# -- onvif-zeep-async ------------------------------------------------------------------


def _event(message: Any) -> tuple[str, str, str, dict[str, list[str]], tuple[float, ...] | None]:
    """(topic, PropertyOperation, Token, simple data items, location) of a zeep NotificationMessage."""
    payload = message.Message._value_1
    source = {item.Name: item.Value for item in payload.Source.SimpleItem}
    data: dict[str, list[str]] = {}
    location = None
    if payload.Data is not None:
        for item in payload.Data.SimpleItem:
            data.setdefault(item.Name, []).append(item.Value)
        for item in payload.Data.ElementItem:
            geo = item._value_1
            assert (item.Name, etree.QName(geo).text) == ("Location", f"{{{TT}}}GeoLocation")
            location = tuple(float(geo.get(a)) for a in ("lon", "lat", "elevation"))
    return message.Topic._value_1, payload.PropertyOperation, source["Token"], data, location


def _expected(resource: Resource, operation: str = "Initialized") -> tuple[Any, ...]:
    data: dict[str, list[str]] = {}
    if resource.name is not None:
        data["Name"] = [resource.name]
    if resource.scopes:
        data["Scope"] = list(resource.scopes)
    if resource.offline is not None:
        data["Offline"] = ["true" if resource.offline else "false"]
    loc = resource.location
    location = None if loc is None else (loc.lon, loc.lat, loc.elevation)
    return f"tns1:Resource/{resource.kind}", operation, resource.token, data, location


async def _pull(pullpoint: Any, *, limit: int, timeout: float) -> list[tuple[Any, ...]]:
    request = pullpoint.create_type("PullMessages")
    request.MessageLimit = limit
    request.Timeout = timedelta(seconds=timeout)
    answer = await asyncio.wait_for(pullpoint.PullMessages(request), timeout + CALL_TIMEOUT)
    assert answer.TerminationTime > answer.CurrentTime
    return [_event(m) for m in answer.NotificationMessage]


async def check_onvif_zeep_async_workflow(host: str, port: int, registry: ResourceRegistry, prefix: str,
                                     device_base: str) -> None:
    """The library's own pull-point sequence; ``device_base`` is where its XAddrs must point."""
    import onvif
    from onvif import ONVIFCamera

    wsdl_dir = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
    cam = ONVIFCamera(host, port, *ADMIN, wsdl_dir, no_cache=True, adjust_time=True)
    resources = sorted(sample(prefix), key=lambda r: r.token)  # pages are in token order
    try:
        await asyncio.wait_for(cam.update_xaddrs(), CALL_TIMEOUT)
        assert cam.xaddrs[TEV] == device_base + "/onvif/event_service"
        lost: list[int] = []
        manager = await asyncio.wait_for(
            cam.create_pullpoint_manager(timedelta(seconds=60), lambda: lost.append(1)), CALL_TIMEOUT)
        # the library kept the relative form: our CurrentTime/TerminationTime honoured PT60S
        assert cam.get_next_termination_time(timedelta(seconds=60)) == "PT60S"
        address = cam.xaddrs[f"{TEV}/PullPointSubscription"]
        assert address.startswith(device_base + "/onvif/event_service/subscription/")
        pullpoint = manager.get_service()
        assert pullpoint.xaddr == address

        # RQ-5: first every resource (no filter: every kind), in pages of MessageLimit
        first = await _pull(pullpoint, limit=4, timeout=5)
        rest = await _pull(pullpoint, limit=100, timeout=0)
        assert first + rest == [_expected(r) for r in resources]
        assert len(first) == 4

        # RQ-4: then only changes, delivered as soon as they exist (bounded by the pull's Timeout)
        changed = Resource(f"{prefix}:p040", "MediaProfile", "Gate sub (moved)", north(45.0), (), True)
        registry.upsert(changed)
        assert await _pull(pullpoint, limit=100, timeout=20) == [_expected(changed, "Changed")]
        registry.remove(f"{prefix}:v250")
        assert await _pull(pullpoint, limit=100, timeout=20) == [
            ("tns1:Resource/VideoSource", "Deleted", f"{prefix}:v250", {}, None)]

        # EVT-4: Renew the way the manager renews, then SetSynchronizationPoint re-sends everything
        subscription = await cam.create_subscription_service("PullPointSubscription")
        assert subscription.xaddr == address
        renewed = await asyncio.wait_for(
            subscription.Renew(cam.get_next_termination_time(timedelta(seconds=120))), CALL_TIMEOUT)
        assert timedelta(seconds=119) <= renewed.TerminationTime - renewed.CurrentTime <= timedelta(seconds=121)
        await asyncio.wait_for(manager.set_synchronization_point(), CALL_TIMEOUT)
        now_there = [changed if r.token == changed.token else r for r in resources if r.token != f"{prefix}:v250"]
        assert await _pull(pullpoint, limit=100, timeout=5) == [_expected(r) for r in now_there]
        assert lost == []

        # EVT-4: the manager's shutdown unsubscribes; a pull on the old address faults, never answers empty
        await asyncio.wait_for(manager.shutdown(), CALL_TIMEOUT)
        with pytest.raises(zeep.exceptions.Fault) as info:
            await _pull(pullpoint, limit=10, timeout=0)
        assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "ResourceUnknown"]
    finally:
        await cam.close()


async def test_onvif_zeep_async_pull_point_workflow_direct_gen_2_rq_1_rq_3_rq_4_rq_5_evt_1_evt_3_evt_4_evt_6(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """GEN-2, RQ-1, RQ-3, RQ-4, RQ-5, EVT-1, EVT-3, EVT-4, EVT-6: onvif-zeep-async, unmodified, on the
    device's own port: every resource as a tns1:Resource/<kind> property event with its items, then changes."""
    parts = urlsplit(device.base)
    await check_onvif_zeep_async_workflow(str(parts.hostname), int(parts.port or 80), registry, "dev7", device.base)


def test_onvif_zeep_async_and_raw_soap_through_cloud_proxy_gen_2_gen_3_rq_5_rq_6(tmp_path: Path) -> None:
    """GEN-2, GEN-3, RQ-5, RQ-6: the same library workflow, and a raw location query, through the cloud's
    HTTP proxy to a device that has no listening port at all (reached over its uplink only)."""
    with uplinked_registry(tmp_path, "cam-o", lambda reg: reg.upsert_many(sample("cam-o"))) as (cloud, reg):
        assert cloud.proxy_url is not None
        base = f"{cloud.proxy_url}/devices/cam-o"
        port = int(urlsplit(cloud.proxy_url).port or 80)
        # the library appends ":<port>/onvif/device_service" itself: see the module docstring
        host = f"{base}/onvif/device_service#"
        asyncio.run(check_onvif_zeep_async_workflow(host, port, reg, "cam-o", base))

        address = create_pull_point(base + "/onvif/event_service", LOCATION_100M)
        assert address.startswith(base + "/onvif/event_service/subscription/")
        # every kind within 100 m (p040 now stands at 45 m, v250 is gone: see the workflow)
        assert pull_tokens(address, 10) == ["cam-o:p000", "cam-o:p040", "cam-o:r040", "cam-o:v099"]


def test_onvif_zeep_async_by_device_host_name_through_cloud_proxy_gen_2_gen_3_rq_5(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GEN-2, GEN-3, RQ-5: with ``--device-domain devices.test`` the proxy routes ``Host: cam-h.devices.test``
    to device cam-h with paths unchanged, so onvif-zeep-async's ``ONVIFCamera("cam-h.devices.test", port)``
    runs the whole workflow as it would against a camera: every XAddr and subscription address is on that
    host. Name resolution stands in for the wildcard DNS record an operator gives the domain; the client is
    not touched. A host of another domain still gets the ``/devices/<id>`` front, an unknown device 404."""
    import socket

    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:  # the wildcard record *.devices.test
        return real("127.0.0.1" if str(host).endswith(".devices.test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with uplinked_registry(tmp_path, "cam-h", lambda reg: reg.upsert_many(sample("cam-h")),
                           device_domain="devices.test") as (cloud, reg):
        assert cloud.proxy_url is not None
        port = int(urlsplit(cloud.proxy_url).port or 80)
        asyncio.run(check_onvif_zeep_async_workflow("cam-h.devices.test", port, reg, "cam-h",
                                                    f"http://cam-h.devices.test:{port}"))
        for host, status in ((f"nope.devices.test:{port}", 404), (f"127.0.0.1:{port}", 404)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
            try:
                conn.request("GET", "/onvif/device_service", headers={"Host": host})
                assert conn.getresponse().status == status, host
            finally:
                conn.close()


# -- raw SOAP 1.2, written from the ONVIF documents -----------------------------------------


def security_header(user: str, password: str) -> str:
    """WS-Security UsernameToken, PasswordDigest = Base64(SHA-1(nonce + created + password))."""
    nonce = secrets.token_bytes(16)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    return f"""
    <wsse:Security s:mustUnderstand="true">
      <wsse:UsernameToken>
        <wsse:Username>{user}</wsse:Username>
        <wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{digest}</wsse:Password>
        <wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{b64encode(nonce).decode()}</wsse:Nonce>
        <wsu:Created>{created}</wsu:Created>
      </wsse:UsernameToken>
    </wsse:Security>"""


def soap(url: str, action: str, body: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
            xmlns:a="http://www.w3.org/2005/08/addressing"
            xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"
            xmlns:tev="http://www.onvif.org/ver10/events/wsdl"
            xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2"
            xmlns:tt="http://www.onvif.org/ver10/schema"
            xmlns:tns1="http://www.onvif.org/ver10/topics">
  <s:Header>
    <a:Action s:mustUnderstand="true">{action}</a:Action>
    <a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>
    <a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>
    <a:To s:mustUnderstand="true">{url}</a:To>{security_header(*ADMIN)}
  </s:Header>
  <s:Body>{body}</s:Body>
</s:Envelope>""".encode()


def post(url: str, data: bytes) -> tuple[int, etree._Element]:
    return soap_post(url, data, timeout=30)


CREATE = "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest"
PULL = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest"
UNSUBSCRIBE = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest"

LOCATION_100M = f"""
      <tt:LocationFilter>
        <tt:lon>{CENTRE[0]}</tt:lon>
        <tt:lat>{CENTRE[1]}</tt:lat>
        <tt:radius>100</tt:radius>
      </tt:LocationFilter>"""


def create_pull_point(url: str, filters: str, topics: str | None = None) -> str:
    topic = "" if topics is None else f"""
      <wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{topics}</wsnt:TopicExpression>"""
    status, root = post(url, soap(url, CREATE, f"""
    <tev:CreatePullPointSubscription>
      <tev:Filter>{topic}{filters}
      </tev:Filter>
      <tev:InitialTerminationTime>PT60S</tev:InitialTerminationTime>
    </tev:CreatePullPointSubscription>"""))
    assert status == 200, etree.tostring(root)
    response = root.find("env:Body/tev:CreatePullPointSubscriptionResponse", NS)
    assert root.findtext("env:Header/wsa:Action", namespaces=NS) == (
        "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionResponse")
    return response.findtext("tev:SubscriptionReference/wsa:Address", namespaces=NS)


def pull(address: str, limit: int, timeout: str = "PT0S") -> list[etree._Element]:
    status, root = post(address, soap(address, PULL, f"""
    <tev:PullMessages>
      <tev:Timeout>{timeout}</tev:Timeout>
      <tev:MessageLimit>{limit}</tev:MessageLimit>
    </tev:PullMessages>"""))
    assert status == 200, etree.tostring(root)
    return root.findall("env:Body/tev:PullMessagesResponse/wsnt:NotificationMessage", NS)


def pull_tokens(address: str, limit: int) -> list[str]:
    return [m.find("wsnt:Message/tt:Message/tt:Source/tt:SimpleItem[@Name='Token']", NS).get("Value")
            for m in pull(address, limit)]


def test_raw_soap_location_query_returns_exactly_the_resources_within_radius_rq_5_rq_6_evt_1_evt_3_evt_6(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """RQ-5, RQ-6, EVT-1, EVT-3, EVT-6: hand-written envelopes; a 100 m circle with a topic set, paged by
    MessageLimit; then 3-D distance (height) with includeUnknown; then Unsubscribe."""
    url = device.base + "/onvif/event_service"
    address = create_pull_point(url, LOCATION_100M, "tns1:Resource/MediaProfile|tns1:Resource/VideoSource")
    assert address.startswith(url + "/subscription/")
    page = pull(address, 2)
    assert len(page) == 2
    first = page[0]
    assert first.findtext("wsnt:Topic", namespaces=NS) == "tns1:Resource/MediaProfile"
    assert first.find("wsnt:Topic", NS).get("Dialect") == "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
    assert first.find("wsnt:Topic", NS).nsmap["tns1"] == TNS1  # EVT-6: the prefix is bound in scope
    message = first.find("wsnt:Message/tt:Message", NS)
    assert message.get("PropertyOperation") == "Initialized"
    assert [(i.get("Name"), i.get("Value")) for i in message.iterfind("tt:Data/tt:SimpleItem", NS)] == [
        ("Name", "Gate main"), ("Scope", "onvif://www.onvif.org/location/city/frankfurt"), ("Offline", "false")]
    geo = message.find("tt:Data/tt:ElementItem[@Name='Location']/tt:GeoLocation", NS)
    assert (float(geo.get("lon")), float(geo.get("lat")), float(geo.get("elevation"))) == (
        CENTRE[0], CENTRE[1], GROUND)
    tokens = [m.find("wsnt:Message/tt:Message/tt:Source/tt:SimpleItem", NS).get("Value") for m in page]
    tokens += pull_tokens(address, 10)
    # p000 (0 m), p040 (40 m), v099 (99.5 m); not r040 (a Recording), p101 (100.5 m), v250, unk
    assert tokens == ["dev7:p000", "dev7:p040", "dev7:v099"]
    assert pull_tokens(address, 10) == []  # enumeration done, nothing changed: empty at Timeout PT0S

    # RQ-6 in 3-D: 60 m above the resources, 100 m reach: the arc must be <= 80 m; unknown ones included
    location_3d = f"""
      <tt:LocationFilter>
        <tt:lon>{CENTRE[0]}</tt:lon><tt:lat>{CENTRE[1]}</tt:lat>
        <tt:height>{GROUND + 60}</tt:height>
        <tt:radius>100</tt:radius>
        <tt:includeUnknown>true</tt:includeUnknown>
      </tt:LocationFilter>"""
    second = create_pull_point(url, location_3d)
    assert pull_tokens(second, 100) == ["dev7:p000", "dev7:p040", "dev7:r040", "dev7:unk"]

    status, root = post(second, soap(second, UNSUBSCRIBE, "<wsnt:Unsubscribe/>"))
    assert status == 200 and root.find("env:Body/wsnt:UnsubscribeResponse", NS) is not None
    status, root = post(second, soap(second, PULL, "<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout>"
                                                   "<tev:MessageLimit>1</tev:MessageLimit></tev:PullMessages>"))
    assert status == 400
    codes = [v.text for v in root.iterfind("env:Body/env:Fault//env:Value", NS)]
    assert [c.split(":")[-1] for c in codes] == ["Sender", "InvalidArgVal", "ResourceUnknown"]


# -- the text writer of PullMessages equals the lxml one ------------------------------------


@pytest.mark.parametrize("resource", [
    sample("dev7")[0],
    Resource("dev7:x&<>\"'", "VideoSource", "tab\there\nline\rCR & <b> \"q\" 'a' ü 中 😀",
             GeoLocation(-179.9999999, -89.5), ("onvif://www.onvif.org/name/a%20b?x=1&y=<2>", "scope two")),
    Resource("dev7:bare", "Recording"),
    Resource("dev7:on", "PTZConfiguration", "", GeoLocation(0.1, 0.2, -3.25), (), True),
], ids=["typical", "escaping", "bare", "online"])
@pytest.mark.parametrize("operation", ["Initialized", "Changed", "Deleted"])
def test_notification_text_writer_matches_lxml_writer_evt_6(resource: Resource, operation: str) -> None:
    """EVT-6: PullMessages writes its messages as text (the enumeration fast path); the result is the
    same infoset (exclusive C14N) as the lxml-built element, escaping included."""
    from iec62676_2_33.domain.subscriptions import Notification
    from iec62676_2_33.services.events import notification_element, notification_xml, notifications_xml

    message = Notification(operation, resource if operation != "Deleted" else Resource(resource.token, resource.kind),
                           1_700_000_000.125)
    nsmap = {"wsnt": WSNT, "tt": TT, "tns1": TNS1}
    built = etree.Element("holder", nsmap=nsmap)  # type: ignore[arg-type]
    notification_element(built, message)
    declarations = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in nsmap.items())
    written = etree.fromstring(f"<holder {declarations}>{notification_xml(message)}</holder>".encode())
    assert etree.tostring(written, method="c14n") == etree.tostring(built, method="c14n")
    assert notifications_xml([message, message]).decode() == notification_xml(message) * 2


def test_notification_text_writer_refuses_what_xml_cannot_carry_evt_6() -> None:
    """EVT-6, RQ-3: a control character is refused when a resource is made; should one get past that,
    the text writer still fails like lxml (ValueError) and never yields broken XML."""
    from iec62676_2_33.domain.resources import InvalidResource
    from iec62676_2_33.domain.subscriptions import Notification
    from iec62676_2_33.services.events import notification_element, notification_xml

    with pytest.raises(InvalidResource, match="a character XML cannot carry"):
        Resource("dev7:bell", "VideoSource", "ring\x07")
    smuggled = Resource("dev7:bell", "VideoSource", "ring")
    object.__setattr__(smuggled, "name", "ring\x07")  # past the validation, as a bug might
    message = Notification("Initialized", smuggled, 0.0)
    with pytest.raises(ValueError):
        notification_element(etree.Element("holder"), message)
    with pytest.raises(ValueError, match="XML does not allow"):
        notification_xml(message)
