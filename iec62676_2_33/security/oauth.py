"""Layer 4 helper (device side): access tokens for the uplink from an OAuth2 authorization server (UPL-14).

With an ``AuthorizationServer`` in the uplink configuration (CFG-1) the device
obtains an access token with the OAuth2 *client-credentials* grant
(RFC 6749 §4.4) and sends it in the upgrade request (UPL-14):
``Authorization: Bearer …``, or — for ``wss`` addresses that carry an empty
``access_token`` query parameter — in that parameter (RFC 6750 §2.3, see
:mod:`iec62676_2_33.runtime.dial`).

* The authorization server configuration comes from the device store
  (PROV-3): ServerUri, client id and secret, optional
  CertPathValidationPolicyID, and the Security service's details (client
  authentication method, Scope, CertificateID for ``tls_client_auth``).
* ServerUri names the RFC 8414 metadata (what the Security service's
  ``ServerUri`` means): a URL whose path holds ``/.well-known/`` *is* the
  metadata document (``…/.well-known/oauth-authorization-server[/path]``,
  RFC 8414 §3.1, or OpenID's ``…/.well-known/openid-configuration``); a URL
  without a path is the issuer, whose metadata sits at
  ``/.well-known/oauth-authorization-server`` (RFC 8414 §3). Any other URL is
  the token endpoint itself (what ``device authserver add --url`` stores).
  The metadata document is read with a size budget (:data:`MAX_METADATA_BYTES`)
  inside the request's deadline; its ``issuer`` must be the issuer the URL
  was derived from (RFC 8414 §3.3), its ``token_endpoint`` passes the same URL
  rules as a configured one, and a ``token_endpoint_auth_methods_supported``
  that omits the configured method is refused before any secret is sent.
* Every URL must be ``https``; certificates are always verified, against
  the policy's trust anchors or the system store, with RFC 6125 host names
  (subjectAltName only) and TLS >= 1.2 — the same rules as the uplink. Plain
  ``http`` to a loopback address is possible only with the explicit
  ``allow_loopback_http`` opt-in (tests of the discovery itself).
* Client authentication is the configured one (RFC 6749 §2.3.1, RFC 8705
  §2.1): ``client_secret_basic`` (HTTP Basic, the default),
  ``client_secret_post`` (id and secret in the form) or ``tls_client_auth``
  (the keystore certificate named by CertificateID as TLS client certificate,
  the id in the form; the metadata's ``mtls_endpoint_aliases`` are honoured).
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
from ..store import AuthServerConfig, AuthServerDetails, DeviceStore
from ..transport.contexts import client_context
from ..uplinkconfig import UplinkConfiguration

__all__ = ["AccessTokenProvider", "Discovery", "FetchedToken", "TokenError", "discovery", "fetch_token",
           "token_endpoint"]

log = logging.getLogger(__name__)

#: Seconds a token without ``expires_in`` (and without a readable ``exp``) is reused.
DEFAULT_LIFETIME = 60.0
#: A lifetime at or over this (a year), infinite or not a number is not believed: DEFAULT_LIFETIME instead.
MAX_LIFETIME = 366 * 86400.0
#: RFC 8414 §3: the well-known path of an authorization server's metadata.
METADATA_PATH = "/.well-known/oauth-authorization-server"
#: Budget of a metadata document and of a token response (ours are a few hundred bytes).
MAX_METADATA_BYTES = 64 * 1024
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


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


def token_endpoint(url: str, *, allow_loopback_http: bool = False) -> str:
    """Check an authorization server URL (https, a host, no user info); returns ``https://host[:port]/path`` for
    messages. ``allow_loopback_http`` also lets ``http`` to a loopback host pass.

    User info is refused so that no password can sit in the URL and reach a
    message, a log or GetUplinks' Error.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError("the token endpoint URL is malformed; give e.g. https://auth.example.com/token") \
            from None
    scheme = parts.scheme.lower()
    plain_ok = allow_loopback_http and scheme == "http" and parts.hostname in _LOOPBACK
    if (scheme != "https" and not plain_ok) or not parts.hostname:
        raise ConfigurationError("the token endpoint must be an https URL, e.g. https://auth.example.com/token")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("the token endpoint URL must not carry user info; the client id and secret "
                                 "are configured separately")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}{f':{port}' if port else ''}{parts.path}"


@dataclass(frozen=True)
class Discovery:
    """Where an authorization server's RFC 8414 metadata is, and the ``issuer`` it must name."""

    metadata_url: str
    issuer: str


