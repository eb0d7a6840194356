"""PROV-3, UPL-14: the device's OAuth client uses exactly what an authorization server configuration says.

ServerUri names RFC 8414 metadata (the metadata URL itself, or the issuer whose
``/.well-known/oauth-authorization-server`` holds it); the client reads the
metadata with a size budget, checks ``issuer`` (RFC 8414 §3.3), takes
``token_endpoint`` and authenticates as configured: ``client_secret_basic``,
``client_secret_post`` (against the project's authorization server,
:mod:`iec62676_2_33.testing.authserver`, over loopback TLS) or
``tls_client_auth`` with a keystore certificate (RFC 8705: against a TLS
server that demands a client certificate, and against the project's
authorization server, which knows the client by its certificate's subject DN).
The configurations are made
through the Security service's rules (:class:`~iec62676_2_33.security.keystore.Keystore`).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iec62676_2_33 import pki
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.http_server import bind_listen, serve_asgi, wait_event
from iec62676_2_33.security.keystore import AuthServerSettings, Keystore, KeystoreError
from iec62676_2_33.security.oauth import (
    MAX_METADATA_BYTES,
    METADATA_PATH,
    AccessTokenProvider,
    Discovery,
    TokenError,
    discovery,
    fetch_token,
)
from iec62676_2_33.store import AuthServerConfig, DeviceStore
from iec62676_2_33.testing.authserver import AuthServerApp, AuthServerOptions, OAuthClient, run_authserver
from iec62676_2_33.transport.contexts import server_context

SECRET = "s3cret-of-cam-7"
BOUND = 20.0


@dataclass
class Running:
    base: str
    app: AuthServerApp
    ca: pki.CertKey


def _authserver(tmp_path: Path, *, mtls: bool) -> Iterator[Running]:
    """The project's authorization server on loopback TLS (issuer ``https://127.0.0.1:PORT``); ``mtls`` adds
    client ``cam-9``, known by a client certificate of the same CA with subject ``CN=cam-9``."""
    ca = pki.make_ca("oauth test CA")
    cert, key = pki.make_leaf(ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1"]).write(
        tmp_path, "authserver")
    ca_file, _ = ca.write(tmp_path, "ca")
    signing = tmp_path / "signing.key"
    signing.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    clients = [OAuthClient("cam-7", SECRET, "cam-7")]
    if mtls:
        clients.append(OAuthClient("cam-9", "", "cam-9", tls_subject_dn="CN=cam-9"))
    options = AuthServerOptions(listen="127.0.0.1:0", cert=cert, key=key, signing_key=signing, clients=clients,
                                client_cas=[ca_file] if mtls else ())
    apps: list[AuthServerApp] = []
    service = BackgroundService(lambda stop, announce: run_authserver(options, stop, announce, ready=apps.append),
                                name="authserver").start()
    try:
        match = re.search(r"on (https://\S+) ", service.messages[0])
        assert match, service.messages
        yield Running(match.group(1), apps[0], ca)
    finally:
        service.stop()


@pytest.fixture
def authserver(tmp_path: Path) -> Iterator[Running]:
    """The project's authorization server, secret methods only."""
    yield from _authserver(tmp_path, mtls=False)


@pytest.fixture
def mtls_authserver(tmp_path: Path) -> Iterator[Running]:
    """The project's authorization server, also offering tls_client_auth."""
    yield from _authserver(tmp_path, mtls=True)


def keystore_with_anchor(data: Path, ca: pki.CertKey) -> tuple[Keystore, str]:
    """A device keystore whose policy trusts ``ca`` (uploaded through the keystore rules)."""
    keystore = Keystore(DeviceStore(data))
    anchor, _ = keystore.upload_certificate(ca.cert.public_bytes(serialization.Encoding.DER))
    return keystore, keystore.create_policy([anchor])


async def token_for(keystore: Keystore, settings: AuthServerSettings, **options: Any) -> str:
    token = keystore.create_auth_server(settings)
    return await AccessTokenProvider(keystore.store, timeout=BOUND, **options).token(token)


