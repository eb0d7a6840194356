"""Layer 5: resource queries over the ONVIF event service, on Spyne (clause 7).

Implements RQ-1 (resource topics signalled by GetEventProperties), RQ-5
(subscribe, then pull), RQ-6 … RQ-9 and RQ-12 (the four resource filters, in
``tt`` or by local name in any namespace), EVT-1 … EVT-6, and the server side
of RQ-10 (an empty PullMessages at its Timeout is the heartbeat).

Two WSGI apps, both :class:`~..soap.spyne_glue.SoapEndpoint` (requests parsed
locked-down and validated against the authored ``xsd/events.xsd`` first):

* the **event service** at ``/onvif/event_service``: GetServiceCapabilities,
  GetEventProperties, CreatePullPointSubscription;
* every **subscription** at an address of its own,
  ``/onvif/event_service/subscription/<id>``: PullMessages,
  SetSynchronizationPoint (``tev``), Renew, Unsubscribe (``wsnt``). Spyne
  serves one namespace per application, so a small dispatcher hands each
  request to the ``tev`` or the ``wsnt`` endpoint by the namespace of the
  Body's first child.

Spyne dispatches and hosts; the payloads are read and written here with lxml
(``xs:any`` filter content and notification messages are awkward as Spyne
models). The notification messages of PullMessages are written as text by
:func:`notification_xml` (escaped like lxml, the same infoset as
:func:`notification_element`; a test compares the two) and spliced into the
envelope: that is the fast path the enumeration benchmark measures (lxml
elements cost about three times as much per message). Every answer validates
against the authored XSD (the tests check it) and carries the ONVIF
``wsa:Action``.

Faults (each a SOAP 1.2 fault with the full ``ter`` subcode chain plus the
WS-BaseNotification / WS-Resource fault element in ``env:Detail``, so both
ONVIF-style and WS-N-style clients recognise them):

==============================================  ==================================================
situation                                       Code / Subcode / Subcode (Detail)
==============================================  ==================================================
unknown, unsubscribed or expired subscription   Sender/InvalidArgVal/ResourceUnknown (wsrf-r:ResourceUnknownFault)
MaxPullPoints reached                           Receiver/Action/TooManySubscriptions (wsnt:SubscribeCreationFailedFault)
termination time not in the future              Sender/InvalidArgVal/UnacceptableInitialTerminationTime
                                                (Renew: .../UnacceptableTerminationTime), with MinimumTime/MaximumTime
unknown TopicExpression Dialect                 Sender/InvalidArgVal/TopicExpressionDialectUnknown
malformed topic expression, unbound prefix      Sender/InvalidArgVal/InvalidTopicExpression
topic outside ``tns1:Resource/<kind>``          Sender/InvalidArgVal/TopicNotSupported
MessageContent filter (not supported)           Sender/InvalidArgVal/InvalidMessageContentExpression
malformed or unknown resource filter            Sender/InvalidArgVal/InvalidFilter (wsnt:InvalidFilterFault)
PullMessages Timeout above MaxTimeout or < 0    Sender/InvalidArgVal/Timeout (tev:PullMessagesFaultResponse)
PullMessages MessageLimit < 1                   Sender/InvalidArgVal/MessageLimit (tev:PullMessagesFaultResponse)
==============================================  ==================================================

A syntactically invalid duration or date is refused earlier by the XSD check
(``Sender/InvalidArgs``, the validator's message names the element). A
MessageLimit above the maximum is not a fault: the answer holds at most the
maximum (ONVIF Core).

Waiting (EVT-3). A PullMessages with nothing to send waits in its worker
thread on a :class:`PullWaiter` (a ``threading.Condition`` with a generation
number) until news arrives or its Timeout (at most ``max_timeout``, 60 s by
default: ONVIF asks for at least one minute) passes. The runtime follows the
registry's change log in one background task (:meth:`EventServiceContext.poll_changes`,
every 0.2 s, also for changes made by another process) and wakes the waiters;
SetSynchronizationPoint and Unsubscribe wake them directly. At most one pull
waits per subscription: a newer PullMessages on the same subscription makes
the older one answer at once (a client that gave up on a pull and retried
must not find its retry blocked or refused). A waiting pull occupies a worker
thread for up to ``max_timeout``; MaxPullPoints (default 32) bounds how many
can wait at once, so size the server's thread pool above it.

Topic expressions: the prefixes are resolved with the namespaces in scope of
the ``TopicExpression`` element; the conventional prefix ``tns1`` is also
accepted when the client left it unbound (zeep-based ONVIF clients send
``tns1:…`` without declaring it, and cameras accept that). Any other unbound
prefix is an ``InvalidTopicExpression`` fault.

Subscription addresses honour ``X-Forwarded-Proto``, ``-Host`` and
``-Prefix`` (the cloud's HTTP proxy sets them), so a client that subscribed
through the proxy pulls through it too.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lxml import etree
from spyne import rpc

from ..domain.filters import (
    InvalidFilter,
    LocationFilter,
    PrefixFilter,
    ResourceQuery,
    ScopeFilter,
    SelectFilter,
)
from ..domain.registry import ResourceRegistry
from ..domain.resources import RESOURCE_KINDS
from ..domain.subscriptions import (
    InvalidTime,
    Notification,
    SubscriptionManager,
    TooManySubscriptions,
    UnacceptableTermination,
    UnknownSubscription,
    format_datetime,
    format_duration,
    parse_duration,
    parse_termination,
)
from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TEV, TNS1, TT, WSA, WSNT, WSTOP
from ..security.access import AccessClass
from ..security.middleware import ENVIRON_REQUEST
from ..soap.envelope import SoapRequest
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, service_context
from .forwarded import request_base_url

__all__ = [
    "DIALECT_ONVIF_CONCRETE_SET",
    "DIALECT_WSN_CONCRETE",
    "DIALECT_WSN_CONCRETE_SET",
    "DIALECT_WSN_SIMPLE",
    "EVENT_PATH",
    "OPERATION_ACCESS",
    "SUBSCRIPTION_PATH",
    "EventFault",
    "EventServiceContext",
    "PullWaiter",
    "capabilities_element",
    "event_endpoints",
    "notification_element",
    "notification_xml",
    "notifications_xml",
    "parse_filter",
    "parse_topic_expression",
]

log = logging.getLogger(__name__)

EVENT_PATH = "/onvif/event_service"
#: Every subscription lives at ``SUBSCRIPTION_PATH + <id>``.
SUBSCRIPTION_PATH = "/onvif/event_service/subscription/"

WSRF_BF = "http://docs.oasis-open.org/wsrf/bf-2"
WSRF_R = "http://docs.oasis-open.org/wsrf/r-2"
XS = "http://www.w3.org/2001/XMLSchema"

DIALECT_ONVIF_CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
DIALECT_WSN_CONCRETE_SET = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/ConcreteSet"
DIALECT_WSN_CONCRETE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
DIALECT_WSN_SIMPLE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple"
TOPIC_DIALECTS = (DIALECT_ONVIF_CONCRETE_SET, DIALECT_WSN_CONCRETE_SET, DIALECT_WSN_CONCRETE, DIALECT_WSN_SIMPLE)
_SET_DIALECTS = frozenset({DIALECT_ONVIF_CONCRETE_SET, DIALECT_WSN_CONCRETE_SET})

#: SEC-1 (ONVIF Core event service): access class of each operation.
OPERATION_ACCESS = {
    (TEV, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TEV, "GetEventProperties"): AccessClass.READ_MEDIA,
    (TEV, "CreatePullPointSubscription"): AccessClass.READ_MEDIA,
    (TEV, "PullMessages"): AccessClass.READ_MEDIA,
    (TEV, "SetSynchronizationPoint"): AccessClass.READ_MEDIA,
    (WSNT, "Renew"): AccessClass.READ_MEDIA,
    (WSNT, "Unsubscribe"): AccessClass.READ_MEDIA,
}

_EVENT_ACTION = "http://www.onvif.org/ver10/events/wsdl/EventPortType/"
_PULL_ACTION = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/"
_MANAGER_ACTION = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/"
_PULL_FAULT_ACTION = _PULL_ACTION + "PullMessages/Fault/PullMessagesFaultResponse"

_NSMAP = {"env": SOAP_ENV, "wsa": WSA, "tev": TEV, "wsnt": WSNT, "tt": TT, "tns1": TNS1, "wstop": WSTOP,
          "xs": XS}
_RAW_KEY = "iec62676.raw_response"


# --------------------------------------------------------------------------- faults


@dataclass(kw_only=True, eq=False)
class EventFault(SoapFault):
    """A :class:`SoapFault` that also carries a WS-N / WS-RF fault element in ``env:Detail``."""

    detail_element: Any = None
    action: str | None = None

    def to_element(self) -> etree._Element:
        fault = super().to_element()
        if self.detail_element is not None:
            detail = etree.SubElement(fault, f"{{{SOAP_ENV}}}Detail")
            detail.append(self.detail_element)
        return fault

    def to_envelope(self) -> bytes:
        data = super().to_envelope()
        if self.action is None:
            return data
        env = etree.fromstring(data)
        env.find(f"{{{SOAP_ENV}}}Header/{{{WSA}}}Action").text = self.action
        return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def _base_fault(tag: str, reason: str, now: float) -> etree._Element:
    element = etree.Element(tag, nsmap={"wsnt": WSNT, "wsrf-bf": WSRF_BF, "wsrf-r": WSRF_R})
    etree.SubElement(element, f"{{{WSRF_BF}}}Timestamp").text = format_datetime(now)
    description = etree.SubElement(element, f"{{{WSRF_BF}}}Description")
    description.text = reason
    return element


def _fault(subcodes: tuple[str, ...], reason: str, now: float, detail_tag: str | None, *,
           code: str = "Sender") -> EventFault:
    detail = _base_fault(detail_tag, reason, now) if detail_tag else None
    return EventFault(code=code, subcodes=subcodes, reason=reason, detail_element=detail)


def _invalid_filter(reason: str, now: float) -> EventFault:
    return _fault(("InvalidArgVal", "InvalidFilter"), reason, now, f"{{{WSNT}}}InvalidFilterFault")


def _unknown_subscription(exc: UnknownSubscription, now: float) -> EventFault:
    return _fault(("InvalidArgVal", "ResourceUnknown"), str(exc), now, f"{{{WSRF_R}}}ResourceUnknownFault")


def _unacceptable(exc: UnacceptableTermination, now: float, *, initial: bool) -> EventFault:
    name = "UnacceptableInitialTerminationTime" if initial else "UnacceptableTerminationTime"
    detail = _base_fault(f"{{{WSNT}}}{name}Fault", str(exc), now)
    etree.SubElement(detail, f"{{{WSNT}}}MinimumTime").text = format_datetime(exc.minimum)
    etree.SubElement(detail, f"{{{WSNT}}}MaximumTime").text = format_datetime(exc.maximum)
    return EventFault(code="Sender", subcodes=("InvalidArgVal", name), reason=str(exc), detail_element=detail)


# --------------------------------------------------------------------------- waiting


class PullWaiter:
    """Where waiting PullMessages calls sleep until news may be there (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, generation: int, timeout: float) -> None:
        """Sleep up to ``timeout`` s unless something happened since ``generation`` was read."""
        with self._cond:
            if self.generation == generation:
                self._cond.wait(max(0.0, timeout))


