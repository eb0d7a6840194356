"""Layer 5: a SOAP endpoint that runs one handler per operation, chosen by the operation's QName.

Theory of operation
-------------------
A request reaches the endpoint decoded, parsed and identified once
(:func:`.envelope.parse_request`) and authorised by the access-control
middleware, which hands over that one tree in
``environ["iec62676.request"]`` (:data:`~..security.middleware.ENVIRON_REQUEST`).
The endpoint never reads the body. In order:

1. a method other than POST is answered 405 (plain text);
2. without a parsed request (the endpoint was mounted without access control)
   the answer is ``env:Receiver/ter:Action``, and the error is logged;
3. WS-Addressing: a ``wsa:Action`` that names another operation than the
   Body is ``env:Sender/ter:InvalidArgVal/ter:ActionMismatch`` (the Body
   decides what runs; accepted are the WSDL's input action
   ``…/<Operation>Request`` and the bare ``…/<Operation>`` some clients send);
4. an operation whose QName is not in the table is
   ``env:Receiver/ter:ActionNotSupported``;
5. the operation element is validated against the authored XSD
   (``env:Sender/ter:InvalidArgs`` with the validator's message);
6. siblings that share a local name across namespaces are refused
   (``env:Sender/ter:InvalidArgs``): readers that match by local name would
   take another element than the one the XSD checked;
7. the handler runs with the endpoint's ``context``, the parsed request and
   the WSGI environ, and returns an :class:`Answer`: the answer element, its
   ``wsa:Action`` and optionally a *tail*, serialised XML spliced in as the
   element's last content (a fast path writes large answers as text; the
   tail may use the prefixes of the endpoint's ``nsmap``, declared on the
   envelope).

Every answer and every fault carries ``wsa:RelatesTo`` when the request had a
``wsa:MessageID``. An endpoint built with ``addressing=False`` leaves
WS-Addressing out, as the Spyne-hosted services do (ONVIF Core makes it
optional for their operations): no step 3, answers without a SOAP Header,
faults with their ``wsa:Action`` only. A :class:`~.fault.SoapFault` (from a check or a handler)
is answered as a fault envelope whose ``wsa:Action`` is the endpoint's
``fault_action``, with the fault's HTTP status; any other exception of a
handler is logged in one line and answered ``env:Receiver/ter:Action``.

Steps 1, 4, 5 and 6 are the checks every Spyne-hosted service makes too
(:class:`.spyne_glue.SoapEndpoint` calls :func:`method_not_allowed` and
:func:`check_operation`). A table instead of Spyne where the handlers write
their answers with lxml anyway: Spyne only chose the method and serialised an
empty output that was thrown away; the table costs a dictionary look-up. The
event service's WSGI apps with an already parsed request (best of 5 x 2000
calls, same machine): GetServiceCapabilities 113 us through Spyne, 26 us
through the table; an empty PullMessages page 164 us, 59 us.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from lxml import etree

from .. import schemas
from ..errors import SchemaError
from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TER, WSA
from ..security.middleware import ENVIRON_REQUEST
from .envelope import SoapRequest, excerpt
from .fault import FAULT_ACTION, SoapFault

__all__ = [
    "Answer",
    "Handler",
    "QNameDispatcher",
    "check_action",
    "check_operation",
    "method_not_allowed",
    "write_envelope",
    "wsa_header",
]

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

#: Namespaces declared on a fault envelope (``ter`` for the subcode values).
_FAULT_NSMAP = {"env": SOAP_ENV, "ter": TER, "wsa": WSA}
_TAIL = b"<_tail_>_</_tail_>"


@dataclass(frozen=True)
class Answer:
    """What a handler returns: the Body's answer element, its ``wsa:Action`` and an optional serialised tail."""

    action: str
    body: etree._Element
    tail: bytes = b""


#: A handler: ``(context, request, environ) -> Answer``; it raises :class:`SoapFault` to refuse.
Handler = Callable[[Any, SoapRequest, dict[str, Any]], Answer]


def wsa_header(request: SoapRequest, name: str) -> str | None:
    """The text of the request's WS-Addressing header ``name`` (``Action``, ``To``, ``MessageID``), or None."""
    if request.header is None:
        return None
    found = request.header.find(f"{{{WSA}}}{name}")
    return None if found is None else (found.text or "").strip()


def write_envelope(action: str | None, body: etree._Element, tail: bytes = b"", *, nsmap: Mapping[str, str],
                   relates_to: str | None = None, to: str | None = None) -> bytes:
    """A SOAP 1.2 envelope (``nsmap`` declared on it) with ``body`` in its Body and the WS-Addressing header
    ``Action`` (then ``To``, ``RelatesTo`` when given; no Header when none is); ``tail`` is spliced in as the
    last content of ``body``."""
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=dict(nsmap))
    if action is not None or to or relates_to:
        header = etree.SubElement(env, f"{{{SOAP_ENV}}}Header")
        if action is not None:
            etree.SubElement(header, f"{{{WSA}}}Action").text = action
        if to:
            etree.SubElement(header, f"{{{WSA}}}To").text = to
        if relates_to:
            etree.SubElement(header, f"{{{WSA}}}RelatesTo").text = relates_to
    etree.SubElement(env, f"{{{SOAP_ENV}}}Body").append(body)
    if tail:
        etree.SubElement(body, "_tail_").text = "_"  # a placeholder replaced by ``tail``
    data = bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))
    return data.replace(_TAIL, tail, 1) if tail else data


def method_not_allowed(start_response: StartResponse) -> list[bytes]:
    """The answer of a SOAP endpoint to anything but POST (405)."""
    body = b"this is a SOAP 1.2 endpoint: POST an envelope\n"
    start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain"),
                                              ("Content-Length", str(len(body)))])
    return [body]


