"""Layer 6 (domain): generic events — topics beyond ``tns1:Resource/…`` that the device publishes.

Implements the data side of EVT-5 (a topic's message description for
GetEventProperties), EVT-6 (a notification's Source and Data items) and EVT-9
(the items a MessageContent filter looks at) for events that are not resource
queries: the device's own state changes (``tns1:Monitoring/Uplink/Status``,
see :data:`UPLINK_STATUS`; a resource's Offline flips, :data:`RESOURCE_OFFLINE`
found by :class:`OfflineFlips`) and anything a backend publishes through
:meth:`~..services.events.EventServiceContext.publish`. No I/O, no clock.

A :class:`TopicDescription` names a topic by its path below ``tns1`` and lists
its Source and Data simple items with their XML Schema types; a
:class:`GenericEvent` is one message on such a topic, with the values of
those items. A *property* topic (``is_property``) carries a state: its events
have a PropertyOperation, and a new subscriber (or a SetSynchronizationPoint)
gets the current state of every source as ``Initialized``.

:class:`OfflineFlips` reads the resource registry's change log (RQ-4) and says
which change flips a resource's ``Offline`` state. It remembers the last state
of at most ``max_known`` resources (least recently changed forgotten first): a
registry may hold millions, and the log itself is the durable state. A change
of a resource it does not remember counts as a flip unless it is a new
resource that is online (not news).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from ..errors import ConfigurationError
from .event_filters import EventItem, EventView
from .resources import PROPERTY_OPERATIONS, PropertyOperation, ResourceEvent

__all__ = ["RESOURCE_OFFLINE", "UPLINK_STATUS", "GenericEvent", "InvalidEvent", "OfflineFlips", "TopicDescription",
           "topic_matches"]

_STEP = re.compile(r"[A-Za-z_][\w.\-]*")


class InvalidEvent(ConfigurationError):
    """A published event or topic description breaks a rule (the message says which)."""


Items = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TopicDescription:
    """A topic below ``tns1`` (``path`` like ``Monitoring/Uplink/Status``) and its message description."""

    path: str
    source: tuple[tuple[str, str], ...]  # (Name, Type) of the Source simple items
    data: tuple[tuple[str, str], ...]  # (Name, Type) of the Data simple items
    is_property: bool = True

    def __post_init__(self) -> None:
        steps = self.path.split("/")
        if not all(_STEP.fullmatch(step) for step in steps):
            raise InvalidEvent(f"topic path {self.path!r} must be names joined by '/' (e.g. Monitoring/Uplink/Status)")
        if steps[0] == "Resource":
            raise InvalidEvent("tns1:Resource/… topics are the resource queries' own; publish another topic")


@dataclass(frozen=True)
class GenericEvent:
    """One message on a :class:`TopicDescription`'s topic (EVT-6)."""

    topic: TopicDescription
    utc_time: float
    source: Items
    data: Items
    operation: PropertyOperation | None = None

    def __post_init__(self) -> None:
        if self.operation is not None and self.operation not in PROPERTY_OPERATIONS:
            raise InvalidEvent(f"PropertyOperation must be one of {', '.join(PROPERTY_OPERATIONS)}, "
                               f"not {self.operation!r}")
        for part, given, described in (("Source", self.source, self.topic.source),
                                        ("Data", self.data, self.topic.data)):
            known = {name for name, _ in described}
            unknown = [name for name, _ in given if name not in known]
            if unknown:
                raise InvalidEvent(f"{part} item(s) {', '.join(map(repr, unknown))} are not in the description "
                                   f"of tns1:{self.topic.path} ({', '.join(sorted(known)) or 'none'})")

    @classmethod
    def of(cls, topic: TopicDescription, utc_time: float, source: Mapping[str, str] | Iterable[tuple[str, str]],
           data: Mapping[str, str] | Iterable[tuple[str, str]],
           operation: PropertyOperation | None = None) -> GenericEvent:
        """Build from mappings or pairs of item names and values."""
        def items(given: Mapping[str, str] | Iterable[tuple[str, str]]) -> Items:
            pairs = given.items() if isinstance(given, Mapping) else given
            return tuple((str(name), str(value)) for name, value in pairs)

        return cls(topic, utc_time, items(source), items(data), operation)

    @cached_property
    def view(self) -> EventView:
        """The items a MessageContent filter looks at (built once, shared by every subscription)."""
        return EventView(tuple([EventItem("Source", n, v) for n, v in self.source]
                               + [EventItem("Data", n, v) for n, v in self.data]))


def topic_matches(selected: frozenset[str] | None, path: str) -> bool:
    """Does a subscription's set of generic topics (``None`` = all) take ``path``?

    An entry ending in ``//.`` selects its whole subtree (WS-Topics ConcreteSet).
    """
    if selected is None:
        return True
    if path in selected:
        return True
    return any(entry.endswith("//.") and (path == entry[:-3] or path.startswith(entry[:-3] + "/"))
               for entry in selected)


#: The device's uplink connection status (CFG-1 ``Status``), one source per configured RemoteAddress.
UPLINK_STATUS = TopicDescription(
    "Monitoring/Uplink/Status",
    source=(("RemoteAddress", "xs:anyURI"),),
    data=(("Status", "xs:string"), ("Error", "xs:string")),
)


#: A resource of the registry went offline or came back (RQ-4's ``Offline`` item as a generic event). Not a
#: property topic: the resource query is the place for every resource's current state (``Initialized``),
#: and keeping a state per resource here would grow with the registry.
RESOURCE_OFFLINE = TopicDescription(
    "Monitoring/Resource/Offline",
    source=(("Token", "tt:ReferenceToken"), ("Kind", "xs:string")),
    data=(("Offline", "xs:boolean"),),
    is_property=False,
)


class OfflineFlips:
    """Finds the changes of the registry's log that flip a resource's Offline state (see the module docstring)."""

    def __init__(self, max_known: int = 65536) -> None:
        if max_known < 1:
            raise ConfigurationError(f"max_known must be >= 1, got {max_known!r}")
        self.max_known = max_known
        self._known: OrderedDict[str, bool] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def feed(self, change: ResourceEvent) -> bool | None:
        """The new Offline state when ``change`` flips it, else ``None``."""
        token, offline = change.resource.token, change.resource.offline
        if change.operation == "Deleted" or offline is None:
            self._known.pop(token, None)
            return None
        previous = self._known.pop(token, None)
        self._known[token] = offline
        if len(self._known) > self.max_known:
            self._known.popitem(last=False)
        if previous == offline or (previous is None and change.operation == "Initialized" and not offline):
            return None
        return offline