@dataclass
class EventServiceContext:
    """What the event service works with: the registry, the subscriptions and the limits."""

    registry: ResourceRegistry
    manager: SubscriptionManager
    clock: Callable[[], float] = time.time
    max_timeout: float = 60.0
    max_message_limit: int = 1000
    kinds: tuple[str, ...] = RESOURCE_KINDS
    waiter: PullWaiter = field(default_factory=PullWaiter)
    closed: bool = False
    _seen_seq: int = -1

    @classmethod
    def create(cls, registry: ResourceRegistry, *, max_pull_points: int = 32,
               clock: Callable[[], float] = time.time, **limits: Any) -> EventServiceContext:
        return cls(registry=registry, manager=SubscriptionManager(registry, max_pull_points=max_pull_points),
                   clock=clock, **limits)

    def close(self) -> None:
        """The server stops: every waiting PullMessages answers now (empty if nothing is there)."""
        self.closed = True
        self.waiter.notify()

    def poll_changes(self) -> bool:
        """Runtime hook: wake waiting pulls when the change log moved; drop expired subscriptions.

        Cheap (one indexed read); call it about every 0.2 s from any thread. True when woken.
        """
        self.manager.expire(self.clock())
        seq = self.registry.last_seq()
        if seq == self._seen_seq:
            return False
        self._seen_seq = seq
        self.waiter.notify()
        return True

    def follow_changes(self, stop: threading.Event, interval: float = 0.2) -> None:
        """A blocking loop around :meth:`poll_changes` for a thread (tests, WSGI-only hosting)."""
        while not stop.wait(interval):
            try:
                self.poll_changes()
            except Exception:
                log.exception("following the resource change log failed")


