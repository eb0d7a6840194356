"""Layer 5: the PTZ service on Spyne — nodes, configurations, moves, status and presets (ANX-B-2, SEC-1).

Serves at ``/onvif/ptz_service`` (namespace ``tptz``) GetServiceCapabilities,
GetNodes, GetNode, GetConfigurations, GetConfiguration, ContinuousMove,
AbsoluteMove, RelativeMove, Stop, GetStatus, GetPresets, SetPreset,
GotoPreset and RemovePreset over a :class:`~..domain.ptz.PtzBackend`. The
Spyne models mirror ``xsd/ptz.xsd`` (tptz) and ``xsd/ptz-common.xsd`` (tt)
element for element; a test compares them, and every answer validates against
the authored XSD.

Theory of operation
-------------------
The heads are reached through Media2 profiles (the operations name a
``ProfileToken``): the backend's ``head(profile)`` answers, a profile the
Media2 service knows but that has no head faults ``Sender/InvalidArgVal/
NoPTZProfile``, any other token ``.../NoProfile``. Each node has one
configuration with the node's token (so GetConfiguration of an unknown token
is ``.../NoConfig``, GetNode ``.../NoEntity``). Only the generic spaces are
supported; a vector naming another ``space`` is ``.../SpaceNotSupported``.
The clock is the context's (a test passes a fake one); the domain computes
every position from it. Refusals of the head (:class:`~..domain.ptz.PtzError`)
carry their ONVIF subcodes and become the fault as they are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from spyne import Boolean, Float, Integer, Unicode, XmlAttribute, rpc
from spyne.model.complex import ComplexModel
from spyne.util.xml import get_object_as_xml

from ..domain.media import MediaBackend
from ..domain.ptz import (
    ABSOLUTE_PAN_TILT_SPACE,
    ABSOLUTE_ZOOM_SPACE,
    CONTINUOUS_PAN_TILT_SPACE,
    CONTINUOUS_ZOOM_SPACE,
    PAN_TILT_SPEED_SPACE,
    RELATIVE_PAN_TILT_SPACE,
    RELATIVE_ZOOM_SPACE,
    ZOOM_SPEED_SPACE,
    Axis,
    PtzBackend,
    PtzError,
    PtzHead,
    PtzNode,
    PtzPosition,
    PtzPreset,
)
from ..domain.subscriptions import InvalidTime, format_datetime, format_duration, parse_duration
from ..namespaces import TT
from ..security.access import AccessClass
from ..soap.envelope import excerpt
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, service_context

__all__ = [
    "OPERATION_ACCESS",
    "PTZ_PATH",
    "TPTZ",
    "PtzService",
    "PtzServiceContext",
    "capabilities_element",
    "ptz_configuration",
    "ptz_endpoint",
]

#: The PTZ namespace (wire contract).
TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
#: Conventional path of the service.
PTZ_PATH = "/onvif/ptz_service"

#: SEC-1 (the ONVIF PTZ specification's access classes).
OPERATION_ACCESS = {
    (TPTZ, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TPTZ, "GetNodes"): AccessClass.READ_MEDIA,
    (TPTZ, "GetNode"): AccessClass.READ_MEDIA,
    (TPTZ, "GetConfigurations"): AccessClass.READ_MEDIA,
    (TPTZ, "GetConfiguration"): AccessClass.READ_MEDIA,
    (TPTZ, "GetStatus"): AccessClass.READ_MEDIA,
    (TPTZ, "GetPresets"): AccessClass.READ_MEDIA,
    (TPTZ, "ContinuousMove"): AccessClass.ACTUATE,
    (TPTZ, "AbsoluteMove"): AccessClass.ACTUATE,
    (TPTZ, "RelativeMove"): AccessClass.ACTUATE,
    (TPTZ, "Stop"): AccessClass.ACTUATE,
    (TPTZ, "SetPreset"): AccessClass.ACTUATE,
    (TPTZ, "GotoPreset"): AccessClass.ACTUATE,
    (TPTZ, "RemovePreset"): AccessClass.ACTUATE,
}


@dataclass
class PtzServiceContext:
    """What the PTZ service works with: the heads, the Media2 profiles (to tell NoProfile from
    NoPTZProfile) and the clock the heads' mechanics run on."""

    ptz: PtzBackend
    media: MediaBackend | None = None
    clock: Callable[[], float] = time.time
    #: Requests run in a thread pool; one command at a time reaches the heads.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# --------------------------------------------------------------------------- Spyne models (mirror the XSD)

