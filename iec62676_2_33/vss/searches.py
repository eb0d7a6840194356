"""Layer 5: a recording or event search over several systems at once — the VSS and its lower systems
(ANX-B-3, GEN-1, ADR-2).

Theory of operation
-------------------
A FindRecordings or FindEvents goes to one system when its scope names the
tokens of one system only. Two cases need several, and the gateway hands them
to :class:`JointSearches`:

* a scope that names **no token** would search only the VSS's own
  recordings: the search runs on the VSS and *every* lower system (a scope of
  the VSS's own tokens only is the VSS's own search);
* a scope that names the tokens of **several systems** (two lower systems, or
  a lower system and the VSS's own): the search runs on *exactly those*
  (:func:`scope_owners`), each asked with only the scope entries that name
  its own tokens (:func:`narrow_scope`; the prefixes are then stripped as in
  any forwarded request), so no system sees another one's tokens and none
  searches everything for lack of a scope.

Then the joint search keeps the union:

1. **Collect.** The systems get the Find (the scope as above; filter,
   MaxMatches and KeepAliveTime as the client sent them), then
   Get…SearchResults until ``Completed`` and
   EndSearch — one system after the other, with one deadline for the whole
   collection (the gateway's timeout) and at most ``MaxMatches`` (bounded by
   :data:`~..domain.recordings.MAX_MATCHES`) results kept: a system's search
   is ended once its results reach that number. A lower system's
   answers are adapted like every forwarded answer (recording, track and
   source tokens prefixed); one that is down, faults or runs out of time is
   left out (logged), as in merged lists.
2. **Order.** Event results are sorted by their ``Time`` (backward when the
   EndPoint lies before the StartPoint, as ONVIF's backward search) and the
   first ``MaxMatches`` kept after each system (so at most twice that number
   is held), so the union reads like one system's answer; recordings keep the
   order of the systems, the first ``MaxMatches`` in all.
3. **Serve.** The union is one session of a
   :class:`~..domain.recordings.SearchSessions` (bounded in number, expiring
   after KeepAliveTime without a Get): the client's search token is
   :data:`JOINT` + the session's token, which no lower system's token and no
   token of the VSS's own search service looks like. Get…SearchResults pages
   through it (MaxResults), ``Completed`` with the last page; EndSearch ends it.

Collecting at Find time keeps the later calls local and simple; the price is a
Find that takes as long as the lower systems' searches (within the deadline).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from ..domain.recordings import MAX_MATCHES, SearchError, SearchSessions
from ..domain.subscriptions import InvalidTime, format_datetime, parse_datetime, parse_duration
from ..namespaces import TT
from ..soap.envelope import excerpt
from ..soap.fault import SoapFault
from .adaption import token_index, token_owner

__all__ = ["JOINT", "JOINT_FINDS", "JointSearches", "Searcher", "joint_token", "narrow_scope", "scope_owners"]

log = logging.getLogger(__name__)

TSE = "http://www.onvif.org/ver10/search/wsdl"
_SCOPE = f"{{{TSE}}}Scope"
#: The start of a joint search's token.
JOINT = "joint-"
#: Get…SearchResults rounds per system before its search counts as not completing.
MAX_ROUNDS = 64

#: Sends one operation to one system; its answer's element (a fault or an unreachable system: SoapFault).
Searcher = Callable[[etree._Element], etree._Element]


@dataclass(frozen=True)
class _Kind:
    name: str
    get: str
    item: str


_KINDS = {
    f"{{{TSE}}}FindRecordings": _Kind("recordings", "GetRecordingSearchResults", f"{{{TT}}}RecordingInformation"),
    f"{{{TSE}}}FindEvents": _Kind("events", "GetEventSearchResults", f"{{{TT}}}Result"),
}
#: The operations that start a joint search when their scope names no token, or tokens of several systems.
JOINT_FINDS = frozenset(_KINDS)
_RESULTS = {"GetRecordingSearchResults": _KINDS[f"{{{TSE}}}FindRecordings"],
            "GetEventSearchResults": _KINDS[f"{{{TSE}}}FindEvents"]}


def joint_token(operation: etree._Element) -> str | None:
    """The joint search token a Get…SearchResults or EndSearch names, else ``None``."""
    if etree.QName(operation).namespace != TSE:
        return None
    token = (operation.findtext(f"{{{TSE}}}SearchToken") or "").strip()
    return token if token.startswith(JOINT) else None


def scope_owners(operation: etree._Element, lowers: frozenset[str], routes: Mapping[str, str]) -> list[str | None]:
    """The systems the tokens of Find ``operation`` name, in the order met: ``None`` for the VSS's own, else
    the lower system's configured prefix (unknown prefixes and over-long tokens: ``Sender/InvalidArgVal``)."""
    owners: list[str | None] = []
    for element, attribute in token_index().sites(operation):
        owner = token_owner(_value(element, attribute), lowers, routes)[0]
        if owner not in owners:
            owners.append(owner)
    return owners