# --------------------------------------------------------------------------- request parsing


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def parse_topic_expression(text: str, dialect: str, nsmap: dict[str | None, str],
                           kinds: Iterable[str] = RESOURCE_KINDS) -> frozenset[str] | None:
    """EVT-2, RQ-1: the resource kinds a topic expression names (``None`` = every kind).

    Raises :class:`ValueError` subclasses turned into faults by the caller:
    ``_DialectUnknown``, ``_InvalidTopic``, ``_TopicNotSupported``.
    """
    if dialect not in TOPIC_DIALECTS:
        raise _DialectUnknown(f"topic expression dialect {dialect!r} is not supported; use one of "
                              + ", ".join(TOPIC_DIALECTS))
    known = frozenset(kinds)
    alternatives = text.split("|") if dialect in _SET_DIALECTS else [text]
    result: set[str] = set()
    for raw in alternatives:
        alt = raw.strip()
        subtree = alt.endswith("//.")
        if subtree:
            alt = alt[:-3]
        steps = alt.split("/") if alt else []
        if not steps or any(not step.strip() or re.search(r"\s", step.strip()) for step in steps):
            raise _InvalidTopic(f"{raw.strip()!r} is not a topic expression like tns1:Resource/MediaProfile")
        names = []
        for index, step in enumerate(steps):
            prefix, colon, local = step.strip().rpartition(":")
            # a child step without a prefix is in its parent's namespace (WS-Topics)
            namespace = nsmap.get(prefix) if colon else (TNS1 if index else nsmap.get(None))
            if namespace is None and prefix == "tns1":
                namespace = TNS1  # zeep and other clients send tns1: without binding it (ONVIF convention)
            if namespace is None:
                raise _InvalidTopic(f"prefix {prefix!r} of topic {raw.strip()!r} is not bound to a namespace"
                                    if colon else f"topic {raw.strip()!r} has no namespace prefix")
            if namespace != TNS1:
                raise _TopicNotSupported(f"topic {raw.strip()!r} is not in the ONVIF topic namespace {TNS1}")
            names.append(local)
        if names[0] != "Resource":
            raise _TopicNotSupported(f"topic {raw.strip()!r} is not supported; this service serves "
                                     "tns1:Resource/<kind> topics only")
        if dialect == DIALECT_WSN_SIMPLE and len(names) > 1:
            raise _InvalidTopic(f"the Simple dialect names root topics only, not {raw.strip()!r}")
        if len(names) == 1:
            return None
        if len(names) > 2 or names[1] not in known:
            raise _TopicNotSupported(f"topic {raw.strip()!r} is not supported; kinds: {', '.join(sorted(known))}")
        result.add(names[1])
    return frozenset(result)


