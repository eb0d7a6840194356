"""ADR-2, ADR-4, ANX-B-1, ANX-B-4, GEN-1: a lower system speaks only for itself at the VSS — the tokens of its
forwarded events and of its answers are under its own prefix or a prefix routed to it (never another lower
system's, never the VSS's own), which event items are tokens is the VSS's own description's call on its own
topics, and one lower system can fill only its share of the route table, never with a configured prefix."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from vss_env import NS, add_lower, answer, seed, soap, start_vss

from iec62676_2_33.domain.generic_events import TopicDescription
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.domain.subscriptions import SubscriptionManager
from iec62676_2_33.namespaces import SOAP_ENV, TNS1, TT, WSNT, WSTOP
from iec62676_2_33.query import ResourceChange
from iec62676_2_33.services.events import EventServiceContext
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.vss import lower as lower_module
from iec62676_2_33.vss.adaption import prefix_messages, prefix_response, token_owner
from iec62676_2_33.vss.events import EventForwarder, LowerDescription, lower_topics
from iec62676_2_33.vss.lower import LowerStore, LowerSystem
from iec62676_2_33.vss.resources import LowerMirror
from iec62676_2_33.vss.runtime import VssOptions

MOTION = "VideoSource/MotionAlarm"
#: The VSS's own description of the topic: its Source is a token.
OWN_MOTION = TopicDescription(MOTION, source=(("Source", "tt:ReferenceToken"),), data=(("State", "xs:boolean"),))


def _properties(source_type: str) -> etree._Element:
    """A lower system's GetEventPropertiesResponse describing MotionAlarm with a Source of ``source_type``."""
    return etree.fromstring(f"""<r xmlns:wstop="{WSTOP}" xmlns:tt="{TT}" xmlns:tns1="{TNS1}"
        xmlns:xs="http://www.w3.org/2001/XMLSchema"><wstop:TopicSet><tns1:VideoSource>
      <tns1:MotionAlarm wstop:topic="true"><tt:MessageDescription IsProperty="true">
        <tt:Source><tt:SimpleItemDescription Name="Source" Type="{source_type}"/></tt:Source>
        <tt:Data><tt:SimpleItemDescription Name="State" Type="xs:boolean"/></tt:Data>
      </tt:MessageDescription></tns1:MotionAlarm></tns1:VideoSource></wstop:TopicSet></r>""".encode())


def _note(value: str) -> etree._Element:
    return etree.fromstring(f"""<wsnt:NotificationMessage xmlns:wsnt="{WSNT}" xmlns:tt="{TT}" xmlns:tns1="{TNS1}">
      <wsnt:Topic>tns1:{MOTION}</wsnt:Topic><wsnt:Message>
      <tt:Message UtcTime="2026-01-01T00:00:00Z" PropertyOperation="Changed">
        <tt:Source><tt:SimpleItem Name="Source" Value="{value}"/></tt:Source>
        <tt:Data><tt:SimpleItem Name="State" Value="true"/></tt:Data>
      </tt:Message></wsnt:Message></wsnt:NotificationMessage>""".encode())


class Vss:
    """A VSS's event service and lower-system store, with the forwarders of lower systems P and R."""

    def __init__(self, events: EventServiceContext, lowers: LowerStore) -> None:
        self.events, self.lowers = events, lowers
        self.published: list[tuple[str, str]] = []
        publish = events.publish

        def recording(path: Any, source: Any, data: Any, operation: Any = None) -> int:
            self.published.append((path, dict(source)["Source"]))
            return publish(path, source, data, operation)

        events.publish = recording  # type: ignore[method-assign,assignment]

    def forwarder(self, prefix: str) -> EventForwarder:
        return EventForwarder(LowerSystem(prefix=prefix, url=f"http://{prefix}.example/onvif/device_service"),
                              self.events, self.lowers, lambda lower: pytest.fail("no lower system is called"))

    def forward(self, prefix: str, source_type: str, value: str) -> list[tuple[str, str]]:
        """What the VSS publishes for one MotionAlarm of lower system ``prefix`` (declaring it as _follow does)."""
        topics: dict[str, LowerDescription] = {t.path: t for t in lower_topics(_properties(source_type))}
        for topic in topics.values():
            if topic.path not in self.events.topics:
                self.events.declare(topic)
        self.published.clear()
        self.forwarder(prefix)._forward(topics, _note(value))
        return list(self.published)


