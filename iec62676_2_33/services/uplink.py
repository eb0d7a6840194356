"""Layer 5: the uplink configuration service (clause 8.2).

GetServiceCapabilities, GetUplinks, SetUplink and DeleteUplink
(CFG-1 … CFG-6). The rules live in :mod:`..uplinkconfig`, the persistence in
:mod:`..store`; the runtime tells the service the live Status/Error of each
uplink and is told of every change.

Theory of operation
-------------------
*Dispatch.* The operations are served by a
:class:`~..soap.dispatch.QNameDispatcher` with ``addressing=False`` (as the
device service: answers without a SOAP Header, no ``wsa:Action`` check). Before
the schema, :func:`_check_remote_address` gives every malformed SetUplink
RemoteAddress its own fault (``ter:InvalidArgVal/ter:RemoteAddress``), then
the XSD checks :func:`schema_view` of the operation. The handlers read the
one parsed tree that access control decided on and write their answers with
lxml element for element as ``xsd/uplink.xsd`` declares them; a test
validates the answer to every request of a corpus against it.
:func:`capabilities_element` is also what the device service's GetServices
embeds.

*Extension content (PROV-5).* The official ``tup:Configuration`` ends with
``xs:any namespace="##any"``; the authored XSD can only say ``##other``
(libxml2 enforces UPA), so :mod:`..soap.extension` gives the schema a view of
SetUplink without the future ``tup:`` elements after Error, and SetUplink
keeps every element after Error, of any namespace, as the configuration's
extension (at most :data:`~..uplinkconfig.MAX_EXTENSION` bytes); GetUplinks
writes it back after Error.

*Cost.* Video management systems poll GetServiceCapabilities and GetUplinks
on many devices, and the edge front serves them per request. Through Spyne
(method contexts, serialising the models) the app spent, per call with an
already parsed request (best of 5 x 2000, same machine),
GetServiceCapabilities 257 us, GetUplinks with two configurations 390 us,
SetUplink 658 us (most of it the store's write); with the handlers writing
lxml directly 21, 68 and 324 us (docs/benchmarks.md, "Proxy front").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from lxml import etree

from ..namespaces import SOAP_ENV, TUP
from ..security.access import AccessClass
from ..security.roles import RoleBook, refuse_beyond
from ..soap import extension
from ..soap.answer_xml import xs_boolean
from ..soap.dispatch import Answer, Handler, QNameDispatcher
from ..soap.envelope import SoapRequest
from ..soap.fault import SoapFault
from ..store import DeviceStore
from ..uplinkconfig import (
    OFFLINE,
    UplinkCapabilities,
    UplinkConfigError,
    UplinkConfiguration,
    normalise_address,
    parse_remote_address,
    split_levels,
    unknown_address,
    validate,
)

#: SEC-1: access class of each operation of the uplink service.
OPERATION_ACCESS = {
    (TUP, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TUP, "GetUplinks"): AccessClass.READ_SYSTEM,
    (TUP, "SetUplink"): AccessClass.WRITE_SYSTEM,
    (TUP, "DeleteUplink"): AccessClass.WRITE_SYSTEM,
}

StatusProvider = Callable[[str], tuple[str, str | None]]


def _offline(_address: str) -> tuple[str, str | None]:
    return OFFLINE, None


@dataclass
class UplinkServiceContext:
    """What the uplink service works with: the store, the capabilities, and the runtime's hooks."""

    store: DeviceStore
    capabilities: UplinkCapabilities = field(default_factory=UplinkCapabilities)
    status: StatusProvider = _offline
    changed: Callable[[], None] = lambda: None
    #: STR-5: whether media can stream over the uplink now (the application sets it from its media backend).
    streaming: Callable[[], bool] = lambda: False
    #: PROV-4: the device's roles; SetUplink grants no UserLevel beyond its caller's rights (the application sets it).
    roles: RoleBook | None = None

    def current_capabilities(self) -> UplinkCapabilities:
        """CFG-5 as answered now: StreamingOverUplink is true once a media source exists (STR-5)."""
        if self.capabilities.streaming_over_uplink or not self.streaming():
            return self.capabilities
        return replace(self.capabilities, streaming_over_uplink=True)

    def set_uplink(self, cfg: UplinkConfiguration) -> UplinkConfiguration:
        """Validate and store (CFG-3); shared by SOAP and the CLI."""
        checked = validate(cfg, self.store, self.capabilities)
        # again inside the store's transaction: a certificate, policy or authorization server deleted since
        # the first look must not be referenced by what is stored
        self.store.put_uplink(checked, max_uplinks=self.capabilities.max_uplinks,
                              check=lambda stored: validate(stored, self.store, self.capabilities))
        self.changed()
        return checked

    def delete_uplink(self, remote_address: str) -> None:
        """CFG-4: remove by RemoteAddress or fault ``ter:InvalidArgVal/ter:Address``."""
        address = normalise_address(remote_address)
        if not self.store.delete_uplink(address):
            raise unknown_address(address)
        self.changed()

    def uplinks(self) -> list[UplinkConfiguration]:
        """CFG-2: every configuration with its live Status and Error."""
        result = []
        for cfg in self.store.list_uplinks():
            status, error = self.status(cfg.remote_address)
            result.append(replace(cfg, status=status, error=error))
        return result


# --------------------------------------------------------------------------- answers (element for element as the XSD)

#: Declared on every answer envelope.
_NSMAP = {"env": SOAP_ENV, "tup": TUP}
#: The elements of tup:Configuration in the XSD's order (CFG-1); whatever follows the last of them is extension content.
_FIELDS = ("RemoteAddress", "CertificateID", "UserLevel", "Status", "CertPathValidationPolicyID",
           "AuthorizationServer", "Error")