class _DialectUnknown(ValueError):
    pass


class _InvalidTopic(ValueError):
    pass


class _TopicNotSupported(ValueError):
    pass


_TRUE = {"true": True, "1": True, "false": False, "0": False}


def _text_of(parent: etree._Element, name: str, *, required: bool) -> str | None:
    found = [child for child in _children(parent) if _local(child) == name]
    if len(found) > 1:
        raise InvalidFilter(f"{_local(parent)} has {len(found)} {name} elements; give one")
    if not found:
        if required:
            raise InvalidFilter(f"{_local(parent)} lacks its {name} element")
        return None
    return (found[0].text or "").strip()


def _number(parent: etree._Element, name: str, *, required: bool) -> float | None:
    text = _text_of(parent, name, required=required)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidFilter(f"{_local(parent)}/{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidFilter(f"{_local(parent)}/{name} must be a finite number, got {text!r}")
    return value


def _location(element: etree._Element) -> LocationFilter:
    unknown = [_local(c) for c in _children(element) if _local(c) not in ("lon", "lat", "height", "radius",
                                                                          "includeUnknown")]
    if unknown:
        raise InvalidFilter(f"LocationFilter has unknown element(s) {', '.join(unknown)}; "
                            "allowed: lon, lat, height, radius, includeUnknown")
    include = _text_of(element, "includeUnknown", required=False)
    if include is not None and include not in _TRUE:
        raise InvalidFilter(f"LocationFilter/includeUnknown must be true or false, got {include!r}")
    lon = _number(element, "lon", required=True)
    lat = _number(element, "lat", required=True)
    radius = _number(element, "radius", required=True)
    assert lon is not None and lat is not None and radius is not None
    return LocationFilter(lon=lon, lat=lat, radius=radius, height=_number(element, "height", required=False),
                          include_unknown=_TRUE.get(include or "false", False))


def parse_filter(element: etree._Element | None, kinds: Iterable[str] = RESOURCE_KINDS) -> ResourceQuery:
    """EVT-2, RQ-6 … RQ-9, RQ-12: a ``wsnt:Filter`` → :class:`ResourceQuery`.

    Filter elements are recognised by local name in any namespace (``tt`` in
    our schema): ``LocationFilter``, ``PrefixFilter``, ``ScopeFilter``,
    ``SelectFilter`` (also without the ``Filter`` suffix). Several topic
    expressions are combined with AND (WS-BaseNotification), several scope
    filters too. Raises :class:`InvalidFilter` or the topic errors.
    """
    known = tuple(kinds)
    if element is None:
        return ResourceQuery(kinds=frozenset(known))
    topic_kinds: frozenset[str] | None = None
    location = prefix = select = None
    scopes: list[tuple[str, str | None]] = []
    for child in _children(element):
        name = _local(child)
        if name == "TopicExpression":
            dialect = (child.get("Dialect") or "").strip()
            found = parse_topic_expression(child.text or "", dialect, dict(child.nsmap), known)
            if found is not None:
                topic_kinds = found if topic_kinds is None else topic_kinds & found
        elif name == "MessageContent":
            raise _MessageContent("MessageContent filters are not supported by this service "
                                  "(GetEventProperties lists no MessageContentFilterDialect); "
                                  "use the resource filters (LocationFilter, PrefixFilter, ScopeFilter)")
        elif name in ("LocationFilter", "Location"):
            if location is not None:
                raise InvalidFilter("give one LocationFilter")
            location = _location(child)
        elif name in ("PrefixFilter", "Prefix"):
            if prefix is not None:
                raise InvalidFilter("give one PrefixFilter")
            text = _text_of(child, "Prefix", required=True) if _children(child) else (child.text or "").strip()
            prefix = PrefixFilter(text or "")
        elif name in ("ScopeFilter", "Scope"):
            entries = [c for c in _children(child) if _local(c) == "Scope"] if _children(child) else [child]
            if len(entries) != len(_children(child)) and _children(child):
                raise InvalidFilter("ScopeFilter may hold Scope elements only")
            scopes.extend(((e.text or "").strip(), e.get("Match")) for e in entries)
        elif name in ("SelectFilter", "Select"):
            if select is not None:
                raise InvalidFilter("give one SelectFilter")
            paths = [c for c in _children(child) if _local(c) == "Path"]
            if len(paths) != len(_children(child)):
                raise InvalidFilter("SelectFilter may hold Path elements only")
            select = SelectFilter([(p.text or "").strip() for p in paths])
        else:
            raise InvalidFilter(f"unknown filter element {child.tag}; supported: TopicExpression, "
                                "LocationFilter, PrefixFilter, ScopeFilter, SelectFilter")
    return ResourceQuery(kinds=frozenset(known) if topic_kinds is None else topic_kinds, location=location,
                         prefix=prefix, scope=ScopeFilter(scopes) if scopes else None, select=select)


class _MessageContent(ValueError):
    pass


def _query_or_fault(element: etree._Element | None, context: EventServiceContext, now: float) -> ResourceQuery:
    try:
        return parse_filter(element, context.kinds)
    except _DialectUnknown as exc:
        raise _fault(("InvalidArgVal", "TopicExpressionDialectUnknown"), str(exc), now,
                     f"{{{WSNT}}}TopicExpressionDialectUnknownFault") from None
    except _InvalidTopic as exc:
        raise _fault(("InvalidArgVal", "InvalidTopicExpression"), str(exc), now,
                     f"{{{WSNT}}}InvalidTopicExpressionFault") from None
    except _TopicNotSupported as exc:
        raise _fault(("InvalidArgVal", "TopicNotSupported"), str(exc), now,
                     f"{{{WSNT}}}TopicNotSupportedFault") from None
    except _MessageContent as exc:
        raise _fault(("InvalidArgVal", "InvalidMessageContentExpression"), str(exc), now,
                     f"{{{WSNT}}}InvalidMessageContentExpressionFault") from None
    except InvalidFilter as exc:
        raise _invalid_filter(str(exc), now) from None


def _time_text(element: etree._Element | None) -> str | None:
    """The text of an optional, nillable time element (``None`` when absent, nil or empty)."""
    if element is None or element.get("{http://www.w3.org/2001/XMLSchema-instance}nil") in ("true", "1"):
        return None
    text = (element.text or "").strip()
    return text or None


# --------------------------------------------------------------------------- answers


def _answer(ctx: Any, action: str, body: etree._Element, tail: bytes = b"") -> None:
    """Hand our own answer to :class:`_EventEndpoint` (Spyne's own output is discarded).

    ``tail``: serialised XML appended as the last content of ``body`` (see :func:`notification_xml`).
    """
    ctx.transport.req_env[_RAW_KEY] = (action, body, tail)


def _envelope(action: str, body: etree._Element, tail: bytes = b"") -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=_NSMAP)
    header = etree.SubElement(env, f"{{{SOAP_ENV}}}Header")
    etree.SubElement(header, f"{{{WSA}}}Action").text = action
    etree.SubElement(env, f"{{{SOAP_ENV}}}Body").append(body)
    if tail:
        etree.SubElement(body, "_tail_").text = "_"  # a placeholder whose text is replaced by ``tail``
    data = bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))
    return data.replace(b"<_tail_>_</_tail_>", tail, 1) if tail else data


