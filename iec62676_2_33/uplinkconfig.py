"""Layer 6 (domain): uplink configurations and their validation (clause 8.2).

Implements the rules of SetUplink / DeleteUplink independently of SOAP, so the
Spyne service, the CLI and the runtime apply exactly the same checks
(CFG-1, CFG-3, CFG-4, CFG-5). A rejected configuration raises
:class:`UplinkConfigError`, whose ``code`` and ``subcodes`` are the SOAP fault
the service answers with.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .errors import ConfigurationError, shown_url
from .security.access import UserLevel

#: tup:ConnectionStatus values (CFG-1).
OFFLINE = "Offline"
CONNECTING = "Connecting"
CONNECTED = "Connected"
CONNECTION_STATUSES = (OFFLINE, CONNECTING, CONNECTED)

#: The user levels an uplink may be given: the values of tt:UserLevel that grant a defined set of access
#: classes (SEC-1), Anonymous included (it grants PRE_AUTH only); tt:UserLevel's ``Extended`` grants nothing.
UPLINK_LEVELS: tuple[str, ...] = tuple(level.value for level in UserLevel)
#: The most names an uplink's UserLevel may list (levels and user roles, PROV-4).
MAX_USER_LEVEL_NAMES = 32
#: The longest RemoteAddress stored (an anyURI on the wire; a configuration is shown to every reader).
MAX_ADDRESS = 2048
#: The most bytes of extension XML (the ``xs:any`` content after Error, PROV-5) one configuration keeps:
#: GetUplinks shows every configuration to every reader, so MaxUplinks × this bounds its answer.
MAX_EXTENSION = 4096


class UplinkConfigError(ConfigurationError):
    """A configuration was refused. ``code``/``subcodes`` name the SOAP 1.2 fault (CFG-3, CFG-4)."""

    def __init__(self, message: str, *subcodes: str, code: str = "Sender") -> None:
        super().__init__(message)
        self.code = code
        self.subcodes: tuple[str, ...] = subcodes


@dataclass(frozen=True, kw_only=True)
class UplinkConfiguration:
    """One ``tup:Configuration`` (CFG-1). ``status`` and ``error`` are read-only, filled by the runtime.

    ``extension`` is the configuration's extension content (the elements after
    Error, PROV-5) as XML text written by the service layer; the domain keeps
    it verbatim, bounded by :data:`MAX_EXTENSION`, and never interprets it.
    """

    remote_address: str
    user_level: tuple[str, ...]
    certificate_id: str | None = None
    cert_path_validation_policy_id: str | None = None
    authorization_server: str | None = None
    status: str = OFFLINE
    error: str | None = None
    extension: str = ""

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
            extension=self.extension,
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
    def has_user_role(self, name: str) -> bool: ...


def normalise_address(address: str) -> str:
    """RemoteAddress as the key: surrounding white space removed, otherwise verbatim (CFG-3)."""
    return address.strip()


#: RFC 3986 §3.2.2: the characters of a reg-name or an IPv4address (percent-encoding included).
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")
#: How much of a refused address a message repeats (faults echo a short excerpt of their input).
_EXCERPT = 60


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…")


def _bad_address(address: str, why: str) -> UplinkConfigError:
    return UplinkConfigError(f"RemoteAddress {_excerpt(shown_url(address))} {why}; give e.g. "
                             "https://cloud.example.com/uplink",
                             "InvalidArgVal", "RemoteAddress")


def parse_remote_address(address: str) -> SplitResult:
    """Split a RemoteAddress strictly; the one syntax check of the CLI, SetUplink and the Python API (CFG-3).

    :func:`urllib.parse.urlsplit` accepts some malformed authorities
    (``https://[::1]x/``) and raises ``ValueError`` on others
    (``https://[::1/x``); here each is an :class:`UplinkConfigError`
    ``ter:InvalidArgVal/ter:RemoteAddress``. The authority must be
    ``host[:port]`` with the host a reg-name, an IPv4 address or a bracketed
    IPv6 address; no user info, no fragment, no white space or control
    characters anywhere. First of all, an address carrying an access token is
    refused without being repeated (UPL-4, UPL-14).
    """
    if any(_token_values(address)):
        raise UplinkConfigError("RemoteAddress must not carry an access token; leave access_token= empty and "
                                "configure an AuthorizationServer", "InvalidArgVal", "RemoteAddress")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in address):
        raise _bad_address(address, "contains white space or control characters")
    try:
        parts = urlsplit(address)
    except ValueError as exc:
        raise _bad_address(address, f"is not a valid URI ({exc})") from None
    if not parts.scheme or not address.lower().startswith(f"{parts.scheme.lower()}://"):
        raise _bad_address(address, "is not an absolute URI")
    if "@" in parts.netloc or parts.fragment:
        raise _bad_address(address, "must carry no user info or fragment")
    host, port = _split_authority(address, parts.netloc)
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise _bad_address(address, "has an invalid port")
    if not host:
        raise _bad_address(address, "names no host")
    return parts


def _split_authority(address: str, netloc: str) -> tuple[str, str]:
    """``host``/``port`` of an authority, the host checked (IPv6 in brackets, RFC 3986 §3.2.2)."""
    if netloc.startswith("["):
        literal, bracket, rest = netloc[1:].partition("]")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _bad_address(address, "has an invalid IPv6 address in brackets") from None
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad_address(address, "has characters after the IPv6 address that are not a :port")
        return literal, rest[1:]
    host, _, port = netloc.partition(":")
    if host and not _REG_NAME.fullmatch(host):
        try:  # an internationalised name is dialled as its A-label
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_host = ""
        if host.isascii() or not _REG_NAME.fullmatch(ascii_host):
            raise _bad_address(address, "has an invalid host name")
    if ":" in port or "[" in host or "]" in netloc:
        raise _bad_address(address, "has an invalid host or port")
    return host, port


def validate(cfg: UplinkConfiguration, refs: ReferenceLookup, caps: UplinkCapabilities) -> UplinkConfiguration:
    """Check a configuration before it is stored; return it normalised (CFG-3).

    The order follows the fault list of the standard: address and protocol,
    then authentication (missing / ambiguous / unknown references), then the
    user level. The standard's SetUplink fault list names no UserLevel
    subcode, so an invalid UserLevel is the generic ``env:Sender/ter:InvalidArgVal``
    of ONVIF Core with the reason saying what is wrong.
    """
    address = normalise_address(cfg.remote_address)
    if len(address) > MAX_ADDRESS:
        raise UplinkConfigError(f"RemoteAddress is {len(address)} characters long; at most {MAX_ADDRESS} are stored",
                                "InvalidArgVal", "RemoteAddress")
    parts = parse_remote_address(address)
    _check_token_parameter(address, cfg.authorization_server is not None)
    if parts.scheme.lower() not in caps.protocols:
        raise UplinkConfigError(
            f"protocol {parts.scheme!r} of RemoteAddress is not supported; supported: {' '.join(caps.protocols)}",
            "InvalidArgs", "ProtocolNotSupported")
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
    if len(levels) > MAX_USER_LEVEL_NAMES or len(set(levels)) != len(levels):
        raise UplinkConfigError(
            f"UserLevel has {len(levels)} entries; give each level or user role at most once "
            f"(at most {MAX_USER_LEVEL_NAMES})", "InvalidArgVal")
    # PROV-4: besides the levels, the device's user roles (GetUserRoles, MaxUserRoles) may be named.
    unknown = [lvl for lvl in levels if lvl not in UPLINK_LEVELS and not refs.has_user_role(lvl)]
    if not levels or unknown:
        raise UplinkConfigError(
            f"UserLevel {' '.join(levels) or '(empty)'!s} is invalid; use one or more of {' '.join(UPLINK_LEVELS)}",
            "InvalidArgVal")
    size = len(cfg.extension.encode("utf-8"))
    if size > MAX_EXTENSION:
        raise UplinkConfigError(f"the extension elements of Configuration take {size} bytes; at most "
                                f"{MAX_EXTENSION} are stored", "InvalidArgVal")
    return UplinkConfiguration(
        remote_address=address, user_level=levels, certificate_id=cfg.certificate_id,
        cert_path_validation_policy_id=cfg.cert_path_validation_policy_id,
        authorization_server=cfg.authorization_server, extension=cfg.extension,
    )


def _token_values(address: str) -> list[str]:
    """The values of ``access_token`` query parameters, found without parsing (or echoing) the rest."""
    query = address.partition("#")[0].partition("?")[2]
    return [v for name, v in parse_qsl(query, keep_blank_values=True) if name == "access_token"]


def _check_token_parameter(address: str, token_mode: bool) -> None:
    """UPL-4, UPL-14: ``access_token=`` may only ask for the token to go in the query (wss, token mode).

    The parameter must be empty (:func:`parse_remote_address` refuses a value): a configuration never
    holds a token, since GetUplinks shows it to every READ_SYSTEM user and it would reach logs.
    """
    if not _token_values(address):
        return
    if not address.lower().startswith("wss://") or not token_mode:
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
    "CONNECTED", "CONNECTING", "CONNECTION_STATUSES", "MAX_EXTENSION", "OFFLINE", "UPLINK_LEVELS",
    "ReferenceLookup", "UplinkCapabilities", "UplinkConfigError", "UplinkConfiguration",
    "normalise_address", "parse_remote_address", "split_levels", "too_many", "unknown_address", "validate",
]
