"""Layer 5: the Recording Search and Replay services on Spyne (ANX-B-3, ANX-B-5, SEC-1).

Recording Search (``tse``, ``/onvif/search_service``): GetServiceCapabilities,
GetRecordingSummary, GetRecordingInformation, FindRecordings,
GetRecordingSearchResults, FindEvents, GetEventSearchResults and EndSearch.
Replay (``trp``, ``/onvif/replay_service``): GetServiceCapabilities and
GetReplayUri. Both read a :class:`~..domain.recordings.RecordingStore`; the
Spyne models mirror ``xsd/search.xsd``, ``xsd/replay.xsd`` and
``xsd/recording-common.xsd`` element for element (a test compares them) and
every answer validates against the authored XSD.

Theory of operation
-------------------
*Edge-storage style* (ANX-B-5): a recording's source is the Media2 profile
that made it — ``Source/VideoSourceToken`` is that profile token and
``SourceId`` names it too — so an upper VSS can tell which device and
profile recorded it and filter by prefix. A search scope selects recordings
by ``IncludedSources`` (profile tokens) and ``IncludedRecordings``; both
absent = all. A ``RecordingInformationFilter`` (an XPath over
RecordingInformation) is refused with ``Sender/InvalidArgVal/
InvalidFilterFault``: like the event filters, a client's XPath is never
handed to an XPath engine, and this subset has no reader for it.

*Searches* are :class:`~..domain.recordings.SearchSessions` (bounded in
number, ended by EndSearch or after KeepAliveTime without a Find/Get): the
whole result is computed by the Find (FindEvents' scan, which may walk every
file of a large archive, before the sessions' lock is taken, so it holds up
no other search), so every Get answers ``Completed``
once it has handed out the last result (``Searching`` before). A Get's
``WaitTime`` and ``MinResults`` never make it wait: the results are there.
An unknown or expired search token is ``Sender/InvalidArgVal/InvalidToken``;
no free session is ``Receiver/Action/ResourceProblem``.

*FindEvents* searches the recording-history events the files imply
(``tns1:RecordingHistory/Track/State``, ``IsDataPresent``), filtered by the
``SearchFilter``'s topic expressions and MessageContent (the event service's
own parser: :func:`~.events.parse_filter`); a filter this service does not
understand is ``.../InvalidFilterFault``.

*Replay*: GetReplayUri answers ``<replay_base>/<recording token>`` when a
replay RTSP server runs (:mod:`..runtime.replay_server`), which maps the
``Range: clock=`` of a PLAY to the recording's files. RTP unicast over RTSP
(interleaved), TCP or UDP only. A request through the cloud proxy (or a VSS)
gets, like Media2's GetStreamUri, a URI on the cloud's RTSP front:
``<x-iec62676-rtsp-base>/replay/<recording token>``, which the uplinks' RTSP
relay takes to the replay server
(:class:`~..domain.media.ReplayRelayBackend`; RTSP or TCP setups, as the front
relays interleaved RTP only); without that header it faults
``Receiver/ActionNotSupported``, as it does when no replay server runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from lxml import etree
from spyne import AnyXml, Boolean, Integer, Unicode, XmlAttribute, XmlData, rpc
from spyne.model.complex import ComplexModel
from spyne.util.xml import get_object_as_xml

from ..domain.generic_events import GenericEvent, TopicDescription, topic_matches
from ..domain.media import REPLAY_TOKEN
from ..domain.recordings import (
    TRACK_TOKEN,
    Recording,
    RecordingEvent,
    RecordingStore,
    SearchError,
    SearchSessions,
    match_limit,
    recording_events,
)
from ..domain.subscriptions import InvalidTime, format_datetime, parse_datetime, parse_duration
from ..errors import ConfigurationError
from ..namespaces import TNS1, TT, WSNT
from ..security.access import AccessClass
from ..soap.answer_xml import xs_boolean
from ..soap.envelope import excerpt
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, request_operation, service_context
from .events import generic_notification_xml, parse_filter
from .forwarded import request_base_url
from .media2 import proxied_rtsp_base, through_proxy

__all__ = [
    "OPERATION_ACCESS",
    "RECORDING_HISTORY",
    "REPLAY_PATH",
    "SEARCH_PATH",
    "TRP",
    "TSE",
    "RecordingServiceContext",
    "ReplayService",
    "SearchService",
    "replay_capabilities_element",
    "replay_endpoint",
    "search_capabilities_element",
    "search_endpoint",
]

#: The Recording Search and Replay namespaces (wire contract).
TSE = "http://www.onvif.org/ver10/search/wsdl"
TRP = "http://www.onvif.org/ver10/replay/wsdl"
#: Conventional paths of the services.
SEARCH_PATH = "/onvif/search_service"
REPLAY_PATH = "/onvif/replay_service"

#: SEC-1 (the ONVIF Recording Search and Replay Control specifications' access classes).
OPERATION_ACCESS = {
    (TSE, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TSE, "GetRecordingSummary"): AccessClass.READ_MEDIA,
    (TSE, "GetRecordingInformation"): AccessClass.READ_MEDIA,
    (TSE, "FindRecordings"): AccessClass.READ_MEDIA,
    (TSE, "GetRecordingSearchResults"): AccessClass.READ_MEDIA,
    (TSE, "FindEvents"): AccessClass.READ_MEDIA,
    (TSE, "GetEventSearchResults"): AccessClass.READ_MEDIA,
    (TSE, "EndSearch"): AccessClass.READ_MEDIA,
    (TRP, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TRP, "GetReplayUri"): AccessClass.READ_MEDIA,
}

#: The ONVIF recording-history event of a track: data present or not (Recording Search specification).
RECORDING_HISTORY = TopicDescription(
    "RecordingHistory/Track/State",
    source=(("RecordingToken", "tt:RecordingReference"), ("Track", "tt:TrackReference")),
    data=(("IsDataPresent", "xs:boolean"),),
)
#: Stream setups GetReplayUri serves (tt:StreamType, tt:TransportProtocol).
_REPLAY_PROTOCOLS = frozenset({"RTSP", "TCP", "UDP"})
#: Longest excerpt of a client's text a fault reason repeats.
_REASON_LIMIT = 200
#: Session timeout the replay server keeps an idle RTSP session (GstRtspServer's default).
SESSION_TIMEOUT = 60.0


@dataclass
class RecordingServiceContext:
    """What the Recording Search and Replay services work with.

    ``replay_base`` is the replay RTSP server's ``rtsp://host:port`` prefix (``None``: replay not
    running, GetReplayUri faults).
    """

    store: RecordingStore
    sessions: SearchSessions = field(default_factory=SearchSessions)
    clock: Callable[[], float] = time.time
    replay_base: str | None = None
    #: Requests run in a thread pool; one at a time touches the sessions.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# --------------------------------------------------------------------------- Spyne models (mirror the XSD)

class SearchCapabilities(ComplexModel):  # type: ignore[misc]
    """tse:Capabilities."""

    __namespace__ = TSE
    __type_name__ = "Capabilities"
    _type_info = [
        ("MetadataSearch", XmlAttribute(Boolean)),
        ("GeneralStartEvents", XmlAttribute(Boolean)),
        ("NLSearch", XmlAttribute(Boolean)),
        ("ImageSearch", XmlAttribute(Boolean)),
    ]


class ReplayCapabilities(ComplexModel):  # type: ignore[misc]
    """trp:Capabilities (RTSPWebSocketUri left out: no RTSP over WebSocket for replay)."""

    __namespace__ = TRP
    __type_name__ = "Capabilities"
    _type_info = [
        ("ReversePlayback", XmlAttribute(Boolean)),
        ("SessionTimeoutRange", XmlAttribute(Unicode)),
        ("RTP_RTSP_TCP", XmlAttribute(Boolean)),
    ]


class SourceReference(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Token", Unicode(min_occurs=1)), ("Type", XmlAttribute(Unicode))]


class SearchScope(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("IncludedSources", SourceReference.customize(max_occurs="unbounded")),
        ("IncludedRecordings", Unicode(max_occurs="unbounded")),
        ("RecordingInformationFilter", Unicode),
    ]


class RecordingSummary(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("DataFrom", Unicode(min_occurs=1)),
        ("DataUntil", Unicode(min_occurs=1)),
        ("NumberRecordings", Integer(min_occurs=1)),
    ]


class RecordingSourceInformation(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("SourceId", Unicode(min_occurs=1)),
        ("Name", Unicode(min_occurs=1)),
        ("Location", Unicode(min_occurs=1)),
        ("Description", Unicode(min_occurs=1)),
        ("Address", Unicode(min_occurs=1)),
        ("VideoSourceToken", Unicode),
    ]


class TrackInformation(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("TrackToken", Unicode(min_occurs=1)),
        ("TrackType", Unicode(min_occurs=1)),
        ("Description", Unicode(min_occurs=1)),
        ("DataFrom", Unicode(min_occurs=1)),
        ("DataTo", Unicode(min_occurs=1)),
    ]


class RecordingInformation(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("RecordingToken", Unicode(min_occurs=1)),
        ("Source", RecordingSourceInformation.customize(min_occurs=1)),
        ("EarliestRecording", Unicode),
        ("LatestRecording", Unicode),
        ("Content", Unicode(min_occurs=1)),
        ("Track", TrackInformation.customize(max_occurs="unbounded")),
        ("RecordingStatus", Unicode(min_occurs=1)),
    ]


class FindRecordingResultList(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("SearchState", Unicode(min_occurs=1)),
        ("RecordingInformation", RecordingInformation.customize(max_occurs="unbounded")),
    ]


class TopicExpression(ComplexModel):  # type: ignore[misc]
    """wsnt:TopicExpressionType: the topic text and its dialect."""

    __namespace__ = WSNT
    __type_name__ = "TopicExpressionType"
    _type_info = [("Dialect", XmlAttribute(Unicode(min_occurs=1))), ("text", XmlData(Unicode))]


class NotificationMessageHolder(ComplexModel):  # type: ignore[misc]
    """wsnt:NotificationMessageHolderType: the topic and the message (a ``tt:Message``)."""

    __namespace__ = WSNT
    __type_name__ = "NotificationMessageHolderType"
    _type_info = [("Topic", TopicExpression), ("Message", AnyXml(min_occurs=1))]


class FindEventResult(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("RecordingToken", Unicode(min_occurs=1)),
        ("TrackToken", Unicode(min_occurs=1)),
        ("Time", Unicode(min_occurs=1)),
        ("Event", NotificationMessageHolder.customize(min_occurs=1)),
        ("StartStateEvent", Boolean(min_occurs=1)),
    ]


class FindEventResultList(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("SearchState", Unicode(min_occurs=1)),
        ("Result", FindEventResult.customize(max_occurs="unbounded")),
    ]


class Transport(ComplexModel):  # type: ignore[misc]
    """tt:Transport (a Tunnel, another tt:Transport, is not read: no tunnelled replay here)."""

    __namespace__ = TT
    _type_info = [("Protocol", Unicode(min_occurs=1))]


class StreamSetup(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Stream", Unicode(min_occurs=1)), ("Transport", Transport.customize(min_occurs=1))]


# --------------------------------------------------------------------------- answers

def _capabilities_element(instance: ComplexModel, model: type, namespace: str) -> etree._Element:
    element = get_object_as_xml(instance, model, "Capabilities")
    element.tag = f"{{{namespace}}}Capabilities"
    return element


def _search_capabilities() -> SearchCapabilities:
    return SearchCapabilities(MetadataSearch=False, GeneralStartEvents=False, NLSearch=False, ImageSearch=False)


def _replay_capabilities() -> ReplayCapabilities:
    return ReplayCapabilities(ReversePlayback=False, RTP_RTSP_TCP=True,
                              SessionTimeoutRange=f"{SESSION_TIMEOUT:g} {SESSION_TIMEOUT:g}")


def search_capabilities_element() -> etree._Element:
    """``tse:Capabilities`` for GetServices."""
    return _capabilities_element(_search_capabilities(), SearchCapabilities, TSE)


def replay_capabilities_element() -> etree._Element:
    """``trp:Capabilities`` for GetServices."""
    return _capabilities_element(_replay_capabilities(), ReplayCapabilities, TRP)


def _context(ctx: Any) -> RecordingServiceContext:
    context: RecordingServiceContext = service_context(ctx)
    return context


def _information(rec: Recording, address: str) -> RecordingInformation:
    config = rec.config
    earliest, latest = rec.earliest, rec.latest
    tracks = []
    if earliest is not None and latest is not None:
        tracks.append(TrackInformation(TrackToken=TRACK_TOKEN, TrackType="Video", Description="video",
                                       DataFrom=format_datetime(earliest), DataTo=format_datetime(latest)))
    return RecordingInformation(
        RecordingToken=config.token,
        Source=RecordingSourceInformation(SourceId=quote(config.source_token, safe=""),
                                          Name=config.name or config.source_token, Location="",
                                          Description=config.description, Address=address,
                                          VideoSourceToken=config.source_token),
        EarliestRecording=None if earliest is None else format_datetime(earliest),
        LatestRecording=None if latest is None else format_datetime(latest),
        Content=config.description, Track=tracks, RecordingStatus="Stopped")


def _in_scope(store: RecordingStore, scope: SearchScope | None) -> list[Recording]:
    recordings = store.recordings()
    if scope is None:
        return recordings
    if scope.RecordingInformationFilter is not None and scope.RecordingInformationFilter.strip():
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidFilterFault"),
                        reason="RecordingInformationFilter (XPath) is not supported here; select recordings "
                               "with IncludedSources and IncludedRecordings")
    sources = {s.Token for s in scope.IncludedSources or ()}
    tokens = set(scope.IncludedRecordings or ())
    return [r for r in recordings
            if (not sources or r.config.source_token in sources) and (not tokens or r.token in tokens)]


def _seconds(text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except InvalidTime as exc:
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal",),
                        reason=f"{what}: {excerpt(str(exc), _REASON_LIMIT)}") from None


def _instant(text: str, what: str) -> float:
    """An ``xs:dateTime`` of the request; one whose UTC instant lies outside the years 1 … 9999 (a zone
    offset can move ``9999-12-31T23:59:59-14:00`` there) is refused by the parser: no answer could name it."""
    try:
        return parse_datetime(text)
    except InvalidTime as exc:
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal",),
                        reason=f"{what}: {excerpt(str(exc), _REASON_LIMIT)}") from None


def _fault(exc: SearchError) -> SoapFault:
    return SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc))


def _sessions(ctx: Any, action: Callable[[RecordingServiceContext, float], Any]) -> Any:
    """Run ``action(context, now)`` on the search sessions under the lock; a refusal becomes its fault."""
    context = _context(ctx)
    try:
        with context.lock:
            return action(context, context.clock())
    except SearchError as exc:
        raise _fault(exc) from None


def _matches(events: Iterable[object], max_matches: int | None) -> list[object]:
    """The first MaxMatches ``events``, taken before the sessions' lock: a scan of a large archive (a filter
    that keeps few of its events) then holds up no other search."""
    try:
        limit = match_limit(max_matches)
    except SearchError as exc:
        raise _fault(exc) from None
    return list(itertools.islice(events, limit))


def _state(complete: bool) -> str:
    return "Completed" if complete else "Searching"


def _generic(event: RecordingEvent) -> GenericEvent:
    return GenericEvent.of(RECORDING_HISTORY, event.time,
                           {"RecordingToken": event.recording_token, "Track": event.track_token},
                           {"IsDataPresent": xs_boolean(event.data_present)},
                           operation="Initialized" if event.start_state else "Changed")


def _event(event: RecordingEvent) -> NotificationMessageHolder:
    """The ``Event`` of a FindEventResult: the notification the event service would send for it."""
    holder = etree.fromstring(f'<wrap xmlns:wsnt="{WSNT}" xmlns:tt="{TT}" xmlns:tns1="{TNS1}">'
                              f"{generic_notification_xml(_generic(event))}</wrap>")[0]
    topic = holder.find(f"{{{WSNT}}}Topic")
    return NotificationMessageHolder(Topic=TopicExpression(Dialect=topic.get("Dialect"), text=topic.text),
                                     Message=holder.find(f"{{{WSNT}}}Message")[0])


def _search_filter(ctx: Any) -> Callable[[RecordingEvent], bool]:
    """FindEvents' SearchFilter, read from the parsed request: topic expressions and MessageContent."""
    element = request_operation(ctx).find(f"{{{TSE}}}SearchFilter")
    has_topic = element is not None and any(etree.QName(c).localname == "TopicExpression"
                                            for c in element if isinstance(c.tag, str))
    try:
        parsed = parse_filter(element, kinds=(), generic=(RECORDING_HISTORY.path,))
    except (ConfigurationError, ValueError) as exc:
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidFilterFault"),
                        reason=f"SearchFilter: {excerpt(str(exc), _REASON_LIMIT)}") from None
    query = parsed.query
    if any(part is not None for part in (query.location, query.prefix, query.scope, query.select)):
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidFilterFault"),
                        reason="SearchFilter: only TopicExpression and MessageContent apply to recorded events")
    topics = parsed.topics if has_topic else None
    content = query.content

    def keep(event: RecordingEvent) -> bool:
        if not topic_matches(topics, RECORDING_HISTORY.path):
            return False
        return content is None or content.matches(_generic(event).view)
    return keep