def test_server_uri_forms_rfc_8414_prov_3() -> None:
    """PROV-3 (RFC 8414 §3, §3.1): a metadata URL keeps its issuer path after the well-known name (OpenID
    configuration: before it); an issuer without a path gets the well-known path; any other URL is a token
    endpoint (no discovery)."""
    assert discovery("https://as.example:8443") == Discovery(f"https://as.example:8443{METADATA_PATH}",
                                                             "https://as.example:8443")
    assert discovery("https://as.example/") == Discovery(f"https://as.example{METADATA_PATH}", "https://as.example")
    assert discovery(f"https://as.example{METADATA_PATH}/tenant/1") == Discovery(
        f"https://as.example{METADATA_PATH}/tenant/1", "https://as.example/tenant/1")
    assert discovery("https://as.example/realm/.well-known/openid-configuration") == Discovery(
        "https://as.example/realm/.well-known/openid-configuration", "https://as.example/realm")
    assert discovery("https://as.example/oauth/token") is None


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
@pytest.mark.parametrize("form", ["metadata", "issuer"])
async def test_discovery_and_client_auth_prov_3_upl_14(authserver: Running, tmp_path: Path, method: str,
                                                       form: str) -> None:
    """PROV-3, UPL-14: ServerUri as metadata URL or as issuer; the token comes from the discovered
    token_endpoint with the configured client authentication and scope."""
    keystore, policy = keystore_with_anchor(tmp_path / "d", authserver.ca)
    uri = authserver.base + (METADATA_PATH if form == "metadata" else "")
    token = await token_for(keystore, AuthServerSettings(
        server_uri=uri, type="OAuthClientCredentials", client_auth=method, client_id="cam-7", client_secret=SECRET,
        scope="uplink", policy_id=policy))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["iss"]) == ("cam-7", authserver.app.issuer)
    assert authserver.app.issued == 1


async def test_wrong_secret_and_issuer_mismatch_prov_3(authserver: Running, tmp_path: Path) -> None:
    """PROV-3 (RFC 8414 §3.3): metadata reached under another name than its issuer is refused; a wrong
    secret is the server's invalid_client, named in one line without the secret."""
    keystore, policy = keystore_with_anchor(tmp_path / "d", authserver.ca)
    other_name = authserver.base.replace("127.0.0.1", "localhost")
    with pytest.raises(TokenError, match=r"names issuer .*RFC 8414 §3.3"):
        await token_for(keystore, AuthServerSettings(server_uri=other_name, type="OAuthClientCredentials",
                                                     client_id="cam-7", client_secret=SECRET, policy_id=policy))
    with pytest.raises(TokenError, match="invalid_client") as info:
        await token_for(keystore, AuthServerSettings(server_uri=authserver.base, type="OAuthClientCredentials",
                                                     client_auth="client_secret_post", client_id="cam-7",
                                                     client_secret="wrong-one", policy_id=policy))
    assert "wrong-one" not in str(info.value) and "\n" not in str(info.value)
    assert authserver.app.issued == 0


async def test_method_the_metadata_does_not_list_is_refused_prov_3(authserver: Running, tmp_path: Path) -> None:
    """PROV-3: tls_client_auth against a server whose metadata lists only the secret methods fails before a
    token request is made."""
    keystore, policy = keystore_with_anchor(tmp_path / "d", authserver.ca)
    client = pki.make_leaf(authserver.ca, "cam-7", kind="client")
    keystore.store.put_certificate("cam-7", client.cert_pem(), client.key_pem())
    with pytest.raises(TokenError, match="does not support client authentication 'tls_client_auth'"):
        await token_for(keystore, AuthServerSettings(server_uri=authserver.base, type="OAuthClientCredentials",
                                                     client_auth="tls_client_auth", client_id="cam-7",
                                                     certificate_id="cam-7", policy_id=policy))
    assert authserver.app.issued == 0


# --------------------------------------------------------------------------- servers made by the tests

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass
class Served:
    port: int
    service: BackgroundService


