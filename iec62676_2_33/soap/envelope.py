"""Layer 5: the one decode, parse and identification of a SOAP request (SEC-1, SEC-3).

Theory of operation
-------------------
Access control and the dispatcher must see the same message, so a request's
bytes are read exactly once, here, and what comes out — one
:class:`SoapRequest` holding one lxml tree — is the only thing either of them
gets. Nothing after this module looks at the bytes again (the SOAP endpoint
hands the parsed tree to Spyne's deserialiser; it never gives Spyne bytes).

Every rule below refuses rather than guesses, with an ``env:Sender`` fault,
*before* authentication (a refused request is never executed, SEC-3):

* **Media type.** ``application/soap+xml`` (the SOAP 1.2 HTTP binding) only:
  415. ``multipart/*`` (SwA, MTOM/XOP) is refused too — Spyne would take the
  MIME root part while a checker reads the whole body. Parameters other than
  ``charset`` and ``action`` are ignored; ``action`` (and a SOAPAction
  header) is never used to choose the operation.
* **Encoding.** UTF-8 or UTF-16, nothing else (XML 1.0 §4.3.3 obliges every
  processor to read just these two). The encoding is taken from the byte
  order mark (none = UTF-8); a ``charset`` parameter and an XML declaration's
  ``encoding`` must both agree with it, and UTF-16 needs its BOM (one BOM:
  a second would hide the declaration from the check; one ``charset``). The bytes
  are decoded strictly, once, to text; the declaration is dropped and lxml
  parses the text re-encoded as UTF-8 with its encoding forced, so lxml never
  picks an encoding of its own. (UTF-7, UTF-32, EBCDIC, Latin-1 … are refused:
  each was a way for two readers to disagree about one byte string.)
* **Parser.** No DTD (a DOCTYPE is refused), no entity expansion, no network,
  no huge trees. Comments and processing instructions are dropped by the
  parser (SOAP 1.2 Part 1 §5: a receiver ignores PIs), so they cannot stand
  before the operation.
* **Shape.** The root is a SOAP 1.2 ``Envelope`` (a SOAP 1.1 one gets
  ``env:VersionMismatch``); its children are at most one ``Header`` and then
  exactly one ``Body``, and nothing else; the Body holds exactly one element
  (the operation) and no character data. Whitespace is the only text allowed
  between these elements. At most :data:`MAX_NAMESPACES` namespaces are in
  scope at the operation. A header block marked ``mustUnderstand`` outside
  WS-Security and WS-Addressing gets ``env:MustUnderstand`` (SOAP 1.2 §5.2.3):
  a client that relies on, say, a signature header learns it was not checked.
  A mandatory ``wsse:Security`` is taken as understood whatever it holds (a
  ``ds:Signature`` or ``wsu:Timestamp`` in it is not checked; only its
  UsernameToken authenticates), and so is a mandatory WS-Addressing block
  (a ``ReplyTo`` elsewhere is not followed: the answer goes back on the same
  connection). Neither grants anything.

The operation is the Body's one element, named by its namespace and local
name (:attr:`SoapRequest.operation_name`); WS-Addressing ``Action`` and HTTP
``action`` are advisory and never override it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.message import Message

from lxml import etree

from ..namespaces import SOAP_ENV, WSA, WSSE
from .fault import SoapFault

__all__ = ["SOAP11_ENV", "SoapRequest", "UnsupportedMediaType", "body_element", "parse_request"]

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"

_ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
_HEADER = f"{{{SOAP_ENV}}}Header"
_BODY = f"{{{SOAP_ENV}}}Body"

_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32"),  # before UTF-16: FF FE 00 00 starts with FF FE
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
#: charset / declaration names accepted for each decoder.
_NAMES = {
    "utf-8": frozenset({"utf-8"}),
    "utf-16-le": frozenset({"utf-16", "utf-16le"}),
    "utf-16-be": frozenset({"utf-16", "utf-16be"}),
}
_DECLARATION = re.compile(
    r"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(['\"])1\.[0-9]+\1"
    r"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(['\"])([A-Za-z][A-Za-z0-9._-]*)\2)?"
    r"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(['\"])(?:yes|no)\4)?[ \t\r\n]*\?>")

#: How much of a client's own input a fault repeats at most.
ECHO_LIMIT = 80
#: Namespaces in scope at the operation: ONVIF messages use about 15; each one in scope is re-declared
#: whenever the operation is serialised for XSD validation (which must keep them: QName values such as
#: ``xs:string`` use them), and 75,000 declarations (1 MiB) cost 19 s of CPU there.
MAX_NAMESPACES = 64
#: Header blocks the services process (WS-Security, read by access control; WS-Addressing).
UNDERSTOOD_HEADERS = frozenset({WSSE, WSA})
_MUST_UNDERSTAND = f"{{{SOAP_ENV}}}mustUnderstand"


class UnsupportedMediaType(SoapFault):
    """The request is not ``application/soap+xml`` (HTTP 415)."""

    @property
    def http_status(self) -> int:
        return 415


@dataclass(frozen=True, eq=False)
class SoapRequest:
    """One parsed SOAP 1.2 request: the tree every later step works on.

    ``operation`` is the Body's one element; ``header`` the ``env:Header``
    element or ``None``.
    """

    envelope: etree._Element
    header: etree._Element | None
    operation: etree._Element

    @property
    def operation_name(self) -> tuple[str, str]:
        """``(namespace, local name)`` of the operation element."""
        qname = etree.QName(self.operation)
        return qname.namespace or "", qname.localname


def excerpt(text: str, limit: int = ECHO_LIMIT) -> str:
    """At most ``limit`` characters of client input, for a fault or a log line (``repr``-escaped)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def body_element(envelope: etree._Element) -> etree._Element | None:
    """The first element in the ``env:Body`` of an envelope parsed elsewhere (an answer a client reads, an
    envelope the library wrote), or None. A *request* is identified by :func:`parse_request` instead, which
    insists on exactly one."""
    body = envelope.find(_BODY)
    return None if body is None else next((child for child in body if isinstance(child.tag, str)), None)


