"""Test helper for the token variant of the uplink (UPL-14, PROV-3): the project's authorization server and a
cloud that accepts its access tokens, both on loopback TLS, every wait bounded."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.testing.authserver import AuthServerApp, AuthServerOptions, OAuthClient, run_authserver
from iec62676_2_33.testing.harness import UplinkPki, wait_until

AUDIENCE = "iec62676-uplink"
CLIENT_SECRET = "enrol-s3cret-7"


class TokenWorld:
    """The project's authorization server and a cloud that accepts its tokens (JWKS over HTTPS), on loopback
    TLS with the Pki's server certificate. The server knows ``cam-t`` by its secret and ``cam-m`` by a
    client certificate of the Pki's CA with subject ``CN=cam-m`` (tls_client_auth, RFC 8705)."""

    def __init__(self, certs: UplinkPki, tmp: Path) -> None:
        signing = tmp / "signing.key"
        signing.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        apps: list[AuthServerApp] = []
        options = AuthServerOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, signing_key=signing,
                                    clients=[OAuthClient("cam-t", CLIENT_SECRET, "cam-t"),
                                             OAuthClient("cam-m", "", "cam-m", tls_subject_dn="CN=cam-m")],
                                    audience=AUDIENCE, client_cas=[certs.ca_file])
        self.authserver = BackgroundService(
            lambda stop, announce: run_authserver(options, stop, announce, ready=apps.append), name="as").start()
        self.app = apps[0]
        self.cloud = BackgroundService(lambda stop, announce: run_cloud(CloudOptions(
            listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[], proxy="127.0.0.1:0",
            jwt_keys=f"{self.app.issuer}/jwks.json", jwt_issuers=[self.app.issuer], jwt_audience=AUDIENCE,
            jwt_keys_ca=[certs.ca_file]), stop, announce), name="token cloud").start()
        messages = self.cloud.messages
        wait_until(lambda: len(messages) >= 2, 15, what="the cloud's announcements")
        port = re.search(r":(\d+)/", messages[0]).group(1)  # type: ignore[union-attr]
        self.uplink_url = f"https://localhost:{port}/uplink"
        self.proxy_url = re.search(r"(http://\S+)/devices", messages[1]).group(1)  # type: ignore[union-attr]

    def stop(self) -> None:
        self.cloud.stop()
        self.authserver.stop()
