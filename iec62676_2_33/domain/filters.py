"""Layer 6 (domain): the resource query filters, pure functions of a :class:`Resource`.

Implements RQ-6 (Location filter), RQ-7 (Prefix filter), RQ-8 (Scope filter),
RQ-9 (Select filter) and the resource side of EVT-9 (MessageContent);
:class:`ResourceQuery` combines them with the topic (resource kind,
RQ-1/RQ-2) for the registry. No I/O, no clock.

Theory of operation
-------------------
*Location (RQ-6).* Distances are great-circle distances on a sphere of the
mean Earth radius (IUGG R1 = 6,371,008.8 m), computed with the haversine
formula. The spherical model is within 0.5 % of the WGS 84 ellipsoid, which is
far below the accuracy of a configured camera position. When the filter has a
``height`` and the resource's location has an ``elevation``, the distance is
the straight 3-D distance ``sqrt(arc**2 + (elevation - height)**2)``: the arc
is taken as the horizontal leg and the height difference as the vertical one
(a local flat-earth approximation, exact enough for radii up to tens of
kilometres). If either height is missing, the 2-D arc is used. A resource
matches when its distance is ``<= radius``; a resource without a location
matches only when ``include_unknown`` is true.

:meth:`LocationFilter.bounding_boxes` gives the R*Tree pre-filter: one or two
``(min_lon, min_lat, max_lon, max_lat)`` boxes whose union contains the whole
circle. The latitude band is ``lat ± radius/R``; the longitude half-width is
the exact tangent-meridian value ``asin(sin(d) / cos(lat))``. If the circle
reaches a pole the box spans all longitudes; if it crosses the antimeridian it
is split into two boxes. Because the 3-D distance is never shorter than the
arc, the same boxes also serve the 3-D case.

*Prefix (RQ-7).* The prefix of a token is the text before its first ``:``
(ADR-2); a token without a colon has no prefix and never matches.

*Scope (RQ-8).* Matching follows the ONVIF Core discovery rules, i.e. the
WS-Discovery ``Match`` rules. Without a ``Match`` attribute the RFC 3986 rule
applies (WS-Discovery 1.1 §5.1; the 2005/04 draft words it the same way): the
scheme and the authority are compared case-insensitively, the path is
compared case-sensitively segment by segment, and the filter's segments must
be a prefix of the resource scope's segments. Both URIs are canonicalised
first: each path segment (and the authority) is percent-decoded *after* the
split, so ``%2F`` inside a segment never creates a new segment, and ``%41``
equals ``A``. A URI that contains a ``.`` or ``..`` segment matches nothing
(the rule says neither side may contain one). Query and fragment are
explicitly excluded from the comparison. One trailing empty segment is
ignored, so ``.../location/`` means the same as ``.../location``. The
``strcmp0`` rule is a case-sensitive comparison of the whole strings. Both the
2005/04 and the 2009/01 namespaces of the two rules are accepted; any other
rule (``ldap``, ``uuid``, ...) is refused with :class:`InvalidFilter`.

With several ``Scope`` entries, a resource matches when *every* filter scope
matches *some* scope of the resource — the semantics of a WS-Discovery Probe,
whose Scopes must all be satisfied by a Target Service. A filter holds at
most :data:`MAX_FILTER_SCOPES` entries of :data:`MAX_FILTER_SCOPE`
characters (a client's text, evaluated against every resource); they are
parsed once with the filter, while the resources' scopes, a device's few
shared by all its resources, are parsed once in a process-wide cache that
never holds a client's text.

*Select (RQ-9).* Each ``Path`` is an XPath expression over the event
message, in the subset :mod:`.event_filters` parses and evaluates (child and
``//`` steps over ``tt:Message/tt:Source|tt:Data/tt:SimpleItem|tt:ElementItem``,
predicates on ``@Name``/``@Value``); the data items it reaches are kept. The
standard's own short forms stay: ``/Name``, ``/Location``, ``/Scope``,
``/Offline``, and ``/Scope/<Category>`` for only the ONVIF scopes of that
category (``onvif://www.onvif.org/<Category>/...``, category compared
case-insensitively; the standard's example ``/Scope/Location`` keeps the
location scopes), each also under ``/Data``. Item names are case-sensitive, as
in XML. The Source ``Token`` is always kept. At most
:data:`MAX_SELECT_PATHS` paths of :data:`MAX_SELECT_PATH` characters.

*MessageContent (EVT-2, EVT-9).* :class:`ResourceQuery` may carry a
:class:`~.event_filters.MessageContentFilter`, evaluated on the full
(unprojected) resource event (:func:`resource_view`), so a subscription can
follow one source token.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from .event_filters import (
    EventItem,
    EventView,
    InvalidExpression,
    MessageContentFilter,
    Target,
    all_of,
    compile_path,
    name_is,
    value_test,
)
from .resources import RESOURCE_KINDS, GeoLocation, Resource

__all__ = [
    "EARTH_RADIUS_M",
    "MATCH_RFC3986",
    "MATCH_RULES",
    "MATCH_STRCMP0",
    "MAX_FILTER_SCOPE",
    "MAX_FILTER_SCOPES",
    "MAX_SELECT_PATH",
    "MAX_SELECT_PATHS",
    "Box",
    "InvalidFilter",
    "LocationFilter",
    "PrefixFilter",
    "ResourceQuery",
    "ScopeFilter",
    "SelectFilter",
    "great_circle_distance",
    "resource_view",
    "scope_matches",
    "token_prefix",
]

#: Mean Earth radius R1 (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8

MATCH_RFC3986 = "http://schemas.xmlsoap.org/ws/2005/04/discovery/rfc3986"
MATCH_STRCMP0 = "http://schemas.xmlsoap.org/ws/2005/04/discovery/strcmp0"
_MATCH_RFC3986_2009 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/rfc3986"
_MATCH_STRCMP0_2009 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01/strcmp0"

#: Supported ``Match`` rules (the default, ``None``, is RFC 3986).
MATCH_RULES: tuple[str, ...] = (
    MATCH_RFC3986,
    MATCH_STRCMP0,
    _MATCH_RFC3986_2009,
    _MATCH_STRCMP0_2009,
)
_RFC3986_RULES = frozenset({MATCH_RFC3986, _MATCH_RFC3986_2009})

#: ``(min_lon, min_lat, max_lon, max_lat)`` in degrees.
Box = tuple[float, float, float, float]

# Widening of the pre-filter boxes, in degrees (about 1 cm): absorbs rounding
# in the trigonometry so a point exactly on the circle is never cut off.
_BOX_MARGIN_DEG = 1e-7


class InvalidFilter(ConfigurationError):
    """A resource query filter is malformed; the message names the bad part."""


def token_prefix(token: str) -> str | None:
    """The device prefix of a remote token: the text before its first ``:`` (ADR-2)."""
    prefix, colon, _ = token.partition(":")
    return prefix if colon else None


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidFilter(f"{what} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidFilter(f"{what} must be a finite number, got {value!r}")
    return result


def great_circle_distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Haversine distance in metres between two points given in degrees."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    dphi = phi2 - phi1
    dlam = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, a))))


# --------------------------------------------------------------------------- RQ-6


@dataclass(frozen=True)
class LocationFilter:
    """RQ-6: resources within ``radius`` metres of (``lon``, ``lat``[, ``height``])."""

    lon: float
    lat: float
    radius: float
    height: float | None = None
    include_unknown: bool = False

    def __post_init__(self) -> None:
        lon = _finite(self.lon, "location filter lon")
        lat = _finite(self.lat, "location filter lat")
        radius = _finite(self.radius, "location filter radius")
        if not -180.0 <= lon <= 180.0:
            raise InvalidFilter(f"location filter lon must be within -180..180, got {lon!r}")
        if not -90.0 <= lat <= 90.0:
            raise InvalidFilter(f"location filter lat must be within -90..90, got {lat!r}")
        if radius < 0:
            raise InvalidFilter(f"location filter radius must be >= 0 metres, got {radius!r}")
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "radius", radius)
        if self.height is not None:
            object.__setattr__(self, "height", _finite(self.height, "location filter height"))
        if not isinstance(self.include_unknown, bool):
            raise InvalidFilter(
                f"location filter includeUnknown must be a boolean, got {self.include_unknown!r}"
            )

    def distance_to(self, location: GeoLocation) -> float:
        """Metres from the filter's centre (see the module docstring for the 3-D case)."""
        arc = great_circle_distance(self.lon, self.lat, location.lon, location.lat)
        if self.height is None or location.elevation is None:
            return arc
        return math.hypot(arc, location.elevation - self.height)

    def matches(self, resource: Resource) -> bool:
        if resource.location is None:
            return self.include_unknown
        return self.distance_to(resource.location) <= self.radius

    def bounding_boxes(self) -> list[Box]:
        """One or two boxes whose union is a superset of the circle (R*Tree pre-filter)."""
        delta = self.radius / EARTH_RADIUS_M  # angular radius, radians
        if delta >= math.pi:
            return [(-180.0, -90.0, 180.0, 90.0)]
        delta_deg = math.degrees(delta) + _BOX_MARGIN_DEG
        min_lat = self.lat - delta_deg
        max_lat = self.lat + delta_deg
        if min_lat <= -90.0 or max_lat >= 90.0:
            # The circle contains a pole: every longitude is reached.
            return [(-180.0, max(min_lat, -90.0), 180.0, min(max_lat, 90.0))]
        ratio = math.sin(delta) / math.cos(math.radians(self.lat))
        if ratio >= 1.0:
            return [(-180.0, min_lat, 180.0, max_lat)]
        half = math.degrees(math.asin(ratio)) + _BOX_MARGIN_DEG
        west = self.lon - half
        east = self.lon + half
        if west < -180.0:
            return [(west + 360.0, min_lat, 180.0, max_lat), (-180.0, min_lat, east, max_lat)]
        if east > 180.0:
            return [(west, min_lat, 180.0, max_lat), (-180.0, min_lat, east - 360.0, max_lat)]
        return [(west, min_lat, east, max_lat)]


