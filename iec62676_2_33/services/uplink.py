"""Layer 5: the uplink configuration service on Spyne (clause 8.2).

GetServiceCapabilities, GetUplinks, SetUplink and DeleteUplink
(CFG-1 … CFG-6). The Spyne models mirror ``xsd/uplink.xsd`` element for
element (a test compares the two); the rules live in
:mod:`..uplinkconfig`, the persistence in :mod:`..store`; the runtime tells the
service the live Status/Error of each uplink and is told of every change.

Extension content (PROV-5): the official ``tup:Configuration`` ends with
``xs:any namespace="##any"``; the authored XSD can only say ``##other``
(libxml2 enforces UPA), so :mod:`..soap.extension` gives the schema a view of
SetUplink without the future ``tup:`` elements after Error, and SetUplink
keeps every element after Error — of any namespace, read from the one parsed
tree — as the configuration's extension (at most
:data:`~..uplinkconfig.MAX_EXTENSION` bytes); GetUplinks writes it back after
Error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lxml import etree
from spyne import Boolean, ComplexModel, Integer, Unicode, XmlAttribute, rpc

from ..namespaces import TUP
from ..security.access import AccessClass
from ..soap import extension
from ..soap.extension import ANY_FIELD, AnyContent
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, request_operation, service_context
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

    def current_capabilities(self) -> UplinkCapabilities:
        """CFG-5 as answered now: StreamingOverUplink is true once a media source exists (STR-5)."""
        if self.capabilities.streaming_over_uplink or not self.streaming():
            return self.capabilities
        return replace(self.capabilities, streaming_over_uplink=True)

    def set_uplink(self, cfg: UplinkConfiguration) -> UplinkConfiguration:
        """Validate and store (CFG-3); shared by SOAP and the CLI."""
        checked = validate(cfg, self.store, self.capabilities)
        self.store.put_uplink(checked, max_uplinks=self.capabilities.max_uplinks)
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


class UplinkServiceCapabilities(ComplexModel):  # type: ignore[misc]
    """tup:Capabilities — every field an attribute (CFG-5). The domain's view is
    :class:`~iec62676_2_33.uplinkconfig.UplinkCapabilities`."""

    __namespace__ = TUP
    __type_name__ = "Capabilities"
    _type_info = [
        ("MaxUplinks", XmlAttribute(Integer)),
        ("Protocols", XmlAttribute(Unicode)),
        ("AuthorizationModes", XmlAttribute(Unicode)),
        ("StreamingOverUplink", XmlAttribute(Boolean)),
    ]


class Configuration(ComplexModel):  # type: ignore[misc]
    """tup:Configuration (CFG-1); UserLevel is a tt:StringList carried as text."""

    __namespace__ = TUP
    _type_info = [
        ("RemoteAddress", Unicode(min_occurs=1, nillable=False)),
        ("CertificateID", Unicode),
        ("UserLevel", Unicode(min_occurs=1, nillable=False)),
        ("Status", Unicode),
        ("CertPathValidationPolicyID", Unicode),
        ("AuthorizationServer", Unicode),
        ("Error", Unicode),
        (ANY_FIELD, AnyContent),  # xs:any ##any: written back as kept, never read from a request (PROV-5)
    ]


#: Clark names of the elements tup:Configuration defines; whatever follows the last of them is extension content.
_KNOWN = frozenset(f"{{{TUP}}}{name}" for name in Configuration.get_flat_type_info(Configuration)
                   if name != ANY_FIELD)
_CONFIGURATION = f"{{{TUP}}}Configuration"


def _to_model(cfg: UplinkConfiguration) -> Configuration:
    return Configuration(
        RemoteAddress=cfg.remote_address, CertificateID=cfg.certificate_id,
        UserLevel=" ".join(cfg.user_level), Status=cfg.status,
        CertPathValidationPolicyID=cfg.cert_path_validation_policy_id,
        AuthorizationServer=cfg.authorization_server, Error=cfg.error,
        **{ANY_FIELD: extension.elements(cfg.extension)})


def _from_model(model: Configuration, element: etree._Element) -> UplinkConfiguration:
    """The configuration Spyne read from ``element``, with ``element``'s extension content (PROV-5)."""
    return UplinkConfiguration(
        remote_address=model.RemoteAddress or "", user_level=split_levels(model.UserLevel),
        certificate_id=model.CertificateID or None,
        cert_path_validation_policy_id=model.CertPathValidationPolicyID or None,
        authorization_server=model.AuthorizationServer or None,
        extension=extension.serialise(element, extension.extension_tail(element, _KNOWN)))


def _fault(exc: UplinkConfigError) -> SoapFault:
    return SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc))


class UplinkService(SoapService):
    """The operations of ``tup:UplinkPort``."""

    __service_name__ = "UplinkService"
    __port_types__ = ["UplinkPort"]

    @rpc(_returns=UplinkServiceCapabilities, _out_variable_name="Capabilities")  # type: ignore[misc]
    def GetServiceCapabilities(ctx: Any) -> UplinkServiceCapabilities:
        caps: UplinkCapabilities = service_context(ctx).current_capabilities()
        return UplinkServiceCapabilities(MaxUplinks=caps.max_uplinks, Protocols=" ".join(caps.protocols),
                            AuthorizationModes=" ".join(caps.authorization_modes),
                            StreamingOverUplink=caps.streaming_over_uplink)

    @rpc(_returns=Configuration.customize(max_occurs="unbounded"),  # type: ignore[misc]
         _out_variable_name="Configuration")
    def GetUplinks(ctx: Any) -> list[Configuration]:
        return [_to_model(cfg) for cfg in service_context(ctx).uplinks()]

    @rpc(Configuration.customize(min_occurs=1), _returns=None,  # type: ignore[misc]
         _in_variable_names={"configuration": "Configuration"})
    def SetUplink(ctx: Any, configuration: Configuration) -> None:
        element = request_operation(ctx).find(_CONFIGURATION)
        try:
            service_context(ctx).set_uplink(_from_model(configuration, element))
        except UplinkConfigError as exc:
            raise _fault(exc) from None

    @rpc(Unicode(min_occurs=1), _returns=None,  # type: ignore[misc]
         _in_variable_names={"remote_address": "RemoteAddress"})
    def DeleteUplink(ctx: Any, remote_address: str) -> None:
        try:
            service_context(ctx).delete_uplink(remote_address)
        except UplinkConfigError as exc:
            raise _fault(exc) from None


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


def uplink_endpoint(context: UplinkServiceContext) -> SoapEndpoint:
    """The WSGI app of the uplink service (no access control: see :mod:`.app`)."""
    return SoapEndpoint([UplinkService], TUP, xsd="uplink", context=context, name="UplinkService",
                        precheck=_check_remote_address, schema_view=schema_view)
