"""Layer 5: the resource-query client (RQ-5, RQ-10), zeep built offline from ``wsdl/event.wsdl``.

``ResourceQueryClient(url).subscribe(kinds, location=…, prefix=…, scopes=…,
select=…)`` creates a pull point with the resource filters (RQ-6 … RQ-9) and
returns a :class:`QuerySubscription`: iterate :meth:`~QuerySubscription.resources`
for the initial enumeration (every matching resource), then
:meth:`~QuerySubscription.changes` for the live changes.

Live checks (RQ-10): every PullMessages of :meth:`~QuerySubscription.changes`
asks the server to wait up to ``pull_timeout``; an empty answer at that
timeout is the server's heartbeat (``on_heartbeat`` is called). A pull that
has not been answered ``grace`` seconds after its timeout (or whose transport
gives up) raises :class:`ServerDead`. A server keeps a pull point alive for at
least the Timeout of each pull (ONVIF Core), so following needs no Renew.

The end of the enumeration is found without guessing: enumeration pulls ask
for ``Timeout=PT0S`` (answer at once), and the server fills every answer up to
MessageLimit while resources remain, so the first short answer ends it.

Each exchange of the default transport has one deadline for its whole answer,
``max(timeout, pull_timeout + grace)`` seconds, and a byte budget
(:mod:`.bounded_http`): a server that trickles or floods an answer is a
:class:`~.errors.TransportError` (during a pull, :class:`ServerDead`).
Any zeep transport may be passed in (for example
:class:`~.runtime.zeep_transport.UplinkTransport` to query a device through
its uplink, GEN-2). SOAP faults become :class:`~.soap.fault.SoapFault`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport

from . import schemas
from .bounded_http import BoundedTransport, NoAnswer
from .client import MAX_ANSWER, SETTINGS, fault_from_zeep, mapped_errors, username_token
from .domain.filters import LocationFilter
from .domain.resources import GeoLocation, PropertyOperation, Resource
from .domain.subscriptions import format_duration
from .errors import SchemaError, TransportError
from .namespaces import TEV, TT, WSNT, WSTOP
from .schemas import wsdl_path
from .soap.envelope import body_element, excerpt

log = logging.getLogger(__name__)

__all__ = ["QuerySubscription", "ResourceChange", "ResourceQueryClient", "ServerDead", "parse_message"]

_TOPIC_DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
_TNS1 = "http://www.onvif.org/ver10/topics"


class ServerDead(TransportError):
    """RQ-10: a PullMessages was not answered in time — the server (or the path to it) is dead."""


@dataclass(frozen=True)
class ResourceChange:
    """One resource event as received (RQ-4): the operation, the resource and the server's UtcTime."""

    operation: PropertyOperation
    resource: Resource
    utc_time: str


def parse_message(topic: str, message: etree._Element) -> ResourceChange:
    """EVT-6: a ``tt:Message`` of topic ``tns1:Resource/<kind>`` → :class:`ResourceChange`."""
    kind = topic.strip().rsplit("/", 1)[-1]
    token = None
    name = None
    offline = None
    location = None
    scopes: list[str] = []
    source = message.find(f"{{{TT}}}Source")
    for item in source.iter(f"{{{TT}}}SimpleItem") if source is not None else ():
        if item.get("Name") == "Token":
            token = item.get("Value")
    data = message.find(f"{{{TT}}}Data")
    if data is not None:
        for item in data.iter(f"{{{TT}}}SimpleItem"):
            key, value = item.get("Name"), item.get("Value") or ""
            if key == "Name":
                name = value
            elif key == "Scope":
                scopes.append(value)
            elif key == "Offline":
                offline = value.strip() in ("true", "1")
        for item in data.iter(f"{{{TT}}}ElementItem"):
            geo = item.find(f"{{{TT}}}GeoLocation")
            if item.get("Name") == "Location" and geo is not None:
                elevation = geo.get("elevation")
                try:
                    location = GeoLocation(float(geo.get("lon") or 0), float(geo.get("lat") or 0),
                                           None if elevation is None else float(elevation))
                except ValueError:
                    raise TransportError(f"a resource event with a malformed GeoLocation "
                                         f"({excerpt(etree.tostring(geo, encoding='unicode'), 120)})") from None
    if token is None:
        raise TransportError("a resource event without its Source item Token (RQ-3)")
    operation = message.get("PropertyOperation") or "Changed"
    if operation not in ("Initialized", "Changed", "Deleted"):
        raise TransportError(f"unknown PropertyOperation {operation!r}")
    return ResourceChange(operation, Resource(token, kind, name, location, tuple(scopes), offline),  # type: ignore[arg-type]
                          message.get("UtcTime") or "")