# --------------------------------------------------------------------------- RQ-7


@dataclass(frozen=True)
class PrefixFilter:
    """RQ-7: resources whose token's prefix (before the first ``:``) equals ``prefix``."""

    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise InvalidFilter(f"prefix filter needs a non-empty Prefix, got {self.prefix!r}")
        if ":" in self.prefix:
            raise InvalidFilter(
                f"prefix {self.prefix!r} contains ':'; a prefix is the part of a remote "
                "token before its first ':', so give only that part"
            )

    def matches(self, resource: Resource) -> bool:
        return token_prefix(resource.token) == self.prefix


# --------------------------------------------------------------------------- RQ-8

_Parsed = tuple[str, str, tuple[str, ...]]


def _canonical(uri: str) -> _Parsed | None:
    """(scheme, authority, segments) canonicalised for the RFC 3986 rule, or None.

    None means the URI can take part in no match: it does not parse, or it
    has a ``.``/``..`` segment.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    raw = parts.path.split("/")
    if raw and raw[0] == "":
        raw = raw[1:]  # the leading "/" of an absolute path
    if raw and raw[-1] == "":
        raw = raw[:-1]  # one trailing "/"
    segments = tuple(unquote(s) for s in raw)
    if any(s in (".", "..") for s in segments):
        return None
    return parts.scheme.lower(), unquote(parts.netloc).lower(), segments


#: The resources' scopes, parsed once: the resources of a device share a few. A filter's scopes are a client's
#: text and are parsed with their filter (:class:`ScopeFilter`), never kept here.
_parse_rfc3986 = lru_cache(maxsize=65536)(_canonical)


def scope_matches(filter_scope: str, resource_scope: str, rule: str | None = None) -> bool:
    """Does ``filter_scope`` match ``resource_scope`` under the WS-Discovery ``rule``?"""
    if rule is not None and rule not in MATCH_RULES:
        raise InvalidFilter(_unknown_rule(rule))
    rfc3986 = rule is None or rule in _RFC3986_RULES
    return _entry_matches(filter_scope, _canonical(filter_scope) if rfc3986 else None, rule, resource_scope)


def _entry_matches(filter_scope: str, parsed: _Parsed | None, rule: str | None, resource_scope: str) -> bool:
    """:func:`scope_matches` for a known ``rule`` and the filter scope's RFC 3986 form parsed already."""
    if rule is not None and rule not in _RFC3986_RULES:  # strcmp0
        return filter_scope == resource_scope
    r = _parse_rfc3986(resource_scope)
    if parsed is None or r is None:
        return False
    return parsed[0] == r[0] and parsed[1] == r[1] and r[2][: len(parsed[2])] == parsed[2]


