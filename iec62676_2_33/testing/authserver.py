"""Layer 4: a small OAuth2 authorization server for tests and the demo (UPL-14).

Not a mock: an ASGI application served over TLS by the library's own HTTP
server (:mod:`.httpd`), issuing signed JWT access tokens with the
client-credentials grant (RFC 6749 §4.4) and publishing its public key as a
JWK Set (RFC 7517), so the device's token
client (:mod:`iec62676_2_33.security.oauth`) and the cloud's validator
(:mod:`iec62676_2_33.security.jwt_auth`) are exercised against real HTTP,
real TLS and real signatures.

Endpoints::

    POST /token                                  grant_type=client_credentials; client_secret_basic,
                                                 client_secret_post or tls_client_auth → {"access_token",
                                                 "token_type": "Bearer", "expires_in"}; RFC 6749 §5.2 errors
    GET  /jwks.json, /.well-known/jwks.json      the public signing key (kid = RFC 7638 thumbprint)
    GET  /.well-known/oauth-authorization-server RFC 8414 metadata (issuer, token_endpoint, jwks_uri)

*tls_client_auth* (RFC 8705 §2.1, PKI method): a client registered with a
subject DN (``tls_subject_dn``, the ``tls_client_auth_subject_dn`` of RFC 8705
§2.1.2) authenticates with the certificate it presents in the TLS handshake:
the server asks every client for a certificate (``client_cas``; optional, so
the secret methods keep working without one), TLS verifies its chain, and the
token request — ``client_id`` in the form, no secret — is accepted when that
client's certificate subject equals the registered DN. The certificate reaches
the application through the ASGI TLS extension (:mod:`.asgi_handler`). The
metadata lists ``tls_client_auth`` only when some client can use it.

Tokens carry ``iss`` (the issuer), ``sub`` (the client's configured subject:
the device identity the cloud sees), ``aud``, ``iat``, ``nbf``, ``exp``,
``jti``, ``client_id`` and ``scope``; the algorithm follows the signing key
(RSA → RS256, P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA). Secrets are
compared in constant time; neither secrets nor tokens are logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..errors import ConfigurationError
from ..pki import load_key_pem
from ..runtime.http_server import bind_listen, parse_listen, serve_asgi, wait_event
from ..transport.contexts import server_context

__all__ = ["AuthServerApp", "AuthServerOptions", "OAuthClient", "parse_client", "parse_tls_client", "run_authserver"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
DEFAULT_AUDIENCE = "iec62676-uplink"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class OAuthClient:
    """A registered client: id, secret (empty: none) and the ``sub`` its tokens carry; with ``tls_subject_dn``
    (RFC 4514, e.g. ``CN=cam-7``) it may also authenticate by its TLS client certificate (tls_client_auth)."""

    client_id: str
    secret: str
    subject: str
    tls_subject_dn: str | None = None

    def __post_init__(self) -> None:
        if self.tls_subject_dn is not None:
            _name(self.tls_subject_dn)  # a malformed DN is a configuration error now, not a refusal later
        elif not self.secret:
            raise ConfigurationError(f"client {self.client_id!r} needs a secret or a TLS subject DN")

    def __repr__(self) -> str:
        return f"OAuthClient(client_id={self.client_id!r}, subject={self.subject!r})"


def parse_client(text: str) -> OAuthClient:
    """``ID:SECRET:SUBJECT`` (``--client``); the subject may contain colons."""
    client_id, sep1, rest = text.partition(":")
    secret, sep2, subject = rest.partition(":")
    if not (sep1 and sep2 and client_id and secret and subject):
        raise ConfigurationError("--client expects ID:SECRET:SUBJECT, e.g. device-3:s3cret:device-3")
    return OAuthClient(client_id, secret, subject)


def parse_tls_client(text: str) -> OAuthClient:
    """``ID:SUBJECT:DN`` (``--tls-client``): a tls_client_auth client; the DN (RFC 4514) may contain colons."""
    client_id, sep1, rest = text.partition(":")
    subject, sep2, dn = rest.partition(":")
    if not (sep1 and sep2 and client_id and subject and dn):
        raise ConfigurationError("--tls-client expects ID:SUBJECT:DN, e.g. cam-7:cam-7:CN=cam-7")
    return OAuthClient(client_id, "", subject, tls_subject_dn=dn)


def _name(dn: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(dn)
    except ValueError:
        raise ConfigurationError(f"{dn!r} is not an RFC 4514 distinguished name such as CN=cam-7") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ConfigurationError("the signing key must be RSA, EC P-256/P-384/P-521 or Ed25519")


def public_jwk(key: Any) -> dict[str, str]:
    """The public JWK of a private key, with ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    alg = _algorithm(key)
    impl = jwt.algorithms.get_default_algorithms()[alg]
    jwk: dict[str, str] = json.loads(impl.to_jwk(key.public_key()))
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    jwk.update(kid=_b64(hashlib.sha256(canonical).digest()), alg=alg, use="sig")
    return jwk


