"""UPL-1, UPL-9: the cloud behind a TCP balancer learns each device's real address from a
PROXY protocol v2 header, and accepts that header only where it was told to.

The sans-IO reader (any split of the bytes, bounded header, fast refusal, fuzzed input)
and the TLS listener on real loopback sockets with certificates made here: the header's
client address becomes the connection's peer and its admission source; a listener not
configured for PROXY refuses a header, a header from an address that is not a balancer is
refused, and a balancer connection without a header is refused; a LOCAL header and a close
before TLS (the balancer's health check) is counted as one, not as a failed handshake.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iec62676_2_33 import pki
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.sansio.admission import AdmissionLimits
from iec62676_2_33.sansio.proxy_protocol import (
    MAX_HEADER,
    SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    encode,
)
from iec62676_2_33.transport.contexts import client_context, server_context
from iec62676_2_33.transport.tls import (
    TlsServer,
    TlsStream,
    report_authenticated,
    start_tls_server,
)

BOUND = 10.0

# --------------------------------------------------------------------------- the reader


def read_all(data: bytes, step: int) -> tuple[ProxyHeader | None, bytes]:
    reader = ProxyHeaderReader()
    for at in range(0, len(data), step):
        header = reader.feed(data[at:at + step])
        if header is not None:
            return header, reader.trailing_data + data[at + step:]
    return None, b""


@pytest.mark.parametrize("step", [1, 2, 7, 16, 1000])
def test_ipv4_header_in_any_split(step: int) -> None:
    wire = encode(("203.0.113.9", 40123), ("198.51.100.1", 8443)) + b"\x16\x03\x01hello"
    header, rest = read_all(wire, step)
    assert header == ProxyHeader(command="PROXY", source=("203.0.113.9", 40123),
                                 destination=("198.51.100.1", 8443), length=28)
    assert rest == b"\x16\x03\x01hello"


def test_ipv6_header_with_tlvs() -> None:
    tlvs = ((0x02, b"cloud.example"), (0x05, b"unique-1"))
    header, rest = read_all(encode(("2001:db8::7", 5), ("2001:db8::1", 443), tlvs=tlvs), 3)
    assert header is not None and header.source == ("2001:db8::7", 5) and header.tlvs == tlvs
    assert rest == b""


def test_local_command_carries_no_address() -> None:
    header, _ = read_all(encode(None), 100)
    assert header is not None and header.command == "LOCAL" and header.source is None


@pytest.mark.parametrize(("first", "what"), [(b"\x16", "no PROXY v2 signature"),
                                             (b"PROXY TCP4 ", "PROXY v1 text header")])
def test_not_a_header_is_refused_at_the_first_byte(first: bytes, what: str) -> None:
    with pytest.raises(ProxyHeaderError, match=what):
        ProxyHeaderReader().feed(first[:1])


def test_wrong_version_family_and_transport_are_refused() -> None:
    with pytest.raises(ProxyHeaderError, match="version 1"):
        ProxyHeaderReader().feed(SIGNATURE + b"\x11")
    unix = SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + bytes(216)
    with pytest.raises(ProxyHeaderError, match="only TCP"):
        ProxyHeaderReader().feed(unix)
    udp = SIGNATURE + b"\x21\x12" + struct.pack("!H", 12) + bytes(12)
    with pytest.raises(ProxyHeaderError, match="only TCP"):
        ProxyHeaderReader().feed(udp)
    short = SIGNATURE + b"\x21\x11" + struct.pack("!H", 4) + bytes(4)
    with pytest.raises(ProxyHeaderError, match="too short"):
        ProxyHeaderReader().feed(short)
    bad_tlv = SIGNATURE + b"\x21\x11" + struct.pack("!H", 16) + bytes(12) + b"\x02\x00\x09x"
    with pytest.raises(ProxyHeaderError, match="overruns"):
        ProxyHeaderReader().feed(bad_tlv)


def test_header_is_bounded_before_it_is_buffered() -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyHeaderError, match=f"over the limit of {MAX_HEADER}"):
        reader.feed(SIGNATURE + b"\x21\x11" + struct.pack("!H", 65535))
    assert len(reader._buf) <= 16


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700), st.integers(min_value=1, max_value=64))
def test_fuzzed_input_is_a_header_or_one_clear_error(data: bytes, step: int) -> None:
    reader = ProxyHeaderReader()
    try:
        for at in range(0, len(data), step):
            if reader.feed(data[at:at + step]) is not None:
                break
    except ProxyHeaderError as exc:
        assert "\n" not in str(exc)
    assert len(reader._buf) <= MAX_HEADER


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(min_value=1, max_value=40))
def test_fuzzed_valid_headers_round_trip(tail: bytes, step: int) -> None:
    wire = encode(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=((0xE0, tail[:200]),)) + tail
    header, rest = read_all(wire, step)
    assert header is not None and header.tlvs == ((0xE0, tail[:200]),) and rest == tail


# --------------------------------------------------------------------------- the listener


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return pki.make_ca("proxy protocol test CA")


@pytest.fixture(scope="module")
def server_ctx(ca: pki.CertKey) -> ssl.SSLContext:
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1"])
    return server_context(leaf.cert_pem(), leaf.key_pem())


@pytest.fixture
async def peers(server_ctx: ssl.SSLContext, request: pytest.FixtureRequest) -> AsyncIterator[
        tuple[TlsServer, int, asyncio.Queue[object]]]:
    seen: asyncio.Queue[object] = asyncio.Queue()

    async def handler(stream: TlsStream) -> None:
        seen.put_nowait(stream.extra("peername"))
        report_authenticated(stream)
        await stream.write(b"ok")

    server = await start_tls_server(handler, ("127.0.0.1", 0), server_ctx, first_byte_timeout=2.0,
                                    admission=AdmissionLimits(), proxy_protocol_from=request.param)
    try:
        yield server, server.sockets[0].getsockname()[1], seen
    finally:
        async with asyncio.timeout(BOUND):
            await server.aclose()


def _dial(port: int, ca: pki.CertKey, *, prefix: bytes, source: str) -> bytes:
    """A blocking client: optional PROXY header, then TLS; what the server wrote, or an error name."""
    ctx = client_context(cafile_pems=[ca.cert_pem()])
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND, source_address=(source, 0)) as raw:
        raw.sendall(prefix)
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.recv(16)
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {type(exc).__name__}".encode()


async def dial(port: int, ca: pki.CertKey, *, prefix: bytes = b"", source: str = "127.0.0.1") -> bytes:
    async with asyncio.timeout(BOUND):
        return await asyncio.to_thread(_dial, port, ca, prefix=prefix, source=source)


@pytest.mark.parametrize("peers", [["127.0.0.1/32"]], indirect=True)
async def test_balancer_header_names_the_device(peers: tuple[TlsServer, int, asyncio.Queue[object]],
                                                ca: pki.CertKey) -> None:
    """UPL-9: the client address of the header is the peer and the admission source (known after auth)."""
    server, port, seen = peers
    assert await dial(port, ca, prefix=encode(("198.51.100.23", 50000), ("127.0.0.1", port))) == b"ok"
    async with asyncio.timeout(BOUND):
        assert await seen.get() == ("198.51.100.23", 50000)
    assert server.admission.is_known("198.51.100.23", asyncio.get_running_loop().time())
    assert not server.admission.is_known("127.0.0.1", asyncio.get_running_loop().time())
    # LOCAL (the balancer's health check) keeps the balancer's own address
    assert await dial(port, ca, prefix=encode(None)) == b"ok"
    async with asyncio.timeout(BOUND):
        peer = await seen.get()
    assert isinstance(peer, tuple) and peer[0] == "127.0.0.1"


@pytest.mark.parametrize("peers", [()], indirect=True)
async def test_not_configured_refuses_a_header(peers: tuple[TlsServer, int, asyncio.Queue[object]],
                                               ca: pki.CertKey) -> None:
    """Without proxy_protocol_from a PROXY header is garbage before TLS: the handshake fails."""
    server, port, seen = peers
    answer = await dial(port, ca, prefix=encode(("198.51.100.23", 50000)))
    assert answer.startswith(b"refused")
    assert seen.empty() and server.stats["handshake_failed"] == 1
    assert await dial(port, ca) == b"ok"  # plain TLS works as before


@pytest.mark.parametrize("peers", [["127.0.0.1/32"]], indirect=True)
async def test_header_from_a_non_balancer_is_refused(peers: tuple[TlsServer, int, asyncio.Queue[object]],
                                                     ca: pki.CertKey) -> None:
    """127.0.0.2 is not a balancer: its header is not read as one, so it cannot forge its address."""
    server, port, seen = peers
    answer = await dial(port, ca, prefix=encode(("198.51.100.23", 50000)), source="127.0.0.2")
    assert answer.startswith(b"refused")
    assert seen.empty() and server.stats["handshake_failed"] == 1
    assert await dial(port, ca, source="127.0.0.2") == b"ok"  # a direct client speaks plain TLS
    async with asyncio.timeout(BOUND):
        peer = await seen.get()
    assert isinstance(peer, tuple) and peer[0] == "127.0.0.2"


@pytest.mark.parametrize("peers", [["127.0.0.0/30"]], indirect=True)
async def test_balancer_without_a_header_is_refused(peers: tuple[TlsServer, int, asyncio.Queue[object]],
                                                    ca: pki.CertKey) -> None:
    """From a balancer the header is mandatory: a ClientHello first, a bad header or none in time is refused."""
    server, port, seen = peers
    assert (await dial(port, ca)).startswith(b"refused")
    bad = SIGNATURE + b"\x21\x11" + struct.pack("!H", 4096)
    assert (await dial(port, ca, prefix=bad)).startswith(b"refused")
    silent = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(BOUND):  # the first-byte deadline (2 s) closes it
            assert await silent[0].read() == b""
    finally:
        silent[1].close()
    assert seen.empty()
    assert server.stats["refused_proxy"] == 3 and server.stats["handshake_failed"] == 0


@pytest.mark.parametrize("peers", [["127.0.0.1/32"]], indirect=True)
async def test_local_then_close_is_a_health_check(peers: tuple[TlsServer, int, asyncio.Queue[object]],
                                                  ca: pki.CertKey) -> None:
    """A balancer's LOCAL header and a close before any TLS byte is its health check (PROXY v2
    section 2.2: a connection of the proxy's own), not a failed handshake; LOCAL followed by
    bytes that are not TLS still is one."""
    server, port, seen = peers
    for abort in (False, True):  # a FIN, and a reset as HAProxy's TCP check sends
        with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw:
            raw.sendall(encode(None))
            if abort:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    answer = await dial(port, ca, prefix=encode(None) + b"GET / HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"refused")
    async with asyncio.timeout(BOUND):
        while server.stats["health_checks"] + server.stats["handshake_failed"] < 3:
            await asyncio.sleep(0.02)
    assert server.stats["health_checks"] == 2 and server.stats["handshake_failed"] == 1
    assert server.stats["refused_proxy"] == 0 and seen.empty()


def dual_stack() -> bool:
    """This machine can bind an IPv6 socket to every address and reach it over IPv4."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            return True
    except OSError:
        return False