def _xml_bool(value: bool) -> str:
    return "true" if value else "false"


def _xml_float(value: float) -> str:
    return repr(float(value))


_TOPIC = f"{{{WSNT}}}Topic"
_MESSAGE_HOLDER = f"{{{WSNT}}}Message"
_NOTIFICATION = f"{{{WSNT}}}NotificationMessage"
_TT_MESSAGE = f"{{{TT}}}Message"
_SOURCE = f"{{{TT}}}Source"
_DATA = f"{{{TT}}}Data"
_SIMPLE = f"{{{TT}}}SimpleItem"
_ELEMENT = f"{{{TT}}}ElementItem"
_GEO = f"{{{TT}}}GeoLocation"


def notification_element(parent: etree._Element, message: Notification) -> etree._Element:
    """EVT-6: append one ``wsnt:NotificationMessage`` for ``message`` to ``parent``.

    Data items in the order the ``tt:ItemList`` sequence demands: the simple
    items Name, Scope (one per scope), Offline, then the element item Location.
    """
    sub = etree.SubElement
    resource = message.resource
    holder = sub(parent, _NOTIFICATION)
    topic = sub(holder, _TOPIC, Dialect=DIALECT_ONVIF_CONCRETE_SET)
    topic.text = "tns1:Resource/" + resource.kind
    payload = sub(sub(holder, _MESSAGE_HOLDER), _TT_MESSAGE, UtcTime=format_datetime(message.utc_time),
                  PropertyOperation=message.operation)
    sub(sub(payload, _SOURCE), _SIMPLE, Name="Token", Value=resource.token)
    if message.operation == "Deleted":
        return holder
    data = sub(payload, _DATA)
    if resource.name is not None:
        sub(data, _SIMPLE, Name="Name", Value=resource.name)
    for scope in resource.scopes:
        sub(data, _SIMPLE, Name="Scope", Value=scope)
    if resource.offline is not None:
        sub(data, _SIMPLE, Name="Offline", Value=_xml_bool(resource.offline))
    location = resource.location
    if location is not None:
        geo = sub(sub(data, _ELEMENT, Name="Location"), _GEO, lon=_xml_float(location.lon),
                  lat=_xml_float(location.lat))
        if location.elevation is not None:
            geo.set("elevation", _xml_float(location.elevation))
    return holder


#: What an attribute value must not hold as is: markup, whitespace that attribute normalisation would
#: change, and the characters XML 1.0 does not allow (lone surrogates fail the UTF-8 encoding instead).
_ATTR_SPECIAL = re.compile('[&<>"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')
_ATTR_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;",
                 "\r": "&#13;"}