def _filter(kinds: Sequence[str], location: LocationFilter | None, prefix: str | None,
            scopes: Iterable[str | tuple[str, str | None]], select: Iterable[str]) -> list[etree._Element]:
    """The content of ``wsnt:Filter``: a topic expression and the tt resource filters."""
    out = []
    if kinds:
        topic = etree.Element(f"{{{WSNT}}}TopicExpression", Dialect=_TOPIC_DIALECT, nsmap={"tns1": _TNS1})
        topic.text = "|".join(f"tns1:Resource/{kind}" for kind in kinds)
        out.append(topic)
    sub = etree.SubElement
    if location is not None:
        element = etree.Element(f"{{{TT}}}LocationFilter", nsmap={"tt": TT})
        sub(element, f"{{{TT}}}lon").text = repr(location.lon)
        sub(element, f"{{{TT}}}lat").text = repr(location.lat)
        if location.height is not None:
            sub(element, f"{{{TT}}}height").text = repr(location.height)
        sub(element, f"{{{TT}}}radius").text = repr(location.radius)
        if location.include_unknown:
            sub(element, f"{{{TT}}}includeUnknown").text = "true"
        out.append(element)
    if prefix is not None:
        element = etree.Element(f"{{{TT}}}PrefixFilter", nsmap={"tt": TT})
        sub(element, f"{{{TT}}}Prefix").text = prefix
        out.append(element)
    scope_list = [(s, None) if isinstance(s, str) else s for s in scopes]
    if scope_list:
        element = etree.Element(f"{{{TT}}}ScopeFilter", nsmap={"tt": TT})
        for scope, match in scope_list:
            entry = sub(element, f"{{{TT}}}Scope")
            entry.text = scope
            if match:
                entry.set("Match", match)
        out.append(element)
    paths = list(select)
    if paths:
        element = etree.Element(f"{{{TT}}}SelectFilter", nsmap={"tt": TT})
        for path in paths:
            sub(element, f"{{{TT}}}Path").text = path
        out.append(element)
    return out


class ResourceQueryClient:
    """Synchronous resource-query client of one server's event service."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 time_offset: timedelta = timedelta(0), transport: Transport | None = None,
                 timeout: float = 10.0, pull_timeout: float = 10.0, grace: float = 5.0,
                 message_limit: int = 100, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.pull_timeout = pull_timeout
        self.grace = grace
        self.message_limit = message_limit
        self.clock = clock
        self.zeep = zeep.Client(str(wsdl_path("event")), settings=SETTINGS,
                                transport=transport or BoundedTransport(max(timeout, pull_timeout + grace),
                                                                        max_bytes=MAX_ANSWER),
                                wsse=username_token(username, password, time_offset))
        self.events = self.zeep.create_service(f"{{{TEV}}}EventBinding", url)

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        with mapped_errors(what):
            return fn()

    def raw(self, service: Any, operation: str, what: str, **kwargs: Any) -> etree._Element:
        """Call ``operation`` and return the Body's answer element, parsed locked-down (the fast path)."""
        try:
            with self.zeep.settings(raw_response=True):
                response = getattr(service, operation)(**kwargs)
            if response.status_code != 200:
                binding = service._binding
                binding.process_reply(self.zeep, binding.get(operation), response)  # raises the Fault
                raise TransportError(f"{what}: HTTP {response.status_code}")
            envelope = schemas.parse_xml(response.content)
        except zeep.exceptions.Fault as exc:
            raise fault_from_zeep(exc) from None
        except zeep.exceptions.TransportError as exc:
            raise TransportError(f"{what}: HTTP {exc.status_code}: {exc.message}") from None
        except SchemaError as exc:
            raise TransportError(f"{what}: the answer is not a SOAP envelope: {exc}") from None
        answer = body_element(envelope)
        if answer is None:
            raise TransportError(f"{what}: the answer has an empty SOAP Body")
        return answer

    def kinds(self) -> list[str]:
        """RQ-1: the resource kinds the server signals in GetEventProperties."""
        try:
            answer = self.raw(self.events, "GetEventProperties", self.url)
        except OSError as exc:
            raise TransportError(f"{self.url}: {exc}") from None
        root = answer.find(f"{{{WSTOP}}}TopicSet/{{{_TNS1}}}Resource")
        return [] if root is None else [etree.QName(c).localname for c in root if isinstance(c.tag, str)]

    def subscribe(self, kinds: Sequence[str] = (), *, location: LocationFilter | None = None,
                  prefix: str | None = None, scopes: Iterable[str | tuple[str, str | None]] = (),
                  select: Iterable[str] = (), termination: str = "PT60S") -> QuerySubscription:
        """RQ-5: CreatePullPointSubscription with the topic filter and resource filters."""
        content = _filter(list(kinds), location, prefix, scopes, select)
        answer = self._call(lambda: self.events.CreatePullPointSubscription(
            Filter={"_value_1": content}, InitialTerminationTime=termination), self.url)
        address = str(answer.SubscriptionReference.Address._value_1)
        return QuerySubscription(self, address)