class AuthServerApp:
    """The ASGI application (see the module docstring)."""

    def __init__(self, signing_key: Any, clients: Iterable[OAuthClient], *, issuer: str,
                 audience: str = DEFAULT_AUDIENCE, lifetime: int = 300,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = signing_key
        self.algorithm = _algorithm(signing_key)
        self.jwk = public_jwk(signing_key)
        self.clients = {c.client_id: c for c in clients}
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.lifetime = lifetime
        self.clock = clock
        self.issued = 0

    # -- tokens ---------------------------------------------------------------
    def issue(self, client: OAuthClient) -> str:
        now = int(self.clock())
        claims = {"iss": self.issuer, "sub": client.subject, "aud": self.audience, "iat": now, "nbf": now,
                  "exp": now + self.lifetime, "jti": uuid.uuid4().hex, "client_id": client.client_id,
                  "scope": "uplink"}
        self.issued += 1
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"kid": self.jwk["kid"]})

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk]}

    def metadata(self) -> dict[str, Any]:
        methods = ["client_secret_basic", "client_secret_post"]
        if any(c.tls_subject_dn is not None for c in self.clients.values()):
            methods.append("tls_client_auth")
        return {"issuer": self.issuer, "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks.json", "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": methods,
                "token_endpoint_auth_signing_alg_values_supported": [self.algorithm]}

    def _tls_client(self, scope: Scope, form: Mapping[str, list[str]]) -> OAuthClient | None:
        """RFC 8705 §2.1: the form names the client, its verified TLS certificate's subject is its DN."""
        if len(form.get("client_id", [])) != 1 or "client_secret" in form:
            return None
        client = self.clients.get(form["client_id"][0])
        chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
        if client is None or client.tls_subject_dn is None or not chain:
            return None
        try:
            presented = x509.load_pem_x509_certificate(chain[0].encode("ascii")).subject
        except ValueError:
            return None
        return client if presented == _name(client.tls_subject_dn) else None

    def _client(self, headers: Mapping[str, str], form: Mapping[str, list[str]]) -> OAuthClient | None:
        client_id = secret = None
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                return None
            client_id, secret = urllib.parse.unquote(raw_id), urllib.parse.unquote(raw_secret)
        elif len(form.get("client_id", [])) == 1 and len(form.get("client_secret", [])) == 1:
            client_id, secret = form["client_id"][0], form["client_secret"][0]
        if client_id is None or secret is None:
            return None
        client = self.clients.get(client_id)
        expected = client.secret if client is not None and client.secret else "x" * max(1, len(secret))
        ok = hmac.compare_digest(expected.encode("utf-8"), secret.encode("utf-8"))
        return client if ok and client is not None and client.secret else None

    # -- ASGI -------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path in ("/jwks.json", "/.well-known/jwks.json"):
            await _json(send, 200, self.jwks(), cache="public, max-age=300")
        elif method == "GET" and path == "/.well-known/oauth-authorization-server":
            await _json(send, 200, self.metadata(), cache="public, max-age=300")
        elif path == "/token":
            if method != "POST":
                await _json(send, 405, {"error": "invalid_request", "error_description": "use POST"},
                            extra=[(b"allow", b"POST")])
                return
            await self._token(scope, receive, send)
        else:
            await _json(send, 404, {"error": "not_found"})

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _json(send, 413, {"error": "invalid_request", "error_description": "body too large"})
                return
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            await _json(send, 400, {"error": "invalid_request",
                                    "error_description": "the body must be application/x-www-form-urlencoded"})
            return
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            await _json(send, 400, {"error": "invalid_request", "error_description": "the body is not UTF-8"})
            return
        secret_sent = "authorization" in headers or "client_secret" in form
        client = self._client(headers, form) if secret_sent else self._tls_client(scope, form)
        if client is None:
            log.info("token request refused: unknown client, wrong secret or wrong certificate")
            await _json(send, 401, {"error": "invalid_client", "error_description": "client authentication failed"},
                        extra=[(b"www-authenticate", b'Basic realm="token"')])
            return
        if form.get("grant_type") != ["client_credentials"]:
            await _json(send, 400, {"error": "unsupported_grant_type",
                                    "error_description": "only client_credentials is supported"})
            return
        token = self.issue(client)
        log.info("issued an access token to client %r (sub %r, %d s)", client.client_id, client.subject,
                 self.lifetime)
        await _json(send, 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime,
                                "scope": "uplink"})


