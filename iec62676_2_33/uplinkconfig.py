"""Layer 6 (domain): uplink configurations and their validation (clause 8.2).

Implements the rules of SetUplink / DeleteUplink independently of SOAP, so the
Spyne service, the CLI and the runtime apply exactly the same checks
(CFG-1, CFG-3, CFG-4, CFG-5). A rejected configuration raises
:class:`UplinkConfigError`, whose ``code`` and ``subcodes`` are the SOAP fault
the service answers with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from .errors import ConfigurationError

#: tup:ConnectionStatus values (CFG-1).
OFFLINE = "Offline"
CONNECTING = "Connecting"
CONNECTED = "Connected"
CONNECTION_STATUSES = (OFFLINE, CONNECTING, CONNECTED)

#: The user levels an uplink may be given (SEC-1 levels that can be authenticated).
UPLINK_LEVELS = ("Administrator", "Operator", "User")
#: The longest RemoteAddress stored (an anyURI on the wire; a configuration is shown to every reader).
MAX_ADDRESS = 2048


class UplinkConfigError(ConfigurationError):
    """A configuration was refused. ``code``/``subcodes`` name the SOAP 1.2 fault (CFG-3, CFG-4)."""

    def __init__(self, message: str, *subcodes: str, code: str = "Sender") -> None:
        super().__init__(message)
        self.code = code
        self.subcodes: tuple[str, ...] = subcodes


@dataclass(frozen=True, kw_only=True)
class UplinkConfiguration:
    """One ``tup:Configuration`` (CFG-1). ``status`` and ``error`` are read-only, filled by the runtime."""

    remote_address: str
    user_level: tuple[str, ...]
    certificate_id: str | None = None
    cert_path_validation_policy_id: str | None = None
    authorization_server: str | None = None
    status: str = OFFLINE
    error: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.remote_address).scheme.lower()

    @property
    def host(self) -> str:
        return urlsplit(self.remote_address).hostname or ""

    def stored(self) -> UplinkConfiguration:
        """The configuration as it is stored: the client-sent Status and Error are ignored (CFG-3)."""
        return UplinkConfiguration(
            remote_address=self.remote_address,
            user_level=self.user_level,
            certificate_id=self.certificate_id,
            cert_path_validation_policy_id=self.cert_path_validation_policy_id,
            authorization_server=self.authorization_server,
        )


@dataclass(frozen=True, kw_only=True)
class UplinkCapabilities:
    """``tup:Capabilities`` (CFG-5); the protocols are those of the registered transports."""

    max_uplinks: int = 8
    protocols: tuple[str, ...] = ("https",)
    authorization_modes: tuple[str, ...] = ("mTLS",)
    streaming_over_uplink: bool = False


class ReferenceLookup(Protocol):
    """What validation needs to know of the device's stored material."""

    def has_certificate(self, certificate_id: str) -> bool: ...
    def has_policy(self, policy_id: str) -> bool: ...
    def has_auth_server(self, token: str) -> bool: ...


def normalise_address(address: str) -> str:
    """RemoteAddress as the key: surrounding white space removed, otherwise verbatim (CFG-3)."""
    return address.strip()