@pytest.fixture
def vss(tmp_path: Path) -> Iterator[Vss]:
    with ResourceRegistry(tmp_path / "resources.db") as registry, LowerStore(tmp_path / "vss") as lowers:
        for prefix in ("P", "R"):
            lowers.put(LowerSystem(prefix=prefix, url=f"http://{prefix}.example/onvif/device_service"))
        yield Vss(EventServiceContext(registry=registry, manager=SubscriptionManager(registry)), lowers)


def test_an_event_naming_another_lower_systems_token_is_not_published_as_its(vss: Vss) -> None:
    """ANX-B-4, ADR-4: P's event naming R:vs0 (R another lower system) is published as P's own name P:R:vs0;
    a local token gets P's prefix, a new deeper prefix is learnt as P's route and kept."""
    assert vss.forward("P", "tt:ReferenceToken", "R:vs0") == [(MOTION, "P:R:vs0")]
    assert vss.forward("P", "tt:ReferenceToken", "vs0") == [(MOTION, "P:vs0")]
    assert vss.forward("P", "tt:ReferenceToken", "deep:vs0") == [(MOTION, "deep:vs0")]
    assert vss.lowers.routes() == {"deep": "P"}
    assert vss.forward("R", "tt:ReferenceToken", "deep:vs0") == [(MOTION, "R:deep:vs0")]  # deep is P's
    assert "R" not in vss.lowers.routes()


def test_an_event_item_a_lower_system_types_as_a_string_stays_a_token_gen_1(vss: Vss) -> None:
    """ANX-B-4: on a topic the VSS describes itself, P declaring Source as xs:string cannot publish the VSS's
    own token vs0; on a topic R described first, P's xs:string does not make R's token item a string."""
    vss.events.declare(OWN_MOTION)
    assert vss.forward("P", "xs:string", "vs0") == [(MOTION, "P:vs0")]
    del vss.events.topics[MOTION]
    vss.forward("R", "tt:ReferenceToken", "vs1")  # R's description is declared first
    assert vss.forward("P", "xs:string", "vs0") == [(MOTION, "P:vs0")]


PROFILES = f"""<tr2:GetProfilesResponse xmlns:tr2="{TR2}">
  <tr2:Profiles token="R:x" fixed="true"><tr2:Name>a</tr2:Name></tr2:Profiles>
  <tr2:Profiles token="far:y" fixed="true"><tr2:Name>b</tr2:Name></tr2:Profiles>
  <tr2:Profiles token="cam:z" fixed="true"><tr2:Name>c</tr2:Name></tr2:Profiles>
  <tr2:Profiles token="new:w" fixed="true"><tr2:Name>d</tr2:Name></tr2:Profiles>
  <tr2:Profiles token="v" fixed="true"><tr2:Name>e</tr2:Name></tr2:Profiles>
</tr2:GetProfilesResponse>"""


def test_an_answer_naming_another_lower_systems_token_is_not_passed_as_its_anx_b_1() -> None:
    """ANX-B-1, ADR-2, ADR-4: P's answer with R:x (R configured) or far:y (routed to R) is P's name, prefixed;
    cam:z (routed to P) and new:w (nobody's, to be learnt) keep their prefix; a request for P:R:x goes to P
    with R:x, exactly what P answered. Recorded events in answers follow the same rule."""
    lowers, routes = {"P", "R"}, {"far": "R", "cam": "P"}
    answer = etree.fromstring(PROFILES)
    assert prefix_response(answer, "P", lowers=lowers, routes=routes) == {"cam", "new"}
    assert [p.get("token") for p in answer] == ["P:R:x", "P:far:y", "cam:z", "new:w", "P:v"]
    assert token_owner("P:R:x", lowers, routes) == ("P", "R:x")
    events = etree.fromstring(f"""<r xmlns:wsnt="{WSNT}" xmlns:tt="{TT}"><wsnt:NotificationMessage>
      <wsnt:Topic>tns1:{MOTION}</wsnt:Topic><wsnt:Message><tt:Message><tt:Source>
      <tt:SimpleItem Name="Source" Value="R:vs0"/></tt:Source></tt:Message></wsnt:Message>
      </wsnt:NotificationMessage></r>""")
    assert prefix_messages(events, "P", {MOTION: frozenset({"Source"})}, lowers=lowers, routes=routes) == set()
    assert events.find(f".//{{{TT}}}SimpleItem").get("Value") == "P:R:vs0"