def _unknown_rule(rule: str) -> str:
    return (
        f"unsupported scope Match rule {rule!r}; supported: "
        f"{', '.join(MATCH_RULES)} (no Match attribute means RFC 3986)"
    )


#: Most Scope entries in one scope filter, and the longest Scope (characters): a client's text, evaluated
#: against every resource of a query.
MAX_FILTER_SCOPES = 16
MAX_FILTER_SCOPE = 1024


@dataclass(frozen=True)
class ScopeFilter:
    """RQ-8: every ``(scope, match_rule)`` entry must match some scope of the resource."""

    scopes: Sequence[tuple[str, str | None]]
    #: the RFC 3986 form of each entry (None for strcmp0 and for a scope that matches nothing), parsed once
    _parsed: tuple[_Parsed | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries: list[tuple[str, str | None]] = []
        if len(self.scopes) > MAX_FILTER_SCOPES:
            raise InvalidFilter(f"a scope filter holds at most {MAX_FILTER_SCOPES} Scope entries, got {len(self.scopes)}")
        for entry in self.scopes:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise InvalidFilter(f"a scope filter entry is (scope, match rule), got {entry!r}")
            scope, rule = entry
            if not isinstance(scope, str) or not scope.strip():
                raise InvalidFilter(
                    f"a scope filter Scope must be a non-empty string, got {scope!r}"
                )
            if len(scope.strip()) > MAX_FILTER_SCOPE:
                raise InvalidFilter(f"a scope filter Scope has at most {MAX_FILTER_SCOPE} characters, "
                                    f"got {len(scope.strip())} ({scope.strip()[:80]!r}…)")
            if rule is not None:
                if not isinstance(rule, str):
                    raise InvalidFilter(f"a scope Match rule must be a URI string, got {rule!r}")
                rule = rule.strip()
                if rule not in MATCH_RULES:
                    raise InvalidFilter(_unknown_rule(rule))
            entries.append((scope.strip(), rule))
        if not entries:
            raise InvalidFilter("a scope filter needs at least one Scope")
        object.__setattr__(self, "scopes", tuple(entries))
        object.__setattr__(self, "_parsed", tuple(_canonical(scope) if rule is None or rule in _RFC3986_RULES
                                                  else None for scope, rule in entries))

    def matches(self, resource: Resource) -> bool:
        have = resource.scopes
        return all(
            any(_entry_matches(scope, parsed, rule, own) for own in have)
            for (scope, rule), parsed in zip(self.scopes, self._parsed, strict=True)
        )


# --------------------------------------------------------------------------- RQ-9


def _onvif_category(scope: str) -> str | None:
    parsed = _parse_rfc3986(scope)
    if parsed is None or parsed[0] != "onvif" or parsed[1] != "www.onvif.org" or not parsed[2]:
        return None
    return parsed[2][0].lower()


#: Most Path entries in one Select filter, and the longest Path (characters).
MAX_SELECT_PATHS = 16
MAX_SELECT_PATH = 256

_SHORT_ITEMS = {"Name": False, "Scope": False, "Offline": False, "Location": True}  # name -> element item?


def _shorthand(path: str) -> Target | None:
    """The standard's own path forms: ``/Name``, ``/Scope/<Category>`` …, optionally under ``/Data``."""
    if path.startswith("/Data/"):
        path = path[len("/Data"):]
    head, _, category = path[1:].partition("/") if path.startswith("/") else ("", "", "")
    if head not in _SHORT_ITEMS or (category and head != "Scope") or "/" in category or path.endswith("/"):
        return None
    kind = "Data/ElementItem" if _SHORT_ITEMS[head] else "Data/SimpleItem"
    if not category:
        return Target(kind, name_is(head))
    wanted = category.lower()
    return Target(kind, all_of(name_is(head), value_test(lambda scope: _onvif_category(scope) == wanted)))


def resource_view(resource: Resource) -> EventView:
    """The items of the resource event message of ``resource`` (RQ-3), for the event filters."""
    items = [EventItem("Source", "Token", resource.token)]
    if resource.name is not None:
        items.append(EventItem("Data", "Name", resource.name))
    items += [EventItem("Data", "Scope", scope) for scope in resource.scopes]
    if resource.offline is not None:
        items.append(EventItem("Data", "Offline", "true" if resource.offline else "false"))
    if resource.location is not None:
        items.append(EventItem("Data", "Location", element=True))
    return EventView(tuple(items))


@dataclass(frozen=True)
class SelectFilter:
    """RQ-9: keep only the data items the Select paths reach (see the module docstring)."""

    paths: Sequence[str]
    _targets: tuple[Target, ...] = field(init=False, repr=False, compare=False)
    _all: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            raise InvalidFilter(f"select filter paths must be a list of paths, got {self.paths!r}")
        paths = tuple(self.paths)
        if not paths:
            raise InvalidFilter("a select filter needs at least one Path")
        if len(paths) > MAX_SELECT_PATHS:
            raise InvalidFilter(f"a select filter holds at most {MAX_SELECT_PATHS} Path entries, got {len(paths)}")
        targets: list[Target] = []
        keep_all = False
        for raw in paths:
            if not isinstance(raw, str):
                raise InvalidFilter(f"a select Path must be a string, got {raw!r}")
            path = raw.strip()
            short = _shorthand(path)
            if short is not None:
                targets.append(short)
                continue
            try:
                compiled = compile_path(path, limit=MAX_SELECT_PATH)
            except InvalidExpression as exc:
                raise InvalidFilter(
                    f"unsupported select Path {raw[:MAX_SELECT_PATH]!r}: {exc}; use /Name, /Location, /Scope, "
                    "/Offline, /Scope/<Category> (each optionally under /Data) or an XPath over the message "
                    "such as //tt:SimpleItem[@Name=\"Scope\"]") from None
            keep_all = keep_all or compiled.keeps_all_data()
            targets.extend(compiled.targets)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "_targets", tuple(targets))
        object.__setattr__(self, "_all", keep_all)

    def apply(self, resource: Resource) -> Resource:
        if self._all:
            return resource
        view = resource_view(resource)
        kept = {id(item) for target in self._targets for item in target.items(view)}
        chosen = [item for item in view.items if id(item) in kept and item.part == "Data"]
        names = {item.name for item in chosen}
        return replace(
            resource,
            name=resource.name if "Name" in names else None,
            location=resource.location if "Location" in names else None,
            scopes=tuple(item.value for item in chosen if item.name == "Scope" and item.value is not None),
            offline=resource.offline if "Offline" in names else None,
        )


