"""UPL-14, UPL-4, UPL-13, CFG-3, CFG-1: access-token authentication of the uplink, end to end.

A real authorization server (:mod:`iec62676_2_33.testing.authserver` on
the library's HTTP server, loopback TLS, RSA-signed JWTs, JWKS over HTTPS) issues tokens with
the client-credentials grant; the device agent fetches them over verified
HTTPS and sends them in the upgrade (header, or the ``access_token`` query
parameter for wss); the cloud validates them with PyJWT against the JWKS URL.
Also: the 401-refetch-once rule, token errors in the uplink's Error
(GetUplinks), mTLS and tokens on one listener, the negative token matrix
(each refused with 401 before any HTTP/2 byte) and a log capture proving no
token and no client secret is ever logged. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_websocket_e2e import (
    BOUND,
    Pki,
    add_uplink,
    capabilities_over_uplink,
    running_cloud,
    running_device,
    seed_store,
)

from iec62676_2_33 import pki
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import (
    EitherAuthenticator,
    MtlsAuthenticator,
    UpgradeRejected,
)
from iec62676_2_33.sansio.upgrade import UpgradeRequest
from iec62676_2_33.security.jwt_auth import StaticJwks, TokenAuthenticator, UrlJwks
from iec62676_2_33.security.oauth import AccessTokenProvider
from iec62676_2_33.store import AuthServerConfig, DeviceStore
from iec62676_2_33.testing.authserver import (
    AuthServerApp,
    AuthServerOptions,
    OAuthClient,
    public_jwk,
    run_authserver,
)
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.contexts import client_context
from iec62676_2_33.transport.tls import connect_tls

AUDIENCE = "iec62676-uplink"
SECRET = "s3cret-of-device-3-XYZZY"


@dataclass
class AuthServer:
    material: Pki
    base: str
    app: AuthServerApp
    signing_key: rsa.RSAPrivateKey

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    @property
    def issuer(self) -> str:
        return self.app.issuer

    def authenticator(self) -> TokenAuthenticator:
        return TokenAuthenticator(UrlJwks(f"{self.base}/jwks.json", cafile_pems=[self.material.ca.cert_pem()]),
                                  issuers=[self.issuer], audience=AUDIENCE)


@pytest.fixture
def authserver(tmp_path: Path) -> Iterator[AuthServer]:
    material = Pki()
    leaf = pki.make_leaf(material.ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1"])
    cert, key = leaf.write(tmp_path, "authserver")
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_path = tmp_path / "signing.key"
    signing_path.write_bytes(signing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    options = AuthServerOptions(listen="127.0.0.1:0", cert=cert, key=key, signing_key=signing_path,
                                clients=[OAuthClient("device-3", SECRET, "device-3"),
                                         OAuthClient("device-4", "other-secret-4", "device-4")],
                                audience=AUDIENCE)
    apps: list[AuthServerApp] = []
    service = BackgroundService(lambda stop, announce: run_authserver(options, stop, announce, ready=apps.append),
                                name="authserver").start()
    try:
        match = re.search(r"on (https://\S+) ", service.messages[0])
        assert match, service.messages
        base = match.group(1).replace("127.0.0.1", "localhost")
        yield AuthServer(material, base, apps[0], signing)
    finally:
        service.stop()


def token_store(data: Path, server: AuthServer, *, secret: str = SECRET, policy: str | None = "policy-1",
                client: str = "device-3") -> DeviceStore:
    store = seed_store(data, server.material)
    store.put_auth_server(AuthServerConfig(token="as-1", url=server.token_url, client_id=client,
                                           client_secret=secret, policy_id=policy))
    return store


class Recording:
    """Wraps an authenticator and records what each upgrade request carried."""

    def __init__(self, inner: object, *, refuse_first: int = 0) -> None:
        self.inner = inner
        self.refuse = refuse_first
        self.requests: list[UpgradeRequest] = []

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        self.requests.append(request)
        if self.refuse > 0:
            self.refuse -= 1
            raise UpgradeRejected(401, "token revoked", headers=[("WWW-Authenticate", "Bearer")])
        return await self.inner.authenticate(stream, request)  # type: ignore[attr-defined,no-any-return]

    def tokens(self) -> list[str]:
        out = []
        for r in self.requests:
            if r.authorization:
                out.append(r.authorization.split(" ", 1)[1])
            out += re.findall(r"access_token=([^&]+)", r.query)
        return out


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("scheme", ["wss", "https"])
async def test_bearer_token_end_to_end_upl_14(authserver: AuthServer, tmp_path: Path, scheme: str) -> None:
    """UPL-14 (and UPL-4 for wss): token from the authorization server, Bearer in the upgrade, sub = device."""
    auth = Recording(authserver.authenticator())
    async with running_cloud(authserver.material.server_ctx(client_certs="none"), auth) as cloud:
        store = token_store(tmp_path / "d", authserver)
        remote = cloud.url(scheme)
        add_uplink(store, remote, cert=None, auth_server="as-1")
        async with running_device(store) as device:
            info = await cloud.listener.wait_for("device-3", timeout=BOUND)
            assert info.auth_mode == "AccessToken"
            caps = await capabilities_over_uplink(cloud.listener, "device-3")
            assert "AccessToken" in caps["AuthorizationModes"].split()
            assert device.agent.status(remote) == ("Connected", None)
    request = auth.requests[0]
    assert request.kind == ("websocket" if scheme == "wss" else "h2c-reverse")
    assert request.authorization is not None and request.authorization.startswith("Bearer ")
    assert "access_token" not in request.query
    assert authserver.app.issued == 1


async def test_wss_access_token_query_parameter_rfc_6750_upl_4(authserver: AuthServer, tmp_path: Path) -> None:
    """UPL-4, RFC 6750 §2.3: an empty access_token parameter in the wss RemoteAddress carries the token."""
    auth = Recording(authserver.authenticator())
    async with running_cloud(authserver.material.server_ctx(client_certs="none"), auth) as cloud:
        store = token_store(tmp_path / "d", authserver)
        remote = cloud.url("wss", "/uplink?site=7&access_token=")
        add_uplink(store, remote, cert=None, auth_server="as-1")
        async with running_device(store) as device:
            await cloud.listener.wait_for("device-3", timeout=BOUND)
            stored = device.context.uplinks()[0]
            assert stored.remote_address == remote  # the configuration never holds the token
    request = auth.requests[0]
    assert request.authorization is None
    assert request.query.startswith("site=7&access_token=")
    assert len(auth.tokens()[0]) > 100


async def test_mtls_and_tokens_on_one_listener_upl_13_upl_14(authserver: AuthServer, tmp_path: Path) -> None:
    """UPL-13 + UPL-14: one listener, client certificates optional: an mTLS device and a token device."""
    either = EitherAuthenticator(MtlsAuthenticator(), authserver.authenticator())
    async with running_cloud(authserver.material.server_ctx(client_certs="optional"), either) as cloud:
        mtls_store = seed_store(tmp_path / "d1", authserver.material)
        add_uplink(mtls_store, cloud.url("https"))
        token_st = token_store(tmp_path / "d3", authserver)
        add_uplink(token_st, cloud.url("wss"), cert=None, auth_server="as-1")
        async with running_device(mtls_store), running_device(token_st):
            one = await cloud.listener.wait_for("device-1", timeout=BOUND)
            three = await cloud.listener.wait_for("device-3", timeout=BOUND)
            assert (one.auth_mode, three.auth_mode) == ("mTLS", "AccessToken")


async def test_either_authenticator_without_credentials_is_401_upl_14(authserver: AuthServer) -> None:
    """UPL-13/UPL-14: neither a certificate nor a token → 401 with a Bearer challenge, before any HTTP/2 byte."""
    either = EitherAuthenticator(MtlsAuthenticator(), authserver.authenticator())
    async with running_cloud(authserver.material.server_ctx(client_certs="optional"), either) as cloud:
        answer = await raw_upgrade(authserver.material, cloud.port, None, kind="h2c-reverse")
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"a client certificate or an access token is required" in answer
    assert b"PRI * HTTP/2.0" not in answer


async def test_401_at_upgrade_refetches_token_once_upl_14(authserver: AuthServer, tmp_path: Path) -> None:
    """UPL-14: a 401 at the upgrade fetches a new token once and connects in the same attempt."""
    auth = Recording(authserver.authenticator(), refuse_first=1)
    async with running_cloud(authserver.material.server_ctx(client_certs="none"), auth) as cloud:
        store = token_store(tmp_path / "d", authserver)
        add_uplink(store, cloud.url("wss"), cert=None, auth_server="as-1")
        async with running_device(store) as device:
            await cloud.listener.wait_for("device-3", timeout=BOUND)
            assert device.tokens.fetches == 2
    tokens = auth.tokens()
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert authserver.app.issued == 2


async def test_second_401_falls_back_to_backoff_with_error_upl_14_cfg_1(authserver: AuthServer,
                                                                       tmp_path: Path) -> None:
    """UPL-14, CFG-1: when the fresh token is refused too, the attempt fails; Error says 401; backoff."""
    auth = Recording(authserver.authenticator(), refuse_first=100)
    async with running_cloud(authserver.material.server_ctx(client_certs="none"), auth) as cloud:
        store = token_store(tmp_path / "d", authserver)
        remote = cloud.url("https")
        add_uplink(store, remote, cert=None, auth_server="as-1")
        async with running_device(store) as device:
            await device.next_failure()
            await device.next_failure()
            assert len(auth.requests) == 2 and device.tokens.fetches == 2
            assert device.error(remote) == "the cloud refused the uplink upgrade: 401 token revoked: token revoked"
            assert device.agent.status(remote)[0] == "Offline"
            assert device.failures.empty()


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong secret", ("authorization server https://localhost:{port}/token refused the client credentials of "
                     "'device-3': HTTP 401: invalid_client (client authentication failed)")),
    ("unknown client", ("authorization server https://localhost:{port}/token refused the client credentials of "
                       "'nobody': HTTP 401: invalid_client (client authentication failed)")),
    ("untrusted server", ("authorization server https://localhost:{port}/token: its TLS certificate is not "
                         "trusted: unable to get local issuer certificate")),
])
async def test_token_errors_appear_in_uplink_error_cfg_1_upl_14(authserver: AuthServer, tmp_path: Path,
                                                               case: str, expected: str) -> None:
    """CFG-1, UPL-14: a token that cannot be obtained is reported precisely in GetUplinks Error."""
    kwargs = {"wrong secret": {"secret": "not-the-secret"}, "unknown client": {"client": "nobody"},
              "untrusted server": {"policy": None}}[case]
    store = token_store(tmp_path / "d", authserver, **kwargs)  # type: ignore[arg-type]
    remote = "wss://localhost:9/uplink"
    add_uplink(store, remote, cert=None, auth_server="as-1")
    async with running_device(store) as device:
        await device.next_failure()
        port = authserver.base.rsplit(":", 1)[1]
        assert device.error(remote) == expected.format(port=port)
        assert device.agent.status(remote)[0] == "Offline"


async def test_token_cached_until_shortly_before_expiry_upl_14(authserver: AuthServer, tmp_path: Path) -> None:
    """UPL-14: one fetch serves many connects; inside the refresh margin a new token is fetched first."""
    now = [1000.0]
    store = token_store(tmp_path / "d", authserver)
    provider = AccessTokenProvider(store, clock=lambda: now[0])
    first = await provider.token("as-1")
    assert await provider.token("as-1") == first and provider.fetches == 1
    now[0] += 300 - 60 - 1  # lifetime 300 s, margin 60 s: still fresh
    assert await provider.token("as-1") == first and provider.fetches == 1
    now[0] += 2  # inside the margin: refreshed before it is needed
    second = await provider.token("as-1")
    assert second != first and provider.fetches == 2
    # a changed configuration is never served from the old cache
    store.put_auth_server(AuthServerConfig(token="as-1", url=authserver.token_url, client_id="device-4",
                                           client_secret="other-secret-4", policy_id="policy-1"))
    third = await provider.token("as-1")
    assert jwt.decode(third, options={"verify_signature": False})["sub"] == "device-4"
    store.close()


# --------------------------------------------------------------------------- negative matrix


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: dict[str, object], claims: dict[str, object], sign: bytes | None) -> str:
    head = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = _b64(hmac.new(sign, head.encode(), hashlib.sha256).digest()) if sign is not None else ""
    return f"{head}.{sig}"


class Issuer:
    """Tokens for the matrix: one RSA key published in a static JWKS."""

    ISS = "https://issuer.test"

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwk = public_jwk(self.key)
        self.public_pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    def claims(self, **changes: object) -> dict[str, object]:
        now = int(time.time())
        base: dict[str, object] = {"iss": self.ISS, "aud": AUDIENCE, "sub": "device-9", "iat": now,
                                   "nbf": now, "exp": now + 300}
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}

    def sign(self, claims: dict[str, object], *, kid: str | None = "", alg: str = "RS256") -> str:
        headers = {"kid": self.jwk["kid"] if kid == "" else kid}
        return jwt.encode(claims, self.key, algorithm=alg, headers=headers)

    def authenticator(self) -> TokenAuthenticator:
        return TokenAuthenticator(StaticJwks({"keys": [self.jwk]}), issuers=[self.ISS], audience=AUDIENCE)


def matrix_token(issuer: Issuer, case: str) -> str:
    now = int(time.time())
    if case == "valid":
        return issuer.sign(issuer.claims())
    if case == "alg=none":
        return _raw_token({"alg": "none", "typ": "JWT", "kid": issuer.jwk["kid"]}, issuer.claims(), None)
    if case == "HS256 with the RSA public key":
        return _raw_token({"alg": "HS256", "typ": "JWT", "kid": issuer.jwk["kid"]}, issuer.claims(),
                          issuer.public_pem)
    if case == "expired":
        return issuer.sign(issuer.claims(iat=now - 3600, nbf=now - 3600, exp=now - 120))
    if case == "missing exp":
        return issuer.sign(issuer.claims(exp=None))
    if case == "future nbf":
        return issuer.sign(issuer.claims(nbf=now + 600))
    if case == "wrong aud":
        return issuer.sign(issuer.claims(aud="some-other-api"))
    if case == "wrong iss":
        return issuer.sign(issuer.claims(iss="https://evil.test"))
    if case == "unknown kid":
        return issuer.sign(issuer.claims(), kid="no-such-key")
    if case == "garbage":
        return "this.is-not-a.jwt"
    if case == "other key, same kid":
        other = Issuer()
        return jwt.encode(issuer.claims(), other.key, algorithm="RS256", headers={"kid": issuer.jwk["kid"]})
    raise AssertionError(case)


MATRIX = [
    ("alg=none", "the token's algorithm is not allowed"),
    ("HS256 with the RSA public key", "the token's algorithm is not allowed"),
    ("expired", "the token has expired"),
    ("missing exp", "the token lacks the required claim exp"),
    ("future nbf", "the token is not valid yet (nbf or iat in the future)"),
    ("wrong aud", "the token is not meant for this audience (aud)"),
    ("wrong iss", "the token's issuer (iss) is not trusted"),
    ("unknown kid", "the token's signing key (kid) is unknown"),
    ("garbage", "the token is malformed"),
    ("other key, same kid", "the token's signature does not verify"),
]


async def raw_upgrade(material: Pki, port: int, token: str | None, *, kind: str, in_query: bool = False) -> bytes:
    """Send one upgrade request by hand and read everything the cloud sends until it closes."""
    ctx = client_context(cafile_pems=[material.ca.cert_pem()])
    tls = await connect_tls("127.0.0.1", port, ctx, server_hostname="localhost", timeout=BOUND)
    target = "/uplink" + (f"?access_token={token}" if in_query and token else "")
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", "Connection: Upgrade"]
    if kind == "websocket":
        lines += ["Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                  "Sec-WebSocket-Protocol: h2c-reverse"]
    else:
        lines += ["Upgrade: h2c-reverse"]
    if token is not None and not in_query:
        lines.append(f"Authorization: Bearer {token}")
    await tls.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = b""
    while chunk := await asyncio.wait_for(tls.read(65536), BOUND):
        answer += chunk
    await tls.close()
    return answer


@pytest.mark.parametrize(("case", "description"), MATRIX, ids=[c for c, _ in MATRIX])
@pytest.mark.parametrize("kind", ["h2c-reverse", "websocket", "websocket-query"])
async def test_bad_tokens_refused_401_before_any_http2_byte_upl_14(case: str, description: str, kind: str) -> None:
    """UPL-14: every bad token → 401 with error="invalid_token" and the exact reason; no 101, no HTTP/2."""
    material, issuer = Pki(), Issuer()
    async with running_cloud(material.server_ctx(client_certs="none"), issuer.authenticator()) as cloud:
        answer = await raw_upgrade(material, cloud.port, matrix_token(issuer, case),
                                   kind=kind.split("-")[0], in_query=kind.endswith("query"))
        assert cloud.listener.devices() == []
        assert cloud.listener.stats["rejected"] == 1
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), answer[:200]
    challenge = (f'\r\nWWW-Authenticate: Bearer realm="iec62676-uplink", error="invalid_token", '
                 f'error_description="{description}"\r\n').encode()
    assert challenge in head + b"\r\n"
    assert body == f"invalid access token: {description}\n".encode()
    assert b"PRI * HTTP/2.0" not in answer and b" 101 " not in answer


async def test_valid_matrix_token_is_accepted_control_upl_14() -> None:
    """UPL-14 (control for the matrix): the same harness with a valid token gets its 101."""
    material, issuer = Pki(), Issuer()
    async with running_cloud(material.server_ctx(client_certs="none"), issuer.authenticator()) as cloud:
        ctx = client_context(cafile_pems=[material.ca.cert_pem()])
        tls = await connect_tls("127.0.0.1", cloud.port, ctx, server_hostname="localhost", timeout=BOUND)
        await tls.write(f"GET /uplink HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse"
                        f"\r\nAuthorization: Bearer {matrix_token(issuer, 'valid')}\r\n\r\n".encode())
        answer = b""
        while b"PRI * HTTP/2.0" not in answer:
            answer += await asyncio.wait_for(tls.read(65536), BOUND)
        assert answer.startswith(b"HTTP/1.1 101 ")
        tls.abort()


def test_authenticator_configuration_is_strict_upl_14() -> None:
    """UPL-14: no HMAC or 'none' in the allow-list, leeway at most 60 s, issuer and audience required."""
    from iec62676_2_33.errors import ConfigurationError

    keys = StaticJwks({"keys": [Issuer().jwk]})
    for bad in ({"algorithms": ["HS256"]}, {"algorithms": ["none"]}, {"leeway": 61},
                {"issuers": []}, {"audience": ""}):
        kwargs = {"issuers": ["https://i"], "audience": "a", **bad}
        with pytest.raises(ConfigurationError):
            TokenAuthenticator(keys, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="private or symmetric key"):
        StaticJwks({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})


# --------------------------------------------------------------------------- secrets never logged


async def test_no_token_or_client_secret_is_ever_logged_upl_14(authserver: AuthServer, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """UPL-14: at DEBUG, across fetches, header and query tokens, 401s and bad tokens, no secret is logged."""
    caplog.set_level(logging.DEBUG)
    auth = Recording(authserver.authenticator(), refuse_first=1)
    async with running_cloud(authserver.material.server_ctx(client_certs="none"), auth) as cloud:
        store = token_store(tmp_path / "d", authserver)
        store.put_auth_server(AuthServerConfig(token="as-2", url=authserver.token_url, client_id="device-4",
                                               client_secret="other-secret-4", policy_id="policy-1"))
        add_uplink(store, cloud.url("wss", "/uplink?access_token="), cert=None, auth_server="as-1")
        add_uplink(store, cloud.url("https"), cert=None, auth_server="as-2")
        bad_store = token_store(tmp_path / "bad", authserver, secret="wrong-" + SECRET)
        add_uplink(bad_store, cloud.url("wss"), cert=None, auth_server="as-1")
        async with running_device(store) as device, running_device(bad_store) as bad:
            await cloud.listener.wait_for("device-3", timeout=BOUND)
            await cloud.listener.wait_for("device-4", timeout=BOUND)
            await bad.next_failure()
            assert device.tokens.fetches == 3  # two uplinks, one refetch after the 401
        issuer = Issuer()
        bad_token = matrix_token(issuer, "expired")
        await raw_upgrade(authserver.material, cloud.port, bad_token, kind="websocket", in_query=True)
    tokens = auth.tokens() + [bad_token]
    assert len(set(tokens)) == 4  # three issued (one refetched) and the bad one
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert caplog.records, "nothing was logged at all"
    for secret in [SECRET, "wrong-" + SECRET, "other-secret-4", *tokens]:
        assert secret not in text
        assert secret[-40:] not in text  # not even the signature part
    assert "access_token=ey" not in text
