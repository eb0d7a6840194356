"""Layer 6 (domain): the resource model of resource queries.

Implements RQ-2 (the enumerable resource kinds), RQ-3 (the resource event
description: Source item ``Token``; optional Data items ``Name``, ``Location``,
``Scope`` (repeatable) and ``Offline``) and RQ-4 (the property operations
``Initialized``, ``Changed`` and ``Deleted``); the JSON form is what the
registry stores and what ``load_jsonl`` reads.

A :class:`Resource` is the value carried by one ``tns1:Resource/<kind>``
property event (EVT-6). ``None`` (or an empty ``scopes`` tuple) means "the
event does not carry that data item", which matters for RQ-4: a change of the
online state is only visible when the ``Offline`` item is carried.

JSON form (one object; only ``token`` and ``kind`` are required)::

    {"token": "dev7:prof1", "kind": "MediaProfile", "name": "Gate",
     "location": {"lon": 8.68, "lat": 50.11, "elevation": 112.5},
     "scopes": ["onvif://www.onvif.org/location/city/frankfurt"],
     "offline": false}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigurationError

__all__ = [
    "MAX_TOKEN_LENGTH",
    "PROPERTY_OPERATIONS",
    "RESOURCE_KINDS",
    "GeoLocation",
    "InvalidResource",
    "PropertyOperation",
    "Resource",
    "ResourceEvent",
]

#: RQ-2: the media configuration kinds and MediaProfile, plus the kinds the
#: standard's examples use (VideoSource, Recording). The kind is the last part
#: of the event topic ``tns1:Resource/<kind>``.
RESOURCE_KINDS: tuple[str, ...] = (
    "VideoSourceConfiguration",
    "AudioSourceConfiguration",
    "VideoEncoderConfiguration",
    "AudioEncoderConfiguration",
    "AudioOutputConfiguration",
    "AudioDecoderConfiguration",
    "MetadataConfiguration",
    "AnalyticsConfiguration",
    "PTZConfiguration",
    "OSDConfiguration",
    "MaskConfiguration",
    "MediaProfile",
    "VideoSource",
    "Recording",
)

#: ``tt:ReferenceToken`` is at most 64 characters (wire contract, ADR-3).
MAX_TOKEN_LENGTH = 64

#: RQ-4: the ``PropertyOperation`` attribute of a resource event.
PropertyOperation = Literal["Initialized", "Changed", "Deleted"]
PROPERTY_OPERATIONS: tuple[PropertyOperation, ...] = ("Initialized", "Changed", "Deleted")

_JSON_KEYS = ("token", "kind", "name", "location", "scopes", "offline")
_LOCATION_KEYS = ("lon", "lat", "elevation")


#: Characters XML 1.0 cannot carry (RQ-3: every item travels in an event message).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: str, what: str, token: str) -> None:
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise InvalidResource(f"{what} of {token!r} holds {bad.group()!r}, a character XML cannot carry")


class InvalidResource(ConfigurationError):
    """A resource (or a file of resources) is malformed; the message says what and where."""


def _no_unknown_keys(obj: Mapping[str, object], allowed: tuple[str, ...], what: str) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise InvalidResource(f"unknown {what} {', '.join(repr(k) for k in unknown)}; allowed: {', '.join(allowed)}")


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResource(f"{what} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidResource(f"{what} must be a finite number, got {value!r}")
    return result


@dataclass(frozen=True, slots=True)
class GeoLocation:
    """``tt:GeoLocation``: ``lon`` and ``lat`` in degrees (WGS 84), ``elevation`` in metres.

    Ints are accepted and stored as floats; NaN, infinities and out-of-range
    values raise :class:`InvalidResource`.
    """

    lon: float
    lat: float
    elevation: float | None = None

    def __post_init__(self) -> None:
        lon = _number(self.lon, "location lon")
        lat = _number(self.lat, "location lat")
        if not -180.0 <= lon <= 180.0:
            raise InvalidResource(f"location lon must be within -180..180 degrees, got {lon!r}")
        if not -90.0 <= lat <= 90.0:
            raise InvalidResource(f"location lat must be within -90..90 degrees, got {lat!r}")
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)
        if self.elevation is not None:
            object.__setattr__(self, "elevation", _number(self.elevation, "location elevation"))

    @classmethod
    def from_json(cls, obj: object) -> GeoLocation:
        """Build from ``{"lon": .., "lat": .., "elevation": ..}`` (elevation optional)."""
        if not isinstance(obj, Mapping):
            raise InvalidResource(
                f"location must be an object with lon, lat and optional elevation, got {obj!r}"
            )
        _no_unknown_keys(obj, _LOCATION_KEYS, "location key(s)")
        missing = [k for k in ("lon", "lat") if k not in obj]
        if missing:
            raise InvalidResource(f"location lacks {' and '.join(missing)}")
        return cls(obj["lon"], obj["lat"], obj.get("elevation"))

    def to_json(self) -> dict[str, float]:
        out = {"lon": self.lon, "lat": self.lat}
        if self.elevation is not None:
            out["elevation"] = self.elevation
        return out


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource as signalled by a ``tns1:Resource/<kind>`` property event (RQ-3).

    ``token`` is the Source item (a remote token, unique in the serving
    system, at most 64 characters); the other fields are the optional Data
    items. ``scopes`` keeps the order given; a list is accepted and stored as
    a tuple.
    """

    token: str
    kind: str
    name: str | None = None
    location: GeoLocation | None = None
    scopes: tuple[str, ...] = ()
    offline: bool | None = None

    def __post_init__(self) -> None:
        token = self.token
        if not isinstance(token, str) or not token:
            raise InvalidResource(f"token must be a non-empty string, got {token!r}")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidResource(
                f"token {token!r} is {len(token)} characters long; "
                f"a tt:ReferenceToken allows at most {MAX_TOKEN_LENGTH}"
            )
        if self.kind not in RESOURCE_KINDS:
            raise InvalidResource(
                f"unknown resource kind {self.kind!r} for token {token!r}; "
                f"expected one of: {', '.join(RESOURCE_KINDS)}"
            )
        if self.name is not None and not isinstance(self.name, str):
            raise InvalidResource(f"name of {token!r} must be a string, got {self.name!r}")
        _xml_text(token, "token", token)
        if self.name is not None:
            _xml_text(self.name, "name", token)
        if self.location is not None and not isinstance(self.location, GeoLocation):
            raise InvalidResource(
                f"location of {token!r} must be a GeoLocation, got {self.location!r}"
            )
        scopes = self.scopes
        if isinstance(scopes, str) or not isinstance(scopes, (tuple, list)):
            raise InvalidResource(f"scopes of {token!r} must be a list of strings, got {scopes!r}")
        for scope in scopes:
            if not isinstance(scope, str) or not scope:
                raise InvalidResource(
                    f"each scope of {token!r} must be a non-empty string, got {scope!r}"
                )
            _xml_text(scope, "scope", token)
        if not isinstance(scopes, tuple):
            object.__setattr__(self, "scopes", tuple(scopes))
        if self.offline is not None and not isinstance(self.offline, bool):
            raise InvalidResource(
                f"offline of {token!r} must be true, false or absent, got {self.offline!r}"
            )

    @classmethod
    def from_json(cls, obj: object) -> Resource:
        """Build from the JSON form (see the module docstring); unknown keys are an error."""
        if not isinstance(obj, Mapping):
            raise InvalidResource(f"a resource must be a JSON object, got {type(obj).__name__}")
        _no_unknown_keys(obj, _JSON_KEYS, "key(s)")
        missing = [k for k in ("token", "kind") if k not in obj]
        if missing:
            raise InvalidResource(f"missing required key(s): {', '.join(missing)}")
        location = obj.get("location")
        scopes = obj.get("scopes")
        if scopes is None:
            scopes = ()
        elif not isinstance(scopes, list):
            raise InvalidResource(f"scopes must be a list of strings, got {scopes!r}")
        return cls(
            token=obj["token"],
            kind=obj["kind"],
            name=obj.get("name"),
            location=None if location is None else GeoLocation.from_json(location),
            scopes=tuple(scopes),
            offline=obj.get("offline"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form; absent data items are left out, so ``from_json`` round-trips."""
        out: dict[str, Any] = {"token": self.token, "kind": self.kind}
        if self.name is not None:
            out["name"] = self.name
        if self.location is not None:
            out["location"] = self.location.to_json()
        if self.scopes:
            out["scopes"] = list(self.scopes)
        if self.offline is not None:
            out["offline"] = self.offline
        return out


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    """A change of one resource (RQ-4) with its position ``seq`` in the registry's change log.

    For ``Deleted`` the resource carries only ``token`` and ``kind`` (the
    kind names the topic ``tns1:Resource/<kind>``).
    """

    operation: PropertyOperation
    resource: Resource
    seq: int