def narrow_scope(operation: etree._Element, owner: str | None, lowers: frozenset[str],
                 routes: Mapping[str, str]) -> etree._Element:
    """A copy of Find ``operation`` whose Scope keeps only the entries (``IncludedSources``,
    ``IncludedRecordings``, …) that name tokens of ``owner`` (:func:`scope_owners`)."""
    narrowed = copy.deepcopy(operation)
    others: list[tuple[etree._Element, etree._Element]] = []  # (Scope, entry): removed after the walk
    for element, attribute in list(token_index().sites(narrowed)):
        if token_owner(_value(element, attribute), lowers, routes)[0] == owner:
            continue
        entry, parent = element, element.getparent()
        while parent is not None and parent.tag != _SCOPE:
            entry, parent = parent, parent.getparent()
        if parent is None:
            raise _invalid("the request names tokens of several systems outside its Scope; send one request "
                           "to each")
        others.append((parent, entry))
    for scope, entry in others:
        if entry.getparent() is scope:  # an entry with two tokens is met twice
            scope.remove(entry)
    return narrowed


def _value(element: etree._Element, attribute: str | None) -> str:
    return ((element.get(attribute) if attribute else element.text) or "").strip()


def _invalid(reason: str, *subcodes: str) -> SoapFault:
    return SoapFault(code="Sender", subcodes=("InvalidArgVal", *subcodes), reason=reason)


def _op(name: str, token: str) -> etree._Element:
    operation = etree.Element(f"{{{TSE}}}{name}", nsmap={"tse": TSE})
    etree.SubElement(operation, f"{{{TSE}}}SearchToken").text = token
    return operation


def _answer(name: str, child: str, text: str | None = None) -> etree._Element:
    answer = etree.Element(f"{{{TSE}}}{name}", nsmap={"tse": TSE, "tt": TT})
    etree.SubElement(answer, f"{{{TSE}}}{child}").text = text
    return answer


def _time(result: etree._Element) -> float:
    try:
        return parse_datetime(result.findtext(f"{{{TT}}}Time") or "")
    except InvalidTime:
        return 0.0  # a malformed time sorts first rather than failing the whole search