def serve(app: Asgi, ssl_context: Any = None) -> Served:
    sock = bind_listen("127.0.0.1", 0)

    async def run(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        announce("serving")
        await serve_asgi(app, sock, lambda: wait_event(stop), ssl_context=ssl_context)

    return Served(sock.getsockname()[1], BackgroundService(run, name="as").start())


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class MtlsTokenServer:
    """RFC 8705 tls_client_auth: TLS itself demands a client certificate of the device CA; the form names the
    client; metadata lists ``tls_client_auth`` and an ``mtls_endpoint_aliases`` token endpoint."""

    def __init__(self, issuer_app: AuthServerApp) -> None:
        self.app = issuer_app
        self.issuer = ""
        self.forms: list[dict[str, list[str]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == METADATA_PATH:
            meta = {"issuer": self.issuer, "token_endpoint": f"{self.issuer}/not-this-one",
                    "mtls_endpoint_aliases": {"token_endpoint": f"{self.issuer}/mtls/token"},
                    "token_endpoint_auth_methods_supported": ["tls_client_auth"]}
            await _answer(send, 200, json.dumps(meta).encode())
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = urllib.parse.parse_qs(body.decode())
        self.forms.append(form)
        if scope["path"] != "/mtls/token" or "client_secret" in form:
            await _answer(send, 400, b'{"error": "invalid_request"}')
            return
        token = self.app.issue(self.app.clients[form["client_id"][0]])
        await _answer(send, 200, json.dumps({"access_token": token, "token_type": "Bearer",
                                             "expires_in": 60}).encode())


async def test_tls_client_auth_with_a_keystore_certificate_rfc_8705_prov_3(tmp_path: Path) -> None:
    """PROV-3: with tls_client_auth the keystore certificate named by CertificateID is the TLS client
    certificate (the server's handshake demands one), the form carries the client id and no secret, and the
    metadata's mtls_endpoint_aliases token endpoint is used; without that certificate the handshake fails."""
    ca = pki.make_ca("mtls AS CA")
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["IP:127.0.0.1"])
    issuer_app = AuthServerApp(ec.generate_private_key(ec.SECP256R1()), [OAuthClient("cam-9", "unused", "cam-9")],
                               issuer="https://127.0.0.1")
    token_app = MtlsTokenServer(issuer_app)
    context = server_context(leaf.cert_pem(), leaf.key_pem(), client_ca_pems=[ca.cert_pem()],
                             require_client_cert=True)
    served = serve(token_app, context)
    token_app.issuer = f"https://127.0.0.1:{served.port}"
    try:
        keystore, policy = keystore_with_anchor(tmp_path / "d", ca)
        client = pki.make_leaf(ca, "cam-9", kind="client")
        keystore.store.put_certificate("cam-9", client.cert_pem(), client.key_pem())
        token = await token_for(keystore, AuthServerSettings(
            server_uri=token_app.issuer, type="OAuthClientCredentials", client_auth="tls_client_auth",
            client_id="cam-9", certificate_id="cam-9", policy_id=policy))
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == "cam-9"
        assert token_app.forms == [{"grant_type": ["client_credentials"], "client_id": ["cam-9"]}]
        without = await asyncio.to_thread(keystore.create_auth_server, AuthServerSettings(
            server_uri=token_app.issuer, type="OAuthClientCredentials", client_auth="client_secret_basic",
            client_id="cam-9", client_secret="x", policy_id=policy))
        with pytest.raises(TokenError, match="TLS failed|cannot be reached"):
            await AccessTokenProvider(keystore.store, timeout=BOUND).token(without)
    finally:
        served.service.stop()


async def test_project_authserver_offers_tls_client_auth_rfc_8705_prov_3(mtls_authserver: Running,
                                                                        tmp_path: Path) -> None:
    """PROV-3 (RFC 8705 §2.1): the project's authorization server lists tls_client_auth and issues a token to
    the client whose keystore certificate (CertificateID, the TLS client certificate) has the registered
    subject DN, with no secret sent; a certificate of the same CA with another subject is invalid_client; on
    the same server (the certificate is optional in TLS) a secret client is still served."""
    server = mtls_authserver
    keystore, policy = keystore_with_anchor(tmp_path / "d", server.ca)
    for cn in ("cam-9", "cam-x"):
        leaf = pki.make_leaf(server.ca, cn, kind="client")
        keystore.store.put_certificate(cn, leaf.cert_pem(), leaf.key_pem())

    def mtls(certificate_id: str) -> AuthServerSettings:
        return AuthServerSettings(server_uri=server.base, type="OAuthClientCredentials", client_auth="tls_client_auth",
                                  client_id="cam-9", certificate_id=certificate_id, policy_id=policy)

    token = await token_for(keystore, mtls("cam-9"))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["client_id"], claims["iss"]) == ("cam-9", "cam-9", server.app.issuer)
    assert "tls_client_auth" in server.app.metadata()["token_endpoint_auth_methods_supported"]
    with pytest.raises(TokenError, match="invalid_client"):
        await token_for(keystore, mtls("cam-x"))
    assert server.app.issued == 1
    token = await token_for(keystore, AuthServerSettings(
        server_uri=server.base, type="OAuthClientCredentials", client_auth="client_secret_post", client_id="cam-7",
        client_secret=SECRET, policy_id=policy))
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "cam-7"
    assert server.app.issued == 2


def test_tls_client_auth_client_needs_a_distinguished_name_and_client_cas(tmp_path: Path) -> None:
    """PROV-3: a client without secret and DN, a malformed DN, and a tls_client_auth client on a server given
    no client CAs are configuration errors, said in one line before anything is served."""
    with pytest.raises(ConfigurationError, match="needs a secret or a TLS subject DN"):
        OAuthClient("c", "", "c")
    with pytest.raises(ConfigurationError, match="not an RFC 4514 distinguished name"):
        OAuthClient("c", "", "c", tls_subject_dn="no equals sign")
    options = AuthServerOptions(listen="127.0.0.1:0", cert=tmp_path / "c.pem", key=tmp_path / "k.pem",
                                signing_key=tmp_path / "s.pem",
                                clients=[OAuthClient("c", "", "c", tls_subject_dn="CN=c")])
    signing = tmp_path / "s.pem"
    signing.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ConfigurationError, match="needs the CAs of client certificates"):
        asyncio.run(run_authserver(options, asyncio.Event()))


