"""Layer 6 (domain): PTZ heads behind the PTZ service — the backend interface and a simulated head (ANX-B-2).

A device's PTZ service drives one :class:`PtzNode` per pan/tilt/zoom head and
reaches it through a Media2 profile: every PTZ operation names a profile
token, and the node whose ``profile_token`` it is answers. Firmware plugs its
real mechanics in as a :class:`PtzBackend`; :class:`SimulatedPtz` is the
sample backend, a head whose mechanics are computed, so tests (and an upper
VSS forwarding PTZ two levels down) can check on GetStatus what a move did.

Theory of operation
-------------------
Sans-IO: no clock is read here. Every operation takes ``now`` (seconds, any
monotonic-enough base such as ``time.time()``), and the position is a pure
function of the last command and ``now``. A head has three axes (pan, tilt,
zoom) in ONVIF's generic spaces: pan and tilt in ``[-1, 1]``, zoom in
``[0, 1]``, narrowed by the node's limits. Each axis is *idle*, *travelling*
to a target at a speed, or *sweeping* at a velocity until a deadline:

* AbsoluteMove, RelativeMove and GotoPreset set targets; the speed is the
  request's (generic speed space ``[0, 1]``, a fraction of the node's
  ``max_speed`` in units per second) or the configuration's default (1.0).
  An absolute target outside the limits is refused (:class:`PtzError`
  ``InvalidPosition``); a relative one is clamped to them, as a real head
  stops at its end stops;
* ContinuousMove sets velocities (generic velocity space ``[-1, 1]``); the
  axis moves until Stop, a new command, the timeout (the request's, else the
  configuration's default) or the limit, whichever comes first;
* Stop freezes the position reached at ``now`` on the axes it names.

An axis is MOVING while its position at ``now`` still changes, else IDLE.
Presets remember a position under a token (``MaximumNumberOfPresets`` at
most, names unique); the device may keep them in memory only, as here.

Errors carry their ONVIF fault (``code``, ``subcodes``) the way h2's errors
carry their wire code; the service layer only copies them into the fault.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ConfigurationError, Iec62676Error
from .tokens import validate_reference_token

__all__ = [
    "ABSOLUTE_PAN_TILT_SPACE",
    "ABSOLUTE_ZOOM_SPACE",
    "CONTINUOUS_PAN_TILT_SPACE",
    "CONTINUOUS_ZOOM_SPACE",
    "PAN_TILT_SPEED_SPACE",
    "RELATIVE_PAN_TILT_SPACE",
    "RELATIVE_ZOOM_SPACE",
    "ZOOM_SPEED_SPACE",
    "Axis",
    "NoHeads",
    "PtzBackend",
    "PtzError",
    "PtzHead",
    "PtzNode",
    "PtzPosition",
    "PtzPreset",
    "PtzSpeed",
    "PtzStatus",
    "SimulatedHead",
    "SimulatedPtz",
]

_SPACES = "http://www.onvif.org/ver10/tptz/"
#: The generic coordinate spaces of the ONVIF PTZ specification (the ones this head supports).
ABSOLUTE_PAN_TILT_SPACE = _SPACES + "PanTiltSpaces/PositionGenericSpace"
ABSOLUTE_ZOOM_SPACE = _SPACES + "ZoomSpaces/PositionGenericSpace"
RELATIVE_PAN_TILT_SPACE = _SPACES + "PanTiltSpaces/TranslationGenericSpace"
RELATIVE_ZOOM_SPACE = _SPACES + "ZoomSpaces/TranslationGenericSpace"
CONTINUOUS_PAN_TILT_SPACE = _SPACES + "PanTiltSpaces/VelocityGenericSpace"
CONTINUOUS_ZOOM_SPACE = _SPACES + "ZoomSpaces/VelocityGenericSpace"
PAN_TILT_SPEED_SPACE = _SPACES + "PanTiltSpaces/GenericSpeedSpace"
ZOOM_SPEED_SPACE = _SPACES + "ZoomSpaces/ZoomGenericSpeedSpace"

#: tt:Name is at most 64 characters.
MAX_NAME = 64
#: Longest ContinuousMove a request may ask for (a lost Stop must not sweep forever): one hour.
MAX_TIMEOUT = 3600.0


class PtzError(Iec62676Error):
    """A PTZ request the head refuses; ``code``/``subcodes`` are its ONVIF fault."""

    def __init__(self, message: str, *, code: str = "Sender", subcodes: tuple[str, ...] = ("InvalidArgVal",)) -> None:
        super().__init__(message)
        self.code = code
        self.subcodes = subcodes


@dataclass(frozen=True, kw_only=True)
class Axis:
    """The range one axis may travel (generic space units)."""

    min: float
    max: float

    def clamp(self, value: float) -> float:
        return min(self.max, max(self.min, value))


@dataclass(frozen=True, kw_only=True)
class PtzNode:
    """One head: its node token, the Media2 profile that reaches it, its limits and mechanics.

    The node's PTZ configuration shares the node's token (one configuration per node).
    """

    token: str
    name: str
    profile_token: str
    pan: Axis = Axis(min=-1.0, max=1.0)
    tilt: Axis = Axis(min=-1.0, max=1.0)
    zoom: Axis = Axis(min=0.0, max=1.0)
    #: Generic units per second at speed 1.0 (full speed); the same for every axis.
    max_speed: float = 0.5
    max_presets: int = 32
    #: ContinuousMove without a Timeout stops after this many seconds.
    default_timeout: float = 10.0

    def __post_init__(self) -> None:
        for what, token in (("node token", self.token), ("profile token", self.profile_token)):
            try:
                validate_reference_token(token)
            except ConfigurationError as exc:
                raise ConfigurationError(f"PTZ {what}: {exc}") from None
        if not self.name.strip() or len(self.name) > MAX_NAME:
            raise ConfigurationError(f"PTZ node name must be 1..{MAX_NAME} characters")
        for label, axis, outer in (("pan", self.pan, (-1.0, 1.0)), ("tilt", self.tilt, (-1.0, 1.0)),
                                   ("zoom", self.zoom, (0.0, 1.0))):
            if not outer[0] <= axis.min < axis.max <= outer[1]:
                raise ConfigurationError(f"PTZ {label} limits must satisfy {outer[0]} <= min < max <= {outer[1]}")
        if not 0.0 < self.max_speed <= 100.0 or not math.isfinite(self.max_speed):
            raise ConfigurationError("PTZ max speed must be in (0, 100] units per second")
        if not 1 <= self.max_presets <= 1000:
            raise ConfigurationError("PTZ maximum number of presets must be 1..1000")
        if not 0.0 < self.default_timeout <= MAX_TIMEOUT:
            raise ConfigurationError(f"PTZ default timeout must be in (0, {MAX_TIMEOUT:g}] seconds")

    @property
    def axes(self) -> tuple[Axis, Axis, Axis]:
        return self.pan, self.tilt, self.zoom


@dataclass(frozen=True, kw_only=True)
class PtzPosition:
    """A point (or, for RelativeMove, a translation) in the generic spaces; ``None`` = axis not given."""

    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None

    def values(self) -> tuple[float | None, float | None, float | None]:
        return self.pan, self.tilt, self.zoom


#: Speeds (generic speed space, [0, 1]) or velocities ([-1, 1]) per axis; the same shape as a position.
PtzSpeed = PtzPosition


@dataclass(frozen=True, kw_only=True)
class PtzStatus:
    """What GetStatus reports: the position at ``now`` and whether each axis moves."""

    pan: float
    tilt: float
    zoom: float
    pan_tilt_moving: bool
    zoom_moving: bool


@dataclass(frozen=True, kw_only=True)
class PtzPreset:
    token: str
    name: str
    position: PtzPosition


@dataclass(frozen=True)
class _Motion:
    """One axis: at ``start`` it was at ``origin``; it then travels at ``rate`` (signed units/s) until ``until``,
    where it rests at ``end`` (given exactly: ``until`` is rounded to the clock's float, whose step is ~0.2 us
    at today's epoch seconds, and ``origin + rate * (until - start)`` would overshoot a target or a limit)."""

    start: float
    origin: float
    rate: float = 0.0
    until: float = 0.0
    end: float | None = None

    def at(self, now: float) -> float:
        if self.end is not None and now >= self.until:
            return self.end
        elapsed = max(0.0, min(now, self.until) - self.start)
        return self.origin + self.rate * elapsed

    def moving(self, now: float) -> bool:
        return self.rate != 0.0 and self.start <= now < self.until


class PtzHead(Protocol):
    """One head as the PTZ service drives it (every call takes ``now``; errors are :class:`PtzError`)."""

    node: PtzNode

    def status(self, now: float) -> PtzStatus: ...

    def absolute_move(self, now: float, position: PtzPosition, speed: PtzSpeed | None = None) -> None: ...

    def relative_move(self, now: float, translation: PtzPosition, speed: PtzSpeed | None = None) -> None: ...

    def continuous_move(self, now: float, velocity: PtzSpeed, timeout: float | None = None) -> None: ...

    def stop(self, now: float, *, pan_tilt: bool = True, zoom: bool = True) -> None: ...

    def presets(self) -> list[PtzPreset]: ...

    def set_preset(self, now: float, name: str | None = None, token: str | None = None) -> str: ...

    def goto_preset(self, now: float, token: str, speed: PtzSpeed | None = None) -> None: ...

    def remove_preset(self, token: str) -> None: ...


class PtzBackend(Protocol):
    """What firmware plugs in: its nodes, and the head a Media2 profile reaches (``None``: no PTZ)."""

    def nodes(self) -> list[PtzNode]: ...

    def head(self, profile_token: str) -> PtzHead | None: ...


class NoHeads:
    """The :class:`PtzBackend` of a system without heads of its own (a VSS that forwards PTZ to lower systems)."""

    def nodes(self) -> list[PtzNode]:
        return []

    def head(self, profile_token: str) -> PtzHead | None:
        return None


def _finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise PtzError(f"{what} must be a finite number")


class SimulatedHead:
    """A head computed from its last commands (see the module docstring); every call takes ``now``."""

    def __init__(self, node: PtzNode, now: float, home: PtzPosition | None = None) -> None:
        self.node = node
        start = home or PtzPosition(pan=node.pan.clamp(0.0), tilt=node.tilt.clamp(0.0), zoom=node.zoom.min)
        self._axes = [_Motion(now, axis.clamp(value or 0.0)) for axis, value in zip(node.axes, start.values())]
        self._presets: dict[str, PtzPreset] = {}
        self._serial = itertools.count(1)

    # -- status ------------------------------------------------------------------------------------
    def position(self, now: float) -> PtzPosition:
        pan, tilt, zoom = (m.at(now) for m in self._axes)
        return PtzPosition(pan=pan, tilt=tilt, zoom=zoom)

    def status(self, now: float) -> PtzStatus:
        pos = self.position(now)
        moving = [m.moving(now) for m in self._axes]
        return PtzStatus(pan=pos.pan or 0.0, tilt=pos.tilt or 0.0, zoom=pos.zoom or 0.0,
                         pan_tilt_moving=moving[0] or moving[1], zoom_moving=moving[2])

    # -- moves -------------------------------------------------------------------------------------
    def _speeds(self, speed: PtzSpeed | None) -> list[float]:
        """Units per second per axis: the request's speed (generic [0, 1], 0 = default) times max_speed."""
        out = []
        for value, what in zip((speed or PtzSpeed()).values(), ("pan speed", "tilt speed", "zoom speed")):
            _finite(value, what)
            if value is not None and not 0.0 <= value <= 1.0:
                raise PtzError(f"{what} {value:g} is outside the generic speed space [0, 1]",
                               subcodes=("InvalidArgVal", "InvalidSpeed"))
            units = (value or 1.0) * self.node.max_speed
            if units == 0.0:  # a subnormal speed times max_speed underflows: no travel time could be computed
                raise PtzError(f"{what} {value:g} is too small to move at", subcodes=("InvalidArgVal", "InvalidSpeed"))
            out.append(units)
        return out

    def _travel(self, now: float, targets: tuple[float | None, ...], speeds: list[float]) -> None:
        for i, (target, speed) in enumerate(zip(targets, speeds)):
            if target is None:
                continue
            here = self._axes[i].at(now)
            distance = target - here
            duration = abs(distance) / speed
            rate = math.copysign(speed, distance) if distance else 0.0
            self._axes[i] = _Motion(now, here, rate, now + duration, target)

    def absolute_move(self, now: float, position: PtzPosition, speed: PtzSpeed | None = None) -> None:
        """Travel to ``position``; a coordinate outside the node's limits is refused, nothing moves."""
        for value, axis, what in zip(position.values(), self.node.axes, ("pan", "tilt", "zoom")):
            _finite(value, what)
            if value is not None and not axis.min <= value <= axis.max:
                raise PtzError(f"{what} position {value:g} is outside the limits [{axis.min:g}, {axis.max:g}]",
                               subcodes=("InvalidArgVal", "InvalidPosition"))
        self._travel(now, position.values(), self._speeds(speed))

    def relative_move(self, now: float, translation: PtzPosition, speed: PtzSpeed | None = None) -> None:
        """Travel by ``translation`` from where the head is now, stopping at the limits."""
        here = self.position(now).values()
        targets: list[float | None] = []
        for delta, axis, start, what in zip(translation.values(), self.node.axes, here, ("pan", "tilt", "zoom")):
            _finite(delta, what)
            if delta is not None and not -1.0 <= delta <= 1.0:
                raise PtzError(f"{what} translation {delta:g} is outside the generic translation space",
                               subcodes=("InvalidArgVal", "InvalidPosition"))
            targets.append(None if delta is None else axis.clamp((start or 0.0) + delta))
        self._travel(now, tuple(targets), self._speeds(speed))

    def continuous_move(self, now: float, velocity: PtzSpeed, timeout: float | None = None) -> None:
        """Sweep at ``velocity`` ([-1, 1] per axis) until Stop, ``timeout`` seconds, or the limit."""
        if timeout is not None and not 0.0 < timeout <= MAX_TIMEOUT:
            raise PtzError(f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds", subcodes=("InvalidArgVal",))
        stop_at = now + (timeout if timeout is not None else self.node.default_timeout)
        for value, what in zip(velocity.values(), ("pan", "tilt", "zoom")):
            _finite(value, what)
            if value is not None and not -1.0 <= value <= 1.0:
                raise PtzError(f"{what} velocity {value:g} is outside the generic velocity space [-1, 1]",
                               subcodes=("InvalidArgVal", "InvalidVelocity"))
        for i, value in enumerate(velocity.values()):
            if value is None:
                continue
            here = self._axes[i].at(now)
            rate = value * self.node.max_speed
            end = self.node.axes[i].max if rate > 0 else self.node.axes[i].min
            reach = now + (end - here) / rate if rate else math.inf  # when the limit ends the sweep
            until = min(stop_at, reach)
            rest = end if reach <= stop_at else self.node.axes[i].clamp(here + rate * (until - now))
            self._axes[i] = _Motion(now, here, rate, until, rest)

    def stop(self, now: float, *, pan_tilt: bool = True, zoom: bool = True) -> None:
        for i, selected in enumerate((pan_tilt, pan_tilt, zoom)):
            if selected:
                self._axes[i] = _Motion(now, self._axes[i].at(now))

    # -- presets -----------------------------------------------------------------------------------
    def presets(self) -> list[PtzPreset]:
        return list(self._presets.values())

    def set_preset(self, now: float, name: str | None = None, token: str | None = None) -> str:
        """Store the position at ``now``: replace preset ``token``, or create one (a token is made up)."""
        if name is not None and (not name.strip() or len(name) > MAX_NAME or not name.isprintable()):
            raise PtzError(f"preset name must be 1..{MAX_NAME} printable characters",
                           subcodes=("InvalidArgVal", "InvalidPresetName"))
        if token is not None and token not in self._presets:
            raise PtzError(f"no preset with token {token[:64]!r}", subcodes=("InvalidArgVal", "NoToken"))
        if name is not None and any(p.name == name and p.token != token for p in self._presets.values()):
            raise PtzError(f"a preset named {name!r} exists already", subcodes=("InvalidArgVal", "PresetExist"))
        if token is None:
            if len(self._presets) >= self.node.max_presets:
                raise PtzError(f"all {self.node.max_presets} presets are in use; remove one first",
                               code="Receiver", subcodes=("Action", "TooManyPresets"))
            token = next(t for t in (f"preset-{n}" for n in self._serial) if t not in self._presets)
        if name is None:
            name = self._presets[token].name if token in self._presets else token
        self._presets[token] = PtzPreset(token=token, name=name, position=self.position(now))
        return token

    def goto_preset(self, now: float, token: str, speed: PtzSpeed | None = None) -> None:
        preset = self._preset(token)
        self._travel(now, preset.position.values(), self._speeds(speed))

    def remove_preset(self, token: str) -> None:
        self._preset(token)
        del self._presets[token]

    def _preset(self, token: str) -> PtzPreset:
        preset = self._presets.get(token)
        if preset is None:
            raise PtzError(f"no preset with token {token[:64]!r}", subcodes=("InvalidArgVal", "NoToken"))
        return preset


@dataclass
class SimulatedPtz:
    """The sample :class:`PtzBackend`: one :class:`SimulatedHead` per node, created at ``now``."""

    node_list: list[PtzNode]
    now: float
    _heads: dict[str, SimulatedHead] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if len({n.token for n in self.node_list}) != len(self.node_list):
            raise ConfigurationError("two PTZ nodes have the same token")
        for node in self.node_list:
            if node.profile_token in self._heads:
                raise ConfigurationError(f"profile {node.profile_token!r} has two PTZ nodes")
            self._heads[node.profile_token] = SimulatedHead(node, self.now)

    def nodes(self) -> list[PtzNode]:
        return list(self.node_list)

    def head(self, profile_token: str) -> SimulatedHead | None:
        return self._heads.get(profile_token)
