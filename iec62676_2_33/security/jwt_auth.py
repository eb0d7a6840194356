"""Layer 4 helper (cloud side): the access-token authenticator of the uplink listener (UPL-14, UPL-4).

:class:`TokenAuthenticator` implements
:class:`iec62676_2_33.runtime.cloud.Authenticator`: it takes the bearer token
of the device's upgrade request — the ``Authorization: Bearer`` header, or for
a WebSocket upgrade the ``access_token`` query parameter (RFC 6750 §2.3;
both at once is refused) — and validates it as a signed JWT with PyJWT:

* keys from a JWKS (RFC 7517) file or ``https`` URL (:func:`jwks_source`); a
  URL is fetched with verified TLS, at most :data:`MAX_JWKS_BYTES` within
  ``timeout`` seconds in all, cached, and fetched again (at most every
  ``min_refetch`` seconds) when a token names an unknown ``kid``; an entry
  that is no usable public key (wrong type, wrong member types) is skipped;
* an explicit algorithm allow-list (default RS256, PS256, ES256, ES384,
  EdDSA; ``none`` and the HMAC family are refused at configuration time) and
  the algorithm must fit the key (an RSA key never verifies ES256, a public
  key never becomes an HMAC secret);
* trusted issuers (``iss``), the required audience (``aud``), ``exp``
  required (``options={"require": [...]}``, the PyJWT trap), ``nbf``/``iat``
  checked with a leeway of at most 60 s;
* the device identity is the ``sub`` claim (configurable), a non-empty string.

A refusal is :class:`~iec62676_2_33.runtime.cloud.UpgradeRejected` with 401 and
``WWW-Authenticate: Bearer … error="invalid_token"`` (RFC 6750 §3), raised
before the listener sends a ``101`` — hence before any HTTP/2 byte. Messages
are fixed phrases ("the token has expired", "wrong audience"): no token, and
no text PyJWT derived from one, reaches a log or the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from jwt import PyJWK

from ..bounded_http import fetch
from ..errors import AuthenticationError, ConfigurationError, TransportError
from ..sansio.upgrade import UpgradeRequest
from ..transport.base import ByteStream
from ..transport.contexts import client_context

__all__ = [
    "DEFAULT_ALGORITHMS",
    "FileJwks",
    "InvalidAccessToken",
    "JwksSource",
    "StaticJwks",
    "TokenAuthenticator",
    "UrlJwks",
    "VerificationKey",
    "bearer_token",
    "jwks_source",
]

log = logging.getLogger(__name__)

DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "ES384", "EdDSA")
MAX_LEEWAY = 60.0
MAX_TOKEN_CHARS = 8192
#: The largest JWK Set read from a URL (a set of a dozen RSA-4096 keys takes about 10 KiB).
MAX_JWKS_BYTES = 64 * 1024
REALM = "iec62676-uplink"

_KEY_ALGORITHMS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "OKP": {"EdDSA"},
}
_EC_ALGORITHMS = {"P-256": {"ES256"}, "P-384": {"ES384"}, "P-521": {"ES512", "ES521"},
                  "secp256k1": {"ES256K"}}


class InvalidAccessToken(AuthenticationError):
    """A token failed validation; ``description`` is a fixed phrase safe to log and send."""

    def __init__(self, description: str, *, missing: bool = False, status: int = 401) -> None:
        super().__init__(description)
        self.description = description
        self.missing = missing
        self.status = status


# --------------------------------------------------------------------------- keys


class JwksSource(Protocol):
    """Where the verification keys come from."""

    async def key(self, kid: str | None) -> VerificationKey | None:
        """The key with this ``kid`` (``None``: the only key, if there is exactly one)."""
        ...


@dataclass(frozen=True)
class VerificationKey:
    """A public key of the JWK Set, its ``kid`` and the algorithms it may verify."""

    jwk: PyJWK
    kid: str | None
    algorithms: frozenset[str]


def _pick(keys: Sequence[VerificationKey], kid: str | None) -> VerificationKey | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.kid == kid), None)


def _algorithms(data: Mapping[str, Any]) -> frozenset[str]:
    kty = data.get("kty")
    family = _EC_ALGORITHMS.get(str(data.get("crv")), set()) if kty == "EC" else _KEY_ALGORITHMS.get(str(kty), set())
    explicit = data.get("alg")
    return frozenset(family & {explicit} if isinstance(explicit, str) else family)


def _parse_jwks(data: Any, where: str) -> list[VerificationKey]:
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ConfigurationError(f"{where} is not a JWK Set: expected a JSON object with a 'keys' list")
    keys: list[VerificationKey] = []
    for entry in data["keys"]:
        if not isinstance(entry, Mapping) or entry.get("use") not in (None, "sig"):
            continue
        if any(name in entry for name in ("d", "p", "q", "k")):
            raise ConfigurationError(f"{where} holds a private or symmetric key: publish public keys only")
        algorithms = _algorithms(entry)
        if not algorithms:
            continue
        try:
            jwk = PyJWK(dict(entry))
        except (jwt.PyJWTError, TypeError, ValueError):  # TypeError: a member of the wrong JSON type ("alg": [...])
            continue
        kid = entry.get("kid")
        keys.append(VerificationKey(jwk=jwk, kid=kid if isinstance(kid, str) else None,
                                    algorithms=algorithms))
    if not keys:
        raise ConfigurationError(f"{where} holds no usable public signing key (RSA, EC or Ed25519)")
    return keys


class StaticJwks:
    """Keys given once (a parsed JWK Set)."""

    def __init__(self, jwks: Mapping[str, Any], *, where: str = "the JWK Set") -> None:
        self.keys = _parse_jwks(jwks, where)

    async def key(self, kid: str | None) -> VerificationKey | None:
        return _pick(self.keys, kid)


class FileJwks(StaticJwks):
    """Keys from a JWKS file (read once, at start)."""

    def __init__(self, path: str | Path) -> None:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read the JWKS file {path}: {exc.strerror}") from None
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
            raise ConfigurationError(f"the JWKS file {path} is not JSON") from None
        super().__init__(data, where=f"the JWKS file {path}")


class UrlJwks:
    """Keys from a JWKS URL over verified HTTPS; cached ``max_age`` s, refetched for an unknown kid."""

    def __init__(self, url: str, *, cafile_pems: list[bytes] | None = None, max_age: float = 300.0,
                 min_refetch: float = 30.0, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise ConfigurationError(f"the JWKS URL must be https, not {url!r}")
        self.url = url
        self._ctx: ssl.SSLContext = client_context(cafile_pems=cafile_pems)
        self.max_age = max_age
        self.min_refetch = min_refetch
        self.timeout = timeout
        self.clock = clock
        self._keys: list[VerificationKey] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        """One GET within ``timeout`` in all (a trickle holds the lock no longer) and :data:`MAX_JWKS_BYTES`."""
        try:
            async with httpx.AsyncClient(verify=self._ctx, timeout=self.timeout, trust_env=False) as client:
                answer = await fetch(client, "GET", self.url, {"Accept": "application/json"}, timeout=self.timeout,
                                     max_bytes=MAX_JWKS_BYTES)
            if answer.status != 200:
                raise ConfigurationError(f"HTTP {answer.status}")
            keys = _parse_jwks(json.loads(answer.body), f"the JWKS at {self.url}")
        except (TransportError, ValueError, RecursionError, ConfigurationError) as exc:  # ValueError: not JSON
            log.warning("cannot fetch the JWKS at %s: %s", self.url, exc)
            self._fetched_at = self.clock()  # do not hammer it
            return
        self._keys = keys
        self._fetched_at = self.clock()

    async def key(self, kid: str | None) -> VerificationKey | None:
        async with self._lock:
            now = self.clock()
            if self._fetched_at is None or now - self._fetched_at >= self.max_age:
                await self._fetch()
            found = _pick(self._keys, kid)
            if found is None and self._fetched_at is not None and now - self._fetched_at >= self.min_refetch:
                await self._fetch()
                found = _pick(self._keys, kid)
            return found


def jwks_source(spec: str, *, cafile_pems: list[bytes] | None = None) -> JwksSource:
    """A JWKS file path or an ``https://`` URL (``--jwt-keys``)."""
    if spec.lower().startswith(("https://", "http://")):
        return UrlJwks(spec, cafile_pems=cafile_pems)
    return FileJwks(spec)