def validate(cfg: UplinkConfiguration, refs: ReferenceLookup, caps: UplinkCapabilities) -> UplinkConfiguration:
    """Check a configuration before it is stored; return it normalised (CFG-3).

    The order follows the fault list of the standard: address and protocol,
    then authentication (missing / ambiguous / unknown references), then the
    user level.
    """
    address = normalise_address(cfg.remote_address)
    if len(address) > MAX_ADDRESS:
        raise UplinkConfigError(f"RemoteAddress is {len(address)} characters long; at most {MAX_ADDRESS} are stored",
                                "InvalidArgVal", "RemoteAddress")
    parts = urlsplit(address)
    # First: a token in the address must not be echoed by any later message.
    _check_token_parameter(address, parts.scheme.lower(), cfg.authorization_server is not None)
    if not parts.scheme:
        raise UplinkConfigError(
            f"RemoteAddress {address!r} is not an absolute URI; give e.g. https://cloud.example.com/uplink",
            "InvalidArgVal", "RemoteAddress")
    if parts.scheme.lower() not in caps.protocols:
        raise UplinkConfigError(
            f"protocol {parts.scheme!r} of RemoteAddress is not supported; supported: {' '.join(caps.protocols)}",
            "InvalidArgs", "ProtocolNotSupported")
    if not parts.hostname or parts.username is not None or parts.fragment:
        raise UplinkConfigError(
            f"RemoteAddress {address!r} must name a host and carry no user info or fragment",
            "InvalidArgVal", "RemoteAddress")
    try:
        _ = parts.port
    except ValueError:
        raise UplinkConfigError(f"RemoteAddress {address!r} has an invalid port",
                                "InvalidArgVal", "RemoteAddress") from None
    if cfg.certificate_id is None and cfg.authorization_server is None:
        raise UplinkConfigError("neither CertificateID nor AuthorizationServer is given; set exactly one",
                                "InvalidArgs", "MissingAuthentication")
    if cfg.certificate_id is not None and cfg.authorization_server is not None:
        raise UplinkConfigError("CertificateID and AuthorizationServer are mutually exclusive; set exactly one",
                                "InvalidArgs", "AmbiguousAuthentication")
    if cfg.certificate_id is not None and not refs.has_certificate(cfg.certificate_id):
        raise UplinkConfigError(f"no certificate is stored under CertificateID {cfg.certificate_id!r}",
                                "InvalidArgVal", "CertificateID")
    if cfg.authorization_server is not None and "AccessToken" not in caps.authorization_modes:
        raise UplinkConfigError("access-token authentication is not supported by this device",
                                "InvalidArgVal", "AuthorizationServerConfigurationToken")
    if cfg.authorization_server is not None and not refs.has_auth_server(cfg.authorization_server):
        raise UplinkConfigError(
            f"no authorization server configuration exists for token {cfg.authorization_server!r}",
            "InvalidArgVal", "AuthorizationServerConfigurationToken")
    if cfg.cert_path_validation_policy_id is not None and not refs.has_policy(cfg.cert_path_validation_policy_id):
        raise UplinkConfigError(
            f"no certification path validation policy is stored under {cfg.cert_path_validation_policy_id!r}",
            "InvalidArgVal", "CertPathValidationPolicyID")
    levels = tuple(cfg.user_level)
    if len(levels) > len(UPLINK_LEVELS) or len(set(levels)) != len(levels):
        raise UplinkConfigError(
            f"UserLevel has {len(levels)} entries; give each of {' '.join(UPLINK_LEVELS)} at most once",
            "InvalidArgVal", "UserLevel")
    unknown = [lvl for lvl in levels if lvl not in UPLINK_LEVELS]
    if not levels or unknown:
        raise UplinkConfigError(
            f"UserLevel {' '.join(levels) or '(empty)'!s} is invalid; use one or more of {' '.join(UPLINK_LEVELS)}",
            "InvalidArgVal", "UserLevel")
    return UplinkConfiguration(
        remote_address=address, user_level=levels, certificate_id=cfg.certificate_id,
        cert_path_validation_policy_id=cfg.cert_path_validation_policy_id,
        authorization_server=cfg.authorization_server,
    )


def _check_token_parameter(address: str, scheme: str, token_mode: bool) -> None:
    """UPL-4, UPL-14: ``access_token=`` may only ask for the token to go in the query (wss, token mode).

    The parameter must be empty: a configuration never holds a token, since
    GetUplinks shows it to every READ_SYSTEM user and it would reach logs.
    """
    values = [v for name, v in parse_qsl(urlsplit(address).query, keep_blank_values=True) if name == "access_token"]
    if not values:
        return
    if any(values):
        raise UplinkConfigError("RemoteAddress must not carry an access token; leave access_token= empty and "
                                "configure an AuthorizationServer", "InvalidArgVal", "RemoteAddress")
    if scheme != "wss" or not token_mode:
        raise UplinkConfigError("an empty access_token= asks for the access token in the query string; it "
                                "needs a wss RemoteAddress and an AuthorizationServer", "InvalidArgVal",
                                "RemoteAddress")


def too_many(max_uplinks: int) -> UplinkConfigError:
    """The fault for a SetUplink beyond MaxUplinks (CFG-3): nothing is stored."""
    return UplinkConfigError(
        f"the device holds at most {max_uplinks} uplink configurations (MaxUplinks); delete one first",
        "Action", "MaxUplinks", code="Receiver")


def unknown_address(address: str) -> UplinkConfigError:
    """The fault of DeleteUplink for an address that has no configuration (CFG-4)."""
    return UplinkConfigError(f"no uplink exists for the address {address!r}", "InvalidArgVal", "Address")


def split_levels(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """A tt:StringList (white-space separated) as a tuple."""
    if text is None:
        return ()
    if isinstance(text, str):
        return tuple(text.split())
    return tuple(part for item in text for part in item.split())


__all__ = [
    "CONNECTED", "CONNECTING", "CONNECTION_STATUSES", "OFFLINE", "UPLINK_LEVELS",
    "ReferenceLookup", "UplinkCapabilities", "UplinkConfigError", "UplinkConfiguration",
    "normalise_address", "split_levels", "too_many", "unknown_address", "validate",
]
