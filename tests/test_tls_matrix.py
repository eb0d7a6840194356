"""UPL-6, UPL-11, UPL-13, CFG-1: the TLS negative matrix, as the uplink's Error reports it.

A real device agent dials a real cloud listener over loopback TLS, for both
``https`` (native) and ``wss`` RemoteAddresses. Each broken cloud certificate
(wrong SAN, CN only, expired, not yet valid, unknown CA, wrong EKU), a cloud
that speaks only TLS <= 1.1, a client offering only TLS <= 1.1, and a device
without (or with an untrusted) client certificate in mTLS mode is refused,
and the reason appears precisely in the uplink's ``Error`` (what GetUplinks
returns, CFG-1). Certificates are built at test time; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
import test_access_token
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_access_token import AuthServer, token_store
from test_websocket_e2e import BOUND, Pki, add_uplink, running_cloud, running_device, seed_store

from iec62676_2_33 import pki
from iec62676_2_33.store import AuthServerConfig
from iec62676_2_33.transport.tls import start_tls_server

NOW = dt.datetime.now(dt.UTC)
SANS = ["localhost", "IP:127.0.0.1"]

authserver = test_access_token.authserver  # the fixture (a real authorization server)


def bad_cloud_cert(material: Pki, case: str) -> pki.CertKey:
    if case == "wrong SAN":
        return pki.make_leaf(material.ca, "localhost", kind="server", sans=["cloud.other.example"])
    if case == "CN only":
        return pki.make_leaf(material.ca, "localhost", kind="server", include_san=False)
    if case == "expired":
        return pki.make_leaf(material.ca, "localhost", kind="server", sans=SANS,
                             not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    if case == "not yet valid":
        return pki.make_leaf(material.ca, "localhost", kind="server", sans=SANS,
                             not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=30))
    if case == "unknown CA":
        return pki.make_leaf(pki.make_ca("some other CA"), "localhost", kind="server", sans=SANS)
    if case == "wrong EKU":
        return pki.make_leaf(material.ca, "localhost", kind="server", sans=SANS,
                             eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    raise AssertionError(case)


CERT_MATRIX = [
    ("wrong SAN", ("certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'; "
                  "the certificate must name this host in its subjectAltName, the CN is not used")),
    ("CN only", ("certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'; "
                "the certificate must name this host in its subjectAltName, the CN is not used")),
    ("expired", "certificate verify failed: certificate has expired; renew the certificate"),
    ("not yet valid", ("certificate verify failed: certificate is not yet valid; check the clocks of both ends, "
                      "or wait until the certificate is valid")),
    ("unknown CA", ("certificate verify failed: unable to get local issuer certificate; add the CA that issued "
                   "the peer's certificate to the trust anchors")),
    ("wrong EKU", ("certificate verify failed: unsuitable certificate purpose; the certificate's "
                  "extendedKeyUsage does not allow this role: a server needs serverAuth, a client clientAuth")),
]


async def first_error(tmp_path: Path, material: Pki, remote: str, **uplink: object) -> str:
    store = seed_store(tmp_path / "device", material)
    store.put_auth_server(AuthServerConfig(token="as-1", url="https://localhost:9/token", client_id="c",
                                           client_secret="s"))
    add_uplink(store, remote, **uplink)  # type: ignore[arg-type]
    async with running_device(store) as device:
        await device.next_failure()
        status, error = device.agent.status(remote)
        assert status == "Offline"
        assert device.error(remote) == error  # GetUplinks reports the same
        assert error is not None
        return error


@pytest.mark.parametrize("scheme", ["https", "wss"])
@pytest.mark.parametrize(("case", "expected"), CERT_MATRIX, ids=[c for c, _ in CERT_MATRIX])
async def test_bad_cloud_certificate_is_refused_and_reported_upl_11(tmp_path: Path, case: str, expected: str,
                                                                   scheme: str) -> None:
    """UPL-11, CFG-1: the device refuses the cloud's certificate and says exactly why in Error."""
    material = Pki()
    async with running_cloud(material.server_ctx(bad_cloud_cert(material, case))) as cloud:
        error = await first_error(tmp_path, material, cloud.url(scheme))
        # OpenSSL 3.x says "unsuitable", 1.1 said "unsupported" certificate purpose (verify code 26)
        assert error.replace("unsupported certificate purpose", "unsuitable certificate purpose") == \
            f"TLS handshake with localhost:{cloud.port} failed: {expected}"
        assert cloud.listener.stats["upgrades"] == 0


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("scheme", ["https", "wss"])
async def test_cloud_offering_only_tls_1_1_is_refused_upl_6(tmp_path: Path, scheme: str) -> None:
    """UPL-6: a cloud that speaks at most TLS 1.1 is refused by the device; Error names the protocol version."""
    material = Pki()
    cert, key = material.cloud.write(tmp_path, "cloud")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(cert, key)

    async def handler(stream: object) -> None:
        raise AssertionError("no TLS <= 1.1 handshake may succeed")

    server = await start_tls_server(handler, ("127.0.0.1", 0), ctx)  # type: ignore[arg-type]
    try:
        port = server.sockets[0].getsockname()[1]
        error = await first_error(tmp_path, material, f"{scheme}://localhost:{port}/uplink")
    finally:
        await asyncio.wait_for(server.aclose(), BOUND)
    assert error.startswith(f"TLS handshake with localhost:{port} failed: ")
    assert error.endswith(("unsupported protocol", "tlsv1 alert protocol version",
                           "no protocols available")), error


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_client_offering_only_tls_1_1_is_refused_by_the_cloud_upl_6() -> None:
    """UPL-6: the cloud listener refuses a client that offers TLS 1.1 at most (handshake failure, no upgrade)."""
    material = Pki()
    async with running_cloud(material.server_ctx(client_certs="optional")) as cloud:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.load_verify_locations(cadata=material.ca.cert_pem().decode())
        with pytest.raises(ssl.SSLError) as info:
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", cloud.port, ssl=ctx,
                                                           server_hostname="localhost"), BOUND)
        assert info.value.reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE")
        assert cloud.server.stats["handshake_failed"] == 1  # counted before its alert was sent
        assert cloud.listener.stats["upgrades"] == 0