def _tup(name: str) -> str:
    return f"{{{TUP}}}{name}"


_KNOWN = frozenset(_tup(name) for name in _FIELDS)
_CONFIGURATION = _tup("Configuration")


def capabilities_element(context: UplinkServiceContext) -> etree._Element:
    """``tup:Capabilities`` as answered now, every field an attribute (CFG-5): GetServiceCapabilities answers
    it, the device service's GetServices embeds it."""
    caps = context.current_capabilities()
    return etree.Element(_tup("Capabilities"), MaxUplinks=str(caps.max_uplinks), Protocols=" ".join(caps.protocols),
                         AuthorizationModes=" ".join(caps.authorization_modes),
                         StreamingOverUplink=xs_boolean(caps.streaming_over_uplink))


def _configuration(cfg: UplinkConfiguration) -> etree._Element:
    """``tup:Configuration``: the items that have a value, in the XSD's order, then the extension (PROV-5)."""
    element = etree.Element(_CONFIGURATION)
    values = (cfg.remote_address, cfg.certificate_id, " ".join(cfg.user_level), cfg.status,
              cfg.cert_path_validation_policy_id, cfg.authorization_server, cfg.error)
    for name, value in zip(_FIELDS, values, strict=True):
        if value is not None:
            etree.SubElement(element, _tup(name)).text = value
    element.extend(extension.elements(cfg.extension))
    return element


def _from_request(element: etree._Element) -> UplinkConfiguration:
    """The configuration of a SetUplink's ``tup:Configuration`` (checked by the XSD: each item at most once),
    with its extension content (PROV-5); Status and Error are the device's, not read."""
    def text(name: str) -> str | None:
        return element.findtext(_tup(name)) or None

    return UplinkConfiguration(
        remote_address=text("RemoteAddress") or "", user_level=split_levels(text("UserLevel")),
        certificate_id=text("CertificateID"), cert_path_validation_policy_id=text("CertPathValidationPolicyID"),
        authorization_server=text("AuthorizationServer"),
        extension=extension.serialise(element, extension.extension_tail(element, _KNOWN)))


def _answer(name: str) -> tuple[str, etree._Element]:
    """The ``wsa:Action`` and the empty answer element of operation ``name`` (``tup:<name>Response``)."""
    return f"{TUP}/{name}Response", etree.Element(_tup(f"{name}Response"))


def _fault(exc: UplinkConfigError) -> SoapFault:
    return SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc))


# --------------------------------------------------------------------------- the operations

def _get_service_capabilities(context: UplinkServiceContext, _request: SoapRequest,
                              _environ: dict[str, Any]) -> Answer:
    action, response = _answer("GetServiceCapabilities")
    response.append(capabilities_element(context))
    return Answer(action, response)


def _get_uplinks(context: UplinkServiceContext, _request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    action, response = _answer("GetUplinks")
    response.extend(_configuration(cfg) for cfg in context.uplinks())
    return Answer(action, response)


def _set_uplink(context: UplinkServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    try:
        cfg = _from_request(next(request.operation.iterchildren(_CONFIGURATION)))
        if context.roles is not None:  # the UserLevel given to a cloud is no more than the caller's own rights
            refuse_beyond(context.roles, environ, context.roles.functions_of(cfg.user_level),
                          f"UserLevel {' '.join(cfg.user_level)[:100]!r}")
        context.set_uplink(cfg)
    except UplinkConfigError as exc:
        raise _fault(exc) from None
    return Answer(*_answer("SetUplink"))


def _delete_uplink(context: UplinkServiceContext, request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    try:
        context.delete_uplink(request.operation.findtext(_tup("RemoteAddress")) or "")
    except UplinkConfigError as exc:
        raise _fault(exc) from None
    return Answer(*_answer("DeleteUplink"))


#: The operations of ``tup:UplinkPort``.
_OPERATIONS: Mapping[tuple[str, str], Handler] = MappingProxyType({
    (TUP, "GetServiceCapabilities"): _get_service_capabilities,
    (TUP, "GetUplinks"): _get_uplinks,
    (TUP, "SetUplink"): _set_uplink,
    (TUP, "DeleteUplink"): _delete_uplink,
})


def _check_remote_address(operation: etree._Element) -> None:
    """CFG-3: a SetUplink RemoteAddress goes through the one address check before the schema's anyURI does,
    so every malformed address is ``ter:InvalidArgVal/ter:RemoteAddress``."""
    if operation.tag != f"{{{TUP}}}SetUplink":
        return
    for element in operation.iterfind(f"{{{TUP}}}Configuration/{{{TUP}}}RemoteAddress"):
        try:
            parse_remote_address(normalise_address(element.text or ""))
        except UplinkConfigError as exc:
            raise _fault(exc) from None


def schema_view(operation: etree._Element) -> etree._Element:
    """What ``xsd/uplink.xsd`` checks of a SetUplink or GetUplinksResponse: the element without the future
    ``tup:`` elements after each Configuration's Error (PROV-5)."""
    return extension.schema_view(operation, _CONFIGURATION, _KNOWN)


def uplink_endpoint(context: UplinkServiceContext) -> QNameDispatcher:
    """The WSGI app of the uplink service (no access control: see :mod:`.app`)."""
    return QNameDispatcher(_OPERATIONS, xsd="uplink", context=context, nsmap=_NSMAP, addressing=False,
                           precheck=_check_remote_address, schema_view=schema_view)