class PTZServiceCapabilities(ComplexModel):  # type: ignore[misc]
    """tptz:Capabilities (the attributes we report; the others are absent = false)."""

    __namespace__ = TPTZ
    __type_name__ = "Capabilities"
    _type_info = [
        ("MoveStatus", XmlAttribute(Boolean)),
        ("StatusPosition", XmlAttribute(Boolean)),
    ]


class Vector2D(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("x", XmlAttribute(Float(min_occurs=1))),
        ("y", XmlAttribute(Float(min_occurs=1))),
        ("space", XmlAttribute(Unicode)),
    ]


class Vector1D(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("x", XmlAttribute(Float(min_occurs=1))), ("space", XmlAttribute(Unicode))]


class PTZVector(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("PanTilt", Vector2D), ("Zoom", Vector1D)]


class PTZSpeed(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("PanTilt", Vector2D), ("Zoom", Vector1D)]


class PTZMoveStatus(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("PanTilt", Unicode), ("Zoom", Unicode)]


class PTZStatus(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("Position", PTZVector),
        ("MoveStatus", PTZMoveStatus),
        ("UtcTime", Unicode(min_occurs=1)),
    ]


class FloatRange(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Min", Float(min_occurs=1)), ("Max", Float(min_occurs=1))]


class Space2DDescription(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("URI", Unicode(min_occurs=1)),
        ("XRange", FloatRange.customize(min_occurs=1)),
        ("YRange", FloatRange.customize(min_occurs=1)),
    ]


class Space1DDescription(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("URI", Unicode(min_occurs=1)), ("XRange", FloatRange.customize(min_occurs=1))]


class PTZSpaces(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("AbsolutePanTiltPositionSpace", Space2DDescription),
        ("AbsoluteZoomPositionSpace", Space1DDescription),
        ("RelativePanTiltTranslationSpace", Space2DDescription),
        ("RelativeZoomTranslationSpace", Space1DDescription),
        ("ContinuousPanTiltVelocitySpace", Space2DDescription),
        ("ContinuousZoomVelocitySpace", Space1DDescription),
        ("PanTiltSpeedSpace", Space1DDescription),
        ("ZoomSpeedSpace", Space1DDescription),
    ]


class PTZNode(ComplexModel):  # type: ignore[misc]
    """tt:PTZNode, its tt:DeviceEntity base (the token attribute) flattened in."""

    __namespace__ = TT
    _type_info = [
        ("Name", Unicode),
        ("SupportedPTZSpaces", PTZSpaces.customize(min_occurs=1)),
        ("MaximumNumberOfPresets", Integer(min_occurs=1)),
        ("HomeSupported", Boolean(min_occurs=1)),
        ("token", XmlAttribute(Unicode(min_occurs=1))),
        ("FixedHomePosition", XmlAttribute(Boolean)),
        ("GeoMove", XmlAttribute(Boolean)),
    ]


class PanTiltLimits(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Range", Space2DDescription.customize(min_occurs=1))]


class ZoomLimits(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Range", Space1DDescription.customize(min_occurs=1))]


class PTZConfiguration(ComplexModel):  # type: ignore[misc]
    """tt:PTZConfiguration, its tt:ConfigurationEntity base flattened in (Name, UseCount, token)."""

    __namespace__ = TT
    _type_info = [
        ("Name", Unicode(min_occurs=1)),
        ("UseCount", Integer(min_occurs=1)),
        ("NodeToken", Unicode(min_occurs=1)),
        ("DefaultAbsolutePantTiltPositionSpace", Unicode),
        ("DefaultAbsoluteZoomPositionSpace", Unicode),
        ("DefaultRelativePanTiltTranslationSpace", Unicode),
        ("DefaultRelativeZoomTranslationSpace", Unicode),
        ("DefaultContinuousPanTiltVelocitySpace", Unicode),
        ("DefaultContinuousZoomVelocitySpace", Unicode),
        ("DefaultPTZSpeed", PTZSpeed),
        ("DefaultPTZTimeout", Unicode),
        ("PanTiltLimits", PanTiltLimits),
        ("ZoomLimits", ZoomLimits),
        ("token", XmlAttribute(Unicode(min_occurs=1))),
    ]


class PTZPreset(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Name", Unicode), ("PTZPosition", PTZVector), ("token", XmlAttribute(Unicode))]


# --------------------------------------------------------------------------- answers

def _capabilities() -> PTZServiceCapabilities:
    return PTZServiceCapabilities(MoveStatus=True, StatusPosition=True)


def capabilities_element() -> etree._Element:
    """``tptz:Capabilities`` for GetServices."""
    element = get_object_as_xml(_capabilities(), PTZServiceCapabilities, "Capabilities")
    element.tag = f"{{{TPTZ}}}Capabilities"
    return element


def _range(axis: Axis) -> FloatRange:
    return FloatRange(Min=axis.min, Max=axis.max)


def _space2(uri: str, x: Axis, y: Axis) -> Space2DDescription:
    return Space2DDescription(URI=uri, XRange=_range(x), YRange=_range(y))


def _space1(uri: str, x: Axis) -> Space1DDescription:
    return Space1DDescription(URI=uri, XRange=_range(x))


_UNIT = Axis(min=-1.0, max=1.0)
_SPEED = Axis(min=0.0, max=1.0)


def _node(node: PtzNode) -> PTZNode:
    spaces = PTZSpaces(
        AbsolutePanTiltPositionSpace=_space2(ABSOLUTE_PAN_TILT_SPACE, node.pan, node.tilt),
        AbsoluteZoomPositionSpace=_space1(ABSOLUTE_ZOOM_SPACE, node.zoom),
        RelativePanTiltTranslationSpace=_space2(RELATIVE_PAN_TILT_SPACE, _UNIT, _UNIT),
        RelativeZoomTranslationSpace=_space1(RELATIVE_ZOOM_SPACE, _UNIT),
        ContinuousPanTiltVelocitySpace=_space2(CONTINUOUS_PAN_TILT_SPACE, _UNIT, _UNIT),
        ContinuousZoomVelocitySpace=_space1(CONTINUOUS_ZOOM_SPACE, _UNIT),
        PanTiltSpeedSpace=_space1(PAN_TILT_SPEED_SPACE, _SPEED),
        ZoomSpeedSpace=_space1(ZOOM_SPEED_SPACE, _SPEED))
    return PTZNode(token=node.token, Name=node.name, SupportedPTZSpaces=spaces,
                   MaximumNumberOfPresets=node.max_presets, HomeSupported=False, FixedHomePosition=False,
                   GeoMove=False)


def ptz_configuration(node: PtzNode) -> PTZConfiguration:
    """The one tt:PTZConfiguration of ``node`` (it shares the node's token); Media2 profiles carry it too."""
    return PTZConfiguration(
        token=node.token, Name=node.name, UseCount=1, NodeToken=node.token,
        DefaultAbsolutePantTiltPositionSpace=ABSOLUTE_PAN_TILT_SPACE,
        DefaultAbsoluteZoomPositionSpace=ABSOLUTE_ZOOM_SPACE,
        DefaultRelativePanTiltTranslationSpace=RELATIVE_PAN_TILT_SPACE,
        DefaultRelativeZoomTranslationSpace=RELATIVE_ZOOM_SPACE,
        DefaultContinuousPanTiltVelocitySpace=CONTINUOUS_PAN_TILT_SPACE,
        DefaultContinuousZoomVelocitySpace=CONTINUOUS_ZOOM_SPACE,
        DefaultPTZSpeed=PTZSpeed(PanTilt=Vector2D(x=1.0, y=1.0), Zoom=Vector1D(x=1.0)),
        DefaultPTZTimeout=format_duration(node.default_timeout),
        PanTiltLimits=PanTiltLimits(Range=_space2(ABSOLUTE_PAN_TILT_SPACE, node.pan, node.tilt)),
        ZoomLimits=ZoomLimits(Range=_space1(ABSOLUTE_ZOOM_SPACE, node.zoom)))


def _vector(position: PtzPosition) -> PTZVector:
    return PTZVector(PanTilt=Vector2D(x=position.pan or 0.0, y=position.tilt or 0.0, space=ABSOLUTE_PAN_TILT_SPACE),
                     Zoom=Vector1D(x=position.zoom or 0.0, space=ABSOLUTE_ZOOM_SPACE))


def _preset(preset: PtzPreset) -> PTZPreset:
    return PTZPreset(token=preset.token, Name=preset.name, PTZPosition=_vector(preset.position))


def _context(ctx: Any) -> PtzServiceContext:
    context: PtzServiceContext = service_context(ctx)
    return context


def _node_of(ctx: Any, token: str, subcode: str, what: str) -> PtzNode:
    """The node with ``token`` (a configuration shares its node's token); else the ``subcode`` fault."""
    for node in _context(ctx).ptz.nodes():
        if node.token == token:
            return node
    raise SoapFault(code="Sender", subcodes=("InvalidArgVal", subcode), reason=f"no {what} with token {excerpt(token)}")


def _head(ctx: Any, profile_token: str) -> PtzHead:
    context = _context(ctx)
    head = context.ptz.head(profile_token)
    if head is not None:
        return head
    if context.media is not None and context.media.media_source(profile_token) is not None:
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "NoPTZProfile"),
                        reason=f"profile {excerpt(profile_token)} has no PTZ configuration")
    raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "NoProfile"),
                    reason=f"the requested profile token {excerpt(profile_token)} does not exist")


