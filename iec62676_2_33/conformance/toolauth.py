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

The device is told about the server through its Security service
(CreateAuthorizationServerConfiguration, by the token variant of
:func:`~iec62676_2_33.enroll.enroll`), with the token endpoint itself as
ServerUri, so no RFC 8414 discovery is needed: a device that only knows token
endpoints passes too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from ..enroll import TokenClient
from ..pki import make_leaf
from ..security.jwt_auth import StaticJwks, TokenAuthenticator
from ..testing.authserver import AuthServerApp, OAuthClient
from ..transport.contexts import server_context
from .device_session import ToolPki
from .toolcloud import Endpoint, ToolCloud

#: The audience the tool's tokens name and its endpoint requires.
AUDIENCE = "iec62676-conformance"
#: Seconds a token lives (the device fetches a new one before it runs out).
LIFETIME = 600


@dataclass(frozen=True)
class TokenWorld:
    """The running authorization server and the endpoint that accepts its tokens."""

    app: AuthServerApp
    client: TokenClient  # what the device is configured with
    subject: str  # the identity the tokens carry (``sub``): the device's name on the token endpoint
    endpoint: Endpoint

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
    authenticator = TokenAuthenticator(StaticJwks(app.jwks(), where="the tool's signing key"), issuers=[issuer],
                                       audience=AUDIENCE)
    server = make_leaf(pki.ca, "conformance cloud (access tokens)", kind="server", sans=[host])
    endpoint = cloud.add_endpoint("access token", pki.context(server, require_client_cert=False),
                                  authenticator=authenticator)
    client = TokenClient(server_uri=f"{issuer}/token", client_id=subject, client_secret=secret)
    return TokenWorld(app, client, subject, endpoint)