_OPEN_TOPIC = f'<wsnt:NotificationMessage><wsnt:Topic Dialect="{DIALECT_ONVIF_CONCRETE_SET}">tns1:Resource/'
_OPEN_MESSAGE = '</wsnt:Topic><wsnt:Message><tt:Message UtcTime="'
_OPEN_SOURCE = '"><tt:Source><tt:SimpleItem Name="Token" Value="'
_CLOSE = "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    escaped = _ATTR_ESCAPES.get(char)
    if escaped is None:
        raise ValueError(f"a resource value holds {char!r}, a character XML does not allow")
    return escaped


def _attr(value: str) -> str:
    """``value`` escaped for a double-quoted attribute, as lxml does (tab, LF, CR as references)."""
    return _ATTR_SPECIAL.sub(_escape, value)


def notification_xml(message: Notification, utc_time: str | None = None) -> str:
    """EVT-6: the same ``wsnt:NotificationMessage`` as :func:`notification_element`, written as text.

    The fast path of PullMessages (a large enumeration spends most of its time
    here): the text is meant for the inside of an element in whose scope the
    prefixes ``wsnt``, ``tt`` and ``tns1`` are bound, as in the envelopes of
    this service. ``utc_time`` is the formatted ``message.utc_time`` when the
    caller has it. Raises :class:`ValueError` when a value holds a character
    XML does not allow (as lxml would).
    """
    resource = message.resource
    token, name, scopes = resource.token, resource.name, resource.scopes
    # one search over all the values; almost always nothing needs escaping
    plain = _ATTR_SPECIAL.search("".join((token, name or "", *scopes))) is None
    parts = [_OPEN_TOPIC, resource.kind, _OPEN_MESSAGE, utc_time or format_datetime(message.utc_time),
             '" PropertyOperation="', message.operation, _OPEN_SOURCE, token if plain else _attr(token),
             '"/></tt:Source>']
    if message.operation == "Deleted":
        parts.append(_CLOSE)
        return "".join(parts)
    parts.append("<tt:Data>")
    if name is not None:
        parts += ('<tt:SimpleItem Name="Name" Value="', name if plain else _attr(name), '"/>')
    for scope in scopes:
        parts += ('<tt:SimpleItem Name="Scope" Value="', scope if plain else _attr(scope), '"/>')
    if resource.offline is not None:
        parts.append(f'<tt:SimpleItem Name="Offline" Value="{_xml_bool(resource.offline)}"/>')
    location = resource.location
    if location is not None:
        # GeoLocation holds floats (it converts ints), so repr() is what _xml_float gives
        parts += ('<tt:ElementItem Name="Location"><tt:GeoLocation lon="', repr(location.lon),
                  '" lat="', repr(location.lat))
        if location.elevation is not None:
            parts += ('" elevation="', repr(location.elevation))
        parts.append('"/></tt:ElementItem>')
    parts += ("</tt:Data>", _CLOSE)
    return "".join(parts)


def notifications_xml(messages: Iterable[Notification]) -> bytes:
    """The ``wsnt:NotificationMessage`` elements of a PullMessagesResponse in UTF-8 (:func:`notification_xml`)."""
    times: dict[float, str] = {}
    parts = []
    for message in messages:
        when = times.get(message.utc_time)
        if when is None:
            when = times[message.utc_time] = format_datetime(message.utc_time)
        parts.append(notification_xml(message, when))
    return "".join(parts).encode("utf-8")


def _event_properties(kinds: Iterable[str]) -> etree._Element:
    sub = etree.SubElement
    response = etree.Element(f"{{{TEV}}}GetEventPropertiesResponse")
    sub(response, f"{{{TEV}}}TopicNamespaceLocation").text = "http://www.onvif.org/onvif/ver10/topics/topicns.xml"
    sub(response, f"{{{WSNT}}}FixedTopicSet").text = "true"
    root = sub(sub(response, f"{{{WSTOP}}}TopicSet"), f"{{{TNS1}}}Resource")
    for kind in kinds:
        topic = sub(root, f"{{{TNS1}}}{kind}", {f"{{{WSTOP}}}topic": "true"})
        description = sub(topic, f"{{{TT}}}MessageDescription", IsProperty="true")
        sub(sub(description, f"{{{TT}}}Source"), f"{{{TT}}}SimpleItemDescription", Name="Token",
            Type="tt:ReferenceToken")
        data = sub(description, f"{{{TT}}}Data")
        for name, type_ in (("Name", "xs:string"), ("Scope", "xs:string"), ("Offline", "xs:boolean")):
            sub(data, f"{{{TT}}}SimpleItemDescription", Name=name, Type=type_)
        sub(data, f"{{{TT}}}ElementItemDescription", Name="Location", Type="tt:GeoLocation")
    for dialect in (DIALECT_ONVIF_CONCRETE_SET, DIALECT_WSN_CONCRETE_SET, DIALECT_WSN_CONCRETE):
        sub(response, f"{{{WSNT}}}TopicExpressionDialect").text = dialect
    sub(response, f"{{{TEV}}}MessageContentFilterDialect").text = ""
    sub(response, f"{{{TEV}}}MessageContentSchemaLocation").text = "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
    return response