@dataclass
class JointSearches:
    """The joint searches of one VSS (module docstring); thread-safe."""

    timeout: float = 10.0
    sessions: SearchSessions = field(default_factory=SearchSessions)
    clock: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def find(self, operation: etree._Element, own: Searcher | None,
             lowers: list[tuple[str, Searcher]]) -> etree._Element:
        """Run the Find ``operation`` on the VSS's ``own`` endpoint, unless ``None`` (its fault is the client's
        answer: the request is wrong) and on every ``(prefix, searcher)`` of ``lowers``; the FindXResponse with
        the joint token."""
        kind = _KINDS[operation.tag]
        try:
            keep_alive = parse_duration((operation.findtext(f"{{{TSE}}}KeepAliveTime") or "").strip())
            limit = min(int(operation.findtext(f"{{{TSE}}}MaxMatches") or MAX_MATCHES), MAX_MATCHES)
            start = parse_datetime(operation.findtext(f"{{{TSE}}}StartPoint") or "") if kind.name == "events" else 0.0
            end_text = operation.findtext(f"{{{TSE}}}EndPoint")
            end = None if end_text is None else parse_datetime(end_text)
        except (InvalidTime, ValueError) as exc:
            raise _invalid(f"the search cannot be run: {exc}") from None
        deadline = time.monotonic() + self.timeout
        backward = end is not None and end < start

        def add(found: list[etree._Element], more: list[etree._Element]) -> list[etree._Element]:
            if kind.name != "events":
                return found + more
            return sorted(found + more, key=_time, reverse=backward)[:limit]  # the first in time order

        found = [] if own is None else self._collect("this VSS", own, own(operation), kind, deadline, limit)
        for prefix, searcher in lowers:
            room = limit if kind.name == "events" else limit - len(found)
            if room <= 0 or time.monotonic() > deadline:
                log.info("joint search: lower system %s left out (the search is full or out of time)", prefix)
                continue
            try:
                started = searcher(operation)
            except SoapFault as fault:
                log.info("joint search: lower system %s left out: %s", prefix, fault)
                continue
            found = add(found, self._collect(f"lower system {prefix}", searcher, started, kind, deadline, room))
        found = add([], found)
        with self._lock:
            try:
                token = self.sessions.open(self.clock(), kind.name, lambda: list(found), keep_alive=keep_alive,
                                           max_matches=limit, end_point=end)
            except SearchError as exc:
                raise SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc)) from None
        return _answer(etree.QName(operation).localname + "Response", "SearchToken", JOINT + token)

    @staticmethod
    def _collect(name: str, searcher: Searcher, started: etree._Element, kind: _Kind, deadline: float,
                 limit: int) -> list[etree._Element]:
        """The results of the search ``started`` opened, at most ``limit`` (Get… until Completed or ``limit``
        results, then EndSearch)."""
        token = (started.findtext(f"{{{TSE}}}SearchToken") or "").strip()
        found: list[etree._Element] = []
        try:
            for _ in range(MAX_ROUNDS):
                if time.monotonic() > deadline:
                    break
                result_list = searcher(_op(kind.get, token)).find(f"{{{TSE}}}ResultList")
                if result_list is None:
                    break
                # Copies: a kept element would keep the lower system's whole answer document alive.
                found += (copy.deepcopy(item) for item in result_list.iterchildren(kind.item))
                if len(found) >= limit or (result_list.findtext(f"{{{TT}}}SearchState") or "").strip() == "Completed":
                    return found[:limit]
            log.info("joint search: %s left out (no complete answer in time)", name)
        except SoapFault as fault:
            log.info("joint search: %s left out: %s", name, fault)
        finally:
            try:
                searcher(_op("EndSearch", token))
            except SoapFault as fault:
                log.debug("joint search: EndSearch at %s: %s", name, fault)
        return []

    def results(self, operation: etree._Element, token: str) -> etree._Element:
        """A Get…SearchResults or EndSearch on joint search ``token``."""
        local = operation.tag.rpartition("}")[2]
        kind = _RESULTS.get(local)
        if kind is None and local != "EndSearch":
            raise _invalid(f"{local} does not take a joint search token", "InvalidToken")
        limit = (operation.findtext(f"{{{TSE}}}MaxResults") or "").strip()
        if limit and not limit.isdigit():
            raise _invalid(f"MaxResults must be a number, not {excerpt(limit, 20)}")
        now = self.clock()
        try:
            with self._lock:
                if kind is None:
                    return _answer("EndSearchResponse", "Endpoint",
                                   format_datetime(self.sessions.end(now, token[len(JOINT):])))
                batch, complete = self.sessions.results(now, token[len(JOINT):], kind.name,
                                                        int(limit) if limit else None)
        except SearchError as exc:
            raise SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc)) from None
        answer = _answer(f"{local}Response", "ResultList")
        etree.SubElement(answer[0], f"{{{TT}}}SearchState").text = "Completed" if complete else "Searching"
        answer[0].extend(copy.deepcopy(item) for item in batch if isinstance(item, etree._Element))
        return answer