async def test_authserver_command_serves_tls_client_auth_prov_3(tmp_path: Path) -> None:
    """PROV-3: ``iec62676 authserver serve --tls-client ID:SUBJECT:DN --client-ca CA.pem`` (no secret client)
    issues a token to the device whose keystore certificate has that DN; without --client-ca it is a one-line
    error, exit status 2."""
    ca = pki.make_ca("cli AS CA")
    cert, key = pki.make_leaf(ca, "localhost", kind="server", sans=["IP:127.0.0.1"]).write(tmp_path, "as")
    ca_file, _ = ca.write(tmp_path, "ca")
    signing = tmp_path / "signing.key"
    signing.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    argv = [sys.executable, "-m", "iec62676_2_33", "authserver", "serve", "--listen", "127.0.0.1:0", "--cert",
            str(cert), "--key", str(key), "--signing-key", str(signing), "--tls-client", "cam-9:cam-9:CN=cam-9"]
    pipe = asyncio.subprocess.PIPE
    refused = await asyncio.create_subprocess_exec(*argv, stdout=pipe, stderr=pipe)
    _, err = await asyncio.wait_for(refused.communicate(), BOUND)
    assert refused.returncode == 2 and err.count(b"\n") == 1 and b"--client-ca" in err
    proc = await asyncio.create_subprocess_exec(*argv, "--client-ca", str(ca_file), stdout=pipe, stderr=pipe)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), BOUND)).decode()
        match = re.search(r"on (https://\S+) ", line)
        assert match, line
        keystore, policy = keystore_with_anchor(tmp_path / "d", ca)
        leaf = pki.make_leaf(ca, "cam-9", kind="client")
        keystore.store.put_certificate("cam-9", leaf.cert_pem(), leaf.key_pem())
        token = await token_for(keystore, AuthServerSettings(
            server_uri=match.group(1), type="OAuthClientCredentials", client_auth="tls_client_auth",
            client_id="cam-9", certificate_id="cam-9", policy_id=policy))
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == "cam-9"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), BOUND)


