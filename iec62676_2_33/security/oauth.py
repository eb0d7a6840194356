"""Layer 4 helper (device side): access tokens for the uplink from an OAuth2 authorization server (UPL-14).

With an ``AuthorizationServer`` in the uplink configuration (CFG-1) the device
obtains an access token with the OAuth2 *client-credentials* grant
(RFC 6749 §4.4) and sends it in the upgrade request (UPL-14):
``Authorization: Bearer …``, or — for ``wss`` addresses that carry an empty
``access_token`` query parameter — in that parameter (RFC 6750 §2.3, see
:mod:`iec62676_2_33.runtime.dial`).

* The authorization server configuration (token endpoint URL, client id and
  secret, optional CertPathValidationPolicyID) comes from the device store.
  The endpoint must be ``https``; its certificate is always verified, against
  the policy's trust anchors or the system store, with RFC 6125 host names
  (subjectAltName only) and TLS >= 1.2 — the same rules as the uplink.
  The client authenticates with HTTP Basic (``client_secret_basic``,
  RFC 6749 §2.3.1).
* A token is cached per authorization server configuration until shortly
  before it expires (``expires_in``; the smaller of ``refresh_margin`` and a
  fifth of its lifetime), so the token a connection attempt presents never is
  about to expire: the next attempt inside that margin fetches a new one. A
  changed configuration (URL, client, secret, policy) is never served from
  the old cache. Concurrent uplinks share one fetch.
* :meth:`AccessTokenProvider.refresh` drops the cached token and fetches a new
  one: the agent calls it once after a ``401`` at the upgrade.
* Every failure raises :class:`TokenError` (an
  :class:`~iec62676_2_33.errors.AuthenticationError`) whose message names
  the server and what failed (unreachable, certificate not trusted and why,
  ``invalid_client``, a malformed answer); the agent shows it in the uplink's
  ``Error`` (GetUplinks, CFG-2). Client secrets and tokens never reach a log
  or a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import jwt

from ..errors import AuthenticationError, ConfigurationError
from ..store import AuthServerConfig, DeviceStore
from ..transport.tls import client_context
from ..uplinkconfig import UplinkConfiguration

__all__ = ["AccessTokenProvider", "FetchedToken", "TokenError", "fetch_token"]

log = logging.getLogger(__name__)

#: Seconds a token without ``expires_in`` (and without a readable ``exp``) is reused.
DEFAULT_LIFETIME = 60.0


class TokenError(AuthenticationError):
    """No access token could be obtained; the message says from where and why (never a secret)."""


@dataclass(frozen=True)
class FetchedToken:
    """An access token and how long the server said it lives (seconds)."""

    value: str
    lifetime: float

    def __repr__(self) -> str:  # never show the token itself
        return f"FetchedToken(lifetime={self.lifetime:g})"


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _context(anchors: list[bytes] | None) -> ssl.SSLContext:
    return client_context(cafile_pems=anchors)


def token_endpoint(url: str) -> str:
    """Check a token endpoint URL (https, a host, no user info); returns ``https://host[:port]/path`` for messages.

    User info is refused so that no password can sit in the URL and reach a
    message, a log or GetUplinks' Error.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError("the token endpoint URL is malformed; give e.g. https://auth.example.com/token") \
            from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ConfigurationError("the token endpoint must be an https URL, e.g. https://auth.example.com/token")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("the token endpoint URL must not carry user info; the client id and secret "
                                 "are configured separately")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"https://{host}{f':{port}' if port else ''}{parts.path}"


