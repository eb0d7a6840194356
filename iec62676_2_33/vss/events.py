"""Layer 4: the events of a lower system forwarded to the VSS's subscribers (ANX-B-4, GEN-1).

Theory of operation
-------------------
An :class:`EventForwarder` per lower system (a
:class:`~.resources.LowerFollower` thread):

1. asks the lower system's event service for its topics
   (GetEventProperties) and declares each on the VSS's event service with the
   lower system's message description, unless the VSS already has the topic
   (then the description in force stands), as a :class:`LowerDescription`
   that remembers which items that lower system typed as tokens.
   ``tns1:Resource/…`` is the
   resource mirror's (:mod:`.resources`), and ``tns1:Monitoring/Resource/Offline``
   the VSS derives from its own registry, which holds the lower system's
   resources already: neither is forwarded.
2. subscribes to exactly those topics (a pull point with a ConcreteSet
   TopicExpression) and pulls (``pull_timeout``, 1 s);
3. republishes every message on the VSS's event service
   (:meth:`~..services.events.EventServiceContext.publish`) with the items
   whose described type is ``tt:ReferenceToken`` or derived from it (read
   from the authored XSD, :mod:`.adaption`) adapted by the clause 6 rule with
   its isolation (:func:`~.adaption.expose_token`): a local token gets the
   lower system's prefix, a remote token keeps its own only when that prefix
   is the lower system's or routed to it (a new prefix is learnt first), any
   other gets the lower system's prefix too. So lower system P never
   publishes a token of lower system R or of the VSS itself. Which items are
   tokens: on a topic the VSS describes itself, its own description says (P
   cannot turn a token item into a string); on a topic a lower system
   described, every item the description in force or P's own types as a
   token (the first lower system to declare a topic cannot do so for the
   others). The VSS's own topic and MessageContent filters then apply, so a
   filter on the adapted source token works as for the VSS's own events.

A message that does not fit its topic's description is dropped (logged).
When the lower system cannot be reached the forwarder retries; its pull point
is unsubscribed when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lxml import etree

from ..domain.generic_events import RESOURCE_OFFLINE, InvalidEvent, TopicDescription
from ..domain.tokens import InvalidToken
from ..errors import Iec62676Error
from ..namespaces import TEV, TNS1, TT, WSA, WSNT, WSTOP
from ..query import ResourceQueryClient
from ..services.events import DIALECT_ONVIF_CONCRETE_SET, EventServiceContext
from .adaption import token_index, token_items
from .lower import LowerStore, LowerSystem
from .resources import LowerFollower

__all__ = ["EventForwarder", "LowerDescription", "lower_topics"]

log = logging.getLogger(__name__)

#: PullMessages Timeout (seconds) and MessageLimit of the forwarder's pull point.
PULL_TIMEOUT = 1.0
MESSAGE_LIMIT = 100
#: At most this many topics are taken from one lower system.
MAX_TOPICS = 256
_NOT_FORWARDED = ("Resource", RESOURCE_OFFLINE.path)


@dataclass(frozen=True)
class LowerDescription(TopicDescription):
    """A topic description the VSS took from a lower system, with the items that system typed as tokens."""

    token_items: frozenset[str] = frozenset()


def _items(node: etree._Element | None) -> Iterator[tuple[str, str, str]]:
    """(Name, Type as written, Type as a QName) of the SimpleItemDescriptions under ``node``."""
    for item in node.iterfind(f"{{{TT}}}SimpleItemDescription") if node is not None else ():
        written = item.get("Type") or ""
        prefix, _, local = written.rpartition(":")
        namespace = item.nsmap.get(prefix or None)
        yield item.get("Name") or "", written, f"{{{namespace}}}{local}" if namespace else local


def lower_topics(answer: etree._Element) -> list[LowerDescription]:
    """The forwarded topics of a GetEventPropertiesResponse (see the module docstring)."""
    index = token_index()
    found: list[LowerDescription] = []
    topic_set = answer.find(f"{{{WSTOP}}}TopicSet")

    def walk(node: etree._Element, path: list[str]) -> None:
        for child in node:
            if not isinstance(child.tag, str) or etree.QName(child).namespace == TT or len(found) >= MAX_TOPICS:
                continue
            steps = [*path, etree.QName(child).localname]
            joined = "/".join(steps)
            if steps[0] == "Resource" or joined in _NOT_FORWARDED:
                continue
            description = child.find(f"{{{TT}}}MessageDescription")
            if child.get(f"{{{WSTOP}}}topic") == "true" and description is not None:
                source = list(_items(description.find(f"{{{TT}}}Source")))
                data = list(_items(description.find(f"{{{TT}}}Data")))
                tokens = frozenset(n for n, _, q in source + data if index.is_token_type(q))
                try:
                    topic = LowerDescription(joined, source=tuple((n, w) for n, w, _ in source),
                                             data=tuple((n, w) for n, w, _ in data),
                                             is_property=description.get("IsProperty") in ("true", "1"),
                                             token_items=tokens)
                except InvalidEvent as exc:
                    log.info("topic tns1:%s of a lower system is not forwarded: %s", joined, exc)
                else:
                    found.append(topic)
            walk(child, steps)

    if topic_set is not None:
        walk(topic_set, [])
    return found


class EventForwarder(LowerFollower):
    """Forwards one lower system's events to the VSS's event service (module docstring)."""

    what = "event forwarder"

    def __init__(self, lower: LowerSystem, events: EventServiceContext, lowers: LowerStore,
                 client: Callable[[LowerSystem], ResourceQueryClient], *, retry: float = 1.0) -> None:
        super().__init__(lower, lowers, client, retry=retry)
        self.events = events

    def _follow(self) -> None:
        client = self.client(self.lower)
        topics = {t.path: t for t in lower_topics(
            client.raw(client.events, "GetEventProperties", self.lower.reached_by))}
        if not topics:
            self.stop.wait(30.0)  # nothing to forward: look again later (a restart may bring topics)
            return
        for topic in topics.values():
            if topic.path not in self.events.topics:
                self.events.declare(topic)
        expression = etree.Element(f"{{{WSNT}}}TopicExpression", Dialect=DIALECT_ONVIF_CONCRETE_SET,
                                   nsmap={"tns1": TNS1})
        expression.text = "|".join(f"tns1:{path}" for path in topics)
        created = client.raw(client.events, "CreatePullPointSubscription", self.lower.reached_by,
                             Filter={"_value_1": [expression]}, InitialTerminationTime="PT60S")
        address = created.findtext(f"{{{TEV}}}SubscriptionReference/{{{WSA}}}Address") or ""
        pull = client.zeep.create_service(f"{{{TEV}}}PullPointSubscriptionBinding", address)
        manager = client.zeep.create_service(f"{{{TEV}}}SubscriptionManagerBinding", address)
        try:
            while not self.stop.is_set():
                answer = client.raw(pull, "PullMessages", address, Timeout=f"PT{PULL_TIMEOUT:g}S",
                                    MessageLimit=MESSAGE_LIMIT)
                for holder in answer.iterchildren(f"{{{WSNT}}}NotificationMessage"):
                    self._forward(topics, holder)
        finally:
            try:
                client.raw(manager, "Unsubscribe", address)
            except (Iec62676Error, OSError) as exc:
                log.debug("lower system %s: unsubscribing failed: %s", self.lower.prefix, exc)

    def _forward(self, topics: dict[str, LowerDescription], holder: etree._Element) -> None:
        path = (holder.findtext(f"{{{WSNT}}}Topic") or "").strip().partition(":")[2]
        topic = topics.get(path)
        message = holder.find(f"{{{WSNT}}}Message/{{{TT}}}Message")
        if topic is None or message is None:
            return
        operation = message.get("PropertyOperation")
        names = self._token_items(topic)
        try:
            parts = {part: [(i.get("Name") or "", self._adapt(names, i.get("Name") or "", i.get("Value") or ""))
                            for i in message.iterfind(f"{{{TT}}}{part}/{{{TT}}}SimpleItem")]
                     for part in ("Source", "Data")}
            self.events.publish(path, parts["Source"], parts["Data"],
                                operation if operation in ("Initialized", "Changed", "Deleted") else None)
        except (InvalidEvent, InvalidToken) as exc:
            log.info("lower system %s: event on tns1:%s dropped: %s", self.lower.prefix, path, exc)

    def _token_items(self, topic: LowerDescription) -> frozenset[str]:
        """The items of ``topic`` adapted as tokens (module docstring): the VSS's own description decides."""
        described = self.events.topics.get(topic.path)
        if described is None:
            return topic.token_items
        if isinstance(described, LowerDescription):
            return topic.token_items | described.token_items
        return token_items(described)

    def _adapt(self, names: frozenset[str], name: str, value: str) -> str:
        if name not in names or not value:
            return value
        return self.lowers.expose(self.lower.prefix, value)
