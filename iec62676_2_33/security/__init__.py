"""Access control of the service interfaces (SEC-1..SEC-4, UPL-12).

Layer 5 (services).

* :mod:`.access` — user levels, access classes, the SEC-1 policy table and
  :func:`is_allowed`; the root of the credential-rejection errors.
* :mod:`.wsse` — WS-Security UsernameToken PasswordDigest (SEC-2): parsing,
  verification with freshness and a bounded replay cache, client-side
  token building.
* :mod:`.httpdigest` — RFC 7616 HTTP Digest, server side (SEC-2 alternative).
* :mod:`.middleware` — the WSGI middleware that authenticates, applies the
  policy (or the uplink's UserLevel, UPL-12/SEC-4) and refuses with
  ``env:Sender``/``ter:NotAuthorized`` or a 401 challenge (SEC-3).
* :mod:`.roles` — user roles (PROV-4): predefined and custom roles, Core's
  faults, and what a set of levels and roles grants.
"""

from __future__ import annotations

from .access import (
    DEFAULT_POLICY,
    UPLINK_SERVICE_ACCESS,
    AccessClass,
    CredentialRejected,
    ExpiredCredentials,
    MalformedCredentials,
    ReplayDetected,
    UnknownUser,
    UnknownUserLevel,
    UserLevel,
    WrongPassword,
    is_allowed,
    operation_access_from,
    parse_level,
)
from .httpdigest import DigestAuthenticator, InvalidNonce, ReplayedNonceCount, StaleNonce
from .middleware import AccessControlMiddleware
from .wsse import (
    CreatedInFuture,
    CreatedTooOld,
    MissingNonceOrCreated,
    NonceCache,
    ReplayedNonce,
    UnsafeXml,
    UnsupportedPasswordType,
    UsernameToken,
    UsernameTokenVerifier,
    build_username_token,
    parse_username_token,
    password_digest,
)

__all__ = [
    "DEFAULT_POLICY",
    "UPLINK_SERVICE_ACCESS",
    "AccessClass",
    "AccessControlMiddleware",
    "CreatedInFuture",
    "CreatedTooOld",
    "CredentialRejected",
    "DigestAuthenticator",
    "ExpiredCredentials",
    "InvalidNonce",
    "MalformedCredentials",
    "MissingNonceOrCreated",
    "NonceCache",
    "ReplayDetected",
    "ReplayedNonce",
    "ReplayedNonceCount",
    "StaleNonce",
    "UnknownUser",
    "UnknownUserLevel",
    "UnsafeXml",
    "UnsupportedPasswordType",
    "UserLevel",
    "UsernameToken",
    "UsernameTokenVerifier",
    "WrongPassword",
    "build_username_token",
    "is_allowed",
    "operation_access_from",
    "parse_level",
    "parse_username_token",
    "password_digest",
]
