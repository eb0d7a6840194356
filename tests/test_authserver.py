"""UPL-14, CFG-3: the test/demo authorization server and the CLI that configures access tokens.

The server (the library's own HTTP server, loopback TLS) is exercised over real HTTPS with httpx:
client-credentials grant with client_secret_basic and client_secret_post,
RFC 6749 §5.2 errors, the JWKS and RFC 8414 metadata; its tokens verify with
PyJWT against its own JWKS. The CLI stores authorization server
configurations (never printing the secret) and builds the cloud's
authenticator from ``--jwt-*`` options. Every wait is bounded.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import jwt
import pytest
import test_access_token
from test_access_token import AUDIENCE, SECRET, AuthServer
from test_websocket_e2e import BOUND

from iec62676_2_33.cli import main
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime.cloud import EitherAuthenticator, MtlsAuthenticator
from iec62676_2_33.runtime.cloud_server import CloudOptions, build_authenticator
from iec62676_2_33.security.jwt_auth import TokenAuthenticator
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.authserver import parse_client

authserver = test_access_token.authserver  # the fixture (a real authorization server)


def _client(server: AuthServer) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=server.material.ca.cert_pem().decode())
    return httpx.Client(verify=ctx, timeout=BOUND, trust_env=False)


def test_client_credentials_grant_issues_verifiable_jwt_upl_14(authserver: AuthServer) -> None:
    """UPL-14: the token verifies against the published JWKS, with iss/aud/sub/exp as configured."""
    with _client(authserver) as http:
        response = http.post(authserver.token_url, data={"grant_type": "client_credentials"},
                             auth=("device-3", SECRET))
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 300
        jwks = http.get(f"{authserver.base}/jwks.json").json()
        meta = http.get(f"{authserver.base}/.well-known/oauth-authorization-server").json()
    assert meta["jwks_uri"] == f"{authserver.issuer}/jwks.json"
    assert meta["token_endpoint"] == f"{authserver.issuer}/token"
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and "d" not in key
    assert jwt.get_unverified_header(body["access_token"])["kid"] == key["kid"]
    claims = jwt.decode(body["access_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience=AUDIENCE,
                        issuer=authserver.issuer, options={"require": ["exp", "iat", "nbf", "sub"]})
    assert claims["sub"] == "device-3" and claims["exp"] - claims["iat"] == 300


def test_client_secret_post_is_accepted_upl_14(authserver: AuthServer) -> None:
    """UPL-14: client_secret_post (RFC 6749 §2.3.1) works too."""
    with _client(authserver) as http:
        response = http.post(authserver.token_url, data={"grant_type": "client_credentials",
                                                         "client_id": "device-4", "client_secret": "other-secret-4"})
    assert response.status_code == 200
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["sub"] == "device-4"


@pytest.mark.parametrize(("kwargs", "status", "error"), [
    ({"auth": ("device-3", "wrong")}, 401, "invalid_client"),
    ({"auth": ("nobody", SECRET)}, 401, "invalid_client"),
    ({}, 401, "invalid_client"),
    ({"auth": ("device-3", SECRET), "grant": "password"}, 400, "unsupported_grant_type"),
])
def test_token_endpoint_errors_rfc_6749_upl_14(authserver: AuthServer, kwargs: dict[str, object], status: int,
                                               error: str) -> None:
    """UPL-14: wrong secret, unknown client, no credentials, other grant → RFC 6749 §5.2 errors."""
    grant = kwargs.pop("grant", "client_credentials")
    with _client(authserver) as http:
        response = http.post(authserver.token_url, data={"grant_type": grant}, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status
        assert response.json()["error"] == error
        assert http.get(authserver.token_url).status_code == 405
    assert authserver.app.issued == 0


def test_parse_client_option_upl_14() -> None:
    """UPL-14: --client ID:SECRET:SUBJECT (the subject may contain colons); the repr hides the secret."""
    client = parse_client("cam-7:pa55:urn:dev:cam-7")
    assert (client.client_id, client.secret, client.subject) == ("cam-7", "pa55", "urn:dev:cam-7")
    assert "pa55" not in repr(client)
    with pytest.raises(ConfigurationError, match="ID:SECRET:SUBJECT"):
        parse_client("cam-7:pa55")


def test_cli_device_authserver_add_and_uplink_set_cfg_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CFG-3: 'device authserver add' stores a configuration; 'uplink set --auth-server' uses it (wss ok)."""
    data = str(tmp_path / "dev")
    assert main(["device", "authserver", "add", "--data", data, "--token", "as-1", "--url",
                 "https://auth.example/token", "--client-id", "cam-7", "--client-secret", "top-secret"]) == 0
    assert main(["device", "authserver", "list", "--data", data]) == 0
    assert main(["device", "uplink", "set", "--data", data, "--remote", "wss://cloud.example/uplink?access_token=",
                 "--auth-server", "as-1"]) == 0
    assert main(["device", "authserver", "add", "--data", data, "--token", "as-2", "--url",
                 "http://auth.example/token", "--client-id", "x", "--client-secret", "y"]) == 2
    assert main(["device", "authserver", "add", "--data", data, "--token", "as-3", "--url",
                 "https://auth.example/token", "--client-id", "x", "--client-secret", "y",
                 "--policy-id", "missing"]) == 2
    out, err = capsys.readouterr()
    assert "top-secret" not in out + err
    assert "as-1\thttps://auth.example/token\tclient=cam-7" in out
    assert "must be an https URL" in err and "no certification path validation policy" in err
    with DeviceStore(data) as store:
        (uplink,) = store.list_uplinks()
        assert uplink.authorization_server == "as-1" and uplink.certificate_id is None
        assert store.get_auth_server("as-1").client_secret == "top-secret"  # type: ignore[union-attr]


def test_cloud_options_build_the_right_authenticator_upl_13_upl_14(tmp_path: Path) -> None:
    """UPL-13/UPL-14: --client-ca → mTLS, --jwt-* → tokens, both → either; half a JWT setup is an error."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", '
                    '"x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", '
                    '"y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}')
    ca = tmp_path / "ca.pem"
    from iec62676_2_33 import pki

    ca.write_bytes(pki.make_ca("x").cert_pem())
    base = {"listen": "127.0.0.1:0", "cert": tmp_path / "c", "key": tmp_path / "k"}
    jwt_opts = {"jwt_issuers": ["https://as"], "jwt_audience": "aud", "jwt_keys": str(jwks)}
    assert isinstance(build_authenticator(CloudOptions(client_cas=[ca], **base)), MtlsAuthenticator)  # type: ignore[arg-type]
    assert isinstance(build_authenticator(CloudOptions(client_cas=[], **base, **jwt_opts)),  # type: ignore[arg-type]
                      TokenAuthenticator)
    assert isinstance(build_authenticator(CloudOptions(client_cas=[ca], **base, **jwt_opts)),  # type: ignore[arg-type]
                      EitherAuthenticator)
    with pytest.raises(ConfigurationError, match="together"):
        build_authenticator(CloudOptions(client_cas=[], jwt_audience="aud", **base))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="--client-ca"):
        build_authenticator(CloudOptions(client_cas=[], **base))  # type: ignore[arg-type]