@pytest.mark.parametrize("scheme", ["https", "wss"])
async def test_device_without_client_certificate_in_mtls_mode_upl_13(authserver: AuthServer, tmp_path: Path,
                                                                      scheme: str) -> None:
    """UPL-13: TLS 1.3 rejects a missing client certificate after the handshake (EOF/alert); Error says so."""
    async with running_cloud(authserver.material.server_ctx(client_certs="required")) as cloud:
        store = token_store(tmp_path / "d", authserver)  # a device with a token, but no certificate
        remote = cloud.url(scheme)
        add_uplink(store, remote, cert=None, auth_server="as-1")
        async with running_device(store) as device:
            await device.next_failure()
            error = device.error(remote)
            assert device.agent.status(remote)[0] == "Offline"
    assert error is not None
    assert error.startswith("the cloud closed the connection right after the TLS handshake: it refused this "
                            "device (no client certificate) (TLS peer localhost:"), error
    assert "alert certificate required" in error or "closed by the peer right after the handshake" in error


@pytest.mark.parametrize("scheme", ["https", "wss"])
async def test_device_with_untrusted_client_certificate_upl_13(tmp_path: Path, scheme: str) -> None:
    """UPL-13: a client certificate from a CA the cloud does not trust is refused; Error says so."""
    material = Pki()
    stranger = pki.make_leaf(pki.make_ca("stranger CA"), "device-1", kind="client")
    async with running_cloud(material.server_ctx(client_certs="required")) as cloud:
        store = seed_store(tmp_path / "y", material)
        store.put_certificate("cert-1", stranger.cert_pem(), stranger.key_pem())
        remote = cloud.url(scheme)
        add_uplink(store, remote)
        async with running_device(store) as device:
            await device.next_failure()
            error = device.error(remote)
    assert error is not None
    assert error.startswith("the cloud closed the connection right after the TLS handshake: it refused the "
                            "client certificate ("), error
    assert "alert unknown ca" in error or "closed by the peer right after the handshake" in error
