"""Layer 5: how every Spyne service of the library is hosted.

Spyne serialises the happy path; everything around it is ours so that all
services behave the same on the wire:

* requests are parsed with the locked-down parser of :mod:`..schemas` and the
  Body child is validated against the *authored* XSD before Spyne sees it, so
  a malformed request is a precise ``env:Sender/ter:InvalidArgs`` fault;
* a service method raises :class:`~.fault.SoapFault`; :class:`SoapService`
  catches it and the endpoint answers with our own fault envelope, which
  carries the full subcode chain with every prefix declared (CFG-3, CFG-4,
  SEC-3) and the SOAP 1.2 HTTP status (400 for Sender, 500 for Receiver);
* Spyne's own logging of payloads is silenced, so request content (which may
  carry credentials) never reaches a log.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lxml import etree
from spyne import Application, ServiceBase
from spyne.protocol.soap import Soap12
from spyne.server.wsgi import WsgiApplication

from .. import schemas
from ..errors import SchemaError
from ..namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV
from ..security.middleware import ENVIRON_ENVELOPE
from .fault import SoapFault

log = logging.getLogger(__name__)
logging.getLogger("spyne").setLevel(logging.CRITICAL)

FAULT_KEY = "iec62676.soap_fault"
CONTEXT_KEY = "iec62676.service_context"

StartResponse = Callable[..., Any]


class SoapService(ServiceBase):  # type: ignore[misc]
    """Base of our Spyne services: a raised :class:`SoapFault` becomes our fault envelope."""

    @classmethod
    def call_wrapper(cls, ctx: Any) -> Any:
        try:
            return super().call_wrapper(ctx)
        except SoapFault as fault:
            ctx.transport.req_env[FAULT_KEY] = fault
            return None


def service_context(ctx: Any) -> Any:
    """The object handed to :class:`SoapEndpoint` as ``context`` (the services' dependencies)."""
    return ctx.transport.req_env[CONTEXT_KEY]


def _respond(start_response: StartResponse, status: str, body: bytes,
             content_type: str = SOAP12_CONTENT_TYPE) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def fault_response(fault: SoapFault, start_response: StartResponse) -> list[bytes]:
    """Answer a WSGI request with a SOAP 1.2 fault."""
    status = "400 Bad Request" if fault.http_status == 400 else "500 Internal Server Error"
    return _respond(start_response, status, fault.to_envelope())


class SoapEndpoint:
    """A WSGI app serving one Spyne service at one path.

    ``xsd`` names the authored schema of the service's messages; ``context``
    is any object the service methods reach through :func:`service_context`.
    """

    def __init__(self, services: Sequence[type[SoapService]], tns: str, *, xsd: str, context: object,
                 name: str | None = None, max_body: int = 1 << 20) -> None:
        app = Application(list(services), tns, name=name, in_protocol=Soap12(), out_protocol=Soap12())
        self.operations = frozenset(
            etree.QName(tns, method.name).text
            for service in services for method in service.public_methods.values())
        self.tns = tns
        self.xsd = xsd
        self.context = context
        self.max_body = max_body
        self._spyne = WsgiApplication(app)
        schemas.schema(xsd)  # fail at start-up, not at the first request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            body = b"this is a SOAP 1.2 endpoint: POST an envelope\n"
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain"),
                                                      ("Content-Length", str(len(body)))])
            return [body]
        try:
            data = _read_body(environ, self.max_body)
        except SoapFault as fault:
            return fault_response(fault, start_response)
        try:
            self._check(data, environ.get(ENVIRON_ENVELOPE))
        except SoapFault as fault:
            log.info("refused request: %s", fault)
            return fault_response(fault, start_response)
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ[CONTEXT_KEY] = self.context
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        body = b"".join(self._spyne(environ, capture))
        fault = environ.get(FAULT_KEY)
        if isinstance(fault, SoapFault):
            log.info("%s", fault)
            return fault_response(fault, start_response)
        if not captured["status"].startswith("200"):
            log.warning("service error %s", captured["status"])
            return fault_response(SoapFault(code="Receiver", subcodes=("Action",),
                                            reason="the service failed to process the request"),
                                  start_response)
        return _respond(start_response, "200 OK", body)

    def _check(self, data: bytes, parsed: etree._Element | None) -> None:
        try:
            envelope = parsed if parsed is not None else schemas.parse_xml(data)
        except SchemaError as exc:
            raise SoapFault(code="Sender", subcodes=("WellFormed",), reason=str(exc)) from None
        if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
            raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason="expected a SOAP 1.2 envelope")
        body = envelope.find(f"{{{SOAP_ENV}}}Body")
        operation = next((child for child in body if isinstance(child.tag, str)), None) if body is not None else None
        if operation is None:
            raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason="the SOAP Body is empty")
        if operation.tag not in self.operations:
            raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                            reason=f"operation {operation.tag} is not supported at this address")
        try:
            schemas.validate(operation, self.xsd)
        except SchemaError as exc:
            raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason=str(exc)) from None


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason="bad Content-Length") from None
    if length > limit:
        raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason=f"request body over {limit} bytes")
    stream = environ["wsgi.input"]
    data: bytes = stream.read(length) if length else stream.read(limit + 1)
    if len(data) > limit:
        raise SoapFault(code="Sender", subcodes=("InvalidArgs",), reason=f"request body over {limit} bytes")
    return data
