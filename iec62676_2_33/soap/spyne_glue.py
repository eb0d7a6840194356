"""Layer 5: how every Spyne service of the library is hosted.

Spyne serialises the happy path; everything around it is ours so that all
services behave the same on the wire:

* a request arrives already decoded, parsed and authorised (:mod:`.envelope`,
  :mod:`..security.middleware`); its operation element is validated against
  the *authored* XSD and the same tree is handed to Spyne's deserialiser —
  Spyne never reads request bytes, so what access control decided on is what
  runs (one message, one parse); a malformed request is a precise
  ``env:Sender/ter:InvalidArgs`` fault;
* a service method raises :class:`~.fault.SoapFault`; :class:`SoapService`
  catches it and the endpoint answers with our own fault envelope, which
  carries the full subcode chain with every prefix declared (CFG-3, CFG-4,
  SEC-3) and the SOAP 1.2 HTTP status (400 for Sender, 500 for Receiver);
* Spyne's own logging of payloads is silenced, so request content (which may
  carry credentials) never reaches a log: the first endpoint built sets the
  ``spyne`` logger to CRITICAL unless the application has set its level
  (nothing happens at import time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lxml import etree
from spyne import Application, MethodContext, ServiceBase
from spyne.protocol import ProtocolBase
from spyne.protocol.soap import Soap12
from spyne.server import ServerBase

from .. import schemas
from ..namespaces import SOAP12_CONTENT_TYPE
from ..security.middleware import ENVIRON_REQUEST
from .dispatch import check_operation, method_not_allowed
from .envelope import SoapRequest, excerpt
from .fault import SoapFault, fault_response

log = logging.getLogger(__name__)

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


def request_operation(ctx: Any) -> etree._Element:
    """The operation element of the one parsed request: what access control saw and the XSD checked."""
    request: SoapRequest = ctx.transport.req_env[ENVIRON_REQUEST]
    return request.operation


def _respond(start_response: StartResponse, status: str, body: bytes,
             content_type: str = SOAP12_CONTENT_TYPE) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _TreeServer(ServerBase):  # type: ignore[misc]
    """Spyne as the deserialiser and serialiser of an envelope parsed by :mod:`.envelope`.

    Spyne's own transports read request bytes (with the Content-Type charset,
    taking the root part of ``multipart/related``); this one never sees bytes:
    it starts after Spyne's ``create_in_document`` with our tree, and with no
    ``xmlid`` table, so SOAP-encoding ``href`` references are not resolved.
    """

    transport = "urn:iec62676-2-33:parsed-envelope"

    def run(self, request: SoapRequest, environ: dict[str, Any]) -> bytes:
        ctx = MethodContext(self, MethodContext.SERVER)
        ctx.transport.req_env = environ
        ctx.in_document = (request.envelope, {})
        self.app.in_protocol.decompose_incoming_envelope(ctx, ProtocolBase.REQUEST)
        if ctx.in_body_doc is not request.operation:  # the guarantee this class exists for
            raise RuntimeError("Spyne chose another element than the identified operation")
        call = self.app.in_protocol.generate_method_contexts(ctx)[0]
        self.get_in_object(call)
        if call.in_error is not None:
            raise SoapFault(code="Sender", subcodes=("InvalidArgs",),
                            reason=f"the request could not be read: {call.in_error.faultstring}")
        self.get_out_object(call)
        if call.out_error is not None:
            if FAULT_KEY in environ:
                return b""
            raise _ServiceFailed(str(call.out_error.faultstring))
        self.get_out_string(call)
        return b"".join(call.out_string)


class _ServiceFailed(Exception):
    """A service method raised something other than :class:`SoapFault`."""


class SoapEndpoint:
    """A WSGI app serving one Spyne service at one path.

    It serves only requests that passed the access control, which parsed them
    (:data:`~..security.middleware.ENVIRON_REQUEST`); it never reads the body.
    ``xsd`` names the authored schema of the service's messages; ``context``
    is any object the service methods reach through :func:`service_context`.
    """

    def __init__(self, services: Sequence[type[SoapService]], tns: str, *, xsd: str, context: object,
                 name: str | None = None) -> None:
        app = Application(list(services), tns, name=name, in_protocol=Soap12(), out_protocol=Soap12())
        self.operations = frozenset(
            etree.QName(tns, method.name).text
            for service in services for method in service.public_methods.values())
        self.tns = tns
        self.xsd = xsd
        self.context = context
        self._server = _TreeServer(app)
        spyne_log = logging.getLogger("spyne")
        if spyne_log.level == logging.NOTSET:  # the application chose nothing: no request content in logs
            spyne_log.setLevel(logging.CRITICAL)
        schemas.schema(xsd)  # fail at start-up, not at the first request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return method_not_allowed(start_response)
        request = environ.get(ENVIRON_REQUEST)
        if not isinstance(request, SoapRequest):
            log.error("a request reached %s without passing access control", self.tns)
            return fault_response(SoapFault(code="Receiver", subcodes=("Action",),
                                            reason="the service is not configured"), start_response)
        environ[CONTEXT_KEY] = self.context
        try:
            self._check(request)
            body = self._server.run(request, environ)
        except SoapFault as fault:
            log.info("refused request: %s", fault)
            return fault_response(fault, start_response)
        except _ServiceFailed as exc:
            log.warning("service error: %s", exc)
            return fault_response(SoapFault(code="Receiver", subcodes=("Action",),
                                            reason="the service failed to process the request"), start_response)
        except Exception as exc:  # noqa: BLE001 - a request Spyne cannot handle must not take the server's 500
            log.warning("Spyne failed on %s: %s: %s", request.operation.tag, type(exc).__name__, excerpt(str(exc)))
            return fault_response(SoapFault(code="Sender", subcodes=("InvalidArgs",),
                                            reason="the request could not be processed"), start_response)
        refused = environ.get(FAULT_KEY)
        if isinstance(refused, SoapFault):
            log.info("%s", refused)
            return fault_response(refused, start_response)
        return _respond(start_response, "200 OK", body)

    def _check(self, request: SoapRequest) -> None:
        check_operation(request, self.operations, self.xsd)