# --------------------------------------------------------------------------- tokens


def bearer_token(request: UpgradeRequest) -> str | None:
    """The bearer token of an upgrade request: header, or ``access_token`` for WebSocket (RFC 6750).

    Raises :class:`InvalidAccessToken` (400) when the request uses both ways or
    another scheme.
    """
    header = request.authorization
    query = [v for n, v in urllib.parse.parse_qsl(request.query, keep_blank_values=True)
             if n == "access_token"]
    if query and request.kind != "websocket":
        raise InvalidAccessToken("the access_token query parameter is accepted on WebSocket upgrades only; "
                           "send Authorization: Bearer", status=400)
    if len(query) > 1 or (query and header is not None):
        raise InvalidAccessToken("the request carries more than one access token (RFC 6750 §2)", status=400)
    if query:
        return query[0] or None
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidAccessToken("the Authorization scheme must be Bearer")
    return value.strip() or None


_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "the token is not meant for this audience (aud)"),
    (jwt.InvalidIssuerError, "the token's issuer (iss) is not trusted"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.InvalidIssuedAtError, "the token's iat is not a valid time"),
    (jwt.DecodeError, "the token is malformed"),
)


class TokenAuthenticator:
    """Validates signed JWT access tokens at the upgrade (UPL-14); ``(sub, "AccessToken")``."""

    def __init__(self, keys: JwksSource, *, issuers: Sequence[str], audience: str,
                 algorithms: Sequence[str] = DEFAULT_ALGORITHMS, identity_claim: str = "sub",
                 leeway: float = 30.0, require: Sequence[str] = ("exp", "iss", "aud")) -> None:
        if not issuers or not all(issuers):
            raise ConfigurationError("give at least one trusted issuer (--jwt-issuer)")
        if not audience:
            raise ConfigurationError("give the audience the tokens must name (--jwt-audience)")
        bad = [a for a in algorithms if a == "none" or a.startswith("HS")
               or a not in jwt.algorithms.get_default_algorithms()]
        if bad or not algorithms:
            raise ConfigurationError(
                f"algorithms {', '.join(bad) or '(none)'} cannot be allowed: use public-key algorithms "
                f"such as {', '.join(DEFAULT_ALGORITHMS)}")
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ConfigurationError(f"the leeway must be between 0 and {MAX_LEEWAY:g} s, not {leeway:g}")
        self.keys = keys
        self.issuers = list(issuers)
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.identity_claim = identity_claim
        self.leeway = leeway
        self.require = sorted({"exp", *require, identity_claim})

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises :class:`InvalidAccessToken` with a fixed description."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidAccessToken("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidAccessToken("the token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidAccessToken("the token's algorithm is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidAccessToken("the token is malformed")
        key = await self.keys.key(kid)
        if key is None:
            raise InvalidAccessToken("the token's signing key (kid) is unknown")
        if alg not in key.algorithms:
            raise InvalidAccessToken("the token's algorithm does not fit its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.jwk.key, algorithms=[alg], audience=self.audience, issuer=self.issuers,
                leeway=self.leeway,
                options={"require": self.require, "verify_signature": True, "verify_exp": True,
                         "verify_nbf": True, "verify_iat": True, "verify_aud": True, "verify_iss": True})
        except jwt.MissingRequiredClaimError as exc:
            claim = exc.claim if exc.claim in self.require else "?"
            raise InvalidAccessToken(f"the token lacks the required claim {claim}") from None
        except jwt.PyJWTError as exc:
            text = next((msg for cls, msg in _ERRORS if isinstance(exc, cls)), "the token is invalid")
            raise InvalidAccessToken(text) from None
        identity = claims.get(self.identity_claim)
        if not isinstance(identity, str) or not identity.strip():
            raise InvalidAccessToken(f"the token's {self.identity_claim} claim is not a non-empty string")
        return claims

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        from ..runtime.cloud import UpgradeRejected

        try:
            token = bearer_token(request)
            if token is None:
                raise InvalidAccessToken("an access token is required", missing=True)
            claims = await self.verify(token)
        except InvalidAccessToken as exc:
            if exc.status != 401:
                raise UpgradeRejected(exc.status, exc.description) from None
            challenge = f'Bearer realm="{REALM}"'
            if not exc.missing:
                challenge += f', error="invalid_token", error_description="{exc.description}"'
            raise UpgradeRejected(401, f"invalid access token: {exc.description}"
                                  if not exc.missing else exc.description,
                                  headers=[("WWW-Authenticate", challenge)]) from None
        return str(claims[self.identity_claim]), "AccessToken"
