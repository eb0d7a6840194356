"""SOAP 1.2 faults with the full subcode chain (CFG-3, CFG-4, SEC-3).

ONVIF faults are ``env:Code/env:Value`` = ``env:Sender`` or ``env:Receiver``
followed by nested ``env:Subcode`` elements (``ter:InvalidArgVal`` then
``ter:CertificateID`` …). Every prefix used in a QName *value* is declared on
the envelope, so strict clients (zeep) can resolve it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from lxml import etree

from ..errors import Iec62676Error
from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TER, WSA

FAULT_ACTION = "http://www.onvif.org/ver10/fault"
#: The longest Reason or Detail text a fault carries (longer ones are cut).
MAX_TEXT = 300
_CODES = ("Sender", "Receiver", "VersionMismatch", "MustUnderstand")


@dataclass(kw_only=True, eq=False)
class SoapFault(Iec62676Error):
    """A SOAP 1.2 fault as data.

    ``code`` is ``"Sender"`` or ``"Receiver"`` (or ``"VersionMismatch"``,
    ``"MustUnderstand"``); ``subcodes`` are local names in the ``ter``
    namespace, outermost first; ``http_status`` is what the HTTP binding
    answers with (400 for Sender, 500 otherwise, by SOAP 1.2). Reason and
    detail are cut to :data:`MAX_TEXT` characters.
    """

    code: str = "Sender"
    subcodes: Sequence[str] = field(default_factory=tuple)
    reason: str = ""
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.code not in _CODES:
            raise ValueError(f"SOAP fault code must be one of {', '.join(_CODES)}, not {self.code!r}")
        # A reason or detail may quote the client's input: never echo more than a short prefix.
        if len(self.reason) > MAX_TEXT:
            self.reason = self.reason[:MAX_TEXT] + "…"
        if self.detail is not None and len(self.detail) > MAX_TEXT:
            self.detail = self.detail[:MAX_TEXT] + "…"

    def __str__(self) -> str:
        chain = "/".join([f"env:{self.code}", *(f"ter:{s}" for s in self.subcodes)])
        return f"{chain}: {self.reason}"

    @property
    def http_status(self) -> int:
        return 400 if self.code == "Sender" else 500

    def to_element(self) -> etree._Element:
        """The ``env:Fault`` element (namespace ``ter`` declared on it)."""
        fault = etree.Element(f"{{{SOAP_ENV}}}Fault", nsmap={"env": SOAP_ENV, "ter": TER})
        code = etree.SubElement(fault, f"{{{SOAP_ENV}}}Code")
        etree.SubElement(code, f"{{{SOAP_ENV}}}Value").text = f"env:{self.code}"
        parent = code
        for sub in self.subcodes:
            subcode = etree.SubElement(parent, f"{{{SOAP_ENV}}}Subcode")
            etree.SubElement(subcode, f"{{{SOAP_ENV}}}Value").text = f"ter:{sub}"
            parent = subcode
        reason = etree.SubElement(fault, f"{{{SOAP_ENV}}}Reason")
        text = etree.SubElement(reason, f"{{{SOAP_ENV}}}Text")
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = self.reason
        if self.detail:
            detail = etree.SubElement(fault, f"{{{SOAP_ENV}}}Detail")
            etree.SubElement(detail, f"{{{TER}}}Detail").text = self.detail
        return fault

    def to_envelope(self) -> bytes:
        """A complete SOAP 1.2 envelope carrying this fault and a ``wsa:Action``."""
        env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"env": SOAP_ENV, "ter": TER, "wsa": WSA})
        header = etree.SubElement(env, f"{{{SOAP_ENV}}}Header")
        etree.SubElement(header, f"{{{WSA}}}Action").text = FAULT_ACTION
        body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
        body.append(self.to_element())
        return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))


def not_authorized(reason: str = "The action requested requires authorization and the sender is not authorized") -> SoapFault:
    """SEC-3: ``env:Sender`` / ``ter:NotAuthorized``."""
    return SoapFault(code="Sender", subcodes=("NotAuthorized",), reason=reason)


def fault_response(fault: SoapFault, start_response: Callable[..., Any], *, status: int | None = None,
                   extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer a WSGI request with ``fault`` (status: the fault's own unless given; standard reason phrase)."""
    code = status or fault.http_status
    payload = fault.to_envelope()
    start_response(f"{code} {HTTPStatus(code).phrase}",
                   [("Content-Type", SOAP12_CONTENT_TYPE), ("Content-Length", str(len(payload))), *extra])
    return [payload]
