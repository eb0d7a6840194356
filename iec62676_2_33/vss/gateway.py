"""Layer 5: the VSS gateway — operations forwarded to the lower system their tokens name
(GEN-1, GEN-2, ADR-2 … ADR-6, ANX-B-1).

Theory of operation
-------------------
The gateway wraps a service endpoint of the VSS's device application *behind*
its access control, so it gets the one parsed, authorized request
(:data:`~..security.middleware.ENVIRON_REQUEST`) and never reads bytes. For
each request it works on a copy of the operation element:

1. **Loop check.** The hop header :data:`HOP_HEADER` lists the VSS identities a
   request passed; a request that already names this VSS, or has passed
   :data:`MAX_HOPS` of them, gets ``Sender/InvalidArgVal/ConfigurationLoop``.
2. **Routing** (:func:`~.adaption.route_request`): tokens without a lower
   prefix stay with the VSS's own endpoint; a known prefix sends the request
   (prefixes stripped) to that lower system; an unknown prefix or an
   over-long token is ``Sender/InvalidArgVal``. Only operations the VSS's own
   access table classifies are forwarded (the client's level was checked for
   them; the lower system sees the VSS's account), others are
   ``Receiver/ActionNotSupported``.
3. **Forwarding** (:class:`Forwarder`): a fresh SOAP 1.2 envelope around the
   operation, signed with the VSS's account at the lower system (WS-Security
   UsernameToken) or sent over the lower system's uplink (the uplink's
   UserLevel applies), with the hop header extended. Every call has one
   deadline for the whole exchange, head included (``VssContext.timeout``,
   :func:`~..bounded_http.post`): a lower system that does not answer in time, or
   trickles its answer, is ``Receiver/Action/LowerSystemTimeout``, never a
   hang; one that cannot be reached ``Receiver/Action/LowerSystemUnreachable``.
   An answer is at most :data:`MAX_ANSWER` bytes and parsed locked down.
4. **Adaption** of the answer (:func:`~.adaption.prefix_response`): every
   token prefixed, also those in the recorded events FindEvents finds
   (:func:`~.adaption.prefix_messages`), prefixes of deeper systems learnt as
   routes; a fault of the lower system is relayed with its code and subcodes,
   its reason marked with the prefix. ``rtsp://`` URIs (GetStreamUri, GetReplayUri, …) are rewritten
   by the VSS's RTSP relay (:mod:`.rtsp`) unless they already point at it (a request that came over the
   VSS's own uplink with an RTSP base gets ``<that base>/<relay id>``, :func:`uplink_rtsp_base`); the
   ``http(s)://`` URI of a GetSnapshotUri answer by the VSS's snapshot route
   (:mod:`.snapshots`). GetStreamUri for RtspOverHttp asks the lower system for RTSP and answers the
   relayed stream on the VSS's own HTTP port (:mod:`.rtsp_http`).

Operations without tokens that list or count objects (:data:`MERGED`: Media2
GetProfiles, PTZ GetNodes and GetConfigurations, Recording Search
GetRecordingSummary) are answered by the VSS's own endpoint and every reachable
lower system, the lists concatenated and the summaries added (lower systems
that are down, answer malformed or not within the calls' one deadline are left out). A search (FindRecordings,
FindEvents) goes to the lower system its scope's tokens name; the search token
it answers is a ``tt:JobToken`` and gets that system's prefix like any other
token, so GetRecordingSearchResults, GetEventSearchResults and EndSearch find
their way back to it. A search whose scope names no token runs on the VSS and
every lower system together, one whose scope names tokens of several systems on
exactly those (:mod:`.searches`). The recording sources of Recording Search
answers get the VSS's SourceId and Address
(:func:`~.adaption.adapt_recording_sources`).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lxml import etree

from .. import schemas
from ..bounded_http import AnswerTooLong, ExchangeTimeout, exchange_client, post
from ..domain.subscriptions import InvalidTime, parse_datetime
from ..errors import Iec62676Error, SchemaError, TransportError
from ..namespaces import SOAP_ENV
from ..runtime.cloud import AnswerTooLarge
from ..security.middleware import ENVIRON_ACCESS_CLASS, ENVIRON_REQUEST, ENVIRON_UPLINK_LEVEL
from ..security.wsse import build_username_token
from ..services.forwarded import request_base_url
from ..services.media2 import proxied_rtsp_base
from ..services.recording import RECORDING_HISTORY
from ..soap.envelope import SoapRequest, body_element, excerpt, parse_request
from ..soap.fault import SoapFault, fault_response
from .adaption import adapt_recording_sources, prefix_messages, prefix_response, route_request, token_items
from .lower import LowerStore, LowerSystem
from .rtsp import account_for
from .rtsp_http import ask_rtsp, tunnel_uris
from .searches import JOINT_FINDS, JointSearches, Searcher, joint_token, narrow_scope, scope_owners
from .snapshots import SnapshotTable

if TYPE_CHECKING:
    from ..runtime.cloud import CloudListener
    from .rtsp import RelayTable

__all__ = ["HOP_HEADER", "MAX_HOPS", "MERGED", "Forwarder", "Gateway", "VssContext", "uplink_rtsp_base"]

log = logging.getLogger(__name__)

#: The VSS identities a forwarded request has passed, comma separated (loop detection).
HOP_HEADER = "x-iec62676-vss-path"
_HOP_ENVIRON = "HTTP_" + HOP_HEADER.upper().replace("-", "_")
#: The deepest hierarchy a request may cross (clause 4 shows three levels).
MAX_HOPS = 8
#: The largest answer taken from a lower system.
MAX_ANSWER = 4 * 1024 * 1024
#: Seconds a merged operation waits past the calls' deadline for their answers' adaption.
_ADAPTION = 1.0


def _concatenate(mine: etree._Element, theirs: etree._Element) -> None:
    """A list answer: the lower system's items after the VSS's."""
    mine.extend(list(theirs))


def _add_summary(mine: etree._Element, theirs: etree._Element) -> None:
    """GetRecordingSummary: the recordings counted together; the data span covers the spans of the systems
    that have recordings (one without reports ``now`` for both ends, which says nothing)."""
    ours, other = mine.find("{*}Summary"), theirs.find("{*}Summary")
    if ours is None or other is None:
        raise ValueError("no Summary in the answer")
    fields = [{etree.QName(c).localname: c for c in summary if isinstance(c.tag, str)} for summary in (ours, other)]
    counts = [int((f["NumberRecordings"].text or "").strip()) for f in fields]
    spans = [[(f[name].text or "").strip() for f in fields] for name in ("DataFrom", "DataUntil")]
    for texts in spans:
        for text in texts:
            parse_datetime(text)  # a malformed answer is left out as a whole
    if counts[1] > 0:
        first, until = spans
        fields[0]["DataFrom"].text = min(first, key=parse_datetime) if counts[0] > 0 else first[1]
        fields[0]["DataUntil"].text = max(until, key=parse_datetime) if counts[0] > 0 else until[1]
    fields[0]["NumberRecordings"].text = str(sum(counts))


#: Operations answered by the VSS and every lower system together (no token in), and how an answer is added.
MERGED: Mapping[str, Callable[[etree._Element, etree._Element], None]] = MappingProxyType({
    "{http://www.onvif.org/ver20/media/wsdl}GetProfiles": _concatenate,
    "{http://www.onvif.org/ver20/ptz/wsdl}GetNodes": _concatenate,
    "{http://www.onvif.org/ver20/ptz/wsdl}GetConfigurations": _concatenate,
    "{http://www.onvif.org/ver10/search/wsdl}GetRecordingSummary": _add_summary,
})
_CONTENT_TYPE = "application/soap+xml; charset=utf-8"
#: The longest subcode chain relayed from a lower system's fault, and what a subcode may look like.
MAX_SUBCODES = 8
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


@functools.cache
def recorded_topics() -> Mapping[str, frozenset[str]]:
    """The token items of the recorded events a lower system's FindEvents finds (its messages are adapted
    like the forwarded live events, ANX-B-4)."""
    return MappingProxyType({RECORDING_HISTORY.path: token_items(RECORDING_HISTORY)})


@dataclass(frozen=True)
class LowerAnswer:
    """A lower system's answer: the Body's element (already adapted) or the fault it sent."""

    element: etree._Element | None
    fault: SoapFault | None = None


@dataclass
class VssContext:
    """What the gateway works with; the runtime fills in the uplink side and the RTSP relay."""

    lowers: LowerStore
    timeout: float = 10.0
    cloud: CloudListener | None = None
    loop: asyncio.AbstractEventLoop | None = None
    relay: RelayTable | None = None
    #: ``rtsp://host:port`` of the VSS's RTSP front, told to lower systems on an uplink.
    rtsp_base: str | None = None
    #: Runs the calls of a merged operation to the lower systems side by side.
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="vss-merge"))
    #: Searches over the VSS and all its lower systems (:mod:`.searches`).
    searches: JointSearches = field(init=False)
    #: Snapshot URIs of lower systems relayed by the VSS's snapshot route (:mod:`.snapshots`).
    snapshots: SnapshotTable = field(default_factory=SnapshotTable)

    def __post_init__(self) -> None:
        self.searches = JointSearches(timeout=self.timeout)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _fault(code: str, reason: str, *subcodes: str) -> SoapFault:
    return SoapFault(code=code, subcodes=subcodes, reason=reason)


def _lower_fault(lower: LowerSystem, what: str, subcode: str) -> SoapFault:
    """``Receiver/Action/<subcode>``: lower system ``lower`` ``what``."""
    return _fault("Receiver", f"lower system {lower.prefix} {what}", "Action", subcode)


def _envelope(operation: etree._Element, header: etree._Element | None) -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"env": SOAP_ENV})
    if header is not None:
        etree.SubElement(env, f"{{{SOAP_ENV}}}Header").append(header)
    etree.SubElement(env, f"{{{SOAP_ENV}}}Body").append(operation)
    return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def _fault_of(root: etree._Element, prefix: str | None) -> SoapFault | None:
    """The fault ``root`` (an envelope) carries, its reason marked with lower system ``prefix`` (if any)."""
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    if fault is None:
        return None
    values = [(v.text or "").strip().rpartition(":")[2] for v in fault.iter(f"{{{SOAP_ENV}}}Value")]
    code = values[0] if values else "Receiver"
    reason = fault.findtext(f"{{{SOAP_ENV}}}Reason/{{{SOAP_ENV}}}Text") or ""
    # The chain is relayed as the lower system sent it, as far as it is made of plain names (bounded).
    subcodes = tuple(v for v in values[1:MAX_SUBCODES + 1] if _NAME.fullmatch(v))
    return SoapFault(code=code if code in ("Sender", "Receiver") else "Receiver", subcodes=subcodes,
                     reason=reason if prefix is None else f"lower system {prefix}: {reason}")


class Forwarder:
    """Sends one operation to one lower system and adapts the answer (steps 3 and 4)."""

    def __init__(self, context: VssContext) -> None:
        self.context = context
        self._http = exchange_client(context.timeout)

    def close(self) -> None:
        self._http.close()

    def call(self, lower: LowerSystem, path: str, operation: etree._Element, hops: list[str],
             host: str | None = None, *, uplink_base: str | None = None) -> LowerAnswer:
        """Forward ``operation`` (tokens already stripped) to ``lower`` at service ``path``; ``uplink_base``: the
        RTSP base of the uplink the client's request came over (:func:`uplink_rtsp_base`)."""
        header = None
        if lower.username is not None:
            header = build_username_token(lower.username, lower.password or "", datetime.now(UTC))
        sent = copy.deepcopy(operation)
        ask_rtsp(sent)  # RtspOverHttp is the VSS's own tunnel to the lower system's RTSP (.rtsp_http)
        body = _envelope(sent, header)
        headers = [("content-type", _CONTENT_TYPE), (HOP_HEADER, ",".join(hops))]
        status, data = (self._post_url(lower, path, headers, body) if lower.url is not None
                        else self._post_uplink(lower, path, headers, body, host))
        try:
            root = schemas.parse_xml(data)
        except SchemaError:
            raise _lower_fault(lower, f"answered HTTP {status} without a SOAP envelope", "LowerSystemFailed") from None
        fault = _fault_of(root, lower.prefix)
        if fault is not None:
            return LowerAnswer(None, fault)
        element = body_element(root)
        if status != 200 or element is None:
            raise _lower_fault(lower, f"answered HTTP {status} without an answer", "LowerSystemFailed")
        # isolation (docs/hierarchy.md): a token of another lower system gets this one's prefix
        known, routes = self.context.lowers.prefixes(), self.context.lowers.routes()
        learnt = (prefix_response(element, lower.prefix, lowers=known, routes=routes)
                  | prefix_messages(element, lower.prefix, recorded_topics(), lowers=known, routes=routes))
        if learnt:
            self.context.lowers.learn(lower.prefix, learnt)
        self._rewrite_uris(element, lower, uplink_base)
        return LowerAnswer(element)

    def _rewrite_uris(self, element: etree._Element, lower: LowerSystem, uplink_base: str | None) -> None:
        """``rtsp://`` URIs kept by the relay table: answered on the VSS's front, or under ``uplink_base``."""
        relay = self.context.relay
        for uri in element.iter("{*}Uri"):
            text = (uri.text or "").strip()
            if not text.lower().startswith("rtsp://"):
                continue
            try:
                if relay is None:
                    raise ValueError("no relay table")
                uri.text = relay.expose(text, lower.prefix, account_for(text, lower), base=uplink_base)
            except ValueError:
                raise _fault("Receiver", "this VSS runs no RTSP front (--rtsp) to relay the lower system's "
                             "stream", "Action", "NoRtspFront") from None

    def _post_url(self, lower: LowerSystem, path: str, headers: list[tuple[str, str]],
                  body: bytes) -> tuple[int, bytes]:
        try:
            answer = post(self._http, lower.service_url(path), headers, body, timeout=self.context.timeout,
                          max_bytes=MAX_ANSWER)
        except ExchangeTimeout:
            raise self._timeout(lower) from None
        except AnswerTooLong:
            raise _lower_fault(lower, f"answered more than {MAX_ANSWER} bytes", "LowerSystemFailed") from None
        except TransportError as exc:
            raise _lower_fault(lower, f"cannot be reached: {exc}", "LowerSystemUnreachable") from None
        return answer.status, answer.body

    def _post_uplink(self, lower: LowerSystem, path: str, headers: list[tuple[str, str]], body: bytes,
                     host: str | None) -> tuple[int, bytes]:
        cloud, loop = self.context.cloud, self.context.loop
        if cloud is None or loop is None or lower.uplink is None:
            raise _lower_fault(lower, "is reached by uplink, but this VSS runs no uplink listener (--uplink-listen)",
                               "LowerSystemUnreachable")
        extra = [("x-forwarded-host", host or "vss")]  # stream URIs point back the way the request came
        if self.context.rtsp_base is not None:
            extra.append(("x-iec62676-rtsp-base", f"{self.context.rtsp_base}/devices/{lower.uplink}"))
        call = cloud.request(lower.uplink, "POST", path, [*headers, *extra, ("content-length", str(len(body)))],
                             body, timeout=self.context.timeout, max_body=MAX_ANSWER)
        future = asyncio.run_coroutine_threadsafe(call, loop)
        try:
            result = future.result(self.context.timeout + 1)
        except (FutureTimeout, TimeoutError):
            future.cancel()
            raise self._timeout(lower) from None
        except AnswerTooLarge:
            raise _lower_fault(lower, f"answered more than {MAX_ANSWER} bytes", "LowerSystemFailed") from None
        except Iec62676Error as exc:
            raise _lower_fault(lower, f"cannot be reached over its uplink: {exc}", "LowerSystemUnreachable") from None
        return result.status, result.body

    def _timeout(self, lower: LowerSystem) -> SoapFault:
        return _lower_fault(lower, f"did not answer within {self.context.timeout:g} s", "LowerSystemTimeout")


