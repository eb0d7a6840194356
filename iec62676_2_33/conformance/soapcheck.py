"""Conformance kit: SOAP 1.2 messages written and read by hand (CFG-3, CFG-4, SEC-3).

The cases judge answers exactly as they came (fault code, the full subcode
chain, which element answered), so they build the few envelopes they send as
text and read the answers with a locked-down lxml parser rather than through
a client that would map or forgive them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV
from ..soap.envelope import body_element

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def envelope(namespace: str, operation: str, inner: str = "") -> bytes:
    """A SOAP 1.2 request whose body is ``<m:operation xmlns:m=namespace>inner</m:operation>``."""
    return (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>'
            f'<m:{operation} xmlns:m="{namespace}">{inner}</m:{operation}></s:Body></s:Envelope>').encode()


def headers(namespace: str, operation: str, length: int) -> list[tuple[str, str]]:
    return [("content-type", f'{SOAP12_CONTENT_TYPE}; action="{namespace}/{operation}"'),
            ("content-length", str(length))]


@dataclass(frozen=True)
class Fault:
    code: str  # local name: Sender, Receiver, ...
    subcodes: tuple[str, ...]  # local names, outermost first
    reason: str

    def chain(self) -> str:
        return "/".join([f"env:{self.code}", *(f"ter:{s}" for s in self.subcodes)])


@dataclass(frozen=True)
class SoapAnswer:
    status: int
    body: etree._Element | None  # the first child of env:Body
    fault: Fault | None
    text: str  # an excerpt for the evidence

    def name(self) -> str:
        return etree.QName(self.body).localname if self.body is not None else "(no SOAP body)"


def _local(qname_text: str) -> str:
    return qname_text.strip().rsplit(":", 1)[-1]


def parse(status: int, data: bytes) -> SoapAnswer:
    """The answer's first body element, or its fault with the subcode chain."""
    excerpt = data[:1500].decode("utf-8", "replace")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        return SoapAnswer(status, None, None, excerpt)
    first = body_element(root)
    if first is None or first.tag != f"{{{SOAP_ENV}}}Fault":
        return SoapAnswer(status, first, None, excerpt)
    code = first.find(f"{{{SOAP_ENV}}}Code")
    subcodes: list[str] = []
    top = ""
    if code is not None:
        value = code.find(f"{{{SOAP_ENV}}}Value")
        top = _local(value.text or "") if value is not None else ""
        sub = code.find(f"{{{SOAP_ENV}}}Subcode")
        while sub is not None and len(subcodes) < 8:
            value = sub.find(f"{{{SOAP_ENV}}}Value")
            subcodes.append(_local(value.text or "") if value is not None else "")
            sub = sub.find(f"{{{SOAP_ENV}}}Subcode")
    reason = first.find(f"{{{SOAP_ENV}}}Reason/{{{SOAP_ENV}}}Text")
    return SoapAnswer(status, first, Fault(top, tuple(subcodes), (reason.text or "") if reason is not None else ""),
                  excerpt)
