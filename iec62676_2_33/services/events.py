"""Layer 5: the ONVIF event service — resource queries and generic events (clause 7).

Implements RQ-1 (resource topics signalled by GetEventProperties), RQ-5
(subscribe, then pull), RQ-6 … RQ-9 and RQ-12 (the four resource filters, in
``tt`` or by local name in any namespace), EVT-1 … EVT-10, RQ-11 (base
notification besides pull points), and the server side of RQ-10 (an empty PullMessages at its Timeout is the heartbeat).

Two WSGI apps, both :class:`~..soap.dispatch.QNameDispatcher`: the request
arrives parsed once and authorised (access control hands over the one tree),
is validated against the authored ``xsd/events.xsd``, and the QName of its
operation picks a handler from a table (``{tev}…`` and ``{wsnt}…`` side by
side); the handler reads the tree and returns its answer element, which the
dispatcher puts in the envelope:

* the **event service** at ``/onvif/event_service``: GetServiceCapabilities,
  GetEventProperties, CreatePullPointSubscription, WS-BaseNotification
  ``wsnt:Subscribe`` (EVT-10) — and the subscription operations below when
  their ``wsa:To`` names a subscription (see *WS-Addressing*);
* every **subscription** at an address of its own,
  ``/onvif/event_service/subscription/<id>``: PullMessages,
  SetSynchronizationPoint (``tev``), Renew, Unsubscribe (``wsnt``).

An operation not in an address's table is ``Receiver/ActionNotSupported``.
The payloads are read and written with lxml (``xs:any`` filter content and
notification messages are free-form XML). The notification messages of
PullMessages are written as text by :func:`notification_xml` (escaped like
lxml, the same infoset as :func:`notification_element`; a test compares the
two) and handed to the dispatcher as the answer's *tail*, spliced into the
envelope: that is the fast path the enumeration benchmark measures (lxml
elements cost about three times as much per message). Every answer validates
against the authored XSD (the tests check it) and carries the ONVIF
``wsa:Action``; every notification names this event service (as the client
reaches it) in ``wsnt:ProducerReference`` (EVT-9).

Faults (each a SOAP 1.2 fault with the full ``ter`` subcode chain plus the
WS-BaseNotification / WS-Resource fault element in ``env:Detail``, so both
ONVIF-style and WS-N-style clients recognise them):

==============================================  ==================================================
situation                                       Code / Subcode / Subcode (Detail)
==============================================  ==================================================
unknown, unsubscribed or expired subscription   Sender/InvalidArgVal/ResourceUnknown (wsrf-r:ResourceUnknownFault)
subscription operation at the event service     Sender/InvalidArgVal/ResourceUnknown (wsrf-r:ResourceUnknownFault)
without a ``wsa:To`` naming a subscription
MaxPullPoints reached                           Receiver/Action/TooManySubscriptions (wsnt:SubscribeCreationFailedFault)
termination time not in the future              Sender/InvalidArgVal/UnacceptableInitialTerminationTime
                                                (Renew: .../UnacceptableTerminationTime), with MinimumTime/MaximumTime
unknown TopicExpression Dialect                 Sender/InvalidArgVal/TopicExpressionDialectUnknown
malformed topic expression, unbound prefix      Sender/InvalidArgVal/InvalidTopicExpression
topic neither ``tns1:Resource/<kind>`` nor a    Sender/InvalidArgVal/TopicNotSupported
declared generic topic
MessageContent outside the ItemFilter subset    Sender/InvalidArgVal/InvalidMessageContentExpression
or in another dialect
malformed or unknown resource filter            Sender/InvalidArgVal/InvalidFilter (wsnt:InvalidFilterFault)
PullMessages Timeout above MaxTimeout           Sender/InvalidArgVal/Timeout (tev:PullMessagesFaultResponse
                                                with MaxTimeout and MaxMessageLimit)
PullMessages Timeout < 0                        Sender/InvalidArgVal/Timeout
PullMessages MessageLimit < 1                   Sender/InvalidArgVal/MessageLimit
PullMessages while another one waits on the     Receiver/Action/UnableToGetMessages
same subscription (EVT-7)                       (wsnt:UnableToGetMessagesFault)
``wsa:Action`` naming another operation         Sender/InvalidArgVal/ActionMismatch
than the Body
Subscribe: ConsumerReference not http(s)        Sender/InvalidArgVal/SubscribeCreationFailed
                                                (wsnt:SubscribeCreationFailedFault)
PullMessages on a push subscription             Receiver/ActionNotSupported
==============================================  ==================================================

Checked against ONVIF Core's event chapter: the Detail elements are the
faults its operation tables name (ResourceUnknownFault for Renew and
Unsubscribe, UnacceptableTerminationTimeFault, the WS-BaseNotification
Subscribe faults for CreatePullPointSubscription; PullMessagesFaultResponse
*only* for a Timeout above the device's limit, UnableToGetMessagesFault for a
concurrent pull), and every fault carries ``wsa:Action``
``http://www.w3.org/2005/08/addressing/soap/fault`` (clause "SOAP Fault
Messages"). That clause also says the fault *should* be ``env:Receiver``; a
malformed or unknown argument stays ``env:Sender`` (SOAP 1.2: the sender must
change the message), which is what the ``ter`` generic faults prescribe and
what deployed clients check.

A syntactically invalid duration or date is refused earlier by the XSD check
(``Sender/InvalidArgs``, the validator's message names the element). A
MessageLimit above the maximum is not a fault: the answer holds at most the
maximum (ONVIF Core).

Waiting (EVT-3, EVT-7). A PullMessages with nothing to send waits in its
worker thread on a :class:`PullWaiter` (a ``threading.Condition`` with a
generation number) until news arrives or its Timeout (at most
``max_timeout``, 60 s by default: ONVIF asks for at least one minute)
passes; it never answers empty before then (unless the server stops). The
runtime follows the registry's change log in one background task
(:meth:`EventServiceContext.poll_changes`, every 0.2 s, also for changes
made by another process) and wakes the waiters; SetSynchronizationPoint,
Unsubscribe and :meth:`EventServiceContext.publish` wake them directly. One
PullMessages runs per subscription at a time (EVT-7): a second one that
arrives while the first waits is refused with the fault above, and the first
keeps waiting — so a client that pulls in a loop never spins on early empty
answers. (A client that abandoned a waiting pull is refused until that pull's
Timeout passes.) A waiting pull occupies a worker thread for up to
``max_timeout``; MaxPullPoints (default 32) bounds how many can wait at once,
so size the server's thread pool above it.

Topic expressions: the prefixes are resolved with the namespaces in scope of
the ``TopicExpression`` element; the conventional prefix ``tns1`` is also
accepted when the client left it unbound (zeep-based ONVIF clients send
``tns1:…`` without declaring it, and cameras accept that). Any other unbound
prefix is an ``InvalidTopicExpression`` fault.

Generic events (EVT-5, EVT-6, EVT-9). Besides ``tns1:Resource/<kind>`` the
service carries the topics declared with :meth:`EventServiceContext.declare`
(the device declares ``tns1:Monitoring/Uplink/Status``,
:class:`UplinkStatusEvents`), and every service carries
``tns1:Monitoring/Resource/Offline``: :meth:`EventServiceContext.poll_changes`
reads the registry's change log and publishes each resource whose Offline
state flips (:class:`~..domain.generic_events.OfflineFlips`), so a client can
watch resources go offline with a topic and a MessageContent filter instead of
a resource query; :meth:`EventServiceContext.publish` queues an
event for every pull point whose topic and MessageContent filters take it
(each pull point keeps at most ``MAX_QUEUED_EVENTS``; see
:mod:`..domain.subscriptions`). GetEventProperties describes every declared
topic. A pull point created without a TopicExpression is a resource query
(RQ-5: every matching resource, then the changes, paged by MessageLimit) and
gets no generic events; it names generic topics to receive them (e.g.
``tns1:Monitoring//.``). On a property topic the service keeps each source's
current state; a new pull point and SetSynchronizationPoint get it as
``Initialized``.

Filters (EVT-2, EVT-9, RQ-9). MessageContent in the ItemFilter dialect and
Select paths are read by :mod:`..domain.event_filters`, a bounded parser of
the XPath subset the message layout makes meaningful; client text never
reaches an XPath engine. ``tev:ChangedOnly`` in the SubscriptionPolicy (an
element or an attribute, ``true``) suppresses ``Initialized`` and
``Deleted``, so ``WSSubscriptionPolicySupport`` is announced.

Base notification (EVT-10, RQ-11). ``wsnt:Subscribe`` creates a subscription
like a pull point (same filters, termination, Renew and Unsubscribe at its
own address; at most ``max_push`` of them, announced as
MaxNotificationProducers) that *pushes*: :class:`PushDelivery` takes its
messages in batches and POSTs them as ``wsnt:Notify`` to the
ConsumerReference address (http or https; the runtime drives it, see
``runtime/device.py``), retrying a failed batch after 1 s and 2 s and ending
the subscription when the third try fails too. Each POST has one deadline
for the whole exchange (a consumer that answers a byte at a time is cut off
then), so a consumer holds a worker thread for a bounded time; an address no
connection can ever be made to (a port above 65535) is refused at Subscribe,
one whose host name cannot be encoded fails like an unreachable one. The ConsumerReference is
client-chosen: the device will POST to any http(s) address a READ_MEDIA user
names, as WS-BaseNotification implies.

WS-Addressing. The operation is the Body's (one message, one parse); a
``wsa:Action`` that names another operation is refused, the WSDL's input
action and the bare operation name are accepted. PullMessages, Renew,
Unsubscribe and SetSynchronizationPoint sent to the event service's address
run on the subscription their ``wsa:To`` names (read from the parsed
request's header). Answers and faults carry ``wsa:RelatesTo`` when the
request had a ``wsa:MessageID``.

Subscription addresses honour ``X-Forwarded-Proto``, ``-Host`` and
``-Prefix`` (the cloud's HTTP proxy sets them), so a client that subscribed
through the proxy pulls through it too.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from .. import bounded_http
from ..domain.event_filters import DIALECT_ITEM_FILTER, InvalidExpression, MessageContentFilter, combine_all
from ..domain.filters import (
    InvalidFilter,
    LocationFilter,
    PrefixFilter,
    ResourceQuery,
    ScopeFilter,
    SelectFilter,
)
from ..domain.generic_events import (
    RESOURCE_OFFLINE,
    UPLINK_STATUS,
    GenericEvent,
    InvalidEvent,
    OfflineFlips,
    TopicDescription,
)
from ..domain.registry import ChangesPruned, ResourceRegistry
from ..domain.resources import RESOURCE_KINDS, PropertyOperation
from ..domain.subscriptions import (
    InvalidTime,
    Notification,
    Subscription,
    SubscriptionManager,
    TooManySubscriptions,
    UnacceptableTermination,
    UnknownSubscription,
    format_datetime,
    format_duration,
    parse_duration,
    parse_termination,
)
from ..errors import TransportError
from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TEV, TNS1, TT, WSA, WSNT, WSTOP
from ..security.access import AccessClass
from ..security.middleware import ENVIRON_REQUEST
from ..soap.answer_xml import xs_boolean
from ..soap.dispatch import Answer, QNameDispatcher, write_envelope, wsa_header
from ..soap.envelope import SoapRequest, excerpt
from ..soap.fault import SoapFault
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
    "EventFilter",
    "EventServiceContext",
    "PullWaiter",
    "PushDelivery",
    "TopicSelection",
    "UplinkStatusEvents",
    "capabilities_element",
    "event_endpoints",
    "generic_notification_xml",
    "notification_element",
    "notification_xml",
    "notifications_xml",
    "notify_envelope",
    "parse_filter",
    "parse_topic_expression",
    "producer_xml",
]

log = logging.getLogger(__name__)

#: Newest resource change-log entries kept whatever the readers' positions (a late reader's margin).
CHANGE_LOG_KEEP = 10_000
#: Most resource change-log entries kept for the slowest subscription: one that is renewed and never pulled
#: would otherwise hold the log, which then grows with every registry change; past it, it re-enumerates.
CHANGE_LOG_MAX = 100_000
#: Seconds between two prunings of the change log (each is one DELETE on an indexed range).
PRUNE_INTERVAL = 60.0

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
    (WSNT, "Subscribe"): AccessClass.READ_MEDIA,
}

_EVENT_ACTION = "http://www.onvif.org/ver10/events/wsdl/EventPortType/"
_PULL_ACTION = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/"
_MANAGER_ACTION = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/"
_PRODUCER_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/"
_NOTIFY_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"
#: ONVIF Core, Event handling, "SOAP Fault Messages": every fault of the event service carries this wsa:Action.
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"

_NSMAP = {"env": SOAP_ENV, "wsa": WSA, "tev": TEV, "wsnt": WSNT, "tt": TT, "tns1": TNS1, "wstop": WSTOP,
          "xs": XS}


#: Offline flips read per poll: at most this many batches of this many changes.
_OFFLINE_BATCHES, _OFFLINE_BATCH = 20, 1000

# --------------------------------------------------------------------------- faults


@dataclass(kw_only=True, eq=False)
class EventFault(SoapFault):
    """A :class:`SoapFault` that also carries a WS-N / WS-RF fault element in ``env:Detail``."""

    detail_element: Any = None

    def to_element(self) -> etree._Element:
        fault = super().to_element()
        if self.detail_element is not None:
            detail = etree.SubElement(fault, f"{{{SOAP_ENV}}}Detail")
            detail.append(self.detail_element)
        return fault


def _base_fault(tag: str, reason: str, now: float) -> etree._Element:
    element = etree.Element(tag, nsmap={"wsnt": WSNT, "wsrf-bf": WSRF_BF, "wsrf-r": WSRF_R})
    etree.SubElement(element, f"{{{WSRF_BF}}}Timestamp").text = format_datetime(now)
    description = etree.SubElement(element, f"{{{WSRF_BF}}}Description")
    description.text = reason
    return element


def _fault(subcodes: tuple[str, ...], reason: str, now: float, detail_tag: str | None, *,
           code: str = "Sender") -> EventFault:
    fault = EventFault(code=code, subcodes=subcodes, reason=reason)
    if detail_tag:  # the Description repeats the reason as the fault cut it (it may quote the client's input)
        fault.detail_element = _base_fault(detail_tag, fault.reason, now)
    return fault


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
    """What the event service works with: the registry, the subscriptions, the generic topics and the limits."""

    registry: ResourceRegistry
    manager: SubscriptionManager
    clock: Callable[[], float] = time.time
    max_timeout: float = 60.0
    max_message_limit: int = 1000
    kinds: tuple[str, ...] = RESOURCE_KINDS
    waiter: PullWaiter = field(default_factory=PullWaiter)
    closed: bool = False
    _seen_seq: int = -1
    #: generic topics served (path below tns1 -> description), in declaration order
    topics: dict[str, TopicDescription] = field(default_factory=dict)
    #: current state of each source of a property topic: (path, source items) -> last event
    _states: dict[tuple[str, tuple[tuple[str, str], ...]], GenericEvent] = field(default_factory=dict)
    _states_lock: threading.Lock = field(default_factory=threading.Lock)
    #: EVT-10: the delivery of base-notification subscriptions (driven by the runtime)
    push: PushDelivery = field(init=False)
    #: tns1:Monitoring/Resource/Offline: where the change log was last read, and the states seen
    _offline_seq: int = field(init=False)
    _offline: OfflineFlips = field(default_factory=OfflineFlips)
    #: When the change log was last pruned (:meth:`_prune`), and up to which entry.
    _pruned_at: float = -math.inf
    _pruned_seq: int = 0

    def __post_init__(self) -> None:
        self.push = PushDelivery(self)
        self.declare(RESOURCE_OFFLINE)
        self._offline_seq = self.registry.last_seq()

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
        self._publish_offline_flips()
        self.waiter.notify()
        self._prune()
        return True

    def _prune(self) -> None:
        """Keep the resource change log bounded: at most every :data:`PRUNE_INTERVAL` seconds, drop the
        entries every reader here has passed (each subscription's position, the Offline topic's), keeping
        the newest :data:`CHANGE_LOG_KEEP` for late readers, and never more than :data:`CHANGE_LOG_MAX` for a
        subscription that stopped pulling. This device's event service is the log's only reader; a subscription
        that fell behind re-enumerates (ChangesPruned)."""
        now = self.clock()
        if now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        positions = [sub.position for sub in self.manager.live(now)]
        last = self.registry.last_seq()
        up_to = min(self._offline_seq, max(min([*positions, last - CHANGE_LOG_KEEP]), last - CHANGE_LOG_MAX))
        if up_to > self._pruned_seq:
            dropped = self.registry.prune_changes(up_to)
            self._pruned_seq = up_to
            log.debug("resource change log pruned up to #%d (%d entries)", up_to, dropped)

    def _publish_offline_flips(self) -> None:
        """Publish ``tns1:Monitoring/Resource/Offline`` for the flips logged since the last look (bounded work
        per call: the rest waits for the next poll)."""
        for _ in range(_OFFLINE_BATCHES):
            try:
                changes = self.registry.changes_since(self._offline_seq, _OFFLINE_BATCH)
            except ChangesPruned:
                log.warning("the resource change log was pruned past this event service; Offline flips up to "
                            "#%d are not published", self.registry.last_seq())
                self._offline_seq = self.registry.last_seq()
                return
            if not changes:
                return
            self._offline_seq = changes[-1].seq
            for change in changes:
                offline = self._offline.feed(change)
                if offline is not None:
                    resource = change.resource
                    self.publish(RESOURCE_OFFLINE, {"Token": resource.token, "Kind": resource.kind},
                                 {"Offline": xs_boolean(offline)})

    def follow_changes(self, stop: threading.Event, interval: float = 0.2) -> None:
        """A blocking loop around :meth:`poll_changes` for a thread (tests, WSGI-only hosting)."""
        while not stop.wait(interval):
            try:
                self.poll_changes()
            except Exception:
                log.exception("following the resource change log failed")

    # -- generic events (EVT-5, EVT-6, EVT-9)

    def declare(self, topic: TopicDescription) -> None:
        """Serve ``topic``: GetEventProperties describes it, subscriptions may select it."""
        self.topics[topic.path] = topic

    def topic_paths(self) -> tuple[str, ...]:
        return tuple(self.topics)

    def publish(self, topic: TopicDescription | str, source_items: Mapping[str, str] | Iterable[tuple[str, str]],
                data_items: Mapping[str, str] | Iterable[tuple[str, str]],
                property_operation: PropertyOperation | None = None) -> int:
        """Deliver one event on a declared topic to every subscription whose filters take it.

        On a property topic the operation defaults to ``Initialized`` for a source not seen before and
        ``Changed`` after; the state is kept so that new subscribers and SetSynchronizationPoint get it
        (``Deleted`` forgets it). Thread-safe; returns how many subscriptions queued the event.
        """
        path = topic if isinstance(topic, str) else topic.path
        described = self.topics.get(path)
        if described is None:
            raise InvalidEvent(f"topic tns1:{path} is not declared; call declare() with its description first")
        now = self.clock()
        event = GenericEvent.of(described, now, source_items, data_items, property_operation)
        if described.is_property:
            key = (path, event.source)
            with self._states_lock:
                known = key in self._states
                if event.operation is None:
                    event = replace(event, operation="Changed" if known else "Initialized")
                if event.operation == "Deleted":
                    self._states.pop(key, None)
                else:
                    self._states[key] = event
        queued = sum(sub.offer(event) for sub in self.manager.live(now))
        if queued:
            self.waiter.notify()
        return queued

    def offer_states(self, sub: Subscription) -> None:
        """Give ``sub`` the current state of every property source as ``Initialized`` (new subscription, EVT-4)."""
        with self._states_lock:
            states = list(self._states.values())
        for state in states:
            sub.offer(replace(state, operation="Initialized"))


class UplinkStatusEvents:
    """Publishes ``tns1:Monitoring/Uplink/Status`` (a property per RemoteAddress) when a Status changes.

    The runtime calls :meth:`update` with every configured uplink's (Status, Error) whenever it looks;
    only differences become events: a new uplink ``Initialized``, a change ``Changed``, a removed
    one ``Deleted``.
    """

    def __init__(self, context: EventServiceContext) -> None:
        self.context = context
        self._seen: dict[str, tuple[str, str | None]] = {}
        context.declare(UPLINK_STATUS)

    def update(self, statuses: Mapping[str, tuple[str, str | None]]) -> None:
        for address, state in statuses.items():
            previous = self._seen.get(address)
            if previous == state:
                continue
            self._seen[address] = state
            status, error = state
            data = {"Status": status} if error is None else {"Status": status, "Error": error}
            self.context.publish(UPLINK_STATUS, {"RemoteAddress": address}, data,
                                 "Initialized" if previous is None else "Changed")
        for address in [a for a in self._seen if a not in statuses]:
            status, _error = self._seen.pop(address)
            self.context.publish(UPLINK_STATUS, {"RemoteAddress": address}, {"Status": status}, "Deleted")


# --------------------------------------------------------------------------- request parsing


def _local(element: etree._Element) -> str:
    return str(etree.QName(element).localname)


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


@dataclass(frozen=True)
class TopicSelection:
    """What topic expressions select: resource kinds (``None`` = every kind) and generic topics.

    ``topics`` holds paths below ``tns1`` (``Monitoring/Uplink/Status``) or subtrees (``Monitoring//.``);
    ``None`` = every generic topic.
    """

    kinds: frozenset[str] | None
    topics: frozenset[str] | None

    def __and__(self, other: TopicSelection) -> TopicSelection:
        """Several TopicExpression elements: an event must satisfy each (WS-BaseNotification)."""
        def meet(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
            return b if a is None else a if b is None else a & b
        return TopicSelection(meet(self.kinds, other.kinds), meet(self.topics, other.topics))


def parse_topic_expression(text: str, dialect: str, nsmap: dict[str | None, str],
                           kinds: Iterable[str] = RESOURCE_KINDS, generic: Iterable[str] = ()) -> TopicSelection:
    """EVT-2, RQ-1: the resource kinds and the generic topics (paths in ``generic``) an expression names.

    Raises :class:`ValueError` subclasses turned into faults by the caller:
    ``_DialectUnknown``, ``_InvalidTopic``, ``_TopicNotSupported``.
    """
    if dialect not in TOPIC_DIALECTS:
        raise _DialectUnknown(f"topic expression dialect {dialect!r} is not supported; use one of "
                              + ", ".join(TOPIC_DIALECTS))
    known = frozenset(kinds)
    declared = tuple(generic)
    alternatives = text.split("|") if dialect in _SET_DIALECTS else [text]
    every_kind = False
    chosen_kinds: set[str] = set()
    chosen_topics: set[str] = set()
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
        if dialect == DIALECT_WSN_SIMPLE and len(names) > 1:
            raise _InvalidTopic(f"the Simple dialect names root topics only, not {raw.strip()!r}")
        if names[0] == "Resource":
            if len(names) == 1:
                every_kind = True
                continue
            if len(names) > 2 or names[1] not in known:
                raise _TopicNotSupported(f"topic {raw.strip()!r} is not supported; kinds: {', '.join(sorted(known))}")
            chosen_kinds.add(names[1])
            continue
        path = "/".join(names)
        if not any(t == path or ((subtree or dialect == DIALECT_WSN_SIMPLE) and t.startswith(path + "/"))
                   for t in declared):
            raise _TopicNotSupported(f"topic {raw.strip()!r} is not supported; this service serves "
                                     "tns1:Resource/<kind> and " + (", ".join(f"tns1:{t}" for t in declared)
                                                                    or "no other topics"))
        chosen_topics.add(path + "//." if subtree or dialect == DIALECT_WSN_SIMPLE else path)
    return TopicSelection(None if every_kind else frozenset(chosen_kinds), frozenset(chosen_topics))


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


@dataclass(frozen=True)
class EventFilter:
    """A parsed ``wsnt:Filter``: the resource query (with its MessageContent filter) and the generic topics."""

    query: ResourceQuery
    topics: frozenset[str] | None


def parse_filter(element: etree._Element | None, kinds: Iterable[str] = RESOURCE_KINDS,
                 generic: Iterable[str] = ()) -> EventFilter:
    """EVT-2, EVT-9, RQ-6 … RQ-9, RQ-12: a ``wsnt:Filter`` → :class:`EventFilter`.

    Filter elements are recognised by local name in any namespace (``tt`` in
    our schema): ``LocationFilter``, ``PrefixFilter``, ``ScopeFilter``,
    ``SelectFilter`` (also without the ``Filter`` suffix). Several topic
    expressions are combined with AND (WS-BaseNotification), several scope
    filters and several MessageContent filters too. ``generic``: the paths of
    the generic topics served. Raises :class:`InvalidFilter`,
    ``_MessageContent`` or the topic errors.
    """
    known = tuple(kinds)
    if element is None:
        return EventFilter(ResourceQuery(kinds=frozenset(known)), _NO_GENERIC)
    selection = TopicSelection(None, None)
    location = prefix = select = None
    scopes: list[tuple[str, str | None]] = []
    contents: list[MessageContentFilter] = []
    for child in _children(element):
        name = _local(child)
        if name == "TopicExpression":
            dialect = (child.get("Dialect") or "").strip()
            selection &= parse_topic_expression(child.text or "", dialect, dict(child.nsmap), known, generic)
        elif name == "MessageContent":
            contents.append(_message_content(child))
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
            raise InvalidFilter(f"unknown filter element {child.tag}; supported: TopicExpression, MessageContent, "
                                "LocationFilter, PrefixFilter, ScopeFilter, SelectFilter")
    try:
        content = combine_all(contents)
    except InvalidExpression as exc:
        raise _MessageContent(str(exc)) from None
    query = ResourceQuery(kinds=frozenset(known) if selection.kinds is None else selection.kinds, location=location,
                          prefix=prefix, scope=ScopeFilter(scopes) if scopes else None, select=select,
                          content=content)
    return EventFilter(query, _NO_GENERIC if selection.topics is None else selection.topics)


#: Without a TopicExpression a pull point is a resource query (RQ-5: every matching resource, then the
#: changes, paged by MessageLimit); generic topics are delivered to those that name them.
_NO_GENERIC: frozenset[str] = frozenset()


def _message_content(element: etree._Element) -> MessageContentFilter:
    dialect = (element.get("Dialect") or "").strip()
    if dialect != DIALECT_ITEM_FILTER:
        raise _MessageContent(f"MessageContent dialect {dialect!r} is not supported; use {DIALECT_ITEM_FILTER}")
    if _children(element):
        raise _MessageContent("a MessageContent filter is text (an ItemFilter expression), not elements")
    try:
        return MessageContentFilter(element.text or "", dict(element.nsmap))
    except InvalidExpression as exc:
        raise _MessageContent(f"MessageContent: {exc}") from None


class _MessageContent(ValueError):
    pass


def _changed_only(policy: etree._Element | None) -> bool:
    """EVT-9: ``tev:ChangedOnly`` in a SubscriptionPolicy (an element ``true``/``1``, or an attribute)."""
    if policy is None:
        return False
    values = [policy.get("ChangedOnly")] + [c.get("ChangedOnly") for c in _children(policy)]
    values += [(c.text or "").strip() for c in policy.iter() if isinstance(c.tag, str) and _local(c) == "ChangedOnly"]
    return any(v in ("true", "1") for v in values if v is not None)


def _filter_or_fault(element: etree._Element | None, context: EventServiceContext, now: float) -> EventFilter:
    try:
        return parse_filter(element, context.kinds, context.topic_paths())
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


def notification_element(parent: etree._Element, message: Notification, producer: str | None = None) -> etree._Element:
    """EVT-6: append one ``wsnt:NotificationMessage`` for ``message`` to ``parent``.

    Data items in the order the ``tt:ItemList`` sequence demands: the simple
    items Name, Scope (one per scope), Offline, then the element item Location.
    ``producer``: the event service's address, for ``wsnt:ProducerReference`` (EVT-9).
    """
    sub = etree.SubElement
    resource = message.resource
    holder = sub(parent, _NOTIFICATION)
    topic = sub(holder, _TOPIC, Dialect=DIALECT_ONVIF_CONCRETE_SET)
    topic.text = "tns1:Resource/" + resource.kind
    if producer is not None:
        sub(sub(holder, f"{{{WSNT}}}ProducerReference"), f"{{{WSA}}}Address").text = producer
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
        sub(data, _SIMPLE, Name="Offline", Value=xs_boolean(resource.offline))
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
_CLOSE_TOPIC = "</wsnt:Topic>"
_OPEN_MESSAGE = '<wsnt:Message><tt:Message UtcTime="'
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


def producer_xml(address: str) -> str:
    """The ``wsnt:ProducerReference`` of every notification of the event service at ``address`` (EVT-9)."""
    return f"<wsnt:ProducerReference><wsa:Address>{_text(address)}</wsa:Address></wsnt:ProducerReference>"


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def notification_xml(message: Notification, utc_time: str | None = None, producer: str = "") -> str:
    """EVT-6: the same ``wsnt:NotificationMessage`` as :func:`notification_element`, written as text.

    The fast path of PullMessages (a large enumeration spends most of its time
    here): the text is meant for the inside of an element in whose scope the
    prefixes ``wsnt``, ``tt`` and ``tns1`` are bound, as in the envelopes of
    this service. ``utc_time`` is the formatted ``message.utc_time`` when the
    caller has it; ``producer`` the :func:`producer_xml` text. Raises
    :class:`ValueError` when a value holds a character XML does not allow (as
    lxml would).
    """
    resource = message.resource
    token, name, scopes = resource.token, resource.name, resource.scopes
    # one search over all the values; almost always nothing needs escaping
    plain = _ATTR_SPECIAL.search("".join((token, name or "", *scopes))) is None
    parts = [_OPEN_TOPIC, resource.kind, _CLOSE_TOPIC, producer, _OPEN_MESSAGE,
             utc_time or format_datetime(message.utc_time),
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
        parts.append(f'<tt:SimpleItem Name="Offline" Value="{xs_boolean(resource.offline)}"/>')
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


def generic_notification_xml(event: GenericEvent, utc_time: str | None = None, producer: str = "") -> str:
    """EVT-6: the ``wsnt:NotificationMessage`` of a generic event, written as :func:`notification_xml` writes."""
    operation = f'" PropertyOperation="{event.operation}' if event.operation is not None else ""
    parts = [f'<wsnt:NotificationMessage><wsnt:Topic Dialect="{DIALECT_ONVIF_CONCRETE_SET}">tns1:',
             event.topic.path, _CLOSE_TOPIC, producer, _OPEN_MESSAGE, utc_time or format_datetime(event.utc_time),
             operation, '">']
    for tag, items in (("tt:Source", event.source), ("tt:Data", event.data)):
        parts.append(f"<{tag}>")
        parts += [f'<tt:SimpleItem Name="{_attr(name)}" Value="{_attr(value)}"/>' for name, value in items]
        parts.append(f"</{tag}>")
    parts.append(_CLOSE)
    return "".join(parts)


def notifications_xml(messages: Iterable[Notification | GenericEvent], producer: str = "") -> bytes:
    """The ``wsnt:NotificationMessage`` elements of a PullMessagesResponse in UTF-8 (:func:`notification_xml`)."""
    times: dict[float, str] = {}
    parts = []
    for message in messages:
        when = times.get(message.utc_time)
        if when is None:
            when = times[message.utc_time] = format_datetime(message.utc_time)
        if isinstance(message, GenericEvent):
            parts.append(generic_notification_xml(message, when, producer))
        else:
            parts.append(notification_xml(message, when, producer))
    return "".join(parts).encode("utf-8")


def _event_properties(kinds: Iterable[str], topics: Iterable[TopicDescription]) -> etree._Element:
    sub = etree.SubElement
    response = etree.Element(f"{{{TEV}}}GetEventPropertiesResponse")
    sub(response, f"{{{TEV}}}TopicNamespaceLocation").text = "http://www.onvif.org/onvif/ver10/topics/topicns.xml"
    sub(response, f"{{{WSNT}}}FixedTopicSet").text = "true"
    topic_set = sub(response, f"{{{WSTOP}}}TopicSet")
    root = sub(topic_set, f"{{{TNS1}}}Resource")
    for kind in kinds:
        topic = sub(root, f"{{{TNS1}}}{kind}", {f"{{{WSTOP}}}topic": "true"})
        description = sub(topic, f"{{{TT}}}MessageDescription", IsProperty="true")
        sub(sub(description, f"{{{TT}}}Source"), f"{{{TT}}}SimpleItemDescription", Name="Token",
            Type="tt:ReferenceToken")
        data = sub(description, f"{{{TT}}}Data")
        for name, type_ in (("Name", "xs:string"), ("Scope", "xs:string"), ("Offline", "xs:boolean")):
            sub(data, f"{{{TT}}}SimpleItemDescription", Name=name, Type=type_)
        sub(data, f"{{{TT}}}ElementItemDescription", Name="Location", Type="tt:GeoLocation")
    for generic in topics:
        node = topic_set
        for step in generic.path.split("/"):
            found = node.find(f"{{{TNS1}}}{step}")
            node = found if found is not None else sub(node, f"{{{TNS1}}}{step}")
        node.set(f"{{{WSTOP}}}topic", "true")
        description = sub(node, f"{{{TT}}}MessageDescription", IsProperty=xs_boolean(generic.is_property))
        for part, items in (("Source", generic.source), ("Data", generic.data)):
            holder = sub(description, f"{{{TT}}}{part}")
            for name, type_ in items:
                sub(holder, f"{{{TT}}}SimpleItemDescription", Name=name, Type=type_)
    for dialect in (DIALECT_ONVIF_CONCRETE_SET, DIALECT_WSN_CONCRETE_SET, DIALECT_WSN_CONCRETE):
        sub(response, f"{{{WSNT}}}TopicExpressionDialect").text = dialect
    sub(response, f"{{{TEV}}}MessageContentFilterDialect").text = DIALECT_ITEM_FILTER
    sub(response, f"{{{TEV}}}MessageContentSchemaLocation").text = "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
    return response


# --------------------------------------------------------------------------- addresses


def capabilities_element(context: EventServiceContext) -> etree._Element:
    """``tev:Capabilities`` of this event service (GetServiceCapabilities, and GetServices' IncludeCapability)."""
    return etree.Element(f"{{{TEV}}}Capabilities", WSSubscriptionPolicySupport="true",
                         WSPausableSubscriptionManagerInterfaceSupport="false",
                         MaxNotificationProducers=str(context.manager.max_push),
                         MaxPullPoints=str(context.manager.max_pull_points),
                         PersistentNotificationStorage="false")


#: environ key: the subscription a request addresses (its path, or its ``wsa:To`` at the event service).
_SUBSCRIPTION_KEY = "iec62676.subscription_id"


def _subscription_id(environ: dict[str, Any]) -> str:
    chosen = environ.get(_SUBSCRIPTION_KEY)
    if chosen is not None:
        return str(chosen)
    path = environ.get("PATH_INFO") or ""
    return path[len(SUBSCRIPTION_PATH):] if path.startswith(SUBSCRIPTION_PATH) else ""


def _producer(environ: dict[str, Any]) -> str:
    """``wsnt:ProducerReference`` text naming this event service as the client reaches it (EVT-9)."""
    return producer_xml(request_base_url(environ) + EVENT_PATH)


# --------------------------------------------------------------------------- operations
#
# Each handler gets the context, the one parsed request and the WSGI environ (see :mod:`..soap.dispatch`)
# and returns its answer element with its wsa:Action; a refusal is a raised fault.


def _get_service_capabilities(context: EventServiceContext, _request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    response = etree.Element(f"{{{TEV}}}GetServiceCapabilitiesResponse")
    response.append(capabilities_element(context))
    return Answer(_EVENT_ACTION + "GetServiceCapabilitiesResponse", response)


def _get_event_properties(context: EventServiceContext, _request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    return Answer(_EVENT_ACTION + "GetEventPropertiesResponse", _event_properties(context.kinds, context.topics.values()))


def _create(context: EventServiceContext, operation: etree._Element, environ: dict[str, Any], namespace: str,
            consumer: str | None, now: float) -> tuple[etree._Element, Subscription]:
    """RQ-5, EVT-10: the subscription CreatePullPointSubscription (``tev``) or Subscribe (``wsnt``, pushing to
    ``consumer``) asks for, and the Reference / CurrentTime / TerminationTime children of the answer."""
    chosen = _filter_or_fault(operation.find(f"{{{namespace}}}Filter"), context, now)
    text = _time_text(operation.find(f"{{{namespace}}}InitialTerminationTime"))
    try:
        termination = None if text is None else parse_termination(text, now)
        sub = context.manager.create(chosen.query, now, termination, topics=chosen.topics,
                                     changed_only=_changed_only(operation.find(f"{{{namespace}}}SubscriptionPolicy")),
                                     consumer=consumer)
    except InvalidTime as exc:
        raise _fault(("InvalidArgVal", "UnacceptableInitialTerminationTime"), str(exc), now, None) from None
    except UnacceptableTermination as exc:
        raise _unacceptable(exc, now, initial=True) from None
    except TooManySubscriptions as exc:
        raise _fault(("Action", "TooManySubscriptions"), str(exc), now,
                     f"{{{WSNT}}}SubscribeCreationFailedFault", code="Receiver") from None
    if consumer is not None:
        context.push.register(sub.id, _producer(environ))
    context.offer_states(sub)
    response = etree.Element(f"{{{namespace}}}{etree.QName(operation).localname}Response")
    reference = etree.SubElement(response, f"{{{namespace}}}SubscriptionReference")
    etree.SubElement(reference, f"{{{WSA}}}Address").text = request_base_url(environ) + SUBSCRIPTION_PATH + sub.id
    etree.SubElement(response, f"{{{WSNT}}}CurrentTime").text = format_datetime(now)
    etree.SubElement(response, f"{{{WSNT}}}TerminationTime").text = format_datetime(sub.termination)
    return response, sub


def _create_pull_point_subscription(context: EventServiceContext, request: SoapRequest,
                                    environ: dict[str, Any]) -> Answer:
    response, _sub = _create(context, request.operation, environ, TEV, None, context.clock())
    return Answer(_EVENT_ACTION + "CreatePullPointSubscriptionResponse", response)


def _subscribe(context: EventServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    """EVT-10: ``wsnt:Subscribe`` at the event service's address (WS-BaseNotification)."""
    now = context.clock()
    operation = request.operation
    consumer = _consumer_address(operation.findtext(f"{{{WSNT}}}ConsumerReference/{{{WSA}}}Address"), now)
    response, _sub = _create(context, operation, environ, WSNT, consumer, now)
    return Answer(_PRODUCER_ACTION + "SubscribeResponse", response)


def _pull_fault(subcode: str, reason: str, context: EventServiceContext, *, maxima: bool = False) -> EventFault:
    """A refused PullMessages argument; ``maxima``: the Timeout is above MaxTimeout, the one case Core answers
    with tev:PullMessagesFaultResponse (carrying both upper limits)."""
    detail = None
    if maxima:
        detail = etree.Element(f"{{{TEV}}}PullMessagesFaultResponse", nsmap={"tev": TEV})
        etree.SubElement(detail, f"{{{TEV}}}MaxTimeout").text = format_duration(context.max_timeout)
        etree.SubElement(detail, f"{{{TEV}}}MaxMessageLimit").text = str(context.max_message_limit)
    return EventFault(code="Sender", subcodes=("InvalidArgVal", subcode), reason=reason, detail_element=detail)


def _pull_messages(context: EventServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    """RQ-5, RQ-10, EVT-3, EVT-7: the next page of a pull point, waiting up to its Timeout for news."""
    operation = request.operation
    timeout_text = (operation.findtext(f"{{{TEV}}}Timeout") or "").strip()
    limit = int((operation.findtext(f"{{{TEV}}}MessageLimit") or "0").strip())
    try:
        timeout = parse_duration(timeout_text)
    except InvalidTime as exc:
        raise _pull_fault("Timeout", str(exc), context) from None
    if timeout < 0 or timeout > context.max_timeout:
        raise _pull_fault("Timeout", f"Timeout {timeout_text} is outside 0 .. "
                          f"{format_duration(context.max_timeout)} (MaxTimeout)", context,
                          maxima=timeout > context.max_timeout)
    if limit < 1:
        raise _pull_fault("MessageLimit", f"MessageLimit {limit} is below 1", context)
    limit = min(limit, context.max_message_limit)
    sub_id = _subscription_id(environ)
    manager, waiter, clock = context.manager, context.waiter, context.clock
    now = clock()
    deadline = now + timeout
    try:
        sub = manager.get(sub_id, now)
    except UnknownSubscription as exc:
        raise _unknown_subscription(exc, clock()) from None
    if sub.consumer is not None:
        raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                        reason="this subscription pushes its messages to its consumer (Notify); "
                               "create a pull point to pull")
    if not sub.begin_pull():  # EVT-7: the waiting pull keeps waiting; this one is refused
        raise _fault(("Action", "UnableToGetMessages"), _CONCURRENT_PULL, now,
                     f"{{{WSNT}}}UnableToGetMessagesFault", code="Receiver")
    try:
        while True:
            generation = waiter.generation
            now = clock()
            result = manager.pull(sub_id, limit, now, keep_alive=timeout)
            remaining = deadline - now
            if result.messages or remaining <= 0 or context.closed:
                break
            waiter.wait(generation, remaining)
    except UnknownSubscription as exc:
        raise _unknown_subscription(exc, clock()) from None
    finally:
        sub.end_pull()
    response = etree.Element(f"{{{TEV}}}PullMessagesResponse")
    etree.SubElement(response, f"{{{TEV}}}CurrentTime").text = format_datetime(now)
    etree.SubElement(response, f"{{{TEV}}}TerminationTime").text = format_datetime(result.termination)
    return Answer(_PULL_ACTION + "PullMessagesResponse", response,
                  notifications_xml(result.messages, _producer(environ)))


#: EVT-7: the reason of the fault of a PullMessages sent while another one waits on the same subscription
#: (ONVIF Core, PullMessages: UnableToGetMessagesFault): the device cannot take the request now, the client
#: did nothing malformed; the first pull keeps waiting until its Timeout.
_CONCURRENT_PULL = ("another PullMessages is already waiting on this subscription; pull again when it has "
                    "answered (one PullMessages at a time)")


def _set_synchronization_point(context: EventServiceContext, _request: SoapRequest,
                               environ: dict[str, Any]) -> Answer:
    """EVT-4: the current state of every property again, as ``Initialized``."""
    now = context.clock()
    try:
        sub = context.manager.get(_subscription_id(environ), now)
        context.manager.synchronize(sub.id, now)
    except UnknownSubscription as exc:
        raise _unknown_subscription(exc, now) from None
    context.offer_states(sub)
    context.waiter.notify()
    return Answer(_PULL_ACTION + "SetSynchronizationPointResponse",
                  etree.Element(f"{{{TEV}}}SetSynchronizationPointResponse"))


def _renew(context: EventServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    """EVT-4: ``wsnt:Renew`` at a subscription's address."""
    now = context.clock()
    text = _time_text(request.operation.find(f"{{{WSNT}}}TerminationTime"))
    try:
        termination = None if text is None else parse_termination(text, now)
        ends = context.manager.renew(_subscription_id(environ), termination, now)
    except UnknownSubscription as exc:
        raise _unknown_subscription(exc, now) from None
    except InvalidTime as exc:
        raise _fault(("InvalidArgVal", "UnacceptableTerminationTime"), str(exc), now, None) from None
    except UnacceptableTermination as exc:
        raise _unacceptable(exc, now, initial=False) from None
    response = etree.Element(f"{{{WSNT}}}RenewResponse")
    etree.SubElement(response, f"{{{WSNT}}}TerminationTime").text = format_datetime(ends)
    etree.SubElement(response, f"{{{WSNT}}}CurrentTime").text = format_datetime(now)
    return Answer(_MANAGER_ACTION + "RenewResponse", response)


def _unsubscribe(context: EventServiceContext, _request: SoapRequest, environ: dict[str, Any]) -> Answer:
    """EVT-4: ``wsnt:Unsubscribe`` at a subscription's address."""
    now = context.clock()
    try:
        context.manager.unsubscribe(_subscription_id(environ), now)
    except UnknownSubscription as exc:
        raise _unknown_subscription(exc, now) from None
    context.waiter.notify()
    return Answer(_MANAGER_ACTION + "UnsubscribeResponse", etree.Element(f"{{{WSNT}}}UnsubscribeResponse"))


#: The operations served at the event service's address (``tev:EventPortType``, ``wsnt:NotificationProducer``).
_EVENT_OPERATIONS = {
    (TEV, "GetServiceCapabilities"): _get_service_capabilities,
    (TEV, "GetEventProperties"): _get_event_properties,
    (TEV, "CreatePullPointSubscription"): _create_pull_point_subscription,
    (WSNT, "Subscribe"): _subscribe,
}
#: The operations served at each subscription's address (``tev:PullPointSubscription``,
#: ``wsnt:SubscriptionManager``), and at the event service's address for a ``wsa:To`` naming a subscription.
_SUBSCRIPTION_OPERATIONS = {
    (TEV, "PullMessages"): _pull_messages,
    (TEV, "SetSynchronizationPoint"): _set_synchronization_point,
    (WSNT, "Renew"): _renew,
    (WSNT, "Unsubscribe"): _unsubscribe,
}


#: The longest consumer address accepted (characters).
MAX_CONSUMER_ADDRESS = 2048


def _consumer_address(text: str | None, now: float) -> str:
    """EVT-10: the ConsumerReference address: an absolute http or https URL with a host (and a port that is one)."""
    address = (text or "").strip()
    scheme: str | None
    host: str | None
    try:
        parts = urlsplit(address)
        scheme, host, _port = parts.scheme, parts.hostname, parts.port  # the port: ValueError above 65535
    except ValueError:  # a port above 65535 or no number, a malformed IPv6 literal
        scheme = host = None
    if len(address) > MAX_CONSUMER_ADDRESS or scheme not in ("http", "https") or not host:
        raise _fault(("InvalidArgVal", "SubscribeCreationFailed"),
                     f"ConsumerReference address {excerpt(address)} is not an http or https URL "
                     f"of at most {MAX_CONSUMER_ADDRESS} characters", now, f"{{{WSNT}}}SubscribeCreationFailedFault")
    return address


def notify_envelope(messages: Iterable[Notification | GenericEvent], consumer: str, producer: str = "") -> bytes:
    """EVT-10: the ``wsnt:Notify`` request pushed to a consumer (its ``wsa:To`` is the consumer address)."""
    return write_envelope(_NOTIFY_ACTION, etree.Element(f"{{{WSNT}}}Notify"), notifications_xml(messages, producer),
                          nsmap=_NSMAP, to=consumer)


def _post(address: str, data: bytes, timeout: float) -> int:
    """POST ``data`` to ``address`` within ``timeout`` seconds for the whole exchange (a consumer that answers a
    byte at a time is cut off then: :func:`~..bounded_http.post`); the HTTP status. The answer's body is
    dropped; one over 64 KiB makes the try a failed one."""
    verify = ssl.create_default_context() if address.startswith("https:") else False
    with bounded_http.exchange_client(timeout, verify=verify) as client:
        return bounded_http.post(client, address, {"Content-Type": SOAP12_CONTENT_TYPE}, data, timeout=timeout,
                    max_bytes=64 * 1024).status


@dataclass
class _Outbox:
    """Messages taken from a push subscription and not yet accepted by its consumer."""

    messages: list[Notification | GenericEvent]
    failures: int = 0
    next_try: float = 0.0


class PushDelivery:
    """EVT-10: delivers what base-notification subscriptions queue, as ``wsnt:Notify``, to their consumers.

    The runtime calls :meth:`due` about every 0.2 s and runs :meth:`deliver` for each id it returns in a
    worker thread (one at a time per subscription, so a slow consumer holds only its own; at most
    ``max_push`` at once, also while deliveries of subscriptions that ended meanwhile still run, so that
    subscribing and unsubscribing in a loop cannot take the pool). A batch (at
    most ``batch`` messages, in order) is retried after each ``retry_after`` interval; when the last try
    fails too, the consumer is taken as dead and the subscription ends (logged once): a dead consumer
    costs at most ``len(retry_after) + 1`` POSTs of ``timeout`` seconds each.
    """

    def __init__(self, context: EventServiceContext, *, timeout: float = 5.0,
                 retry_after: tuple[float, ...] = (1.0, 2.0), batch: int = 100,
                 post: Callable[[str, bytes, float], int] = _post) -> None:
        self.context = context
        self.timeout = timeout
        self.retry_after = retry_after
        self.batch = batch
        self.post = post
        self._lock = threading.Lock()
        self._outboxes: dict[str, _Outbox] = {}
        self._producers: dict[str, str] = {}
        self._busy: set[str] = set()

    def register(self, sub_id: str, producer: str) -> None:
        """Remember the ProducerReference text of a new push subscription."""
        with self._lock:
            self._producers[sub_id] = producer

    def due(self) -> list[str]:
        """The push subscriptions to deliver now (each is then marked busy until :meth:`deliver` ends)."""
        now = self.context.clock()
        pushing = [sub for sub in self.context.manager.live(now) if sub.consumer is not None]
        out = []
        with self._lock:
            alive = {sub.id for sub in pushing}
            for gone in [i for i in self._producers if i not in alive]:
                self._producers.pop(gone, None)
                self._outboxes.pop(gone, None)
            for sub in pushing:
                if len(self._busy) >= self.context.manager.max_push:
                    break  # at most MaxNotificationProducers POSTs at once, counting those of ended subscriptions
                box = self._outboxes.get(sub.id)
                if sub.id not in self._busy and (box is None or box.next_try <= now):
                    self._busy.add(sub.id)
                    out.append(sub.id)
        return out

    def deliver(self, sub_id: str) -> None:
        """Push the pending messages of one subscription (blocking: run it in a worker thread)."""
        try:
            self._deliver(sub_id)
        except Exception:
            log.exception("delivering the notifications of subscription %s failed", sub_id)
        finally:
            with self._lock:
                self._busy.discard(sub_id)

    def _deliver(self, sub_id: str) -> None:
        manager, now = self.context.manager, self.context.clock()
        box = self._outboxes.get(sub_id)
        try:
            sub = manager.get(sub_id, now)
            if box is None:
                messages = manager.pull(sub_id, self.batch, now).messages
                if not messages:
                    return
                box = self._outboxes[sub_id] = _Outbox(list(messages))
        except UnknownSubscription:
            return
        consumer = sub.consumer or ""
        data = notify_envelope(box.messages, consumer, self._producers.get(sub_id, ""))
        try:
            status = self.post(consumer, data, self.timeout)
            problem = None if 200 <= status < 300 else f"HTTP {status}"
        except (TransportError, ValueError) as exc:  # ValueError: a host IDNA cannot encode
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            self._outboxes.pop(sub_id, None)
            return
        box.failures += 1
        if box.failures > len(self.retry_after):
            log.warning("subscription %s ends: its consumer %s failed %d times (last: %s)", sub_id,
                        excerpt(consumer), box.failures, excerpt(problem))
            self._outboxes.pop(sub_id, None)
            try:
                manager.unsubscribe(sub_id, now)
            except UnknownSubscription:
                pass
            return
        box.next_try = now + self.retry_after[box.failures - 1]
        log.info("subscription %s: consumer %s failed (%s); retry in %.1f s", sub_id, excerpt(consumer),
                 excerpt(problem), self.retry_after[box.failures - 1])


# --------------------------------------------------------------------------- endpoints

StartResponse = Callable[..., Any]


class _EventAddress:
    """The event service's address: its own operations, and subscription operations addressed by ``wsa:To``.

    A client may send PullMessages, Renew, Unsubscribe or SetSynchronizationPoint to the event service
    address with the subscription's address in ``wsa:To`` (WS-Addressing: To is the destination). Such a
    request runs on that subscription; without a ``wsa:To`` naming a subscription it gets the
    ``ResourceUnknown`` fault that names where to send it. The header is read from the one parsed request.
    """

    def __init__(self, events: QNameDispatcher, subscriptions: QNameDispatcher, context: EventServiceContext) -> None:
        self.events = events
        self.subscriptions = subscriptions
        self.context = context

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = environ.get(ENVIRON_REQUEST)
        if not isinstance(request, SoapRequest) or request.operation_name not in _SUBSCRIPTION_OPERATIONS:
            return self.events(environ, start_response)
        to = wsa_header(request, "To") or ""
        try:
            path = urlsplit(to).path
        except ValueError:  # not a URL (a malformed IPv6 literal): it names no subscription
            path = ""
        marker = path.find(SUBSCRIPTION_PATH)
        if not to or marker < 0:
            fault = _fault(("InvalidArgVal", "ResourceUnknown"),
                           f"{request.operation_name[1]} goes to a subscription: send it to the "
                           "SubscriptionReference address, or give that address in wsa:To",
                           self.context.clock(), f"{{{WSRF_R}}}ResourceUnknownFault")
            return self.events.fault(fault, request, start_response)
        environ[_SUBSCRIPTION_KEY] = path[marker + len(SUBSCRIPTION_PATH):]
        return self.subscriptions(environ, start_response)


def event_endpoints(context: EventServiceContext) -> tuple[Any, Any]:
    """The WSGI apps of the event service and of the subscription addresses (no access control: see :mod:`.app`)."""
    def dispatcher(handlers: Mapping[tuple[str, str], Any]) -> QNameDispatcher:
        return QNameDispatcher(handlers, xsd="events", context=context, nsmap=_NSMAP, fault_action=WSA_FAULT_ACTION)
    subscriptions = dispatcher(_SUBSCRIPTION_OPERATIONS)
    return _EventAddress(dispatcher(_EVENT_OPERATIONS), subscriptions, context), subscriptions