class Gateway:
    """WSGI wrapper of one service endpoint of the VSS (see the module docstring)."""

    def __init__(self, inner: Callable[..., Iterable[bytes]], path: str, context: VssContext,
                 forwarder: Forwarder) -> None:
        self.inner = inner
        self.path = path
        self.context = context
        self.forwarder = forwarder

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = environ.get(ENVIRON_REQUEST)
        if environ.get("REQUEST_METHOD") != "POST" or not isinstance(request, SoapRequest):
            return self.inner(environ, start_response)
        try:
            hops = self._hops(environ)
            operation = copy.deepcopy(request.operation)
            lowers = {lower.prefix: lower for lower in self.context.lowers.list()}
            host = environ.get("HTTP_HOST")
            classified = environ.get(ENVIRON_ACCESS_CLASS) is not None  # the client's level was checked
            if classified and operation.tag in JOINT_FINDS and lowers:
                owners = scope_owners(operation, frozenset(lowers), self.context.lowers.routes())
                if len(owners) != 1:  # a scope naming no system searches all of them, one naming several those
                    return _respond(start_response, self._joint_find(environ, operation, owners or [None, *lowers],
                                                                     lowers, hops, host))
            target = route_request(operation, frozenset(lowers), self.context.lowers.routes()).lower
            if target is None:
                if operation.tag in MERGED and lowers:
                    return self._merged(environ, start_response, operation, list(lowers.values()), hops, host)
                joint = joint_token(operation) if classified else None
                if joint is not None:
                    return _respond(start_response, self.context.searches.results(operation, joint))
                return self.inner(environ, start_response)
            if environ.get(ENVIRON_ACCESS_CLASS) is None:  # no access class here: the client's level was not checked
                raise _fault("Receiver", f"operation {excerpt(operation.tag, 120)} is not supported at this address",
                             "ActionNotSupported")
            answer = self.forwarder.call(lowers[target], self.path, operation, hops, host,
                                         uplink_base=uplink_rtsp_base(environ))
        except SoapFault as fault:
            log.info("VSS %s: %s", self.path, fault)
            return fault_response(fault, start_response)
        if answer.fault is not None:
            return fault_response(answer.fault, start_response)
        assert answer.element is not None
        self.context.snapshots.rewrite(answer.element, lowers[target], request_base_url(environ))
        adapt_recording_sources(answer.element, target, request_base_url(environ),
                                lowers=self.context.lowers.prefixes(), routes=self.context.lowers.routes())
        tunnel_uris(request.operation, answer.element, request_base_url(environ), self.context.rtsp_base)
        return _respond(start_response, answer.element)

    def _hops(self, environ: dict[str, Any]) -> list[str]:
        passed = [h.strip() for h in str(environ.get(_HOP_ENVIRON) or "").split(",") if h.strip()]
        own = self.context.lowers.vss_id
        if own in passed or len(passed) >= MAX_HOPS:
            raise _fault("Sender", f"configuration loop: the request passed this VSS already or more than "
                         f"{MAX_HOPS} VSSs ({excerpt(','.join(passed), 120)}); check the lower systems",
                         "InvalidArgVal", "ConfigurationLoop")
        return [*passed, own]

    def _joint_find(self, environ: dict[str, Any], operation: etree._Element, owners: list[str | None],
                    lowers: dict[str, LowerSystem], hops: list[str], host: str | None) -> etree._Element:
        """A joint search (:mod:`.searches`) on ``owners`` (``None``: the VSS itself), each system's Find with
        the scope entries of its own tokens only."""
        routes = self.context.lowers.routes()

        def narrowed(searcher: Searcher, owner: str | None) -> Searcher:
            return lambda op: searcher(narrow_scope(op, owner, frozenset(lowers), routes)
                                       if op.tag in JOINT_FINDS else op)

        own = narrowed(self._own_searcher(environ), None) if None in owners else None
        address = request_base_url(environ)
        searchers = [(p, narrowed(self._lower_searcher(lowers[p], lowers, hops, host, address), p))
                     for p in owners if p is not None]
        return self.context.searches.find(operation, own, searchers)

    def _own_searcher(self, environ: dict[str, Any]) -> Searcher:
        """Operations of a joint search on the VSS's own endpoint (the client's request passed access control;
        these are the same service's operations of the same class), each parsed once into a request."""
        def run(operation: etree._Element) -> etree._Element:
            request = parse_request(_CONTENT_TYPE, _envelope(copy.deepcopy(operation), None))
            _status, _headers, data = _call(self.inner, {**environ, ENVIRON_REQUEST: request})
            answer = schemas.parse_xml(data)
            fault = _fault_of(answer, None)
            if fault is not None:
                raise fault
            element = body_element(answer)
            assert element is not None, "an answer of the VSS's own service without a fault holds an element"
            return element
        return run

    def _lower_searcher(self, lower: LowerSystem, lowers: dict[str, LowerSystem], hops: list[str],
                        host: str | None, address: str) -> Searcher:
        """Operations of a joint search forwarded to ``lower`` (its search token routed like a client's; the
        recording sources adapted for the VSS at ``address``)."""
        def run(operation: etree._Element) -> etree._Element:
            operation = copy.deepcopy(operation)
            route_request(operation, frozenset(lowers), self.context.lowers.routes())
            answer = self.forwarder.call(lower, self.path, operation, hops, host)
            if answer.fault is not None:
                raise answer.fault
            assert answer.element is not None
            adapt_recording_sources(answer.element, lower.prefix, address, lowers=self.context.lowers.prefixes(),
                                    routes=self.context.lowers.routes())
            return answer.element
        return run

    def _merged(self, environ: dict[str, Any], start_response: Callable[..., Any], operation: etree._Element,
                lowers: list[LowerSystem], hops: list[str], host: str | None) -> Iterable[bytes]:
        status, headers, own = _call(self.inner, environ)
        if not status.startswith("200"):
            start_response(status, headers)
            return [own]
        root = schemas.parse_xml(own)
        mine = body_element(root)
        assert mine is not None, "a 200 answer of the VSS's own service holds an element"
        futures = [(lower, self.context.pool.submit(self.forwarder.call, lower, self.path, operation, hops, host))
                   for lower in lowers]
        deadline = time.monotonic() + self.context.timeout + _ADAPTION  # one for all: each call has its own
        for lower, future in futures:
            try:
                answer = future.result(max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                future.cancel()  # still queued behind busy calls: it is never sent
                log.info("VSS %s: lower system %s left out of the list: no answer within %g s", self.path,
                         lower.prefix, self.context.timeout)
                continue
            except SoapFault as exc:
                log.info("VSS %s: lower system %s left out of the list: %s", self.path, lower.prefix, exc)
                continue
            if answer.fault is not None or answer.element is None:
                log.info("VSS %s: lower system %s left out of the list: %s", self.path, lower.prefix, answer.fault)
                continue
            try:
                MERGED[operation.tag](mine, answer.element)
            except (KeyError, ValueError, InvalidTime) as exc:
                log.info("VSS %s: lower system %s left out: a malformed answer (%s)", self.path, lower.prefix, exc)
        return _respond(start_response, mine)


def uplink_rtsp_base(environ: dict[str, Any]) -> str | None:
    """The RTSP base (:data:`~..services.media2.RTSP_BASE_HEADER`) of a request that came over one of the VSS's
    own uplinks (the uplink bridge gives those their UserLevel; a header cannot), ``None`` for any other request."""
    return proxied_rtsp_base(environ) if environ.get(ENVIRON_UPLINK_LEVEL) is not None else None


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI ``app``: (status, headers, body)."""
    captured: dict[str, Any] = {"status": "500 Internal Server Error", "headers": []}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        captured.update(status=status, headers=headers)
        return lambda _data: None

    body = b"".join(app(environ, capture))
    return str(captured["status"]), list(captured["headers"]), body


def _respond(start_response: Callable[..., Any], element: etree._Element) -> list[bytes]:
    payload = _envelope(element, None)
    start_response("200 OK", [("Content-Type", _CONTENT_TYPE), ("Content-Length", str(len(payload)))])
    return [payload]