def test_one_lower_system_fills_only_its_share_of_the_routes_gen_1(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """GEN-1, ADR-4: P announcing more prefixes than its quota gets its quota only; R's devices still get
    routes and R's tokens reach R. The quota is a sixteenth of the table."""
    monkeypatch.setattr(lower_module, "MAX_ROUTES", 8)
    monkeypatch.setattr(lower_module, "MAX_ROUTES_PER_LOWER", 4, raising=False)
    with LowerStore(tmp_path) as store:
        for prefix in ("P", "R"):
            store.put(LowerSystem(prefix=prefix, url=f"http://{prefix}.example/x"))
        store.learn("P", [f"{i:020d}" for i in range(20)])
        assert sum(1 for owner in store.routes().values() if owner == "P") == 4
        store.learn("R", ["99999999999999999999", "88888888888888888888"])
        routes = store.routes()
        assert token_owner("99999999999999999999:main", {"P", "R"}, routes) == ("R", "99999999999999999999:main")
        assert routes["88888888888888888888"] == "R"


def test_a_configured_prefix_is_never_a_route_of_another_lower_system_gen_1(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """GEN-1, ADR-4: P announcing R's configured prefix learns nothing for it (and it takes none of P's
    room); a prefix P learnt becomes R's alone once R is configured with it."""
    monkeypatch.setattr(lower_module, "MAX_ROUTES", 1)
    with LowerStore(tmp_path) as store:
        for prefix in ("P", "R"):
            store.put(LowerSystem(prefix=prefix, url=f"http://{prefix}.example/x"))
        store.learn("P", ["R", "a"])
        assert store.routes() == {"a": "P"}
        assert token_owner("R:x", store.prefixes(), store.routes()) == ("R", "x")
        store.put(LowerSystem(prefix="a", url="http://a.example/x"))
        assert store.routes() == {}


def test_a_lower_system_cannot_write_or_delete_another_ones_mirrored_resources_rq_4(vss: Vss) -> None:
    """RQ-4, ANX-A-1: P's resource events naming R's tokens (R another lower system) land under P's own name
    ``P:R:cam`` and leave R's mirrored resource alone (before, the mirror kept any prefixed token as written, so
    P could add, change and delete R's resources); a new deeper prefix of P is learnt as P's route."""
    client = lambda lower: pytest.fail("no lower system is called")
    mirror = {prefix: LowerMirror(LowerSystem(prefix=prefix, url=f"http://{prefix}.example/onvif/device_service"),
                                  vss.events.registry, vss.lowers, client) for prefix in ("P", "R")}
    camera = Resource(token="cam", kind="VideoSource", name="R's camera")
    assert mirror["R"]._apply([ResourceChange("Initialized", camera, "t")]) == ["R:cam"]
    forged = [ResourceChange("Changed", Resource(token="R:cam", kind="VideoSource", name="forged"), "t"),
              ResourceChange("Deleted", Resource(token="R:cam", kind="VideoSource"), "t"),
              ResourceChange("Initialized", Resource(token="deep:cam", kind="VideoSource"), "t")]
    assert mirror["P"]._apply(forged) == ["P:R:cam", "P:R:cam", "deep:cam"]
    kept = vss.events.registry.get("R:cam")
    assert kept is not None and kept.name == "R's camera"
    assert vss.lowers.routes() == {"deep": "P"}


def test_a_forwarded_answer_naming_another_lower_systems_token_gets_its_own_prefix_anx_b_1(tmp_path: Path) -> None:
    """ANX-B-1, ADR-4: through a running VSS, lower system P's GetProfiles answer naming ``R:main`` (R another
    configured lower system) reaches the client as ``P:R:main``, P's name for it, never as R's profile (before,
    the gateway kept any prefixed token as P wrote it)."""
    envelope = (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}"><env:Body><tr2:GetProfilesResponse>'
                '<tr2:Profiles token="R:main" fixed="true"><tr2:Name>forged</tr2:Name></tr2:Profiles>'
                "</tr2:GetProfilesResponse></env:Body></env:Envelope>").encode()

    class Lower(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-type", "application/soap+xml; charset=utf-8")
            self.send_header("content-length", str(len(envelope)))
            self.end_headers()
            self.wfile.write(envelope)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Lower)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seed(tmp_path / "vss")
    add_lower(tmp_path / "vss", LowerSystem(prefix="P", url=f"http://127.0.0.1:{server.server_port}/onvif/device_service"))
    add_lower(tmp_path / "vss", LowerSystem(prefix="R", url="http://127.0.0.1:9/onvif/device_service"))
    vss_service, base = start_vss(tmp_path / "vss", VssOptions(timeout=2.0))
    try:
        status, root = soap(base, "/onvif/media2_service", "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>")
    finally:
        vss_service.stop()
        server.shutdown()
        server.server_close()
    assert status == 200
    assert [p.get("token") for p in answer(root).findall("tr2:Profiles", NS)] == ["P:R:main"]