# --------------------------------------------------------------------------- addresses


def capabilities_element(context: EventServiceContext) -> etree._Element:
    """``tev:Capabilities`` of this event service (GetServiceCapabilities, and GetServices' IncludeCapability)."""
    return etree.Element(f"{{{TEV}}}Capabilities", WSSubscriptionPolicySupport="false",
                         WSPausableSubscriptionManagerInterfaceSupport="false", MaxNotificationProducers="0",
                         MaxPullPoints=str(context.manager.max_pull_points),
                         PersistentNotificationStorage="false")


def _subscription_id(ctx: Any) -> str:
    path = ctx.transport.req_env.get("PATH_INFO") or ""
    return path[len(SUBSCRIPTION_PATH):] if path.startswith(SUBSCRIPTION_PATH) else ""


# --------------------------------------------------------------------------- services


def _request(ctx: Any) -> etree._Element:
    return ctx.in_body_doc


class EventService(SoapService):
    """The operations of ``tev:EventPortType`` we serve."""

    __service_name__ = "EventService"
    __port_types__: ClassVar[list[str]] = ["EventPortType"]

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def GetServiceCapabilities(ctx: Any) -> None:
        response = etree.Element(f"{{{TEV}}}GetServiceCapabilitiesResponse")
        response.append(capabilities_element(service_context(ctx)))
        _answer(ctx, _EVENT_ACTION + "GetServiceCapabilitiesResponse", response)

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def GetEventProperties(ctx: Any) -> None:
        context: EventServiceContext = service_context(ctx)
        _answer(ctx, _EVENT_ACTION + "GetEventPropertiesResponse", _event_properties(context.kinds))

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def CreatePullPointSubscription(ctx: Any) -> None:
        context: EventServiceContext = service_context(ctx)
        request = _request(ctx)
        now = context.clock()
        query = _query_or_fault(request.find(f"{{{TEV}}}Filter"), context, now)
        text = _time_text(request.find(f"{{{TEV}}}InitialTerminationTime"))
        try:
            termination = None if text is None else parse_termination(text, now)
            sub = context.manager.create(query, now, termination)
        except InvalidTime as exc:
            raise _fault(("InvalidArgVal", "UnacceptableInitialTerminationTime"), str(exc), now, None) from None
        except UnacceptableTermination as exc:
            raise _unacceptable(exc, now, initial=True) from None
        except TooManySubscriptions as exc:
            raise _fault(("Action", "TooManySubscriptions"), str(exc), now,
                         f"{{{WSNT}}}SubscribeCreationFailedFault", code="Receiver") from None
        response = etree.Element(f"{{{TEV}}}CreatePullPointSubscriptionResponse")
        reference = etree.SubElement(response, f"{{{TEV}}}SubscriptionReference")
        address = request_base_url(ctx.transport.req_env) + SUBSCRIPTION_PATH + sub.id
        etree.SubElement(reference, f"{{{WSA}}}Address").text = address
        etree.SubElement(response, f"{{{WSNT}}}CurrentTime").text = format_datetime(now)
        etree.SubElement(response, f"{{{WSNT}}}TerminationTime").text = format_datetime(sub.termination)
        _answer(ctx, _EVENT_ACTION + "CreatePullPointSubscriptionResponse", response)


def _pull_fault(subcode: str, reason: str, context: EventServiceContext) -> EventFault:
    detail = etree.Element(f"{{{TEV}}}PullMessagesFaultResponse", nsmap={"tev": TEV})
    etree.SubElement(detail, f"{{{TEV}}}MaxTimeout").text = format_duration(context.max_timeout)
    etree.SubElement(detail, f"{{{TEV}}}MaxMessageLimit").text = str(context.max_message_limit)
    return EventFault(code="Sender", subcodes=("InvalidArgVal", subcode), reason=reason, detail_element=detail,
                      action=_PULL_FAULT_ACTION)