def _sender(reason: str, *subcodes: str) -> SoapFault:
    return SoapFault(code="Sender", subcodes=subcodes or ("InvalidArgs",), reason=reason)


@functools.lru_cache(maxsize=64)  # clients send one or two distinct values; the parse costs ~40 µs
def _media_type(content_type: str | None) -> str | None:
    """The ``charset`` parameter (lower case) of an acceptable Content-Type, else a fault."""
    if not content_type:
        raise UnsupportedMediaType(code="Sender", subcodes=("InvalidArgs",),
                                   reason="Content-Type is missing: send application/soap+xml; charset=utf-8")
    message = Message()
    message["content-type"] = content_type
    media = message.get_content_type()
    if media != "application/soap+xml":
        what = "SOAP with attachments and MTOM are not supported" if media.startswith("multipart/") else \
            f"media type {excerpt(media)} is not accepted"
        raise UnsupportedMediaType(code="Sender", subcodes=("InvalidArgs",),
                                   reason=f"{what}: send application/soap+xml; charset=utf-8")
    charsets = [value for name, value in message.get_params(failobj=[])[1:] if name == "charset"]
    if not charsets:
        return None
    if len(charsets) > 1:  # the email package takes the first; another reader may take the last
        raise _sender("the charset parameter is given more than once")
    charset = charsets[0]
    if not isinstance(charset, str):
        raise _sender("the charset parameter is malformed")
    return charset.strip().lower()