def discovery(server_uri: str) -> Discovery | None:
    """The metadata location of a ServerUri (see the module docstring); None when it is a token endpoint."""
    parts = urllib.parse.urlsplit(server_uri)
    origin = f"{parts.scheme}://{parts.netloc}"
    if parts.path in ("", "/"):
        return Discovery(origin + METADATA_PATH, origin)
    before, sep, after = parts.path.partition("/.well-known/")
    if not sep:
        return None
    suffix = after.partition("/")[2]  # RFC 8414 §3.1: the issuer's path follows the well-known name
    return Discovery(server_uri, origin + before + (f"/{suffix}" if suffix else ""))


async def _read(client: httpx.AsyncClient, where: str, timeout: float, method: str, url: str,
                **kwargs: object) -> tuple[int, object]:
    """One request; (status, JSON body or None), the body read within :data:`MAX_METADATA_BYTES`."""
    try:
        async with client.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_METADATA_BYTES:
                    raise TokenError(f"{where} answered with more than {MAX_METADATA_BYTES} bytes")
            status = response.status_code
    except (httpx.InvalidURL, ValueError) as exc:
        raise TokenError(f"{where}: the URL cannot be used: {_short(str(exc) or type(exc).__name__)}") from None
    except (httpx.HTTPError, OSError) as exc:  # a TLS alert after the handshake can surface as a bare SSLError
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
        return status, json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an integer of thousands of digits, deep nesting
        return status, None


async def _discover(client: httpx.AsyncClient, found: Discovery, method: str, timeout: float,
                    allow_loopback_http: bool) -> str:
    """The token endpoint from the RFC 8414 metadata at ``found`` (checked as the module docstring says)."""
    where = f"authorization server metadata {token_endpoint(found.metadata_url, allow_loopback_http=allow_loopback_http)}"
    status, meta = await _read(client, where, timeout, "GET", found.metadata_url,
                               headers={"Accept": "application/json"})
    if status != 200 or not isinstance(meta, dict):
        raise TokenError(f"{where}: HTTP {status}{'' if status != 200 else ', not a JSON object'} (RFC 8414 §3.2)")
    if meta.get("issuer") != found.issuer:
        raise TokenError(f"{where} names issuer {_short(str(meta.get('issuer')), 100)!r}, not {found.issuer!r} "
                         "(RFC 8414 §3.3)")
    endpoint = meta.get("token_endpoint")
    aliases = meta.get("mtls_endpoint_aliases")
    if method == "tls_client_auth" and isinstance(aliases, dict) and "token_endpoint" in aliases:
        endpoint = aliases["token_endpoint"]  # RFC 8705 §5
    if not isinstance(endpoint, str):
        raise TokenError(f"{where} has no token_endpoint (RFC 8414 §2)")
    methods = meta.get("token_endpoint_auth_methods_supported")
    if isinstance(methods, list) and method not in methods:
        raise TokenError(f"{where}: the server does not support client authentication {method!r} "
                         f"(it lists {_short(' '.join(map(str, methods)), 100)})")
    try:
        token_endpoint(endpoint, allow_loopback_http=allow_loopback_http)
    except ConfigurationError as exc:
        raise TokenError(f"{where}: its token_endpoint: {exc}") from None
    return endpoint


async def fetch_token(cfg: AuthServerConfig, anchors: list[bytes] | None, *, timeout: float = 10.0,
                      details: AuthServerDetails | None = None, client_cert: tuple[bytes, bytes] | None = None,
                      allow_loopback_http: bool = False) -> FetchedToken:
    """One client-credentials grant (RFC 6749 §4.4) from the server ``cfg.url`` names, after RFC 8414
    discovery where it names metadata; verified HTTPS only, everything within ``timeout`` seconds.

    ``details`` gives the client authentication method and scope (default ``client_secret_basic``);
    ``client_cert`` (certificate chain PEM, private key PEM) is the ``tls_client_auth`` credential.
    """
    method = (details.client_auth if details is not None else None) or "client_secret_basic"
    try:
        where = f"authorization server {token_endpoint(cfg.url, allow_loopback_http=allow_loopback_http)}"
    except ConfigurationError as exc:
        raise TokenError(str(exc)) from None
    if method == "tls_client_auth" and client_cert is None:
        raise TokenError(f"{where}: tls_client_auth needs a keystore certificate with a private key")
    form = {"grant_type": "client_credentials"}
    if details is not None and details.scope:
        form["scope"] = details.scope
    auth = None
    if method == "client_secret_basic":
        auth = httpx.BasicAuth(urllib.parse.quote(cfg.client_id, safe=""),
                               urllib.parse.quote(cfg.client_secret, safe=""))
    elif method == "client_secret_post":
        form |= {"client_id": cfg.client_id, "client_secret": cfg.client_secret}
    else:
        form["client_id"] = cfg.client_id
    cert_pem, key_pem = client_cert or (None, None)
    try:
        context = client_context(cafile_pems=anchors, certfile_pem=cert_pem, keyfile_pem=key_pem)
        async with asyncio.timeout(timeout), httpx.AsyncClient(verify=context, timeout=timeout, trust_env=False,
                                                                 follow_redirects=False) as client:
            endpoint = cfg.url
            found = discovery(cfg.url)
            if found is not None:
                endpoint = await _discover(client, found, method, timeout, allow_loopback_http)
                where = f"authorization server {token_endpoint(endpoint, allow_loopback_http=allow_loopback_http)}"
            status, body = await _read(client, where, timeout, "POST", endpoint, data=form, auth=auth,
                                       headers={"Accept": "application/json"})
    except TimeoutError:
        raise TokenError(f"{where} did not answer within {timeout:g} s") from None
    if status != 200:
        detail = ""
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            detail = f": {_short(body['error'], 60)}"
            if isinstance(body.get("error_description"), str):
                detail += f" ({_short(body['error_description'])})"
        raise TokenError(f"{where} refused the client credentials of {cfg.client_id!r}: HTTP {status}{detail}")
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise TokenError(f"{where} answered without an access_token (RFC 6749 §5.1)")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"{where} issued a token of type {_short(str(token_type), 30)!r}, not Bearer")
    token = body["access_token"]
    if any(ch in token for ch in " \r\n\t,\"\\") or not token.isascii():
        raise TokenError(f"{where} issued an access token with characters a header cannot carry")
    lifetime = body.get("expires_in")
    if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) and 0 < lifetime < MAX_LIFETIME:
        return FetchedToken(token, float(lifetime))
    return FetchedToken(token, _jwt_lifetime(token))


