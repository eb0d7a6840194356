"""Layer 5: the Media2 service on Spyne — live video profiles and stream URIs (STR-1, STR-3, ANX-B-1).

Serves at ``/onvif/media2_service`` (namespace ``tr2``) the operations a
client needs to find and play the device's streams: GetServiceCapabilities,
GetProfiles, GetStreamUri and GetSnapshotUri. The profiles are the
:class:`~..domain.media.MediaSource` entries of a
:class:`~..domain.media.MediaBackend` (the store's, or firmware's own). The
Spyne models mirror ``xsd/media2.xsd`` (tr2) and ``xsd/media-common.xsd``
(tt) element for element; a test compares them, and every answer validates
against the authored XSD.

Theory of operation
-------------------
*Profiles.* Each media source is one fixed profile (``fixed="true"``: it
cannot be deleted over ONVIF) whose token is the source's token. It carries
one video source configuration and one video encoder configuration; both use
the profile token as their own token (and as the video source's
SourceToken): tokens are unique per kind of object, and a 64-character profile
token leaves no room for a suffix. A resolution that was not configured is
reported as 0 x 0 (unknown); Quality is 0 (the camera's encoder decides).
As Media2 asks, GetProfiles without ``Type`` answers the profiles without
configurations; ``Type=All`` (or ``VideoSource`` / ``VideoEncoder``) adds
them. A profile whose token reaches a PTZ head (:attr:`Media2ServiceContext.ptz`)
also carries that head's PTZ configuration (``Type=All`` or ``PTZ``, ANX-B-2).

*Stream URIs* are built from the request, so the URI points back the way the
request came:

==========================  ===================================================
request                     URI of GetStreamUri
==========================  ===================================================
direct, RTSP / RtspUnicast  the source's ``rtsp_url`` (the camera's own server)
via the cloud proxy, RTSP   ``<x-iec62676-rtsp-base>/<profile token>`` (the
/ RtspUnicast               cloud's RTSP front); without that header: fault
via the cloud proxy,        ``<forwarded base>/onvif/rtsp/<profile token>``
RtspOverHttp                (the device's RTSP-over-HTTP path, STR-2)
direct, RtspOverHttp        fault (the direct port relays no RTSP)
==========================  ===================================================

"Via the cloud proxy" means the request carries ``X-Forwarded-Host`` or
``X-Forwarded-Prefix`` (:mod:`.forwarded` builds the base from them). The
cloud proxy adds ``x-iec62676-rtsp-base`` (e.g.
``rtsp://127.0.0.1:8554/devices/<id>``) when the cloud runs an RTSP front; a
value that is not an ``rtsp://`` URI with a host is ignored, never copied.
Multicast and RTSPS protocols are refused (``Sender/InvalidArgVal/
InvalidStreamSetup``), an unknown profile is ``Sender/InvalidArgVal/
NoProfile``. GetSnapshotUri answers ``<request base>/onvif/snapshot/<profile
token>``, the device's own snapshot relay (:mod:`.snapshot`: READ_MEDIA, bounded
size and deadline), so the URI works directly and through the cloud proxy; a
source without a snapshot URL faults ``Receiver/ActionNotSupported``.

*RTSPWebSocketUri* (STR-3) is announced where the device serves RTSP over
WebSocket: on its uplinks, whose HTTP/2 role takes RFC 8441 extended CONNECT
(Uplink specification, "RTSP over WebSockets"; :mod:`..runtime.rtsp_relay`
serves :attr:`Media2ServiceContext.rtsp_websocket_path`, the player's first
request naming the stream). So it is in the answer to a request that came over
an uplink (the runtime marks it with the uplink's UserLevel) straight from the
cloud's own HTTP/2 client: that path under the request's base, ``wss`` for
``https``. It is left out on the direct port (no tunnel there) and through the
cloud's HTTP proxy (which carries no WebSocket; its clients play through the
RTSP front), and in the copy in GetServices, whose capability providers are not
given the request.

Camera-side credentials never leave the device: a URI never carries them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lxml import etree
from spyne import Boolean, Float, Integer, Unicode, XmlAttribute, rpc
from spyne.model.complex import ComplexModel
from spyne.util.xml import get_object_as_xml

from ..domain.media import MediaBackend, MediaSource
from ..domain.ptz import PtzBackend
from ..namespaces import TT
from ..sansio.rtsp_tunnel import TUNNEL_PATH
from ..security.access import AccessClass
from ..security.middleware import ENVIRON_UPLINK_LEVEL
from ..soap.envelope import excerpt
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, service_context
from .forwarded import request_base_url
from .ptz import PTZConfiguration, ptz_configuration
from .snapshot import snapshot_uri

__all__ = [
    "MEDIA2_PATH",
    "OPERATION_ACCESS",
    "RTSP_BASE_HEADER",
    "RTSP_HTTP_PATH",
    "TR2",
    "Media2Service",
    "Media2ServiceContext",
    "capabilities_element",
    "media2_endpoint",
    "proxied_rtsp_base",
    "stream_uri",
    "through_proxy",
]

#: The Media2 namespace (wire contract).
TR2 = "http://www.onvif.org/ver20/media/wsdl"
#: Conventional path of the service.
MEDIA2_PATH = "/onvif/media2_service"
#: The device path under which RTSP over HTTP is served, one profile token per path segment (STR-2).
RTSP_HTTP_PATH = "/onvif/rtsp/"
#: Header the cloud proxy adds when the cloud has an RTSP front (value: rtsp://host:port/devices/<id>).
RTSP_BASE_HEADER = "x-iec62676-rtsp-base"
_RTSP_BASE_ENVIRON = "HTTP_" + RTSP_BASE_HEADER.upper().replace("-", "_")

#: SEC-1 (ONVIF Media2 access classes).
OPERATION_ACCESS = {
    (TR2, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TR2, "GetProfiles"): AccessClass.READ_MEDIA,
    (TR2, "GetStreamUri"): AccessClass.READ_MEDIA,
    (TR2, "GetSnapshotUri"): AccessClass.READ_MEDIA,
}

#: GetStreamUri protocols (tr2:TransportProtocol and later additions): the served ones.
_RTSP_TCP = frozenset({"RTSP", "RtspUnicast"})
_RTSP_HTTP = "RtspOverHttp"
#: GetProfiles Type values that select the configurations a profile here has.
_VIDEO_TYPES = frozenset({"All", "VideoSource", "VideoEncoder"})
_CONFIGURATIONS_SUPPORTED = "VideoSource VideoEncoder"
#: An rtsp:// base URI as the cloud proxy sends it: scheme, host[:port], optional path; nothing else.
_RTSP_BASE = re.compile(r"^rtsp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$")


@dataclass
class Media2ServiceContext:
    """What the Media2 service works with.

    ``media`` supplies the profiles; ``rtsp_websocket_path`` is where the uplink's
    RTSP relay takes RTSP over WebSocket for every profile (STR-3); ``None`` (firmware
    that relays no RTSP on its uplinks) leaves RTSPWebSocketUri out.
    """

    media: MediaBackend
    rtsp_websocket_path: str | None = TUNNEL_PATH
    #: The PTZ heads: a profile with one carries its PTZ configuration (ANX-B-2).
    ptz: PtzBackend | None = None


# --------------------------------------------------------------------------- Spyne models (mirror the XSD)

class ProfileCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TR2
    _type_info = [
        ("MaximumNumberOfProfiles", XmlAttribute(Integer)),
        ("ConfigurationsSupported", XmlAttribute(Unicode)),
    ]


class StreamingCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TR2
    _type_info = [
        ("RTSPStreaming", XmlAttribute(Boolean)),
        ("RTPMulticast", XmlAttribute(Boolean)),
        ("RTP_RTSP_TCP", XmlAttribute(Boolean)),
        ("NonAggregateControl", XmlAttribute(Boolean)),
        ("RTSPWebSocketUri", XmlAttribute(Unicode)),
        ("AutoStartMulticast", XmlAttribute(Boolean)),
    ]


class Capabilities2(ComplexModel):  # type: ignore[misc]
    """tr2:Capabilities2 (the attributes we report; the others are absent = false)."""

    __namespace__ = TR2
    _type_info = [
        ("ProfileCapabilities", ProfileCapabilities.customize(min_occurs=1)),
        ("StreamingCapabilities", StreamingCapabilities.customize(min_occurs=1)),
        ("SnapshotUri", XmlAttribute(Boolean)),
    ]


class IntRectangle(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("x", XmlAttribute(Integer(min_occurs=1))),
        ("y", XmlAttribute(Integer(min_occurs=1))),
        ("width", XmlAttribute(Integer(min_occurs=1))),
        ("height", XmlAttribute(Integer(min_occurs=1))),
    ]


class VideoResolution2(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Width", Integer(min_occurs=1)), ("Height", Integer(min_occurs=1))]


class VideoSourceConfiguration(ComplexModel):  # type: ignore[misc]
    """tt:VideoSourceConfiguration, its tt:ConfigurationEntity base flattened in (Name, UseCount, token)."""

    __namespace__ = TT
    _type_info = [
        ("Name", Unicode(min_occurs=1)),
        ("UseCount", Integer(min_occurs=1)),
        ("SourceToken", Unicode(min_occurs=1)),
        ("Bounds", IntRectangle.customize(min_occurs=1)),
        ("token", XmlAttribute(Unicode(min_occurs=1))),
    ]


class VideoEncoder2Configuration(ComplexModel):  # type: ignore[misc]
    """tt:VideoEncoder2Configuration, its tt:ConfigurationEntity base flattened in."""

    __namespace__ = TT
    _type_info = [
        ("Name", Unicode(min_occurs=1)),
        ("UseCount", Integer(min_occurs=1)),
        ("Encoding", Unicode(min_occurs=1)),
        ("Resolution", VideoResolution2.customize(min_occurs=1)),
        ("Quality", Float(min_occurs=1)),
        ("token", XmlAttribute(Unicode(min_occurs=1))),
    ]


class ConfigurationSet(ComplexModel):  # type: ignore[misc]
    __namespace__ = TR2
    _type_info = [("VideoSource", VideoSourceConfiguration), ("VideoEncoder", VideoEncoder2Configuration),
                  ("PTZ", PTZConfiguration)]


class MediaProfile(ComplexModel):  # type: ignore[misc]
    __namespace__ = TR2
    _type_info = [
        ("Name", Unicode(min_occurs=1)),
        ("Configurations", ConfigurationSet),
        ("token", XmlAttribute(Unicode(min_occurs=1))),
        ("fixed", XmlAttribute(Boolean)),
    ]


# --------------------------------------------------------------------------- answers

def _capabilities(context: Media2ServiceContext, environ: dict[str, Any] | None) -> Capabilities2:
    sources = context.media.media_sources()
    ws_uri = None
    if (context.rtsp_websocket_path is not None and environ is not None and ENVIRON_UPLINK_LEVEL in environ
            and not through_proxy(environ)):
        ws_uri = "ws" + request_base_url(environ)[len("http"):] + context.rtsp_websocket_path  # https→wss
    return Capabilities2(
        ProfileCapabilities=ProfileCapabilities(MaximumNumberOfProfiles=len(sources),
                                                ConfigurationsSupported=_CONFIGURATIONS_SUPPORTED + (
                                                    " PTZ" if context.ptz is not None and context.ptz.nodes() else "")),
        StreamingCapabilities=StreamingCapabilities(RTSPStreaming=True, RTPMulticast=False, RTP_RTSP_TCP=True,
                                                    NonAggregateControl=False, RTSPWebSocketUri=ws_uri),
        SnapshotUri=any(s.snapshot_url is not None for s in sources))


def capabilities_element(context: Media2ServiceContext) -> etree._Element:
    """``tr2:Capabilities`` for GetServices (RTSPWebSocketUri left out: it is built from the request)."""
    element = get_object_as_xml(_capabilities(context, None), Capabilities2, "Capabilities")
    element.tag = f"{{{TR2}}}Capabilities"
    return element


def _profile(src: MediaSource, types: Sequence[str], ptz: PtzBackend | None = None) -> MediaProfile:
    profile = MediaProfile(token=src.token, fixed=True, Name=src.name)
    head = None if ptz is None else ptz.head(src.token)
    wanted = set(types) & (_VIDEO_TYPES | ({"PTZ"} if head is not None else set()))
    if not wanted:
        return profile
    width, height = src.width or 0, src.height or 0
    profile.Configurations = ConfigurationSet()
    if wanted & {"All", "VideoSource"}:
        profile.Configurations.VideoSource = VideoSourceConfiguration(
            token=src.token, Name=src.name, UseCount=1, SourceToken=src.token,
            Bounds=IntRectangle(x=0, y=0, width=width, height=height))
    if wanted & {"All", "VideoEncoder"}:
        profile.Configurations.VideoEncoder = VideoEncoder2Configuration(
            token=src.token, Name=src.name, UseCount=1, Encoding=src.encoding,
            Resolution=VideoResolution2(Width=width, Height=height), Quality=0.0)
    if head is not None and wanted & {"All", "PTZ"}:
        profile.Configurations.PTZ = ptz_configuration(head.node)
    return profile


def _context(ctx: Any) -> Media2ServiceContext:
    context: Media2ServiceContext = service_context(ctx)
    return context


def _source(ctx: Any, token: str) -> MediaSource:
    src = _context(ctx).media.media_source(token)
    if src is None:
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "NoProfile"),
                        reason=f"the requested profile token {excerpt(token)} does not exist")
    return src


def through_proxy(environ: dict[str, Any]) -> bool:
    """The request came through the cloud's HTTP proxy (or a VSS): it carries ``X-Forwarded-*``."""
    return bool(environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_X_FORWARDED_PREFIX"))


def proxied_rtsp_base(environ: dict[str, Any]) -> str | None:
    """The cloud's RTSP front for this device (``x-iec62676-rtsp-base``), ``None`` when absent or malformed."""
    value = str(environ.get(_RTSP_BASE_ENVIRON) or "").strip()
    return value.rstrip("/") if _RTSP_BASE.match(value) else None


def _unsupported(protocol: str, why: str) -> SoapFault:
    return SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidStreamSetup"),
                     reason=f"stream protocol {excerpt(protocol)} is not supported here: {why}")