def _decode(data: bytes, charset: str | None) -> str:
    """Bytes → text with the one encoding the BOM, ``charset`` and declaration agree on."""
    codec, skip = "utf-8", 0
    for bom, name in _BOMS:
        if data.startswith(bom):
            codec, skip = name, len(bom)
            break
    if codec == "utf-32":
        raise _sender("UTF-32 is not accepted: send UTF-8 (or UTF-16 with a byte order mark)")
    if not skip and data[:2] in (b"\x00<", b"<\x00"):
        raise _sender("UTF-16 needs a byte order mark")
    if charset is not None and charset not in _NAMES[codec]:
        raise _sender(f"charset {excerpt(charset)} does not match the body ({codec}): "
                      "only UTF-8 and UTF-16 are accepted")
    try:
        text = data[skip:].decode(codec)
    except UnicodeDecodeError as exc:
        raise _sender(f"the body is not valid {codec} (byte {exc.start})") from None
    if text.startswith("\ufeff"):  # lxml would skip it, and with it the declaration check below
        raise _sender("the body starts with two byte order marks")
    if text.startswith("<?xml"):
        declaration = _DECLARATION.match(text)
        if declaration is None:
            raise _sender("the XML declaration is malformed", "WellFormed")
        declared = declaration.group(3)
        if declared is not None and declared.lower() not in _NAMES[codec]:
            raise _sender(f"the XML declaration says {excerpt(declared)} but the body is {codec}")
        text = text[declaration.end():]
    return text


def _parser() -> etree.XMLParser:
    """A new locked-down parser per call (lxml parsers are not shared between threads)."""
    return etree.XMLParser(encoding="utf-8", resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True, remove_pis=True)


def _blank(text: str | None) -> bool:
    return text is None or not text.strip(" \t\r\n")


def parse_request(content_type: str | None, data: bytes) -> SoapRequest:
    """Decode, parse and identify one SOAP 1.2 request (see the module docstring), or raise :class:`SoapFault`."""
    text = _decode(data, _media_type(content_type))
    try:
        envelope = etree.fromstring(text.encode("utf-8"), _parser())
    except etree.XMLSyntaxError as exc:
        raise _sender(f"not well-formed XML: {exc.msg}", "WellFormed") from None
    if envelope is None:
        raise _sender("the request body is empty", "WellFormed")
    docinfo = envelope.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise _sender("XML with a DOCTYPE is not accepted; DTDs and entities are refused", "WellFormed")
    if envelope.tag == f"{{{SOAP11_ENV}}}Envelope":
        raise SoapFault(code="VersionMismatch", reason="this is a SOAP 1.1 envelope; the services speak SOAP 1.2")
    if envelope.tag != _ENVELOPE:
        raise _sender("the request is not a SOAP 1.2 envelope")
    children = list(envelope)
    if not _blank(envelope.text) or any(not _blank(child.tail) for child in children):
        raise _sender("character data in the SOAP envelope")
    header = children.pop(0) if children and children[0].tag == _HEADER else None
    if len(children) != 1 or children[0].tag != _BODY:
        raise _sender("the SOAP envelope must hold an optional Header and then exactly one Body")
    body = children[0]
    parts = list(body)
    if not _blank(body.text) or any(not _blank(part.tail) for part in parts):
        raise _sender("character data in the SOAP Body")
    if len(parts) != 1:
        raise _sender("the SOAP Body must hold exactly one operation element" if parts else
                      "the SOAP Body names no operation")
    operation = parts[0]
    if not etree.QName(operation).namespace:
        raise _sender("the operation element has no namespace")
    if len(operation.nsmap) > MAX_NAMESPACES:
        raise _sender(f"more than {MAX_NAMESPACES} namespaces are declared around the operation")
    if header is not None:
        _check_must_understand(header)
    return SoapRequest(envelope=envelope, header=header, operation=operation)


def _check_must_understand(header: etree._Element) -> None:
    """SOAP 1.2 Part 1 §5.2.3: a mandatory header block we do not process is a MustUnderstand fault."""
    for block in header:
        if block.get(_MUST_UNDERSTAND, "").strip() in ("true", "1") \
                and etree.QName(block).namespace not in UNDERSTOOD_HEADERS:
            raise SoapFault(code="MustUnderstand",
                            reason=f"header block {excerpt(block.tag)} is mandatory and not understood here")