def _jwt_lifetime(token: str) -> float:
    """Seconds until the ``exp`` of a JWT (read, not verified: the cloud verifies it); else the default."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        left = float(claims["exp"]) - time.time()
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError, RecursionError):
        return DEFAULT_LIFETIME
    return max(0.0, left) if left < MAX_LIFETIME else DEFAULT_LIFETIME  # NaN and infinity too


@dataclass
class _Cached:
    token: str
    refresh_at: float
    fingerprint: str


def _fingerprint(cfg: AuthServerConfig, anchors: list[bytes] | None, details: AuthServerDetails | None,
                 client_cert: tuple[bytes, bytes] | None) -> str:
    digest = hashlib.sha256()
    described = () if details is None else (details.client_auth or "", details.scope or "",
                                            details.certificate_id or "")
    for part in (cfg.url, cfg.client_id, cfg.client_secret, cfg.policy_id or "", *described):
        digest.update(part.encode("utf-8") + b"\0")
    for pem in [*(anchors or ()), *(client_cert or ())]:
        digest.update(pem + b"\0")
    return digest.hexdigest()


class AccessTokenProvider:
    """Tokens for the uplinks of one device, from the store's authorization servers (UPL-14).

    Plug :meth:`auth_headers` and :meth:`refresh` into the agent
    (``UplinkAgent(auth_headers=…, auth_refresh=…)``).
    """

    def __init__(self, store: DeviceStore, *, refresh_margin: float = 60.0, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, allow_loopback_http: bool = False) -> None:
        self.store = store
        self.allow_loopback_http = allow_loopback_http
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
        details = await loop.run_in_executor(None, self.store.auth_server_details, as_token)
        client_cert = None
        if details is not None and details.client_auth == "tls_client_auth" and details.certificate_id:
            client_cert = await loop.run_in_executor(None, self.store.get_certificate, details.certificate_id)
            if client_cert is None:
                raise TokenError(f"CertificateID {details.certificate_id!r} of authorization server "
                                 f"configuration {as_token!r} is no longer stored with a private key")
        fingerprint = _fingerprint(cfg, anchors, details, client_cert)
        lock = self._locks.setdefault(as_token, asyncio.Lock())
        stale = self._cache.get(as_token) if force else None
        async with lock:
            cached = self._cache.get(as_token)
            fresh = (cached is not None and cached.fingerprint == fingerprint
                     and self.clock() < cached.refresh_at)
            if fresh and cached is not None and not (force and cached is stale):
                return cached.token
            fetched = await fetch_token(cfg, anchors, timeout=self.timeout, details=details, client_cert=client_cert,
                                        allow_loopback_http=self.allow_loopback_http)
            self.fetches += 1
            now = self.clock()
            margin = min(self.refresh_margin, fetched.lifetime / 5)
            self._cache[as_token] = _Cached(token=fetched.value,
                                            refresh_at=now + fetched.lifetime - margin,
                                            fingerprint=fingerprint)
            log.info("access token for %r obtained from %s (valid %.0f s)", as_token,
                     token_endpoint(cfg.url, allow_loopback_http=self.allow_loopback_http), fetched.lifetime)
            return fetched.value