async def fetch_token(cfg: AuthServerConfig, anchors: list[bytes] | None, *,
                      timeout: float = 10.0) -> FetchedToken:
    """One client-credentials grant at ``cfg.url`` (RFC 6749 §4.4), verified HTTPS only."""
    try:
        where = f"authorization server {token_endpoint(cfg.url)}"
    except ConfigurationError as exc:
        raise TokenError(str(exc)) from None
    auth = httpx.BasicAuth(urllib.parse.quote(cfg.client_id, safe=""),
                           urllib.parse.quote(cfg.client_secret, safe=""))
    try:
        async with httpx.AsyncClient(verify=_context(anchors), timeout=timeout, trust_env=False,
                                     follow_redirects=False) as client:
            response = await client.post(cfg.url, data={"grant_type": "client_credentials"}, auth=auth,
                                         headers={"Accept": "application/json"})
    except ConfigurationError:
        raise
    except (httpx.InvalidURL, ValueError) as exc:
        raise TokenError(f"{where}: the URL cannot be used: {_short(str(exc) or type(exc).__name__)}") from None
    except httpx.HTTPError as exc:
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise TokenError(f"{where}: its TLS certificate is not trusted: "
                             f"{_short(cause.verify_message or cause.reason or 'verify failed')}") from None
        if cause is not None:
            raise TokenError(f"{where}: TLS failed: {_short(cause.reason or str(cause))}") from None
        if isinstance(exc, httpx.TimeoutException):
            raise TokenError(f"{where} did not answer within {timeout:g} s") from None
        raise TokenError(f"{where} cannot be reached: {_short(str(exc) or type(exc).__name__)}") from None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if response.status_code != 200:
        detail = ""
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            detail = f": {_short(body['error'], 60)}"
            if isinstance(body.get("error_description"), str):
                detail += f" ({_short(body['error_description'])})"
        raise TokenError(f"{where} refused the client credentials of {cfg.client_id!r}: "
                         f"HTTP {response.status_code}{detail}")
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise TokenError(f"{where} answered without an access_token (RFC 6749 §5.1)")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"{where} issued a token of type {_short(str(token_type), 30)!r}, not Bearer")
    token = body["access_token"]
    if any(ch in token for ch in " \r\n\t,\"\\") or not token.isascii():
        raise TokenError(f"{where} issued an access token with characters a header cannot carry")
    lifetime = body.get("expires_in")
    if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) and lifetime > 0:
        return FetchedToken(token, float(lifetime))
    return FetchedToken(token, _jwt_lifetime(token))


def _jwt_lifetime(token: str) -> float:
    """Seconds until the ``exp`` of a JWT (read, not verified: the cloud verifies it); else the default."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        exp = float(claims["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return DEFAULT_LIFETIME
    return max(0.0, exp - time.time())


@dataclass
class _Cached:
    token: str
    refresh_at: float
    fingerprint: str


def _fingerprint(cfg: AuthServerConfig, anchors: list[bytes] | None) -> str:
    digest = hashlib.sha256()
    for part in (cfg.url, cfg.client_id, cfg.client_secret, cfg.policy_id or ""):
        digest.update(part.encode("utf-8") + b"\0")
    for pem in anchors or ():
        digest.update(pem)
    return digest.hexdigest()


class AccessTokenProvider:
    """Tokens for the uplinks of one device, from the store's authorization servers (UPL-14).

    Plug :meth:`auth_headers` and :meth:`refresh` into the agent
    (``UplinkAgent(auth_headers=…, auth_refresh=…)``).
    """

    def __init__(self, store: DeviceStore, *, refresh_margin: float = 60.0, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.refresh_margin = refresh_margin
        self.timeout = timeout
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    async def auth_headers(self, cfg: UplinkConfiguration) -> list[tuple[str, str]]:
        """``Authorization: Bearer …`` for an uplink with an AuthorizationServer, else nothing."""
        if cfg.authorization_server is None:
            return []
        return [("Authorization", f"Bearer {await self.token(cfg.authorization_server)}")]

    async def refresh(self, cfg: UplinkConfiguration) -> list[tuple[str, str]]:
        """Drop the cached token and fetch a new one (after a 401 at the upgrade)."""
        if cfg.authorization_server is None:
            return []
        return [("Authorization",
                 f"Bearer {await self.token(cfg.authorization_server, force=True)}")]

    async def token(self, as_token: str, *, force: bool = False) -> str:
        """A valid access token from the authorization server configuration *as_token*."""
        loop = asyncio.get_running_loop()
        cfg = await loop.run_in_executor(None, self.store.get_auth_server, as_token)
        if cfg is None:
            raise TokenError(f"authorization server configuration {as_token!r} is no longer stored")
        anchors: list[bytes] | None = None
        if cfg.policy_id is not None:
            anchors = await loop.run_in_executor(None, self.store.get_policy, cfg.policy_id)
            if anchors is None:
                raise TokenError(f"CertPathValidationPolicyID {cfg.policy_id!r} of authorization server "
                                 f"configuration {as_token!r} is no longer stored")
        fingerprint = _fingerprint(cfg, anchors)
        lock = self._locks.setdefault(as_token, asyncio.Lock())
        stale = self._cache.get(as_token) if force else None
        async with lock:
            cached = self._cache.get(as_token)
            fresh = (cached is not None and cached.fingerprint == fingerprint
                     and self.clock() < cached.refresh_at)
            if fresh and cached is not None and not (force and cached is stale):
                return cached.token
            fetched = await fetch_token(cfg, anchors, timeout=self.timeout)
            self.fetches += 1
            now = self.clock()
            margin = min(self.refresh_margin, fetched.lifetime / 5)
            self._cache[as_token] = _Cached(token=fetched.value,
                                            refresh_at=now + fetched.lifetime - margin,
                                            fingerprint=fingerprint)
            log.info("access token for %r obtained from %s (valid %.0f s)", as_token,
                     token_endpoint(cfg.url), fetched.lifetime)
            return fetched.value
