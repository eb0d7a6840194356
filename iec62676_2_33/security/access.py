"""User levels, access classes and the default access policy (SEC-1, SEC-4).

Layer 5 (services): pure data and pure functions, no I/O.

Theory of operation
-------------------
Every SOAP operation belongs to one :class:`AccessClass` (SEC-1). A request is
executed when *any* of the user levels attached to it is allowed for that
class by the policy table. The levels come from an authenticated user
(WS-Security UsernameToken or HTTP Digest, SEC-2), from the ``UserLevel`` of
the uplink the request was tunnelled over (UPL-12 / SEC-4, which may be a
list), or are ``["Anonymous"]`` when the request carried no credentials.
Level names are the standard's exact, case-sensitive spelling; an unknown
name grants nothing. The predefined user roles ``onvif:Administrator``,
``onvif:Operator`` and ``onvif:User`` (ONVIF Core, User roles; PROV-4) count
as their levels wherever a level is checked; custom roles are decided in
:mod:`.roles`.

This module also roots the credential-rejection exceptions shared by
:mod:`.wsse` and :mod:`.httpdigest`: the exception text is the precise reason
for the *local* log, :attr:`CredentialRejected.peer_reason` the generic text a
peer may see (it never tells whether a user exists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import Final

from ..errors import AuthenticationError, ConfigurationError
from ..namespaces import TUP

__all__ = [
    "DEFAULT_POLICY",
    "PREDEFINED_ROLES",
    "UPLINK_SERVICE_ACCESS",
    "AccessClass",
    "CredentialRejected",
    "ExpiredCredentials",
    "MalformedCredentials",
    "OperationAccess",
    "ReplayDetected",
    "UnknownUser",
    "UnknownUserLevel",
    "UserLevel",
    "WrongPassword",
    "is_allowed",
    "operation_access_from",
    "parse_level",
]


class UserLevel(str, Enum):
    """The user levels of the access policy (tt:UserLevel), wire spelling as value."""

    ADMINISTRATOR = "Administrator"
    OPERATOR = "Operator"
    USER = "User"
    ANONYMOUS = "Anonymous"


class AccessClass(str, Enum):
    """The access class of an operation (SEC-1)."""

    PRE_AUTH = "PRE_AUTH"
    READ_SYSTEM = "READ_SYSTEM"
    READ_SYSTEM_SENSITIVE = "READ_SYSTEM_SENSITIVE"
    READ_SYSTEM_SECRET = "READ_SYSTEM_SECRET"
    WRITE_SYSTEM = "WRITE_SYSTEM"
    UNRECOVERABLE = "UNRECOVERABLE"
    READ_MEDIA = "READ_MEDIA"
    ACTUATE = "ACTUATE"


_A = UserLevel.ADMINISTRATOR.value
_O = UserLevel.OPERATOR.value
_U = UserLevel.USER.value
_N = UserLevel.ANONYMOUS.value

#: SEC-1 default policy: access class -> the level names allowed.
DEFAULT_POLICY: Final[Mapping[AccessClass, frozenset[str]]] = MappingProxyType(
    {
        AccessClass.PRE_AUTH: frozenset({_A, _O, _U, _N}),
        AccessClass.READ_SYSTEM: frozenset({_A, _O, _U}),
        AccessClass.READ_SYSTEM_SENSITIVE: frozenset({_A, _O}),
        AccessClass.READ_SYSTEM_SECRET: frozenset({_A}),
        AccessClass.WRITE_SYSTEM: frozenset({_A}),
        AccessClass.UNRECOVERABLE: frozenset({_A}),
        AccessClass.READ_MEDIA: frozenset({_A, _O, _U}),
        AccessClass.ACTUATE: frozenset({_A, _O}),
    }
)

#: PROV-4 (Core, User roles): the fixed roles, each functionally equivalent to its user level.
PREDEFINED_ROLES: Final[Mapping[str, str]] = MappingProxyType(
    {"onvif:Administrator": _A, "onvif:Operator": _O, "onvif:User": _U}
)

#: SEC-1: the access classes of the uplink service, keyed by (namespace, operation).
UPLINK_SERVICE_ACCESS: Final[Mapping[tuple[str, str], AccessClass]] = MappingProxyType(
    {
        (TUP, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
        (TUP, "GetUplinks"): AccessClass.READ_SYSTEM,
        (TUP, "SetUplink"): AccessClass.WRITE_SYSTEM,
        (TUP, "DeleteUplink"): AccessClass.WRITE_SYSTEM,
    }
)

#: ``(namespace, operation local name) -> access class``; ``None`` = unknown operation.
OperationAccess = Callable[[str, str], AccessClass | None]

_VALID_LEVELS: Final = tuple(level.value for level in UserLevel)


class UnknownUserLevel(ConfigurationError):
    """A user level name is not one of the standard's names."""


def parse_level(name: str) -> str:
    """Return ``name`` if it is a valid user level (exact, case-sensitive), else raise.

    Raises :class:`UnknownUserLevel` (a :class:`ConfigurationError`) whose
    message lists the valid names.
    """
    if isinstance(name, str) and name in _VALID_LEVELS:
        return name
    raise UnknownUserLevel(
        f"unknown user level {name!r}; use one of {', '.join(_VALID_LEVELS)} (case-sensitive)"
    )


def is_allowed(
    levels: Iterable[str],
    access_class: AccessClass,
    policy: Mapping[AccessClass, frozenset[str]] = DEFAULT_POLICY,
) -> bool:
    """True when any of ``levels`` may perform an operation of ``access_class`` (SEC-1, SEC-4).

    ``levels`` is an iterable of level names (an uplink's ``UserLevel`` may
    list several); a single ``str`` is taken as one name. A predefined role
    counts as its level (PROV-4). Unknown names grant nothing; an empty
    iterable grants nothing (not even PRE_AUTH: callers pass
    ``["Anonymous"]`` for an unauthenticated request).
    """
    if isinstance(levels, str):
        levels = (levels,)
    allowed = policy.get(AccessClass(access_class), frozenset())
    return any(isinstance(level, str) and PREDEFINED_ROLES.get(level, level) in allowed for level in levels)


def operation_access_from(
    *tables: Mapping[tuple[str, str], AccessClass],
) -> OperationAccess:
    """Build an ``operation_access`` callable from ``(namespace, name) -> class`` tables.

    Later tables override earlier ones; an operation in none of them maps to
    ``None`` (unknown: the service application answers with its own fault).
    """
    merged: dict[tuple[str, str], AccessClass] = {}
    for table in tables:
        merged.update(table)
    frozen = MappingProxyType(merged)

    def operation_access(namespace: str, name: str) -> AccessClass | None:
        return frozen.get((namespace, name))

    return operation_access


class CredentialRejected(AuthenticationError):
    """Credentials were presented but refused (SEC-2, SEC-3).

    ``str(exc)`` is the precise reason, meant for the local log only (it
    never contains a password, digest or nonce). :attr:`peer_reason` is what
    may be sent to the peer: the same for every subclass, so a peer cannot
    tell an unknown user from a wrong password.
    """

    peer_reason: str = (
        "The action requested requires authorization and the sender is not authorized"
    )


class MalformedCredentials(CredentialRejected):
    """The credentials are syntactically wrong or incomplete."""


class UnknownUser(CredentialRejected):
    """The user name is not known (local reason only; the peer sees the generic text)."""


class WrongPassword(CredentialRejected):
    """The password, digest or response does not match."""


class ReplayDetected(CredentialRejected):
    """The credentials were seen before (nonce or nonce count reused)."""


class ExpiredCredentials(CredentialRejected):
    """The credentials are outside their validity time."""