def metadata_app(payload: Callable[[str], bytes]) -> Asgi:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        host = dict(scope["headers"])[b"host"].decode()
        await _answer(send, 200, payload(f"http://{host}"))

    return app


async def test_plain_http_only_on_loopback_with_opt_in_and_bounded_metadata_prov_3(tmp_path: Path) -> None:
    """PROV-3: an http metadata URL is refused by the Security service and by the client unless the
    client's explicit loopback opt-in is given; a metadata document over the size budget is refused."""
    keystore = Keystore(DeviceStore(tmp_path / "d"))
    with pytest.raises(KeystoreError) as info:
        keystore.create_auth_server(AuthServerSettings(server_uri="http://127.0.0.1:1", type="OAuthClientCredentials",
                                                       client_id="c", client_secret="s"))
    assert info.value.subcodes == ("InvalidArgVal", "InvalidConfig")
    huge = serve(metadata_app(lambda issuer: json.dumps(
        {"issuer": issuer, "token_endpoint": f"{issuer}/token", "pad": "x" * MAX_METADATA_BYTES}).encode()))
    try:
        keystore.store.put_auth_server(_plain(f"http://127.0.0.1:{huge.port}"))
        with pytest.raises(TokenError, match="must be an https URL"):
            await AccessTokenProvider(keystore.store, timeout=BOUND).token("plain")
        with pytest.raises(TokenError, match=f"more than {MAX_METADATA_BYTES} bytes"):
            await AccessTokenProvider(keystore.store, timeout=BOUND, allow_loopback_http=True).token("plain")
    finally:
        huge.service.stop()


def _plain(url: str) -> AuthServerConfig:
    return AuthServerConfig(token="plain", url=url, client_id="c", client_secret="s")


async def test_metadata_deadline_prov_3(tmp_path: Path) -> None:
    """PROV-3: a metadata endpoint that accepts and never answers costs the configured deadline, no more."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        store = DeviceStore(tmp_path / "d")
        store.put_auth_server(_plain(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        with pytest.raises(TokenError, match="did not answer within 0.5 s"):
            await AccessTokenProvider(store, timeout=0.5, allow_loopback_http=True).token("plain")
    finally:
        listener.close()


@pytest.mark.parametrize(("answer", "lifetime"), [
    (b"[" * 60000, None),  # nesting deeper than the JSON decoder's recursion
    (b'{"access_token":"x","token_type":"Bearer","expires_in":' + b"9" * 5000 + b"}", None),  # over int digits
    (b'{"access_token":"x","token_type":"Bearer","expires_in":Infinity}', 60.0),
    (b'{"access_token":"x","token_type":"Bearer","expires_in":1e300}', 60.0),
    (json.dumps({"access_token": jwt.encode({"exp": 10 ** 400}, "k" * 32, algorithm="HS256"),
                 "token_type": "Bearer"}).encode(), 60.0),  # an exp no float holds
])
async def test_a_hostile_token_endpoint_gets_a_token_error_or_the_default_lifetime_prov_3(
        answer: bytes, lifetime: float | None) -> None:
    """PROV-3, UPL-14: what a token endpoint answers never escapes as another exception (before: RecursionError,
    ValueError, OverflowError, logged as an internal error with a traceback), and a lifetime that is infinite,
    over a year or unreadable is the default one, not "never refresh"."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            while (await receive()).get("more_body"):
                pass
            await _answer(send, 200, answer)

    token_server = serve(app)
    try:
        cfg = _plain(f"http://127.0.0.1:{token_server.port}/token")
        if lifetime is None:
            with pytest.raises(TokenError):
                await fetch_token(cfg, None, timeout=BOUND, allow_loopback_http=True)
        else:
            assert (await fetch_token(cfg, None, timeout=BOUND, allow_loopback_http=True)).lifetime == lifetime
    finally:
        token_server.service.stop()