def check_action(request: SoapRequest) -> None:
    """WS-Addressing 1.0: refuse a ``wsa:Action`` that names another operation than the Body (step 3)."""
    action = wsa_header(request, "Action")
    if not action:
        return
    name = request.operation_name[1]
    last = action.rstrip("/").rpartition("/")[2]
    if last not in (name, name + "Request"):
        raise SoapFault(code="Sender", subcodes=("InvalidArgVal", "ActionMismatch"),
                        reason=f"wsa:Action {excerpt(action)} does not name the operation {name} in the Body")


def check_operation(request: SoapRequest, operations: Collection[str], xsd: str, *,
                    precheck: Callable[[etree._Element], None] | None = None,
                    schema_view: Callable[[etree._Element], etree._Element] | None = None) -> None:
    """Steps 4 to 6: the operation (its tag in ``operations``), ``precheck``, the XSD ``xsd`` (on
    ``schema_view`` of the operation when given), no local name in two namespaces; raises :class:`SoapFault`."""
    operation = request.operation
    if operation.tag not in operations:
        raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                        reason=f"operation {excerpt(operation.tag)} is not supported at this address")
    if precheck is not None:
        precheck(operation)
    try:
        schemas.validate(operation if schema_view is None else schema_view(operation), xsd)
    except SchemaError as exc:
        raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason=str(exc)) from None
    _refuse_ambiguous_names(operation)


def _refuse_ambiguous_names(operation: etree._Element) -> None:
    """Refuse siblings that share a local name across namespaces.

    Spyne matches child elements by local name only and a later one wins (and so do readers of ``xs:any``
    content that accept an element in any namespace), so
    ``<tup:UserLevel>User</tup:UserLevel><o:UserLevel xmlns:o="urn:x">Administrator</o:UserLevel>``
    passes the XSD (the second is an ``xs:any`` extension) yet would be read as Administrator. What the
    XSD checked must be what the service reads.
    """
    for parent in operation.iter():
        seen: dict[str, str | None] = {}
        for child in parent:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            namespace = seen.setdefault(qname.localname, qname.namespace)
            if namespace != qname.namespace:
                raise SoapFault(code="Sender", subcodes=("InvalidArgs",),
                                reason=f"{excerpt(qname.localname)} appears in two namespaces in one element")


class QNameDispatcher:
    """A WSGI app serving the operations of ``handlers`` (``(namespace, local name) -> handler``) at one path.

    ``xsd`` names the authored schema of the requests; ``context`` is handed to every handler; ``nsmap`` is
    declared on every answer envelope; ``fault_action`` is the ``wsa:Action`` of every fault; ``addressing``
    False leaves WS-Addressing out (no Action check, no answer header, no RelatesTo: see the module);
    ``precheck`` and ``schema_view`` are handed to :func:`check_operation` (a value's own fault before the
    schema's, the schema's view of ``xs:any ##any`` content).
    """

    def __init__(self, handlers: Mapping[tuple[str, str], Handler], *, xsd: str, context: object,
                 nsmap: Mapping[str, str], fault_action: str = FAULT_ACTION, addressing: bool = True,
                 precheck: Callable[[etree._Element], None] | None = None,
                 schema_view: Callable[[etree._Element], etree._Element] | None = None) -> None:
        self.handlers = dict(handlers)
        self.operations = frozenset(etree.QName(namespace, name).text for namespace, name in self.handlers)
        self.xsd = xsd
        self.context = context
        self.nsmap = dict(nsmap)
        self.fault_action = fault_action
        self.addressing = addressing
        self.precheck = precheck
        self.schema_view = schema_view
        schemas.schema(xsd)  # fail at start-up, not at the first request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return method_not_allowed(start_response)
        request = environ.get(ENVIRON_REQUEST)
        if not isinstance(request, SoapRequest):
            log.error("a request reached the operations %s without passing access control", sorted(self.operations))
            return self.fault(SoapFault(code="Receiver", subcodes=("Action",), reason="the service is not configured"),
                              None, start_response)
        try:
            if self.addressing:
                check_action(request)
            check_operation(request, self.operations, self.xsd, precheck=self.precheck, schema_view=self.schema_view)
            answer = self.handlers[request.operation_name](self.context, request, environ)
        except SoapFault as fault:
            log.info("refused request: %s", fault)
            return self.fault(fault, request, start_response)
        except Exception as exc:  # noqa: BLE001 - one line in the log, a Receiver fault to the client
            log.warning("service error in %s: %s: %s", request.operation.tag, type(exc).__name__, excerpt(str(exc)))
            return self.fault(SoapFault(code="Receiver", subcodes=("Action",),
                                        reason="the service failed to process the request"), request, start_response)
        if self.addressing:
            data = write_envelope(answer.action, answer.body, answer.tail, nsmap=self.nsmap,
                                  relates_to=wsa_header(request, "MessageID"))
        else:
            data = write_envelope(None, answer.body, answer.tail, nsmap=self.nsmap)
        start_response("200 OK", [("Content-Type", SOAP12_CONTENT_TYPE), ("Content-Length", str(len(data)))])
        return [data]

    def fault(self, fault: SoapFault, request: SoapRequest | None, start_response: StartResponse) -> list[bytes]:
        """Answer ``fault`` (``wsa:Action`` = ``fault_action``; ``wsa:RelatesTo`` for a request's MessageID)."""
        relates_to = None if request is None or not self.addressing else wsa_header(request, "MessageID")
        data = write_envelope(self.fault_action, fault.to_element(), nsmap=_FAULT_NSMAP, relates_to=relates_to)
        status = fault.http_status
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", SOAP12_CONTENT_TYPE), ("Content-Length", str(len(data)))])
        return [data]