class PullPointService(SoapService):
    """The ``tev`` operations of ``tev:PullPointSubscription`` (served at each subscription's address)."""

    __service_name__ = "PullPointSubscription"
    __port_types__: ClassVar[list[str]] = ["PullPointSubscription"]

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def PullMessages(ctx: Any) -> None:
        context: EventServiceContext = service_context(ctx)
        request = _request(ctx)
        timeout_text = (request.findtext(f"{{{TEV}}}Timeout") or "").strip()
        limit = int((request.findtext(f"{{{TEV}}}MessageLimit") or "0").strip())
        try:
            timeout = parse_duration(timeout_text)
        except InvalidTime as exc:
            raise _pull_fault("Timeout", str(exc), context) from None
        if timeout < 0 or timeout > context.max_timeout:
            raise _pull_fault("Timeout", f"Timeout {timeout_text} is outside 0 .. "
                              f"{format_duration(context.max_timeout)} (MaxTimeout)", context)
        if limit < 1:
            raise _pull_fault("MessageLimit", f"MessageLimit {limit} is below 1", context)
        limit = min(limit, context.max_message_limit)
        sub_id = _subscription_id(ctx)
        manager, waiter, clock = context.manager, context.waiter, context.clock
        now = clock()
        deadline = now + timeout
        try:
            sub = manager.get(sub_id, now)
            sub.pull_number += 1
            mine = sub.pull_number
            waiter.notify()  # an older pull of this subscription still waiting answers now
            while True:
                generation = waiter.generation
                now = clock()
                result = manager.pull(sub_id, limit, now, keep_alive=timeout)
                remaining = deadline - now
                if result.messages or remaining <= 0 or sub.pull_number != mine or context.closed:
                    break
                waiter.wait(generation, remaining)
        except UnknownSubscription as exc:
            raise _unknown_subscription(exc, clock()) from None
        response = etree.Element(f"{{{TEV}}}PullMessagesResponse")
        etree.SubElement(response, f"{{{TEV}}}CurrentTime").text = format_datetime(now)
        etree.SubElement(response, f"{{{TEV}}}TerminationTime").text = format_datetime(result.termination)
        _answer(ctx, _PULL_ACTION + "PullMessagesResponse", response, notifications_xml(result.messages))

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def SetSynchronizationPoint(ctx: Any) -> None:
        context: EventServiceContext = service_context(ctx)
        now = context.clock()
        try:
            context.manager.synchronize(_subscription_id(ctx), now)
        except UnknownSubscription as exc:
            raise _unknown_subscription(exc, now) from None
        context.waiter.notify()
        _answer(ctx, _PULL_ACTION + "SetSynchronizationPointResponse",
                etree.Element(f"{{{TEV}}}SetSynchronizationPointResponse"))


class SubscriptionManagerService(SoapService):
    """``wsnt:Renew`` and ``wsnt:Unsubscribe`` at each subscription's address (EVT-4)."""

    __service_name__ = "SubscriptionManager"
    __port_types__: ClassVar[list[str]] = ["SubscriptionManager"]

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def Renew(ctx: Any) -> None:
        context: EventServiceContext = service_context(ctx)
        now = context.clock()
        text = _time_text(_request(ctx).find(f"{{{WSNT}}}TerminationTime"))
        try:
            termination = None if text is None else parse_termination(text, now)
            ends = context.manager.renew(_subscription_id(ctx), termination, now)
        except UnknownSubscription as exc:
            raise _unknown_subscription(exc, now) from None
        except InvalidTime as exc:
            raise _fault(("InvalidArgVal", "UnacceptableTerminationTime"), str(exc), now, None) from None
        except UnacceptableTermination as exc:
            raise _unacceptable(exc, now, initial=False) from None
        response = etree.Element(f"{{{WSNT}}}RenewResponse")
        etree.SubElement(response, f"{{{WSNT}}}TerminationTime").text = format_datetime(ends)
        etree.SubElement(response, f"{{{WSNT}}}CurrentTime").text = format_datetime(now)
        _answer(ctx, _MANAGER_ACTION + "RenewResponse", response)

    @rpc(_returns=None, _body_style="bare")  # type: ignore[misc]
    def Unsubscribe(ctx: Any) -> None:
        context: EventServiceContext = service_context(ctx)
        now = context.clock()
        try:
            context.manager.unsubscribe(_subscription_id(ctx), now)
        except UnknownSubscription as exc:
            raise _unknown_subscription(exc, now) from None
        context.waiter.notify()
        _answer(ctx, _MANAGER_ACTION + "UnsubscribeResponse", etree.Element(f"{{{WSNT}}}UnsubscribeResponse"))


# --------------------------------------------------------------------------- endpoints

StartResponse = Callable[..., Any]


class _EventEndpoint(SoapEndpoint):
    """A :class:`SoapEndpoint` whose answers are the lxml elements the methods hand over."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        body = b"".join(super().__call__(environ, capture))
        raw = environ.pop(_RAW_KEY, None)
        if raw is not None and captured["status"].startswith("200"):
            data = _envelope(*raw)
            start_response("200 OK", [("Content-Type", SOAP12_CONTENT_TYPE), ("Content-Length", str(len(data)))])
            return [data]
        start_response(captured["status"], captured["headers"])
        return [body]


class _ByNamespace:
    """Hands a request to the endpoint serving the namespace of its operation (tev or wsnt)."""

    def __init__(self, endpoints: dict[str, SoapEndpoint], default: str) -> None:
        self.endpoints = endpoints
        self.default = default

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = environ.get(ENVIRON_REQUEST)
        namespace = request.operation_name[0] if isinstance(request, SoapRequest) else self.default
        return self.endpoints.get(namespace, self.endpoints[self.default])(environ, start_response)


def event_endpoints(context: EventServiceContext) -> tuple[SoapEndpoint, Any]:
    """The WSGI apps of the event service and of the subscription addresses (no access control: see :mod:`.app`)."""
    events = _EventEndpoint([EventService], TEV, xsd="events", context=context, name="EventService")
    pull = _EventEndpoint([PullPointService], TEV, xsd="events", context=context, name="PullPointSubscription")
    manager = _EventEndpoint([SubscriptionManagerService], WSNT, xsd="events", context=context,
                             name="SubscriptionManager")
    return events, _ByNamespace({TEV: pull, WSNT: manager}, TEV)

