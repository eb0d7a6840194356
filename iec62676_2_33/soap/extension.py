"""Layer 5: ``xs:any namespace="##any"`` extension content, checked, kept and echoed (PROV-5).

Theory of operation
-------------------
The official ONVIF schemas end many types with ``<xs:any namespace="##any"
processContents="lax"/>`` after optional elements of the type's own
namespace (``tup:Configuration`` ends with Error, then the wildcard). That
content model breaks XSD 1.0's Unique Particle Attribution rule — an element
of the own namespace could match an optional element or the wildcard — and
libxml2 refuses to compile it, so the authored XSD says ``##other``. The part
of ``##any`` that ``##other`` leaves out, elements of the own namespace whose
names the type does not define (a future revision's items), is handled here,
on the one parsed tree of the request (:mod:`.envelope`):

* :func:`extension_tail` names a type's extension content: the element
  children after its last known child;
* :func:`schema_view` gives the XSD a *copy* of the operation without the
  own-namespace elements of each tail. Everything else is checked exactly as
  before: a known name repeated in the tail stays and is refused, a foreign
  element is checked ``lax`` by the ``##other`` wildcard, character data
  stays where it was. Access control, the schema and the service read the one
  tree, so the tail the service keeps is the tail the schema looked past;
* :func:`serialise` keeps a tail as XML text: one element named like the
  parent, declaring the parent's in-scope namespaces once (prefixes in QName
  values of the content keep their meaning), holding copies of the tail;
  :func:`elements` gives the elements back, to be written after the type's
  known children.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection

from lxml import etree

from .. import schemas

__all__ = ["elements", "extension_tail", "schema_view", "serialise"]

#: A namespace prefix followed by a colon, as in a QName value.
_PREFIX = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):")


def extension_tail(parent: etree._Element, known: Collection[str]) -> list[etree._Element]:
    """The element children of ``parent`` after its last child whose tag (Clark notation) is in ``known``."""
    children = [child for child in parent if isinstance(child.tag, str)]
    last = max((i for i, child in enumerate(children) if child.tag in known), default=-1)
    return children[last + 1:]


def schema_view(operation: etree._Element, parent_tag: str, known: Collection[str]) -> etree._Element:
    """A copy of ``operation`` whose ``parent_tag`` children lack the own-namespace elements of their tails
    (``operation`` itself when there are none: the common request costs no copy)."""
    if not any(_own_tail(parent, known) for parent in operation.iterfind(parent_tag)):
        return operation
    view = copy.deepcopy(operation)
    for parent in view.iterfind(parent_tag):
        for element in _own_tail(parent, known):
            _remove_keeping_text(parent, element)
    return view


def _own_tail(parent: etree._Element, known: Collection[str]) -> list[etree._Element]:
    namespace = etree.QName(parent).namespace
    return [element for element in extension_tail(parent, known) if etree.QName(element).namespace == namespace]


def _remove_keeping_text(parent: etree._Element, element: etree._Element) -> None:
    """Remove ``element`` from ``parent``; the character data after it stays (the schema still sees it)."""
    if element.tail:
        previous = element.getprevious()
        if previous is None:
            parent.text = (parent.text or "") + element.tail
        else:
            previous.tail = (previous.tail or "") + element.tail
    parent.remove(element)


def serialise(parent: etree._Element, tail: list[etree._Element]) -> str:
    """``tail`` (children of ``parent``) as XML text; ``""`` for none.

    Of the namespaces in scope at ``parent`` (the whole envelope's), those
    the tail's names use stay declared, and so do those whose prefix appears
    before a colon in its text or attribute values (possible QName values).
    """
    if not tail:
        return ""
    holder = etree.Element(parent.tag, nsmap=parent.nsmap)
    prefixes: set[str] = set()
    for element in tail:
        kept = copy.deepcopy(element)
        kept.tail = None
        holder.append(kept)
        for node in element.iter():
            for text in (node.text, node.tail if node is not element else None, *node.attrib.values()):
                prefixes.update(_PREFIX.findall(text or ""))
    etree.cleanup_namespaces(holder, keep_ns_prefixes=sorted(prefixes & set(filter(None, parent.nsmap))))
    return str(etree.tostring(holder, encoding="unicode"))


def elements(text: str) -> list[etree._Element]:
    """The elements :func:`serialise` kept in ``text``."""
    return list(schemas.parse_xml(text.encode("utf-8"))) if text else []