async def _json(send: Send, status: int, payload: Any, *, cache: str = "no-store",
                extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"cache-control", cache.encode()),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- process


@dataclass
class AuthServerOptions:
    listen: str
    cert: Path
    key: Path
    signing_key: Path
    clients: Sequence[OAuthClient]
    issuer: str | None = None
    audience: str = DEFAULT_AUDIENCE
    lifetime: int = 300
    #: CA certificates (PEM files) of the client certificates tls_client_auth accepts.
    client_cas: Sequence[Path] = ()


async def run_authserver(options: AuthServerOptions, stop: asyncio.Event,
                         announce: Callable[[str], None] = lambda _t: None,
                         ready: Callable[[AuthServerApp], None] | None = None) -> None:
    """Serve the authorization server over TLS until ``stop`` is set (``iec62676 authserver serve``)."""
    if not options.clients:
        raise ConfigurationError("give at least one --client ID:SECRET:SUBJECT or --tls-client ID:SUBJECT:DN")
    if not 10 <= options.lifetime <= 86400:
        raise ConfigurationError("--lifetime must be between 10 and 86400 seconds")
    if any(c.tls_subject_dn is not None for c in options.clients) and not options.client_cas:
        raise ConfigurationError("a client with a TLS subject DN (tls_client_auth) needs the CAs of client "
                                 "certificates (--client-ca)")
    signing_key = load_key_pem(options.signing_key)
    for path in (options.cert, options.key):
        if not Path(path).is_file():
            raise ConfigurationError(f"{path} does not exist: give the TLS certificate and key as PEM files")
    for path in options.client_cas:
        if not Path(path).is_file():
            raise ConfigurationError(f"{path} does not exist: give the client certificates' CA as a PEM file")
    context = server_context(Path(options.cert).read_bytes(), Path(options.key).read_bytes(),
                             client_ca_pems=[Path(p).read_bytes() for p in options.client_cas] or None,
                             alpn_protocols=["h2", "http/1.1"])
    host, port = parse_listen(options.listen)
    sock = bind_listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    issuer = options.issuer or f"https://{shown}:{bound_port}"
    app = AuthServerApp(signing_key, options.clients, issuer=issuer, audience=options.audience,
                        lifetime=options.lifetime)
    base = f"https://{shown}:{bound_port}"
    announce(f"authorization server on {base} (token endpoint {base}/token, JWKS {base}/jwks.json, "
             f"issuer {issuer}, audience {options.audience})")
    if ready is not None:
        ready(app)
    await serve_asgi(app, sock, lambda: wait_event(stop), ssl_context=context)
