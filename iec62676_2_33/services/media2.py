"""Layer 5: the Media2 service — live video profiles and stream URIs (STR-1, STR-3, ANX-B-1).

Serves at ``/onvif/media2_service`` (namespace ``tr2``) the operations a
client needs to find and play the device's streams: GetServiceCapabilities,
GetProfiles, GetStreamUri and GetSnapshotUri. The profiles are the
:class:`~..domain.media.MediaSource` entries of a
:class:`~..domain.media.MediaBackend` (the store's, or firmware's own). The
answers are written with lxml element for element as ``xsd/media2.xsd`` (tr2)
and ``xsd/media-common.xsd`` (tt) declare them; a test validates the answer to
every request of a corpus (each operation, with and without its optional
arguments, forwarded headers, the faults) against them and checks the values.

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
via the cloud proxy or      ``<request base>/onvif/rtsp/<profile token>``
over an uplink,             (the device's RTSP-over-HTTP path on its uplinks,
RtspOverHttp                STR-2)
direct, RtspOverHttp        fault (the direct port relays no RTSP)
==========================  ===================================================

"Via the cloud proxy" means the request carries ``X-Forwarded-Host`` or
``X-Forwarded-Prefix`` (:mod:`.forwarded` builds the base from them). The
cloud proxy adds ``x-iec62676-rtsp-base`` (e.g.
``rtsp://127.0.0.1:8554/devices/<id>``) when the cloud runs an RTSP front; a
value that is not an ``rtsp://`` URI with a host is ignored, never copied.
"Over an uplink" is a request straight from the cloud's own HTTP/2 client
(the runtime marks it with the uplink's UserLevel), whose uplink serves the
RTSP-over-HTTP path; for RTSP it counts as direct. Multicast and RTSPS protocols are refused (``Sender/InvalidArgVal/
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

*Dispatch.* The operations are served by a
:class:`~..soap.dispatch.QNameDispatcher` (the operation in the table, the
authored XSD, no local name in two namespaces; then one handler per operation)
with ``addressing=False``, as the device service is: the answers carry no SOAP
Header, and a ``wsa:Action`` is not compared with the Body. A video management
system calls GetProfiles and GetStreamUri for every stream it opens, and
GetServices embeds the capabilities, so their cost matters on a camera's CPU:
through Spyne (serialising nested complex models, method contexts) the endpoint
spent, per call with an already parsed request (best of 5 x 2000, same machine),
GetServiceCapabilities 230 us, GetProfiles of two profiles 219 us (Type=All 701
us), GetStreamUri 160 us, and the capabilities element for GetServices 115 us;
with the handlers writing lxml directly 36, 35 (87), 34 and 18 us
(docs/benchmarks.md, "Proxy front"). The one part still written by a Spyne
model is a profile's PTZ configuration: the PTZ service's own
``tt:PTZConfiguration`` (:func:`.ptz.ptz_configuration`), serialised once per
node and kept (a bounded cache; the model costs ~400 us a profile).

Camera-side credentials never leave the device: a URI never carries them.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from lxml import etree
from spyne.util.xml import get_object_as_xml

from ..domain.media import MediaBackend, MediaSource
from ..domain.ptz import PtzBackend, PtzNode
from ..namespaces import SOAP_ENV, TT
from ..sansio.rtsp_tunnel import TUNNEL_PATH
from ..security.access import AccessClass
from ..security.middleware import ENVIRON_UPLINK_LEVEL
from ..soap.answer_xml import texts, xs_boolean
from ..soap.dispatch import Answer, Handler, QNameDispatcher
from ..soap.envelope import SoapRequest, excerpt
from ..soap.fault import SoapFault
from .forwarded import request_base_url
from .ptz import PTZConfiguration, ptz_configuration
from .snapshot import snapshot_uri

__all__ = [
    "MEDIA2_PATH",
    "OPERATION_ACCESS",
    "RTSP_BASE_HEADER",
    "RTSP_HTTP_PATH",
    "TR2",
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
#: PTZ nodes whose serialised configuration is kept (a device has a few heads).
_PTZ_CACHE = 64
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


# --------------------------------------------------------------------------- answers (element for element as the XSD)

#: Declared on every answer envelope (the answers' elements are in these two namespaces).
_NSMAP = {"env": SOAP_ENV, "tr2": TR2, "tt": TT}


def _tr2(name: str) -> str:
    return f"{{{TR2}}}{name}"


def _tt(name: str) -> str:
    return f"{{{TT}}}{name}"


def _capabilities(context: Media2ServiceContext, environ: dict[str, Any] | None) -> etree._Element:
    """``tr2:Capabilities`` (tr2:Capabilities2: the attributes we report; the others are absent = false)."""
    sources = context.media.media_sources()
    ptz = context.ptz is not None and bool(context.ptz.nodes())
    caps = etree.Element(_tr2("Capabilities"), SnapshotUri=xs_boolean(any(s.snapshot_url is not None for s in sources)))
    etree.SubElement(caps, _tr2("ProfileCapabilities"), MaximumNumberOfProfiles=str(len(sources)),
                     ConfigurationsSupported=_CONFIGURATIONS_SUPPORTED + (" PTZ" if ptz else ""))
    streaming = etree.SubElement(caps, _tr2("StreamingCapabilities"), RTSPStreaming="true", RTPMulticast="false",
                                 RTP_RTSP_TCP="true", NonAggregateControl="false")
    if (context.rtsp_websocket_path is not None and environ is not None and ENVIRON_UPLINK_LEVEL in environ
            and not through_proxy(environ)):
        streaming.set("RTSPWebSocketUri",  # https→wss
                      "ws" + request_base_url(environ)[len("http"):] + context.rtsp_websocket_path)
    return caps


def capabilities_element(context: Media2ServiceContext) -> etree._Element:
    """``tr2:Capabilities`` for GetServices (RTSPWebSocketUri left out: it is built from the request)."""
    return _capabilities(context, None)


@functools.lru_cache(maxsize=_PTZ_CACHE)
def _ptz_configuration_template(node: PtzNode) -> etree._Element:
    """``tr2:PTZ``: the PTZ service's own tt:PTZConfiguration of ``node``, written by that service's model
    (once per node: a node is immutable, and the model costs ~400 us a call); never modified, only copied."""
    element: etree._Element = get_object_as_xml(ptz_configuration(node), PTZConfiguration, "PTZ")
    element.tag = _tr2("PTZ")
    return element


def _ptz_configuration(node: PtzNode) -> etree._Element:
    return copy.deepcopy(_ptz_configuration_template(node))


def _profile(parent: etree._Element, src: MediaSource, types: Collection[str], ptz: PtzBackend | None) -> None:
    """A ``tr2:Profiles`` child of ``parent`` (tr2:MediaProfile) with the configurations ``types`` select."""
    profile = etree.SubElement(parent, _tr2("Profiles"), token=src.token, fixed="true")
    etree.SubElement(profile, _tr2("Name")).text = src.name
    head = None if ptz is None else ptz.head(src.token)
    wanted = set(types) & (_VIDEO_TYPES | ({"PTZ"} if head is not None else set()))
    if not wanted:
        return
    width, height = str(src.width or 0), str(src.height or 0)
    configurations = etree.SubElement(profile, _tr2("Configurations"))
    if wanted & {"All", "VideoSource"}:  # tt:VideoSourceConfiguration
        source = texts(etree.SubElement(configurations, _tr2("VideoSource"), token=src.token),
                        (_tt("Name"), src.name), (_tt("UseCount"), "1"), (_tt("SourceToken"), src.token))
        etree.SubElement(source, _tt("Bounds"), x="0", y="0", width=width, height=height)
    if wanted & {"All", "VideoEncoder"}:  # tt:VideoEncoder2Configuration
        encoder = texts(etree.SubElement(configurations, _tr2("VideoEncoder"), token=src.token),
                         (_tt("Name"), src.name), (_tt("UseCount"), "1"), (_tt("Encoding"), src.encoding))
        texts(etree.SubElement(encoder, _tt("Resolution")), (_tt("Width"), width), (_tt("Height"), height))
        etree.SubElement(encoder, _tt("Quality")).text = "0.0"
    if head is not None and wanted & {"All", "PTZ"}:
        configurations.append(_ptz_configuration(head.node))


def _answer(name: str) -> tuple[str, etree._Element]:
    """The ``wsa:Action`` and the empty answer element of operation ``name`` (``tr2:<name>Response``)."""
    return f"{TR2}/{name}Response", etree.Element(_tr2(f"{name}Response"))


def _uri_answer(name: str, uri: str) -> Answer:
    action, response = _answer(name)
    etree.SubElement(response, _tr2("Uri")).text = uri
    return Answer(action, response)


def _source(context: Media2ServiceContext, token: str) -> MediaSource:
    src = context.media.media_source(token)
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
        if not proxied and ENVIRON_UPLINK_LEVEL not in environ:
            raise _unsupported(protocol, "RTSP over HTTP is relayed over the uplink only; ask for RTSP "
                                         "to reach the camera directly")
        return f"{request_base_url(environ)}{RTSP_HTTP_PATH}{segment}"
    raise _unsupported(protocol, "this device offers RTSP, RtspUnicast and RtspOverHttp (no multicast, no RTSPS)")


# --------------------------------------------------------------------------- the operations

def _get_service_capabilities(context: Media2ServiceContext, _request: SoapRequest, environ: dict[str, Any]) -> Answer:
    action, response = _answer("GetServiceCapabilities")
    response.append(_capabilities(context, environ))
    return Answer(action, response)


def _get_profiles(context: Media2ServiceContext, request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    token = request.operation.find(_tr2("Token"))
    types = {t.text or "" for t in request.operation.iterchildren(_tr2("Type"))}
    sources = [_source(context, token.text or "")] if token is not None else context.media.media_sources()
    action, response = _answer("GetProfiles")
    for src in sources:
        _profile(response, src, types, context.ptz)
    return Answer(action, response)


def _get_stream_uri(context: Media2ServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    operation = request.operation
    src = _source(context, operation.findtext(_tr2("ProfileToken")) or "")
    return _uri_answer("GetStreamUri", stream_uri(environ, src, operation.findtext(_tr2("Protocol")) or ""))


def _get_snapshot_uri(context: Media2ServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    token = request.operation.findtext(_tr2("ProfileToken")) or ""
    src = _source(context, token)
    if src.snapshot_url is None:
        raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                        reason=f"profile {excerpt(token)} has no snapshot source")
    return _uri_answer("GetSnapshotUri", snapshot_uri(request_base_url(environ), src.token))


#: The operations of ``tr2:Media2`` this device serves.
_OPERATIONS: Mapping[tuple[str, str], Handler] = MappingProxyType({
    (TR2, "GetServiceCapabilities"): _get_service_capabilities,
    (TR2, "GetProfiles"): _get_profiles,
    (TR2, "GetStreamUri"): _get_stream_uri,
    (TR2, "GetSnapshotUri"): _get_snapshot_uri,
})


def media2_endpoint(context: Media2ServiceContext) -> QNameDispatcher:
    """The WSGI app of the Media2 service (no access control: see :mod:`.app`)."""
    return QNameDispatcher(_OPERATIONS, xsd="media2", context=context, nsmap=_NSMAP, addressing=False)