def stream_uri(environ: dict[str, Any], src: MediaSource, protocol: str) -> str:
    """The URI GetStreamUri answers for ``src`` (see the table in the module docstring)."""
    segment = quote(src.token, safe="")
    proxied = through_proxy(environ)
    if protocol in _RTSP_TCP:
        if not proxied:
            return src.rtsp_url
        base = proxied_rtsp_base(environ)
        if base is None:
            raise _unsupported(protocol, "the cloud this request came through has no RTSP front; "
                                         "ask for RtspOverHttp")
        return f"{base}/{segment}"
    if protocol == _RTSP_HTTP:
        if not proxied:
            raise _unsupported(protocol, "RTSP over HTTP is relayed over the uplink only; ask for RTSP "
                                         "to reach the camera directly")
        return f"{request_base_url(environ)}{RTSP_HTTP_PATH}{segment}"
    raise _unsupported(protocol, "this device offers RTSP, RtspUnicast and RtspOverHttp (no multicast, no RTSPS)")


# --------------------------------------------------------------------------- the service

class Media2Service(SoapService):
    """The operations of ``tr2:Media2`` this device serves."""

    __service_name__ = "Media2Service"
    __port_types__ = ["Media2"]

    @rpc(_returns=Capabilities2, _out_variable_name="Capabilities")  # type: ignore[misc]
    def GetServiceCapabilities(ctx: Any) -> Capabilities2:
        return _capabilities(_context(ctx), ctx.transport.req_env)

    @rpc(Unicode, Unicode(max_occurs="unbounded"),  # type: ignore[misc]
         _returns=MediaProfile.customize(max_occurs="unbounded"), _out_variable_name="Profiles",
         _in_variable_names={"token": "Token", "types": "Type"})
    def GetProfiles(ctx: Any, token: str | None, types: list[str] | None) -> list[MediaProfile]:
        sources = [_source(ctx, token)] if token is not None else _context(ctx).media.media_sources()
        return [_profile(src, types or (), _context(ctx).ptz) for src in sources]

    @rpc(Unicode(min_occurs=1), Unicode(min_occurs=1), _returns=Unicode,  # type: ignore[misc]
         _out_variable_name="Uri", _in_variable_names={"protocol": "Protocol", "profile_token": "ProfileToken"})
    def GetStreamUri(ctx: Any, protocol: str, profile_token: str) -> str:
        return stream_uri(ctx.transport.req_env, _source(ctx, profile_token), protocol)

    @rpc(Unicode(min_occurs=1), _returns=Unicode,  # type: ignore[misc]
         _out_variable_name="Uri", _in_variable_names={"profile_token": "ProfileToken"})
    def GetSnapshotUri(ctx: Any, profile_token: str) -> str:
        src = _source(ctx, profile_token)
        if src.snapshot_url is None:
            raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                            reason=f"profile {excerpt(profile_token)} has no snapshot source")
        return snapshot_uri(request_base_url(ctx.transport.req_env), src.token)


def media2_endpoint(context: Media2ServiceContext) -> SoapEndpoint:
    """The WSGI app of the Media2 service (no access control: see :mod:`.app`)."""
    return SoapEndpoint([Media2Service], TR2, xsd="media2", context=context, name="Media2Service")