def _event_result(event: RecordingEvent) -> FindEventResult:
    return FindEventResult(RecordingToken=event.recording_token, TrackToken=event.track_token,
                           Time=format_datetime(event.time), Event=_event(event),
                           StartStateEvent=event.start_state)


def _filtered(events: Iterable[RecordingEvent], keep: Callable[[RecordingEvent], bool]) -> Iterator[object]:
    return (e for e in events if keep(e))


# --------------------------------------------------------------------------- the services

_SEARCH_RESULTS_IN = {"token": "SearchToken", "min_results": "MinResults", "max_results": "MaxResults",
                      "wait_time": "WaitTime"}


class SearchService(SoapService):
    """The operations of ``tse:SearchPort`` this device serves."""

    __service_name__ = "SearchService"
    __port_types__ = ["SearchPort"]

    @rpc(_returns=SearchCapabilities, _out_variable_name="Capabilities")
    def GetServiceCapabilities(ctx: Any) -> SearchCapabilities:
        return _search_capabilities()

    @rpc(_returns=RecordingSummary, _out_variable_name="Summary")
    def GetRecordingSummary(ctx: Any) -> RecordingSummary:
        context = _context(ctx)
        recordings = context.store.recordings()
        starts = [r.earliest for r in recordings if r.earliest is not None]
        ends = [r.latest for r in recordings if r.latest is not None]
        now = context.clock()
        return RecordingSummary(DataFrom=format_datetime(min(starts, default=now)),
                                DataUntil=format_datetime(max(ends, default=now)), NumberRecordings=len(recordings))

    @rpc(Unicode(min_occurs=1), _returns=RecordingInformation,
         _out_variable_name="RecordingInformation", _in_variable_names={"token": "RecordingToken"})
    def GetRecordingInformation(ctx: Any, token: str) -> RecordingInformation:
        rec = _context(ctx).store.recording(token)
        if rec is None:
            raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidToken"),
                            reason=f"no recording with token {excerpt(token)}")
        return _information(rec, request_base_url(ctx.transport.req_env))

    @rpc(SearchScope.customize(min_occurs=1), Integer, Unicode(min_occurs=1),
         _returns=Unicode, _out_variable_name="SearchToken",
         _in_variable_names={"scope": "Scope", "max_matches": "MaxMatches", "keep_alive": "KeepAliveTime"})
    def FindRecordings(ctx: Any, scope: SearchScope, max_matches: int | None, keep_alive: str) -> str:
        seconds = _seconds(keep_alive, "KeepAliveTime")
        address = request_base_url(ctx.transport.req_env)
        recordings = _in_scope(_context(ctx).store, scope)
        token: str = _sessions(ctx, lambda c, now: c.sessions.open(
            now, "recordings", lambda: [_information(r, address) for r in recordings], keep_alive=seconds,
            max_matches=max_matches))
        return token

    @rpc(Unicode(min_occurs=1), Integer, Integer, Unicode,
         _returns=FindRecordingResultList, _out_variable_name="ResultList", _in_variable_names=_SEARCH_RESULTS_IN)
    def GetRecordingSearchResults(ctx: Any, token: str, min_results: int | None, max_results: int | None,
                                  wait_time: str | None) -> FindRecordingResultList:
        batch, complete = _sessions(ctx, lambda c, now: c.sessions.results(now, token, "recordings", max_results))
        return FindRecordingResultList(SearchState=_state(complete), RecordingInformation=batch)

    @rpc(Unicode(min_occurs=1), Unicode, SearchScope.customize(min_occurs=1), AnyXml,
         Boolean(min_occurs=1), Integer, Unicode(min_occurs=1), _returns=Unicode, _out_variable_name="SearchToken",
         _in_variable_names={"start": "StartPoint", "end": "EndPoint", "scope": "Scope", "search_filter": "SearchFilter",
                             "include_start_state": "IncludeStartState", "max_matches": "MaxMatches",
                             "keep_alive": "KeepAliveTime"})
    def FindEvents(ctx: Any, start: str, end: str | None, scope: SearchScope, search_filter: Any,
                   include_start_state: bool, max_matches: int | None, keep_alive: str) -> str:
        seconds = _seconds(keep_alive, "KeepAliveTime")
        start_point = _instant(start, "StartPoint")
        end_point = None if end is None else _instant(end, "EndPoint")
        keep = _search_filter(ctx)
        recordings = _in_scope(_context(ctx).store, scope)
        found = _matches(_filtered(recording_events(recordings, start_point, end_point, include_start_state), keep),
                         max_matches)
        token: str = _sessions(ctx, lambda c, now: c.sessions.open(
            now, "events", lambda: found, keep_alive=seconds, max_matches=max_matches, end_point=end_point))
        return token

    @rpc(Unicode(min_occurs=1), Integer, Integer, Unicode,
         _returns=FindEventResultList, _out_variable_name="ResultList", _in_variable_names=_SEARCH_RESULTS_IN)
    def GetEventSearchResults(ctx: Any, token: str, min_results: int | None, max_results: int | None,
                              wait_time: str | None) -> FindEventResultList:
        batch, complete = _sessions(ctx, lambda c, now: c.sessions.results(now, token, "events", max_results))
        return FindEventResultList(SearchState=_state(complete), Result=[_event_result(e) for e in batch])

    @rpc(Unicode(min_occurs=1), _returns=Unicode, _out_variable_name="Endpoint",
         _in_variable_names={"token": "SearchToken"})
    def EndSearch(ctx: Any, token: str) -> str:
        return format_datetime(_sessions(ctx, lambda c, now: c.sessions.end(now, token)))