class QuerySubscription:
    """One pull point of a :class:`ResourceQueryClient` (use as a context manager to unsubscribe)."""

    def __init__(self, client: ResourceQueryClient, address: str) -> None:
        self.client = client
        self.address = address
        self._pull = client.zeep.create_service(f"{{{TEV}}}PullPointSubscriptionBinding", address)
        self._manager = client.zeep.create_service(f"{{{TEV}}}SubscriptionManagerBinding", address)
        self.termination: str | None = None
        self.last_heartbeat: float | None = None

    def __enter__(self) -> QuerySubscription:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pull(self, timeout: float | None = None, limit: int | None = None) -> list[ResourceChange]:
        """One PullMessages; :class:`ServerDead` if it overruns ``timeout + grace`` (RQ-10)."""
        wait = self.client.pull_timeout if timeout is None else timeout
        started = self.client.clock()
        try:
            answer = self.client.raw(self._pull, "PullMessages", self.address, Timeout=format_duration(wait),
                                     MessageLimit=limit or self.client.message_limit)
        except (OSError, NoAnswer) as exc:
            raise ServerDead(f"{self.address}: PullMessages (Timeout {wait:g} s) got no answer: {exc}; "
                             "the server or the path to it is down") from None
        elapsed = self.client.clock() - started
        if elapsed > wait + self.client.grace:
            raise ServerDead(f"{self.address}: PullMessages with Timeout {wait:g} s took {elapsed:.1f} s; "
                             "the server is not keeping its deadline")
        self.termination = answer.findtext(f"{{{TEV}}}TerminationTime")
        changes = []
        for holder in answer.iterchildren(f"{{{WSNT}}}NotificationMessage"):
            message = holder.find(f"{{{WSNT}}}Message/{{{TT}}}Message")
            if message is not None:
                changes.append(parse_message(holder.findtext(f"{{{WSNT}}}Topic") or "", message))
        if not changes:
            self.last_heartbeat = self.client.clock()
        return changes

    def resources(self) -> Iterator[Resource]:
        """RQ-5: the initial enumeration — every matching resource once (pulls with Timeout 0)."""
        limit = self.client.message_limit
        while True:
            batch = self.pull(0.0, limit)
            for change in batch:
                if change.operation != "Deleted":
                    yield change.resource
            if len(batch) < limit:
                return

    def changes(self, on_heartbeat: Callable[[], None] | None = None) -> Iterator[ResourceChange]:
        """RQ-5, RQ-10: the live changes, forever; an empty pull at its timeout is a heartbeat."""
        while True:
            batch = self.pull()
            if not batch and on_heartbeat is not None:
                on_heartbeat()
            yield from batch

    def synchronize(self) -> None:
        """EVT-4: ask the server to send every matching resource again as Initialized."""
        self.client._call(self._pull.SetSynchronizationPoint, self.address)

    def renew(self, termination: str = "PT60S") -> str:
        """EVT-4: a new termination time (``xs:duration`` or ``xs:dateTime``); the server's answer."""
        try:
            answer = self.client.raw(self._manager, "Renew", self.address, TerminationTime=termination)
        except OSError as exc:
            raise TransportError(f"{self.address}: {exc}") from None
        self.termination = answer.findtext(f"{{{WSNT}}}TerminationTime")
        return self.termination or ""

    def close(self) -> None:
        """Unsubscribe (a subscription that is already gone is fine)."""
        try:
            self.client._call(self._manager.Unsubscribe, self.address)
        except Exception as exc:  # noqa: BLE001 - best effort at the end of a session
            log.debug("unsubscribing %s failed: %s", self.address, exc)