def _space(vector: Any, *allowed: str) -> None:
    space = getattr(vector, "space", None) if vector is not None else None
    if space is not None and space not in allowed:
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "SpaceNotSupported"),
                        reason=f"space {space[:100]!r} is not supported; use the generic spaces of GetNodes")


def _position(vector: Any, pan_tilt_space: str, zoom_space: str) -> PtzPosition:
    """A tt:PTZVector / tt:PTZSpeed request part as a domain position (absent parts: ``None``)."""
    if vector is None:
        return PtzPosition()
    _space(vector.PanTilt, pan_tilt_space)
    _space(vector.Zoom, zoom_space)
    pan_tilt, zoom = vector.PanTilt, vector.Zoom
    return PtzPosition(pan=None if pan_tilt is None else pan_tilt.x, tilt=None if pan_tilt is None else pan_tilt.y,
                       zoom=None if zoom is None else zoom.x)


def _speed(speed: Any) -> PtzPosition | None:
    return None if speed is None else _position(speed, PAN_TILT_SPEED_SPACE, ZOOM_SPEED_SPACE)


def _run(ctx: Any, action: Callable[[float], Any]) -> Any:
    """Run ``action(now)`` on a head under the context's lock; a refusal becomes its fault."""
    context = _context(ctx)
    try:
        with context.lock:
            return action(context.clock())
    except PtzError as exc:
        raise SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc)) from None