# --------------------------------------------------------------------------- query


@dataclass(frozen=True)
class ResourceQuery:
    """The resource kinds (topics) and filters of one subscription; ``None`` = no restriction.

    An empty ``kinds`` set matches nothing.
    """

    kinds: frozenset[str] | None = None
    location: LocationFilter | None = None
    prefix: PrefixFilter | None = None
    scope: ScopeFilter | None = None
    select: SelectFilter | None = None
    #: EVT-2, EVT-9: a MessageContent filter, evaluated on the full (unprojected) resource event.
    content: MessageContentFilter | None = None

    def __post_init__(self) -> None:
        if self.kinds is not None:
            kinds = self.kinds
            if isinstance(kinds, str) or not isinstance(kinds, Collection):
                raise InvalidFilter(f"kinds must be a set of resource kinds, got {kinds!r}")
            unknown = sorted(k for k in kinds if k not in RESOURCE_KINDS)
            if unknown:
                raise InvalidFilter(
                    f"unknown resource kind(s) {', '.join(map(repr, unknown))}; "
                    f"expected some of: {', '.join(RESOURCE_KINDS)}"
                )
            object.__setattr__(self, "kinds", frozenset(kinds))

    def matches(self, resource: Resource) -> bool:
        return (
            (self.kinds is None or resource.kind in self.kinds)
            and (self.prefix is None or self.prefix.matches(resource))
            and (self.location is None or self.location.matches(resource))
            and (self.scope is None or self.scope.matches(resource))
            and (self.content is None or self.content.matches(resource_view(resource)))
        )

    def project(self, resource: Resource) -> Resource:
        """The resource as the subscriber sees it: the Select filter applied."""
        return resource if self.select is None else self.select.apply(resource)

    def filter(self, resources: Iterable[Resource]) -> list[Resource]:
        """The matching resources, projected, in the order given."""
        return [self.project(r) for r in resources if self.matches(r)]
