"""Layer 6: token adaption driven by the authored XSD (ADR-2 … ADR-5, ANX-B-1 … ANX-B-4).

Theory of operation
-------------------
*Where the tokens are.* :class:`TokenIndex` reads every ``xsd/*.xsd`` once and
knows, for each global element and each complex type, which child elements
and attributes are of type ``tt:ReferenceToken`` or of a simple type derived
from it by restriction (the token-carrying types the WSDLs define). Complex
types are followed through ``complexContent`` extensions, anonymous types,
``ref=`` and ``xs:any`` children that are global elements. So an operation
whose messages are in an authored XSD is adapted without code of its own:
PTZ, Recording Search or Replay need no change here.

*The clause 6 rule applied* (a VSS exposes the tokens of a lower system P):

* A token a lower system P answers that has no ``:`` is P's local token; the
  VSS exposes it as ``P:Local`` (ADR-2, the same P for every token of that
  system, ADR-4).
* A token P answers that already is a remote token ``Q:Local`` (P is itself a
  VSS, or a device that names its resources with its own prefix) keeps its
  prefix: prefixing again would soon break the 64-character limit (ADR-3), and
  a device prefix (an Annex A device ID) is unique in the whole hierarchy.
  ``Q`` (when it is not P) is then *routed* to P.
* *Isolation* (:func:`expose_token`, the one rule for answers and forwarded
  events): P names only tokens under its own prefix. ``Q:Local`` keeps its
  prefix only when Q is P, a prefix routed to P, or (in ``learning`` mode) a
  prefix nobody has yet, then learnt as P's route. When Q is another
  configured lower system or routed to another one, P cannot speak for it: the
  token is P's own name and gets P's prefix (``P:Q:Local``), so it never reads
  as the other system's and a request with it goes back to P with exactly
  what P answered.
* A request token ``X:Rest`` goes to the lower system X with ``Rest`` when X
  is a configured prefix (stripped), or unchanged to the lower system a route
  names for X. Any other prefix is ``Sender/InvalidArgVal``; so is a token over
  64 characters, or tokens of two lower systems in one request (the scope of a
  search is split among its systems instead, :mod:`.searches`, with
  :func:`token_owner`). A request without remote tokens is the VSS's own.

*Recording sources* (``tt:RecordingSourceInformation`` of RecordingInformation,
ANX-B-3, ANX-B-5) carry two ``xs:anyURI`` the XSD cannot type as tokens:
:func:`adapt_recording_sources` treats a ``SourceId`` without a URI scheme as
the percent-encoded token of the source at the lower system (this project's
devices write their profile token so, edge-storage style) and writes the token
the VSS exposes for it, percent-encoded again (``main`` → ``cam%3Amain``), so a
client finds the source's resource and profile at the VSS by that token; a
``SourceId`` with a scheme (``urn:…``, ``rtsp://…``) is the recording creator's
opaque name and stays. An ``http(s)`` ``Address`` is the lower system's own
service address, which the VSS's clients do not use (ADR-6): it becomes the
VSS's address as the client reached it; any other ``Address`` stays.

*Event messages in answers* (the recorded events FindEvents finds, ANX-B-4 for
recordings) carry their tokens in ``tt:SimpleItem`` values, whose types the
topic's message description gives, not the XSD: :func:`prefix_messages`
adapts the items :func:`token_items` finds token-typed in a description.

Clients never derive device tokens from these (ADR-5): only the VSS maps them.
Everything here is pure (no I/O); :func:`token_index` caches the parsed index.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote, unquote

from lxml import etree

from .. import schemas
from ..domain.generic_events import TopicDescription
from ..domain.tokens import SEPARATOR, InvalidToken, RemoteToken, validate_reference_token
from ..namespaces import TT, WSNT
from ..soap.envelope import excerpt
from ..soap.fault import SoapFault

__all__ = ["Forwarding", "TokenIndex", "adapt_recording_sources", "expose_token", "prefix_messages", "prefix_response",
           "route_request", "token_index", "token_items", "token_owner"]

XS = "http://www.w3.org/2001/XMLSchema"
REFERENCE_TOKEN = f"{{{TT}}}ReferenceToken"
#: Deepest element nesting the walker follows (ONVIF messages nest far less).
MAX_DEPTH = 32
#: An absolute URI's start (RFC 3986 scheme): a SourceId so is a name, not a token.
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass
class _ComplexType:
    children: dict[str, str] = field(default_factory=dict)  # local name -> type key ("ref:" + element QName)
    attributes: dict[str, str] = field(default_factory=dict)  # local name -> simple type QName
    base: str | None = None


class TokenIndex:
    """Which elements and attributes of each schema type carry a reference token."""

    def __init__(self, documents: list[etree._Element]) -> None:
        self._simple_base: dict[str, str] = {}  # simple type QName -> restriction base QName
        self._types: dict[str, _ComplexType] = {}
        self._elements: dict[str, str] = {}  # global element QName -> type key
        self._anonymous = 0
        for doc in documents:
            tns = doc.get("targetNamespace") or ""
            for node in doc:
                if not isinstance(node.tag, str):
                    continue
                name = node.get("name")
                if node.tag == f"{{{XS}}}simpleType" and name:
                    base = node.find(f"{{{XS}}}restriction")
                    if base is not None and base.get("base"):
                        self._simple_base[f"{{{tns}}}{name}"] = _qname(base, base.get("base", ""))
                elif node.tag == f"{{{XS}}}complexType" and name:
                    self._types[f"{{{tns}}}{name}"] = self._complex(node)
                elif node.tag == f"{{{XS}}}element" and name:
                    self._elements[f"{{{tns}}}{name}"] = self._element_type(node)

    # ------------------------------------------------------------------ reading the XSD
    def _element_type(self, node: etree._Element) -> str:
        if node.get("type"):
            return _qname(node, node.get("type", ""))
        inline = node.find(f"{{{XS}}}complexType")
        if inline is not None:
            self._anonymous += 1
            key = f"#anonymous{self._anonymous}"
            self._types[key] = self._complex(inline)
            return key
        simple = node.find(f"{{{XS}}}simpleType/{{{XS}}}restriction")
        return _qname(simple, simple.get("base", "")) if simple is not None else ""

    def _complex(self, node: etree._Element) -> _ComplexType:
        out = _ComplexType()
        self._content(node, out)
        return out

    def _content(self, node: etree._Element, out: _ComplexType) -> None:
        for child in node:
            if not isinstance(child.tag, str):
                continue
            tag = etree.QName(child).localname
            if tag == "element":
                if child.get("ref"):
                    ref = _qname(child, child.get("ref", ""))
                    out.children[etree.QName(ref).localname] = "ref:" + ref
                elif child.get("name"):
                    out.children[child.get("name", "")] = self._element_type(child)
            elif tag == "attribute" and child.get("name") and child.get("type"):
                out.attributes[child.get("name", "")] = _qname(child, child.get("type", ""))
            elif tag in ("extension", "restriction") and child.get("base"):
                out.base = _qname(child, child.get("base", ""))
                self._content(child, out)
            elif tag in ("sequence", "choice", "all", "complexContent", "simpleContent"):
                self._content(child, out)

    # ------------------------------------------------------------------ answers
    def is_token_type(self, type_name: str) -> bool:
        """``tt:ReferenceToken`` or a simple type restricting it (at any depth)."""
        seen = 0
        while type_name and seen < MAX_DEPTH:
            if type_name == REFERENCE_TOKEN:
                return True
            type_name = self._simple_base.get(type_name, "")
            seen += 1
        return False

    def _resolve(self, key: str) -> str:
        return self._elements.get(key[4:], "") if key.startswith("ref:") else key

    def _members(self, key: str) -> tuple[dict[str, str], dict[str, str], bool]:
        """(children, attributes, text is a token) of type ``key``, its bases included."""
        children: dict[str, str] = {}
        attributes: dict[str, str] = {}
        text_token = False
        for _ in range(MAX_DEPTH):
            if self.is_token_type(key):
                text_token = True
            found = self._types.get(key)
            if found is None:
                break
            for name, value in found.children.items():
                children.setdefault(name, value)
            for name, value in found.attributes.items():
                attributes.setdefault(name, value)
            if found.base is None:
                break
            key = found.base
        return children, attributes, text_token

    def sites(self, element: etree._Element) -> Iterator[tuple[etree._Element, str | None]]:
        """Every token in ``element`` (a message's root, a global element): ``(element, attribute)``
        for an attribute, ``(element, None)`` for element text."""
        yield from self._visit(element, self._elements.get(element.tag, ""), 0)

    def _visit(self, element: etree._Element, key: str, depth: int) -> Iterator[tuple[etree._Element, str | None]]:
        if not key or depth > MAX_DEPTH:
            return
        children, attributes, text_token = self._members(key)
        if text_token:
            yield element, None
            return
        for name in element.attrib:
            if not str(name).startswith("{") and self.is_token_type(attributes.get(str(name), "")):
                yield element, str(name)
        for child in element:
            if not isinstance(child.tag, str):
                continue
            declared = children.get(etree.QName(child).localname)
            child_key = self._resolve(declared) if declared else self._elements.get(child.tag, "")
            yield from self._visit(child, child_key, depth + 1)


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    namespace = node.nsmap.get(prefix or None)
    return f"{{{namespace}}}{local}" if namespace else local


@functools.cache
def token_index() -> TokenIndex:
    """The index of every authored XSD (parsed once)."""
    folder = schemas.xsd_path("common").parent
    documents = [etree.parse(str(path), schemas.safe_parser()).getroot() for path in sorted(folder.glob("*.xsd"))]
    return TokenIndex(documents)


def _invalid(reason: str) -> SoapFault:
    return SoapFault(code="Sender", subcodes=("InvalidArgVal",), reason=reason)


def _get(element: etree._Element, attribute: str | None) -> str:
    return (element.get(attribute) if attribute else element.text) or ""


def _set(element: etree._Element, attribute: str | None, value: str) -> None:
    if attribute:
        element.set(attribute, value)
    else:
        element.text = value


@dataclass(frozen=True)
class Forwarding:
    """Where a request goes: the configured prefix of a lower system, or ``None`` (the VSS's own)."""

    lower: str | None


def token_owner(value: str, lowers: frozenset[str] | set[str], routes: Mapping[str, str]) -> tuple[str | None, str]:
    """The system request token ``value`` names and the token it gets: ``(None, value)`` for the VSS's own,
    ``(P, Local)`` for ``P:Local`` of a configured lower system P, ``(P, value)`` for a prefix routed to P."""
    try:
        validate_reference_token(value)
    except InvalidToken as exc:
        raise _invalid(str(exc)) from None
    prefix, sep, rest = value.partition(SEPARATOR)
    if not sep:
        return None, value
    if prefix in lowers:
        return prefix, rest
    if prefix in routes:
        return routes[prefix], value
    raise _invalid(f"token {excerpt(value, 80)}: no lower system has the prefix {excerpt(prefix, 40)} "
                   "(use only tokens received from this VSS, ADR-6)")


def route_request(operation: etree._Element, lowers: frozenset[str] | set[str],
                  routes: Mapping[str, str], index: TokenIndex | None = None) -> Forwarding:
    """Decide where ``operation`` goes and strip the configured prefix from its tokens (in place)."""
    index = index or token_index()
    target: str | None = None
    local = False
    for element, attribute in list(index.sites(operation)):
        lower, value = token_owner(_get(element, attribute).strip(), lowers, routes)
        if lower is None:
            local = True
            continue
        if target not in (None, lower):
            raise _invalid("the request names tokens of two lower systems; send one request to each")
        target = lower
        _set(element, attribute, value)
    if target is not None and local:
        raise _invalid("the request mixes this VSS's own tokens with tokens of a lower system")
    return Forwarding(target)


_NO_ROUTES: Mapping[str, str] = MappingProxyType({})


def expose_token(value: str, prefix: str, lowers: Collection[str] = frozenset(),
                 routes: Mapping[str, str] = _NO_ROUTES, *, learning: bool = True) -> tuple[str, str | None]:
    """A token lower system ``prefix`` named, as the VSS exposes it, and the other prefix it keeps (if any).

    ``lowers``: the configured prefixes, ``routes``: learnt prefix -> lower system. ``Q:Local`` is kept when Q
    is ``prefix``, routed to it, or — ``learning`` — neither configured nor routed (the caller learns Q as a
    route of ``prefix``); any other token gets ``prefix`` (module docstring, *Isolation*): prefixing, not
    dropping, because every token P answers is P's name for something, and ``P:…`` routes back to P. Raises
    :class:`InvalidToken` when that would break ADR-3 (never truncated).
    """
    head, sep, _ = value.partition(SEPARATOR)
    if sep and (head == prefix or routes.get(head) == prefix
                or (learning and head not in routes and head not in lowers)):
        return value, None if head == prefix else head
    return str(RemoteToken.of(prefix, value, allow_colon_in_local=bool(sep))), None


def _expose(value: str, prefix: str, lowers: Collection[str], routes: Mapping[str, str]) -> tuple[str, str | None]:
    """:func:`expose_token` for an answer: a token it cannot expose is ``Receiver/Action``."""
    try:
        return expose_token(value, prefix, lowers, routes)
    except InvalidToken as exc:
        raise SoapFault(code="Receiver", subcodes=("Action",),
                        reason=f"lower system {prefix!r} answered a token this VSS cannot expose: {exc}") from None


def prefix_response(answer: etree._Element, prefix: str, index: TokenIndex | None = None, *,
                    lowers: Collection[str] = frozenset(), routes: Mapping[str, str] = _NO_ROUTES) -> set[str]:
    """Expose the tokens of lower system ``prefix`` in ``answer`` (in place, :func:`expose_token` with the
    configured ``lowers`` and learnt ``routes``); the other prefixes kept, for the caller to learn.

    Raises ``Receiver/Action`` when ``prefix:Local`` would break ADR-3 (tokens are never truncated).
    """
    index = index or token_index()
    learnt: set[str] = set()
    for element, attribute in list(index.sites(answer)):
        value = _get(element, attribute).strip()
        if value:
            exposed, met = _expose(value, prefix, lowers, routes)
            _set(element, attribute, exposed)
            learnt.update([met] if met else [])
    learnt.discard(prefix)
    return learnt


def adapt_recording_sources(answer: etree._Element, prefix: str, address: str, *,
                            lowers: Collection[str] = frozenset(), routes: Mapping[str, str] = _NO_ROUTES) -> None:
    """Adapt the ``SourceId`` and ``Address`` of every recording source (a ``tt:Source`` that has both) in
    ``answer`` of lower system ``prefix``, in place (module docstring); ``address``: the VSS's own, as the
    client reached it; ``lowers``, ``routes``: as for :func:`prefix_response`."""
    for source in answer.iter(f"{{{TT}}}Source"):
        source_id, written_address = source.find(f"{{{TT}}}SourceId"), source.find(f"{{{TT}}}Address")
        if source_id is None or written_address is None:
            continue  # an event message's Source
        written = (source_id.text or "").strip()
        if not _URI_SCHEME.match(written):
            try:
                source_id.text = quote(_expose(validate_reference_token(unquote(written)), prefix, lowers, routes)[0],
                                       safe="")
            except InvalidToken:
                pass  # not a token: the creator's name for the source, kept
        scheme = _URI_SCHEME.match((written_address.text or "").strip())
        if scheme is not None and scheme.group(0).lower() in ("http:", "https:"):
            written_address.text = address


def token_items(description: TopicDescription, index: TokenIndex | None = None) -> frozenset[str]:
    """The Source and Data items of a topic whose described type (``tt:…`` as our descriptions write it) is
    a token type."""
    index = index or token_index()
    known = {"tt": TT, "xs": XS}
    return frozenset(name for name, written in description.source + description.data
                     if index.is_token_type(f"{{{known.get(written.partition(':')[0], '')}}}"
                                            f"{written.partition(':')[2]}"))


def prefix_messages(answer: etree._Element, prefix: str, topics: Mapping[str, frozenset[str]], *,
                    lowers: Collection[str] = frozenset(), routes: Mapping[str, str] = _NO_ROUTES) -> set[str]:
    """Expose the tokens of lower system ``prefix`` in the event messages ``answer`` carries (the Events of
    FindEvents results: a ``wsnt:Topic`` beside ``wsnt:Message/tt:Message``), for the items ``topics`` (topic
    path below ``tns1`` -> token items, :func:`token_items`) names; the other prefixes kept (``lowers``,
    ``routes``: as for :func:`prefix_response`). A message of another topic is left as it is: its item types
    are not known here."""
    learnt: set[str] = set()
    for topic in answer.iter(f"{{{WSNT}}}Topic"):
        holder = topic.getparent()
        names = topics.get((topic.text or "").strip().partition(":")[2])
        if holder is None or not names:
            continue
        for item in holder.iterfind(f"{{{WSNT}}}Message/{{{TT}}}Message/*/{{{TT}}}SimpleItem"):
            value = (item.get("Value") or "").strip()
            if item.get("Name") in names and value:
                exposed, met = _expose(value, prefix, lowers, routes)
                item.set("Value", exposed)
                learnt.update([met] if met else [])
    learnt.discard(prefix)
    return learnt
