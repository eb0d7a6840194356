"""Conformance kit: the tool's OAuth2 authorization server and the cloud endpoint that takes its tokens
(UPL-14, PROV-3).

The access-token variant of the uplink needs an authorization server the
device trusts and a cloud that validates what it issues. The tool brings
both, made for the run:

* the library's own authorization server application
  (:class:`~iec62676_2_33.testing.authserver.AuthServerApp`: client-credentials
  grant, JWTs signed with a P-256 key made for the run) served over TLS on the
  tool cloud's loop, with a server certificate from the tool's CA (so the trust
  policy the device already got for the cloud also covers it) and one
  registered client whose secret is random and never shown;
* a second endpoint of the tool's cloud that asks for no client certificate
  and authenticates the upgrade's ``Authorization: Bearer`` token with
  :class:`~iec62676_2_33.security.jwt_auth.TokenAuthenticator` against that
  server's public key, held in memory (no key-set fetch).

The endpoint's authenticator is a :class:`TokenGate`: it notes every token
presented (a short fingerprint, never the token) with how many tokens the
server had issued by then, and can *revoke* the next valid token it sees:
that upgrade is answered ``401`` with ``WWW-Authenticate: Bearer
error="invalid_token"`` (RFC 6750 §3.1) and the token stays refused, so a
device must fetch a new one to get in (``EXT-TOKEN-REFETCH``).

The device is told about the server through its Security service
(CreateAuthorizationServerConfiguration, by the token variant of
:func:`~iec62676_2_33.enroll.enroll`), with the token endpoint itself as
ServerUri, so no RFC 8414 discovery is needed: a device that only knows token
endpoints passes too.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from ..enroll import TokenClient
from ..errors import Iec62676Error
from ..pki import make_leaf
from ..runtime.cloud import UpgradeRejected
from ..sansio.upgrade import UpgradeRequest
from ..security.jwt_auth import StaticJwks, TokenAuthenticator, bearer_token
from ..testing.authserver import AuthServerApp, OAuthClient
from ..transport.base import ByteStream
from ..transport.contexts import server_context
from .device_session import ToolPki
from .toolcloud import Endpoint, ToolCloud

#: The audience the tool's tokens name and its endpoint requires.
AUDIENCE = "iec62676-conformance"
#: Seconds a token lives (the device fetches a new one before it runs out).
LIFETIME = 600


#: Token presentations a gate remembers.
KEEP_PRESENTED = 200


@dataclass(frozen=True)
class Presented:
    """One upgrade that carried a token: when, which (fingerprint), the server's issue count then, the outcome."""

    at: float
    fingerprint: str
    issued: int
    outcome: str  # "accepted", "revoked now", "revoked earlier", "invalid"


@dataclass
class TokenGate:
    """The token endpoint's authenticator: the tokens presented, and the revocation of the next valid one."""

    inner: TokenAuthenticator
    app: AuthServerApp
    revoke_next: bool = False
    presented: list[Presented] = field(default_factory=list)
    _revoked: set[str] = field(default_factory=set)

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        try:
            token = bearer_token(request)
        except Iec62676Error:
            token = None
        if token is None:
            return await self.inner.authenticate(stream, request)  # refused there, with its reason
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
        if fingerprint in self._revoked:
            self._note(fingerprint, "revoked earlier")
            raise _invalid("the conformance tool revoked this access token")
        try:
            result = await self.inner.authenticate(stream, request)
        except UpgradeRejected:
            self._note(fingerprint, "invalid")
            raise
        if self.revoke_next:
            self.revoke_next = False
            self._revoked.add(fingerprint)
            self._note(fingerprint, "revoked now")
            raise _invalid("the conformance tool revoked this access token")
        self._note(fingerprint, "accepted")
        return result

    def _note(self, fingerprint: str, outcome: str) -> None:
        if len(self.presented) < KEEP_PRESENTED:
            self.presented.append(Presented(time.monotonic(), fingerprint, self.app.issued, outcome))


def _invalid(description: str) -> UpgradeRejected:
    return UpgradeRejected(401, f"invalid access token: {description}", headers=[(
        "WWW-Authenticate", (f'Bearer realm="iec62676-conformance", error="invalid_token", '
                             f'error_description="{description}"'))])


@dataclass(frozen=True)
class TokenWorld:
    """The running authorization server and the endpoint that accepts its tokens."""

    app: AuthServerApp
    client: TokenClient  # what the device is configured with
    subject: str  # the identity the tokens carry (``sub``): the device's name on the token endpoint
    endpoint: Endpoint
    gate: TokenGate

    @property
    def issued(self) -> int:
        """How many tokens the server issued so far."""
        return self.app.issued


def start_token_world(cloud: ToolCloud, pki: ToolPki, identity: str) -> TokenWorld:
    """Serve an authorization server for ``identity`` and add the token endpoint to ``cloud``."""
    host = pki.host
    subject = f"{identity}-token"
    secret = secrets.token_urlsafe(24)
    sock = cloud.bind()
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    issuer = f"https://{shown}:{port}"
    app = AuthServerApp(ec.generate_private_key(ec.SECP256R1()), [OAuthClient(subject, secret, subject)],
                        issuer=issuer, audience=AUDIENCE, lifetime=LIFETIME)
    leaf = make_leaf(pki.ca, "conformance authorization server", kind="server", sans=[host])
    cloud.serve_https(app, sock, server_context(leaf.cert_pem(), leaf.key_pem(), alpn_protocols=["http/1.1"]))
    gate = TokenGate(TokenAuthenticator(StaticJwks(app.jwks(), where="the tool's signing key"), issuers=[issuer],
                                        audience=AUDIENCE), app)
    server = make_leaf(pki.ca, "conformance cloud (access tokens)", kind="server", sans=[host])
    endpoint = cloud.add_endpoint("access token", pki.context(server, require_client_cert=False),
                                  authenticator=gate)
    client = TokenClient(server_uri=f"{issuer}/token", client_id=subject, client_secret=secret)
    return TokenWorld(app, client, subject, endpoint, gate)