@pytest.mark.skipif(not dual_stack(), reason="this machine has no IPv6 (a container without it): no dual-stack "
                                             "listener to test")
@pytest.mark.parametrize("balancer", ["127.0.0.1/32", "::ffff:127.0.0.1/128"])
async def test_an_ipv4_balancer_on_a_dual_stack_listener_is_the_balancer(balancer: str) -> None:
    """A balancer that reaches a dual-stack listener (``--listen [::]:PORT``) over IPv4 is the balancer
    ``--proxy-protocol-from`` names by its IPv4 address, or by its IPv4-mapped one (its socket address is
    ``::ffff:a.b.c.d``): its header is read, not refused as a bad ClientHello."""
    ca = pki.make_ca("dual stack CA")
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["IP:127.0.0.1"])
    seen: asyncio.Queue[object] = asyncio.Queue()

    async def handler(stream: TlsStream) -> None:
        seen.put_nowait(stream.extra("peername"))
        report_authenticated(stream)
        await stream.write(b"ok")

    sock = bind_listen("::", 0)  # as cloud serve --listen [::]:PORT binds it: IPv4 too
    server = await start_tls_server(handler, sock, server_context(leaf.cert_pem(), leaf.key_pem()),
                                    first_byte_timeout=2.0, admission=AdmissionLimits(),
                                    proxy_protocol_from=[balancer])
    port = sock.getsockname()[1]

    def dial() -> bytes:
        ctx = client_context(cafile_pems=[ca.cert_pem()])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(encode(("198.51.100.23", 50000), ("127.0.0.1", port)))
            try:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    return tls.recv(16)
            except OSError as exc:
                return f"refused: {type(exc).__name__}".encode()

    try:
        async with asyncio.timeout(15):
            assert await asyncio.to_thread(dial) == b"ok"
            assert await seen.get() == ("198.51.100.23", 50000)
    finally:
        async with asyncio.timeout(15):
            await server.aclose()
