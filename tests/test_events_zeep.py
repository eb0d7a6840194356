"""RQ-5, RQ-6, RQ-10, EVT-1 … EVT-4, GEN-2: zeep clients against the event service.

* :class:`ResourceQueryClient` (zeep, loaded offline from our ``wsdl/event.wsdl``):
  direct, and through the cloud's uplink with :class:`UplinkTransport`, and
  through the cloud's HTTP proxy (the SubscriptionReference honours
  ``X-Forwarded-*``).
* plain zeep with the *official* ONVIF event WSDL, staged offline like
  ``test_interop_official_wsdl.py`` does (``ONVIF_SPECS_DIR``; skipped without).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zeep
import zeep.exceptions
from conftest import ADMIN, RunningDevice
from lxml import etree
from onvif_specs import SKIP_REASON, SPECS, stage

from iec62676_2_33.domain.filters import LocationFilter
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import GeoLocation, Resource
from iec62676_2_33.errors import TransportError
from iec62676_2_33.namespaces import TEV, TT
from iec62676_2_33.query import ResourceQueryClient, ServerDead
from iec62676_2_33.soap.fault import SoapFault

CENTRE = GeoLocation(8.6821, 50.1109)


@pytest.fixture
def registry(device: RunningDevice) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(device.data / "resources.db") as reg:
        reg.upsert_many([Resource(f"dev7:p{i:02d}", "MediaProfile", f"cam {i}",
                                  GeoLocation(CENTRE.lon + i * 0.0001, CENTRE.lat)) for i in range(12)]
                        + [Resource("dev7:vs1", "VideoSource", "sensor", CENTRE)])
        yield reg


def client(device: RunningDevice, **kwargs: object) -> ResourceQueryClient:
    return ResourceQueryClient(device.base + "/onvif/event_service", username=ADMIN[0], password=ADMIN[1],
                               **kwargs)  # type: ignore[arg-type]


def test_query_client_enumerates_then_follows_rq_5_rq_6_rq_10(device: RunningDevice,
                                                               registry: ResourceRegistry) -> None:
    """RQ-5, RQ-6, RQ-10: resources within 45 m (paged by MessageLimit 3), then a live change; heartbeat."""
    c = client(device, message_limit=3, pull_timeout=20)
    assert "MediaProfile" in c.kinds()
    with c.subscribe(["MediaProfile"], location=LocationFilter(CENTRE.lon, CENTRE.lat, 45)) as sub:
        assert [r.token for r in sub.resources()] == [f"dev7:p{i:02d}" for i in range(7)]
        beats: list[int] = []
        got: list[object] = []
        follower = threading.Thread(target=lambda: got.append(next(sub.changes(lambda: beats.append(1)))))
        follower.start()
        registry.remove("dev7:p03")
        follower.join(25)
        assert not follower.is_alive()
        assert [(got[0].operation, got[0].resource)] == [  # type: ignore[attr-defined]
            ("Deleted", Resource("dev7:p03", "MediaProfile"))]
        assert sub.pull(0.1) == [] and sub.last_heartbeat is not None  # RQ-10: the empty answer is the heartbeat
        sub.synchronize()
        assert len(sub.pull(0, 10)) == 6
        assert sub.renew("PT90S").endswith("Z")
    with pytest.raises(SoapFault) as info:
        sub.pull(0)
    assert list(info.value.subcodes) == ["InvalidArgVal", "ResourceUnknown"]


def test_query_client_filters_and_select_rq_7_rq_8_rq_9(device: RunningDevice, registry: ResourceRegistry) -> None:
    """RQ-7, RQ-9: prefix filter and select filter through the client; the Token is always kept."""
    registry.upsert(Resource("dev8:x", "VideoSource", "other", CENTRE, ("onvif://www.onvif.org/location/x",)))
    with client(device).subscribe(["VideoSource"], prefix="dev8", select=["/Scope/location"]) as sub:
        assert list(sub.resources()) == [Resource("dev8:x", "VideoSource", None, None,
                                                  ("onvif://www.onvif.org/location/x",))]
    with pytest.raises(SoapFault) as info:
        client(device).subscribe(["VideoSource"], select=["/Colour"])
    assert list(info.value.subcodes) == ["InvalidArgVal", "InvalidFilter"]


def test_dead_server_is_reported_rq_10(device: RunningDevice, registry: ResourceRegistry) -> None:
    """RQ-10: a pull that is not answered by its deadline reports the server dead."""
    clock = iter([0.0, 100.0])
    c = client(device, pull_timeout=0.1, grace=1.0, clock=lambda: next(clock))
    sub = c.subscribe(["Recording"])
    with pytest.raises(ServerDead, match="not keeping its deadline"):
        sub.pull()
    unreachable = ResourceQueryClient("http://127.0.0.1:9/onvif/event_service", timeout=2)
    with pytest.raises(TransportError):
        unreachable.subscribe(["Recording"])


# -- the official ONVIF event WSDL, staged offline --------------------------------

@pytest.mark.skipif(not SPECS, reason=SKIP_REASON)
def test_official_event_wsdl_pull_point_workflow_evt_1_evt_3_evt_4_gen_2(
        device: RunningDevice, registry: ResourceRegistry, tmp_path: Path) -> None:
    """EVT-1, EVT-3, EVT-4, GEN-2: plain zeep on the official event WSDL subscribes, pulls, renews, unsubscribes."""
    from zeep.wsse.username import UsernameToken

    wsdl = stage(Path(str(SPECS)), tmp_path / "onvif", "events/wsdl/event.wsdl")
    settings = zeep.Settings(strict=False, forbid_dtd=True, forbid_external=True)
    official = zeep.Client(str(wsdl), settings=settings, wsse=UsernameToken(*ADMIN, use_digest=True))
    events = official.create_service(f"{{{TEV}}}EventBinding", device.base + "/onvif/event_service")
    properties = events.GetEventProperties()
    assert properties.FixedTopicSet is True
    topic = {"_value_1": "tns1:Resource/VideoSource",
             "Dialect": "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"}
    filter_type = official.get_type("{http://docs.oasis-open.org/wsn/b-2}FilterType")
    expression = official.get_element("{http://docs.oasis-open.org/wsn/b-2}TopicExpression")
    created = events.CreatePullPointSubscription(Filter=filter_type(_value_1=[zeep.xsd.AnyObject(expression, expression(**topic))]),
                                                 InitialTerminationTime="PT60S")
    address = created.SubscriptionReference.Address._value_1
    assert created.TerminationTime > created.CurrentTime
    pullpoint = official.create_service(f"{{{TEV}}}PullPointSubscriptionBinding", address)
    pulled = pullpoint.PullMessages(Timeout="PT1S", MessageLimit=10)
    [holder] = pulled.NotificationMessage
    message = holder.Message._value_1
    if isinstance(message, etree._Element):
        token = message.find(f"{{{TT}}}Source/{{{TT}}}SimpleItem").get("Value")
        operation = message.get("PropertyOperation")
    else:
        token, operation = message.Source.SimpleItem[0].Value, message.PropertyOperation
    assert (token, operation) == ("dev7:vs1", "Initialized")
    pullpoint.SetSynchronizationPoint()
    manager = official.create_service(f"{{{TEV}}}SubscriptionManagerBinding", address)
    manager.Renew(TerminationTime="PT120S")
    manager.Unsubscribe()
    with pytest.raises(zeep.exceptions.Fault) as info:
        pullpoint.PullMessages(Timeout="PT1S", MessageLimit=10)
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "ResourceUnknown"]


# -- through the cloud: uplink transport and HTTP proxy (GEN-2, GEN-3) --------------


def test_query_through_uplink_and_cloud_proxy_gen_2_rq_5(tmp_path: Path) -> None:
    """GEN-1, GEN-2, GEN-3, RQ-5, RQ-11: hierarchical access (client → cloud → lower system): the same
    client code and query work through the device's uplink (UplinkTransport) and through the cloud's HTTP
    proxy, whose X-Forwarded-* headers keep the subscription address reachable — the query does not
    depend on what carries it."""
    from iec62676_2_33.runtime.zeep_transport import UplinkTransport
    from iec62676_2_33.testing.harness import RunningCloud, UplinkPki, seed_device
    from iec62676_2_33.testing.harness import RunningDevice as Device

    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    try:
        seed_device(tmp_path / "dev", certs, "cam-q", [(cloud.uplink_url(), ("User",))])
        with ResourceRegistry(tmp_path / "dev" / "resources.db") as reg:
            reg.upsert(Resource("cam-q:p1", "MediaProfile", "Gate", CENTRE))
        device = Device(tmp_path / "dev")
        try:
            cloud.wait_for("cam-q")
            assert cloud.loop is not None
            over_uplink = ResourceQueryClient("https://cam-q/onvif/event_service",
                                              transport=UplinkTransport(cloud.cloud, "cam-q", cloud.loop, timeout=30))
            with over_uplink.subscribe(["MediaProfile"]) as sub:
                assert [r.token for r in sub.resources()] == ["cam-q:p1"]
                assert sub.pull(0.2) == []
            assert cloud.proxy_url is not None
            via_proxy = ResourceQueryClient(f"{cloud.proxy_url}/devices/cam-q/onvif/event_service")
            with via_proxy.subscribe(["MediaProfile"]) as sub:
                assert sub.address.startswith(f"{cloud.proxy_url}/devices/cam-q/onvif/event_service/subscription/")
                assert [r.token for r in sub.resources()] == ["cam-q:p1"]
        finally:
            device.stop()
    finally:
        cloud.stop()