def _moving(flag: bool) -> str:
    return "MOVING" if flag else "IDLE"


# --------------------------------------------------------------------------- the service

class PtzService(SoapService):
    """The operations of ``tptz:PTZ`` this device serves."""

    __service_name__ = "PTZService"
    __port_types__ = ["PTZ"]

    @rpc(_returns=PTZServiceCapabilities, _out_variable_name="Capabilities")
    def GetServiceCapabilities(ctx: Any) -> PTZServiceCapabilities:
        return _capabilities()

    @rpc(_returns=PTZNode.customize(max_occurs="unbounded"), _out_variable_name="PTZNode")
    def GetNodes(ctx: Any) -> list[PTZNode]:
        return [_node(n) for n in _context(ctx).ptz.nodes()]

    @rpc(Unicode(min_occurs=1), _returns=PTZNode, _out_variable_name="PTZNode",
         _in_variable_names={"node_token": "NodeToken"})
    def GetNode(ctx: Any, node_token: str) -> PTZNode:
        return _node(_node_of(ctx, node_token, "NoEntity", "PTZ node"))

    @rpc(_returns=PTZConfiguration.customize(max_occurs="unbounded"),
         _out_variable_name="PTZConfiguration")
    def GetConfigurations(ctx: Any) -> list[PTZConfiguration]:
        return [ptz_configuration(n) for n in _context(ctx).ptz.nodes()]

    @rpc(Unicode(min_occurs=1), _returns=PTZConfiguration, _out_variable_name="PTZConfiguration",
         _in_variable_names={"token": "PTZConfigurationToken"})
    def GetConfiguration(ctx: Any, token: str) -> PTZConfiguration:
        return ptz_configuration(_node_of(ctx, token, "NoConfig", "PTZ configuration"))

    @rpc(Unicode(min_occurs=1), PTZSpeed.customize(min_occurs=1), Unicode,
         _in_variable_names={"profile_token": "ProfileToken", "velocity": "Velocity", "timeout": "Timeout"})
    def ContinuousMove(ctx: Any, profile_token: str, velocity: PTZSpeed, timeout: str | None) -> None:
        head = _head(ctx, profile_token)
        seconds = None
        if timeout is not None:
            try:
                seconds = parse_duration(timeout)
            except InvalidTime as exc:
                raise SoapFault(code="Sender", subcodes=("InvalidArgVal",),
                                reason=f"Timeout: {excerpt(str(exc), 200)}") from None
        target = _position(velocity, CONTINUOUS_PAN_TILT_SPACE, CONTINUOUS_ZOOM_SPACE)
        _run(ctx, lambda now: head.continuous_move(now, target, seconds))

    @rpc(Unicode(min_occurs=1), PTZVector.customize(min_occurs=1), PTZSpeed,
         _in_variable_names={"profile_token": "ProfileToken", "position": "Position", "speed": "Speed"})
    def AbsoluteMove(ctx: Any, profile_token: str, position: PTZVector, speed: PTZSpeed | None) -> None:
        head = _head(ctx, profile_token)
        target = _position(position, ABSOLUTE_PAN_TILT_SPACE, ABSOLUTE_ZOOM_SPACE)
        _run(ctx, lambda now: head.absolute_move(now, target, _speed(speed)))

    @rpc(Unicode(min_occurs=1), PTZVector.customize(min_occurs=1), PTZSpeed,
         _in_variable_names={"profile_token": "ProfileToken", "translation": "Translation", "speed": "Speed"})
    def RelativeMove(ctx: Any, profile_token: str, translation: PTZVector, speed: PTZSpeed | None) -> None:
        head = _head(ctx, profile_token)
        delta = _position(translation, RELATIVE_PAN_TILT_SPACE, RELATIVE_ZOOM_SPACE)
        _run(ctx, lambda now: head.relative_move(now, delta, _speed(speed)))

    @rpc(Unicode(min_occurs=1), Boolean, Boolean,
         _in_variable_names={"profile_token": "ProfileToken", "pan_tilt": "PanTilt", "zoom": "Zoom"})
    def Stop(ctx: Any, profile_token: str, pan_tilt: bool | None, zoom: bool | None) -> None:
        head = _head(ctx, profile_token)
        both = pan_tilt is None and zoom is None  # neither given: stop everything
        _run(ctx, lambda now: head.stop(now, pan_tilt=both or bool(pan_tilt), zoom=both or bool(zoom)))

    @rpc(Unicode(min_occurs=1), _returns=PTZStatus, _out_variable_name="PTZStatus",
         _in_variable_names={"profile_token": "ProfileToken"})
    def GetStatus(ctx: Any, profile_token: str) -> PTZStatus:
        head = _head(ctx, profile_token)
        now, status = _run(ctx, lambda now: (now, head.status(now)))
        return PTZStatus(Position=_vector(PtzPosition(pan=status.pan, tilt=status.tilt, zoom=status.zoom)),
                         MoveStatus=PTZMoveStatus(PanTilt=_moving(status.pan_tilt_moving),
                                                  Zoom=_moving(status.zoom_moving)),
                         UtcTime=format_datetime(now))

    @rpc(Unicode(min_occurs=1), _returns=PTZPreset.customize(max_occurs="unbounded"),
         _out_variable_name="Preset", _in_variable_names={"profile_token": "ProfileToken"})
    def GetPresets(ctx: Any, profile_token: str) -> list[PTZPreset]:
        head = _head(ctx, profile_token)
        return [_preset(p) for p in _run(ctx, lambda _now: head.presets())]

    @rpc(Unicode(min_occurs=1), Unicode, Unicode, _returns=Unicode,
         _out_variable_name="PresetToken",
         _in_variable_names={"profile_token": "ProfileToken", "name": "PresetName", "token": "PresetToken"})
    def SetPreset(ctx: Any, profile_token: str, name: str | None, token: str | None) -> str:
        head = _head(ctx, profile_token)
        result: str = _run(ctx, lambda now: head.set_preset(now, name, token))
        return result

    @rpc(Unicode(min_occurs=1), Unicode(min_occurs=1), PTZSpeed,
         _in_variable_names={"profile_token": "ProfileToken", "token": "PresetToken", "speed": "Speed"})
    def GotoPreset(ctx: Any, profile_token: str, token: str, speed: PTZSpeed | None) -> None:
        head = _head(ctx, profile_token)
        _run(ctx, lambda now: head.goto_preset(now, token, _speed(speed)))

    @rpc(Unicode(min_occurs=1), Unicode(min_occurs=1),
         _in_variable_names={"profile_token": "ProfileToken", "token": "PresetToken"})
    def RemovePreset(ctx: Any, profile_token: str, token: str) -> None:
        head = _head(ctx, profile_token)
        _run(ctx, lambda _now: head.remove_preset(token))


def ptz_endpoint(context: PtzServiceContext) -> SoapEndpoint:
    """The WSGI app of the PTZ service (no access control: see :mod:`.app`)."""
    return SoapEndpoint([PtzService], TPTZ, xsd="ptz", context=context, name="PTZService")
