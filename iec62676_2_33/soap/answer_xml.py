"""Layer 5: the two small writers every lxml answer of a :class:`~.dispatch.QNameDispatcher` service
uses, so the services write XSD values one way.

* :func:`xs_boolean` -- an ``xs:boolean`` as the canonical ``true`` / ``false``;
* :func:`texts` -- a parent with one child element per ``(tag, value)`` in order, each value written
  as its XSD lexical form (``bool`` as :func:`xs_boolean`, anything else as ``str``).
"""

from __future__ import annotations

from lxml import etree

__all__ = ["texts", "xs_boolean"]


def xs_boolean(value: bool) -> str:
    """The canonical lexical form of an ``xs:boolean``."""
    return "true" if value else "false"


def texts(parent: etree._Element, *children: tuple[str, object]) -> etree._Element:
    """``parent`` with one child element per ``(tag, value)``, in order; returns ``parent``."""
    for tag, value in children:
        etree.SubElement(parent, tag).text = xs_boolean(value) if isinstance(value, bool) else str(value)
    return parent
