"""UPL-1, UPL-6, UPL-11, UPL-13: the device is the TLS client, TLS >= 1.2, RFC 6125 server identity, mTLS.

The TLS byte transport (layer 2) over real loopback sockets, with
certificates built by :mod:`iec62676_2_33.pki` at test time: round trips and
back-pressure, interoperability with Python's own TLS streams and with
``openssl s_client``, mutual TLS and the client-certificate rejection that
TLS 1.3 reports only after the handshake, every certificate verification
failure with OpenSSL's exact code, the server's handshake deadline, and the
buffers an idle connection keeps (none). Every wait is bounded; no test
sleeps to synchronise or asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from iec62676_2_33 import pki
from iec62676_2_33.errors import ConfigurationError, TransportError
from iec62676_2_33.transport import (
    ByteStream,
    PeerClosed,
    TlsHandshakeError,
    TlsServer,
    TlsStream,
    client_context,
    connect_tls,
    peer_identity,
    server_context,
    start_tls_server,
)
from iec62676_2_33.transport import tls_engine as tls_module

LOOPBACK = "127.0.0.1"
CLOUD = "cloud.example.com"
BOUND = 20.0  # seconds: the bound on every wait (a hang fails, a pass is fast)

Handler = Callable[[TlsStream], Awaitable[None]]


# --------------------------------------------------------------------------- PKI


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1/CLOUD and a device certificate."""

    def __init__(self) -> None:
        self.ca = pki.make_ca("transport test CA")
        self.server = pki.make_leaf(
            self.ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1", CLOUD]
        )
        self.device = pki.make_leaf(
            self.ca,
            "device-1",
            kind="client",
            sans=["device-1.example", "IP:192.0.2.7"],
            serial=0x1234ABCD5678,
        )

    def server_ctx(self, leaf: pki.CertKey | None = None, **kw: object) -> ssl.SSLContext:
        leaf = leaf or self.server
        return server_context(leaf.cert_pem(), leaf.key_pem(), **kw)  # type: ignore[arg-type]

    def client_ctx(self, *, device: bool = False, **kw: object) -> ssl.SSLContext:
        if device:
            kw.update(certfile_pem=self.device.cert_pem(), keyfile_pem=self.device.key_pem())
        return client_context(cafile_pems=[self.ca.cert_pem()], **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def certs() -> Pki:
    return Pki()


# --------------------------------------------------------------------------- helpers


async def echo(stream: TlsStream) -> None:
    while data := await stream.read():
        await stream.write(data)


@contextlib.asynccontextmanager
async def serving(
    ctx: ssl.SSLContext, handler: Handler = echo, **kw: object
) -> AsyncIterator[tuple[TlsServer, int]]:
    server = await start_tls_server(handler, (LOOPBACK, 0), ctx, **kw)  # type: ignore[arg-type]
    try:
        yield server, server.sockets[0].getsockname()[1]
    finally:
        async with asyncio.timeout(BOUND):
            await server.aclose()


async def read_exactly(stream: ByteStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = await stream.read(n - len(out))
        assert data, f"EOF after {len(out)} of {n} bytes"
        out += data
    return bytes(out)


async def round_trip(stream: TlsStream, payload: bytes) -> bytes:
    """Write *payload* and read as many bytes back, concurrently (the echo needs both)."""
    writer = asyncio.create_task(stream.write(payload))
    data = await read_exactly(stream, len(payload))
    await writer
    return data


def idle_buffers(stream: TlsStream) -> dict[str, int | bool]:
    """Every buffer size of *stream* that is not zero, or a flow-control flag that is set."""
    return {name: value for name, value in stream.buffer_stats().items() if value}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("size", [1, 1 << 20], ids=["1B", "1MiB"])
async def test_echo_round_trip(certs: Pki, size: int, version: str) -> None:
    """UPL-1, UPL-6: a device client and a cloud server move bytes both ways over TLS >= 1.2."""
    payload = os.urandom(size)
    ctx = certs.server_ctx()
    ctx.maximum_version = ssl.TLSVersion[version.replace(".", "_")]
    async with serving(ctx) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            assert await round_trip(stream, payload) == payload
            assert stream.extra("version") == version
            assert stream.extra("server_hostname") == CLOUD
            assert stream.extra("peername")[0] == LOOPBACK
            await stream.close()
            await stream.close()  # idempotent
            stream.abort()
            with pytest.raises(TransportError, match="closed"):
                stream.write_nowait(b"late")


async def test_back_pressure_bounds_every_buffer(certs: Pki) -> None:
    """UPL-1: 20 MiB to a slow reader; neither side buffers more than a few hundred KiB."""
    total = 20 << 20
    payload = os.urandom(1 << 20)
    client_box: list[TlsStream] = []
    peaks = {"client": 0, "server": 0}
    seen_paused = {"writing": False}
    got = asyncio.get_running_loop().create_future()

    def held(stream: TlsStream) -> int:
        st = stream.buffer_stats()
        return sum(
            int(st[k])
            for k in (
                "plaintext",
                "ciphertext",
                "bio_in",
                "bio_out",
                "ssl_pending",
                "transport_write",
            )
        )

    async def slow_reader(stream: TlsStream) -> None:
        digest, n = hashlib.sha256(), 0
        while n < total:
            data = await stream.read(4096)
            assert data
            digest.update(data)
            n += len(data)
            peaks["server"] = max(peaks["server"], held(stream))
            if client_box:
                peaks["client"] = max(peaks["client"], held(client_box[0]))
                seen_paused["writing"] |= bool(client_box[0].buffer_stats()["writing_paused"])
            await asyncio.sleep(0)  # slow: let the writer run between small reads
        got.set_result(digest.hexdigest())

    async with serving(certs.server_ctx(), slow_reader) as (_server, port):
        async with asyncio.timeout(BOUND * 3):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            client_box.append(stream)
            expected = hashlib.sha256()
            for _ in range(total // len(payload)):
                await stream.write(payload)
                expected.update(payload)
                peaks["client"] = max(peaks["client"], held(stream))
            assert await got == expected.hexdigest()
            await stream.close()
    print("peak buffered bytes", peaks)
    assert seen_paused["writing"], "the writer never had to wait: no back-pressure was exercised"
    # Client: the TCP write buffer's high-water mark plus one 64 KiB write step.
    assert peaks["client"] <= 192 * 1024, peaks
    # Server: the plaintext high-water mark, one record, one socket read of ciphertext.
    assert peaks["server"] <= (
        tls_module.READ_HIGH_WATER + 16 * 1024 + tls_module.RECV_BUFFER + tls_module.BIO_CHUNK
    ), peaks


async def test_end_of_stream_both_ways(certs: Pki) -> None:
    """UPL-1: close() sends close_notify; the peer reads b"" and is at EOF."""
    seen: asyncio.Future[tuple[bytes, bool]] = asyncio.get_running_loop().create_future()

    async def handler(stream: TlsStream) -> None:
        data = await read_exactly(stream, 5)
        assert await stream.read() == b""
        seen.set_result((data, stream.at_eof))

    async with serving(certs.server_ctx(), handler) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            await stream.write(b"hello")
            await stream.close()
            assert await seen == (b"hello", True)
            assert stream.at_eof


async def test_slow_reader_gets_every_byte_then_eof(
    certs: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UPL-1: with a tiny plaintext high-water mark, paused reading loses nothing before EOF."""
    monkeypatch.setattr(tls_module, "READ_HIGH_WATER", 1024)
    monkeypatch.setattr(tls_module, "READ_LOW_WATER", 256)
    payload = os.urandom(96 * 1024)

    async def send_and_close(stream: TlsStream) -> None:
        await stream.write(payload)
        await stream.close()

    async with serving(certs.server_ctx(), send_and_close) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            got, paused = bytearray(), False
            while data := await stream.read(100):
                got += data
                paused |= bool(stream.buffer_stats()["reading_paused"])
                assert stream.buffer_stats()["plaintext"] <= 1024 + 16384
            assert bytes(got) == payload
            assert paused
            assert stream.at_eof


# --------------------------------------------------------------------------- interop


async def test_connect_tls_to_stdlib_server(certs: Pki) -> None:
    """UPL-1, UPL-6: our client against asyncio's own TLS server."""

    async def stdlib_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(stdlib_echo, LOOPBACK, 0, ssl=certs.server_ctx())
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            payload = os.urandom(300_000)
            assert await round_trip(stream, payload) == payload
            await stream.close()
    finally:
        server.close()
        async with asyncio.timeout(BOUND):
            await server.wait_closed()


async def test_stdlib_client_to_our_server(certs: Pki) -> None:
    """UPL-1, UPL-13: asyncio's TLS client (with a client certificate) against our server."""
    async with serving(
        certs.server_ctx(client_ca_pems=[certs.ca.cert_pem()], require_client_cert=True)
    ) as (server, port):
        async with asyncio.timeout(BOUND):
            reader, writer = await asyncio.open_connection(
                LOOPBACK, port, ssl=certs.client_ctx(device=True), server_hostname="localhost"
            )
            writer.write(b"ping over stdlib\n")
            assert await reader.readexactly(17) == b"ping over stdlib\n"
            writer.close()
            await writer.wait_closed()  # our server answers close_notify with close_notify
    assert server.stats["handshake_failed"] == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
async def test_openssl_s_client_to_our_server(certs: Pki, tmp_path: Path) -> None:
    """UPL-1, UPL-6: ``openssl s_client`` verifies our server and gets its line echoed."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(certs.ca.cert_pem())

    async def one_line(stream: TlsStream) -> None:
        line = b""
        while not line.endswith(b"\n"):
            data = await stream.read()
            if not data:
                return
            line += data
        await stream.write(b"echo: " + line)
        await stream.close()

    async with serving(certs.server_ctx(), one_line) as (server, port):
        proc = await asyncio.create_subprocess_exec(
            "openssl",
            "s_client",
            "-connect",
            f"{LOOPBACK}:{port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(ca_file),
            "-verify_return_error",
            "-quiet",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(BOUND):
                out, err = await proc.communicate(b"hello from s_client\n")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert out == b"echo: hello from s_client\n", err.decode(errors="replace")
    assert proc.returncode == 0, err.decode(errors="replace")
    assert server.stats["handshake_failed"] == 0


# --------------------------------------------------------------------------- mutual TLS


async def test_mtls_peer_identity(certs: Pki) -> None:
    """UPL-13: with mutual TLS each side reads the other's identity from its certificate."""
    seen: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

    async def handler(stream: TlsStream) -> None:
        seen.set_result(
            {
                "cn": peer_identity(stream, "cn"),
                "serial": peer_identity(stream, "serial"),
                "san": peer_identity(stream, "san"),
                "peercert": stream.extra("peercert"),
                "chain": stream.extra("peercert_chain"),
            }
        )
        await echo(stream)

    ctx = certs.server_ctx(client_ca_pems=[certs.ca.cert_pem()], require_client_cert=True)
    async with serving(ctx, handler) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(
                LOOPBACK, port, certs.client_ctx(device=True), server_hostname="localhost"
            )
            assert await round_trip(stream, b"x") == b"x"
            got = await seen
            assert peer_identity(stream, "cn") == "localhost"
            assert peer_identity(stream, "san") == "localhost"
            await stream.close()
    der = certs.device.cert.public_bytes(serialization.Encoding.DER)
    assert got == {
        "cn": "device-1",
        "serial": "1234abcd5678",
        "san": "device-1.example",
        "peercert": der,
        "chain": [der, certs.ca.cert.public_bytes(serialization.Encoding.DER)],
    }


async def test_peer_identity_uri_and_ip_san(certs: Pki) -> None:
    """UPL-13: the first DNS/URI/IP entry of the subjectAltName, in certificate order."""

    def cert_with(names: list[x509.GeneralName]) -> bytes:
        base = pki.make_leaf(certs.ca, "x", kind="client", include_san=False)
        builder = (
            x509.CertificateBuilder()
            .subject_name(base.cert.subject)
            .issuer_name(base.cert.issuer)
            .public_key(base.key.public_key())
            .serial_number(7)
            .not_valid_before(base.cert.not_valid_before_utc)
            .not_valid_after(base.cert.not_valid_after_utc)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(certs.ca.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.DER)

    class Fake:
        def __init__(self, der: bytes | None) -> None:
            self.der = der

        def extra(self, name: str, default: object = None) -> object:
            return self.der if name == "peercert" else default

    uri = cert_with([x509.RFC822Name("a@b.example"), x509.UniformResourceIdentifier("urn:dev:42")])
    ip = cert_with([x509.IPAddress(ipaddress.ip_address("192.0.2.9"))])
    assert peer_identity(Fake(uri), "san") == "urn:dev:42"  # type: ignore[arg-type]
    assert peer_identity(Fake(ip), "san") == "192.0.2.9"  # type: ignore[arg-type]
    assert peer_identity(Fake(cert_with([])), "san") is None  # type: ignore[arg-type]
    assert peer_identity(Fake(ip), "serial") == "7"  # type: ignore[arg-type]
    assert peer_identity(Fake(None), "cn") is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'cn', 'serial' or 'san'"):
        peer_identity(Fake(ip), "subject")  # type: ignore[arg-type]


async def test_mtls_tls13_missing_client_cert_shows_after_handshake(certs: Pki) -> None:
    """UPL-13: TLS 1.3 rejects a missing client certificate after the client's handshake.

    connect_tls succeeds; the first read raises TlsHandshakeError carrying the
    server's alert, which the runtime classifies as an authentication failure.
    """
    ctx = certs.server_ctx(
        client_ca_pems=[certs.ca.cert_pem()],
        require_client_cert=True,
        minimum_version=ssl.TLSVersion.TLSv1_3,
    )
    async with serving(ctx) as (server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            with pytest.raises(TlsHandshakeError) as info:
                await stream.read()
            with pytest.raises(TlsHandshakeError):  # the error sticks
                await stream.read()
    err = info.value
    assert err.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert err.verify_code is None
    assert str(err).startswith(
        f"TLS peer {CLOUD}:{port} (at {LOOPBACK}) rejected the connection right after the "
        "handshake: tlsv13 alert certificate required"
    )
    assert server.stats["handshake_failed"] == 1
    assert server.stats["active"] == 0


async def test_mtls_tls13_untrusted_client_cert(certs: Pki) -> None:
    """UPL-13: a client certificate from an unknown CA: the server's alert names it."""
    other = pki.make_ca("other CA")
    stranger = pki.make_leaf(other, "intruder", kind="client")
    ctx = certs.server_ctx(client_ca_pems=[certs.ca.cert_pem()], require_client_cert=True)
    client = client_context(
        cafile_pems=[certs.ca.cert_pem()],
        certfile_pem=stranger.cert_pem(),
        keyfile_pem=stranger.key_pem(),
    )
    async with serving(ctx) as (server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, client, server_hostname=CLOUD)
            with pytest.raises(TlsHandshakeError) as info:
                await stream.read()
    assert info.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert "tlsv1 alert unknown ca" in str(info.value)
    assert server.stats["handshake_failed"] == 1


async def test_mtls_tls12_missing_client_cert_fails_the_handshake(certs: Pki) -> None:
    """UPL-6, UPL-13: with TLS 1.2 the same rejection fails connect_tls itself."""
    ctx = certs.server_ctx(client_ca_pems=[certs.ca.cert_pem()], require_client_cert=True)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(ctx) as (server, port):
        async with asyncio.timeout(BOUND):
            with pytest.raises(TlsHandshakeError) as info:
                await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
    assert info.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert str(info.value) == (
        f"TLS handshake with {CLOUD}:{port} (at {LOOPBACK}) failed: sslv3 alert handshake failure"
    )
    assert server.stats["handshake_failed"] == 1


async def test_closed_right_after_handshake_is_peer_closed(certs: Pki) -> None:
    """UPL-13: a server that drops us after the handshake without an alert: PeerClosed."""

    async def drop(stream: TlsStream) -> None:
        stream.abort()  # no close_notify, no alert: what a lost TLS 1.3 alert looks like

    async with serving(certs.server_ctx(), drop) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            with pytest.raises(PeerClosed) as info:
                await stream.read()
    assert info.value.reason == "closed by peer right after the handshake"
    assert "client certificate" in str(info.value)


# --------------------------------------------------------------------------- verification


def _past(days: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


BAD_SERVERS: dict[str, tuple[Callable[[Pki], pki.CertKey], int, str]] = {
    "wrong-san": (
        lambda p: pki.make_leaf(p.ca, CLOUD, kind="server", sans=["other.example.com"]),
        62,
        f"Hostname mismatch, certificate is not valid for '{CLOUD}'.",
    ),
    "cn-only": (
        lambda p: pki.make_leaf(p.ca, CLOUD, kind="server", include_san=False),
        62,
        f"Hostname mismatch, certificate is not valid for '{CLOUD}'.",
    ),
    "expired": (
        lambda p: pki.make_leaf(
            p.ca, CLOUD, kind="server", sans=[CLOUD], not_before=_past(30), not_after=_past(1)
        ),
        10,
        "certificate has expired",
    ),
    "not-yet-valid": (
        lambda p: pki.make_leaf(
            p.ca, CLOUD, kind="server", sans=[CLOUD], not_before=_past(-1), not_after=_past(-30)
        ),
        9,
        "certificate is not yet valid",
    ),
    "unknown-ca": (
        lambda p: pki.make_leaf(pki.make_ca("rogue CA"), CLOUD, kind="server", sans=[CLOUD]),
        20,
        "unable to get local issuer certificate",
    ),
    "client-eku-as-server": (
        lambda p: pki.make_leaf(p.ca, CLOUD, kind="client", sans=[CLOUD]),
        26,
        "unsuitable certificate purpose",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SERVERS))
async def test_server_certificate_refused(certs: Pki, case: str) -> None:
    """UPL-11: the device refuses a server certificate that does not verify, with OpenSSL's code."""
    make, code, message = BAD_SERVERS[case]
    async with serving(certs.server_ctx(make(certs))) as (_server, port):
        async with asyncio.timeout(BOUND):
            with pytest.raises(TlsHandshakeError) as info:
                await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
    err = info.value
    assert (err.verify_code, err.verify_message, err.reason) == (
        code,
        message,
        "CERTIFICATE_VERIFY_FAILED",
    )
    assert str(err).startswith(
        f"TLS handshake with {CLOUD}:{port} (at {LOOPBACK}) failed: certificate verify failed: "
        f"{message.rstrip('.')}; "
    )


async def test_cn_only_certificate_passes_only_with_the_stdlib_cn_fallback(certs: Pki) -> None:
    """UPL-11: the CN-only refusal above comes from hostname_checks_common_name=False alone."""
    leaf = pki.make_leaf(certs.ca, CLOUD, kind="server", include_san=False)
    lax = certs.client_ctx()
    lax.hostname_checks_common_name = True  # what ssl.create_default_context() does
    assert ssl.create_default_context().hostname_checks_common_name is True
    async with serving(certs.server_ctx(leaf)) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, lax, server_hostname=CLOUD)
            await stream.close()


async def test_tls11_only_server_refused(certs: Pki, tmp_path: Path) -> None:
    """UPL-6: a server that speaks at most TLS 1.1 is refused (protocol_version alert).

    OpenSSL 3 allows TLS 1.1 only at security level 0 (at the default level the
    server finds no cipher and answers handshake_failure), so the server's
    context lowers it; a legacy client proves the server really speaks TLS 1.1.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1/TLSv1_1
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        old.load_cert_chain(*certs.server.write(tmp_path, "srv"))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        legacy.load_verify_locations(cadata=certs.ca.cert_pem().decode())
        legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
        legacy.minimum_version = ssl.TLSVersion.TLSv1
    async with serving(old) as (_server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, legacy, server_hostname=CLOUD)
            assert stream.extra("version") == "TLSv1.1"
            await stream.close()
            with pytest.raises(TlsHandshakeError) as info:
                await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
    err = info.value
    assert (err.reason, err.verify_code, err.verify_message) == (
        "TLSV1_ALERT_PROTOCOL_VERSION",
        None,
        None,
    )
    assert str(err) == (
        f"TLS handshake with {CLOUD}:{port} (at {LOOPBACK}) failed: tlsv1 alert protocol version"
    )


# --------------------------------------------------------------------------- connecting


async def test_connect_refused_names_the_peer(certs: Pki) -> None:
    """UPL-1: a refused TCP connection is a TransportError that names host and port."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    async with asyncio.timeout(BOUND):
        with pytest.raises(TransportError, match=rf"cannot connect to {LOOPBACK}:{port}: ") as info:
            await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=None)
    assert not isinstance(info.value, TlsHandshakeError)


async def test_connect_handshake_deadline(certs: Pki) -> None:
    """UPL-1: a server that accepts TCP but never answers TLS fails connect_tls at its deadline."""
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(mute, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(BOUND):
            with pytest.raises(TlsHandshakeError) as info:
                await connect_tls(
                    LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD, timeout=0.3
                )
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert info.value.reason == "handshake timeout"
    assert "timed out after 0.3 s" in str(info.value)


# --------------------------------------------------------------------------- the server


async def test_server_handshake_deadline(certs: Pki) -> None:
    """UPL-1: a peer that connects and sends nothing is closed by the server at the deadline."""
    async with serving(certs.server_ctx(), handshake_timeout=0.3) as (server, port):
        async with asyncio.timeout(BOUND):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            assert await reader.read() == b""
            writer.close()
    assert server.stats["accepted"] == 1
    assert server.stats["handshake_timeout"] == 1
    assert server.stats["handshake_failed"] == 0
    assert server.stats["active"] == 0


async def test_server_survives_garbage_and_counts_it(certs: Pki) -> None:
    """UPL-1: plain HTTP sent to the TLS port fails that handshake and nothing else."""
    async with serving(certs.server_ctx()) as (server, port):
        async with asyncio.timeout(BOUND):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            while await reader.read(4096):
                pass
            writer.close()
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            assert await round_trip(stream, b"still here") == b"still here"
            await stream.close()
    assert server.stats["handshake_failed"] == 1


async def test_server_refuses_over_max_pending_handshakes(certs: Pki) -> None:
    """UPL-1: over max_pending_handshakes, new connections are closed at once."""
    async with serving(certs.server_ctx(), max_pending_handshakes=1, handshake_timeout=BOUND) as (
        server,
        port,
    ):
        async with asyncio.timeout(BOUND):
            _r1, w1 = await asyncio.open_connection(LOOPBACK, port)
            r2, w2 = await asyncio.open_connection(LOOPBACK, port)
            assert await r2.read() == b""
            assert server.stats["rejected"] == 1
            assert server.stats["handshake_timeout"] == 0
            w1.close()
            w2.close()


async def test_handler_exception_is_logged_not_fatal(
    certs: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """UPL-1: a failing handler is logged and counted; the server goes on serving."""
    calls = 0

    async def flaky(stream: TlsStream) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await stream.read()
            raise ValueError("handler bug")
        await echo(stream)

    caplog.set_level(logging.ERROR, logger="iec62676_2_33.transport.tls")
    async with serving(certs.server_ctx(), flaky) as (server, port):
        async with asyncio.timeout(BOUND):
            first = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            await first.write(b"x")
            with pytest.raises(PeerClosed):
                await first.read()
            second = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            assert await round_trip(second, b"ok") == b"ok"
            await second.close()
    assert server.stats["handler_failed"] == 1
    [record] = [r for r in caplog.records if "connection handler" in r.getMessage()]
    assert record.getMessage().startswith("connection handler for client 127.0.0.1:")
    assert record.getMessage().endswith("failed: ValueError")


async def test_server_close_stops_accepting(certs: Pki) -> None:
    """UPL-1: close() stops the listener; established connections go on until aborted."""
    async with serving(certs.server_ctx()) as (server, port):
        async with asyncio.timeout(BOUND):
            stream = await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            assert await round_trip(stream, b"a") == b"a"
            server.close()
            with pytest.raises(TransportError, match="cannot connect"):
                await connect_tls(LOOPBACK, port, certs.client_ctx(), server_hostname=CLOUD)
            assert await round_trip(stream, b"b") == b"b"
            server.abort_connections()
            assert await stream.read() == b""
            await server.wait_closed()
    assert server.stats["active"] == 0


# --------------------------------------------------------------------------- memory


async def test_idle_connections_hold_no_buffers(certs: Pki) -> None:
    """UPL-1: 200 idle TLS connections, after traffic, keep no buffered bytes on either side.

    The cloud holds thousands of idle device connections; this checks the
    structure (every buffer empty, no grown buffer kept), not RSS.
    """
    count, size = 200, 48 * 1024
    server_streams: list[TlsStream] = []

    async def tracked_echo(stream: TlsStream) -> None:
        server_streams.append(stream)
        await echo(stream)

    ctx = certs.server_ctx(client_ca_pems=[certs.ca.cert_pem()], require_client_cert=True)
    client_ctx = certs.client_ctx(device=True)
    payload = os.urandom(size)
    async with serving(ctx, tracked_echo) as (server, port):
        async with asyncio.timeout(BOUND * 3):
            clients = await asyncio.gather(
                *(
                    connect_tls(LOOPBACK, port, client_ctx, server_hostname="localhost")
                    for _ in range(count)
                )
            )
            echoed = await asyncio.gather(*(round_trip(c, payload) for c in clients))
            assert all(e == payload for e in echoed)
            assert len(server_streams) == count
            assert server.stats["active"] == count
            busy = {
                s.label: idle_buffers(s) for s in [*server_streams, *clients] if idle_buffers(s)
            }
            assert busy == {}
            await asyncio.gather(*(c.close() for c in clients))


# --------------------------------------------------------------------------- contexts


def test_client_context_is_strict(certs: Pki) -> None:
    """UPL-6, UPL-11: verification on, SAN-only name checks, TLS 1.2 floor."""
    ctx = certs.client_ctx()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.hostname_checks_common_name is False
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(cafile_pems=None).verify_mode == ssl.CERT_REQUIRED  # system store
    assert (
        client_context(cafile_pems=None, minimum_version=ssl.TLSVersion.TLSv1_3).minimum_version
        == ssl.TLSVersion.TLSv1_3
    )
    with pytest.raises(ConfigurationError, match="TLS 1.2 or later"):
        client_context(cafile_pems=None, minimum_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ConfigurationError, match="no trust anchors"):
        client_context(cafile_pems=[])
    with pytest.raises(ConfigurationError, match="give PEM certificates"):
        client_context(cafile_pems=[b"not a certificate"])
    with pytest.raises(ConfigurationError, match="both its PEM certificate and its PEM key"):
        client_context(cafile_pems=None, certfile_pem=certs.device.cert_pem())
    with pytest.raises(ConfigurationError, match="cannot load the TLS certificate and key"):
        client_context(
            cafile_pems=None,
            certfile_pem=certs.device.cert_pem(),
            keyfile_pem=certs.server.key_pem(),  # not the device's key
        )


def test_server_context_client_cert_modes(certs: Pki) -> None:
    """UPL-13: CERT_REQUIRED when required, CERT_OPTIONAL with CAs only, else CERT_NONE."""
    ca = [certs.ca.cert_pem()]
    assert certs.server_ctx(client_ca_pems=ca, require_client_cert=True).verify_mode == (
        ssl.CERT_REQUIRED
    )
    assert certs.server_ctx(client_ca_pems=ca).verify_mode == ssl.CERT_OPTIONAL
    assert certs.server_ctx().verify_mode == ssl.CERT_NONE
    assert certs.server_ctx().minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigurationError, match="needs client_ca_pems"):
        certs.server_ctx(require_client_cert=True)


async def test_optional_client_cert(certs: Pki) -> None:
    """UPL-13: CERT_OPTIONAL: a client may come with or without a certificate."""
    names: list[str | None] = []

    async def handler(stream: TlsStream) -> None:
        names.append(peer_identity(stream, "cn"))
        await echo(stream)

    ctx = certs.server_ctx(client_ca_pems=[certs.ca.cert_pem()])
    async with serving(ctx, handler) as (_server, port):
        async with asyncio.timeout(BOUND):
            for device in (True, False):
                stream = await connect_tls(
                    LOOPBACK, port, certs.client_ctx(device=device), server_hostname=CLOUD
                )
                assert await round_trip(stream, b"z") == b"z"
                assert stream.extra("peercert_chain") is not None
                await stream.close()
    assert names == ["device-1", None]