class ReplayService(SoapService):
    """The operations of ``trp:ReplayPort`` this device serves."""

    __service_name__ = "ReplayService"
    __port_types__ = ["ReplayPort"]

    @rpc(_returns=ReplayCapabilities, _out_variable_name="Capabilities")
    def GetServiceCapabilities(ctx: Any) -> ReplayCapabilities:
        return _replay_capabilities()

    @rpc(StreamSetup.customize(min_occurs=1), Unicode(min_occurs=1), _returns=Unicode,
         _out_variable_name="Uri", _in_variable_names={"setup": "StreamSetup", "token": "RecordingToken"})
    def GetReplayUri(ctx: Any, setup: StreamSetup, token: str) -> str:
        context = _context(ctx)
        if context.store.recording(token) is None:
            raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "NoRecording"),
                            reason=f"no recording with token {excerpt(token)}")
        protocol = setup.Transport.Protocol if setup.Transport is not None else None
        if setup.Stream != "RTP-Unicast" or protocol not in _REPLAY_PROTOCOLS:
            raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidStreamSetup"),
                            reason=f"stream setup {setup.Stream}/{protocol} is not served; ask for RTP-Unicast "
                                   "over RTSP, TCP or UDP")
        if context.replay_base is None:
            raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                            reason="the replay server of this device is not running")
        env = ctx.transport.req_env
        if not through_proxy(env):
            return f"{context.replay_base}/{quote(token, safe='')}"
        if protocol == "UDP":
            raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "InvalidStreamSetup"),
                            reason="through the cloud replay is RTP over the RTSP connection; ask for RTSP or TCP")
        front = proxied_rtsp_base(env)
        if front is None:
            raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                            reason="the cloud this request came through has no RTSP front; ask the device directly")
        return f"{front}/{REPLAY_TOKEN}/{quote(token, safe='')}"


def search_endpoint(context: RecordingServiceContext) -> SoapEndpoint:
    """The WSGI app of the Recording Search service (no access control: see :mod:`.app`)."""
    return SoapEndpoint([SearchService], TSE, xsd="search", context=context, name="SearchService")


def replay_endpoint(context: RecordingServiceContext) -> SoapEndpoint:
    """The WSGI app of the Replay service (no access control: see :mod:`.app`)."""
    return SoapEndpoint([ReplayService], TRP, xsd="replay", context=context, name="ReplayService")
