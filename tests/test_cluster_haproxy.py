"""UPL-1, UPL-9: the cloud's TLS listener behind a real HAProxy (TCP mode, TLS passthrough)
accepts a PROXY protocol v2 header only from the configured balancer, requires it there,
and never admits a connection by an address a non-balancer wrote.

Every HAProxy here is started by the test from ``examples/haproxy.cfg`` on loopback and
differs only in its server line: the balancer connects from 127.0.0.2 (the listener's
``proxy_protocol_from``), a second proxy from 127.0.0.3 (not a balancer), one balancer
omits ``send-proxy-v2``. Clients dial from their own loopback addresses (127.0.0.9 ...),
so the address a header carries differs from every socket's.

Admission is observed through its per-source rate: one connection per source (burst 1,
no refill during the test). A forged address that had been charged would refuse its real
owner's first connection; the sender's real address, charged instead, is refused on its
second. HAProxy's TCP health checks (a ``LOCAL`` header, then a reset) are counted as
health checks, never as failed handshakes. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cluster_env import Haproxy, have

from iec62676_2_33 import pki
from iec62676_2_33.sansio.admission import AdmissionLimits
from iec62676_2_33.sansio.proxy_protocol import encode
from iec62676_2_33.transport.contexts import client_context, server_context
from iec62676_2_33.transport.tls import (
    TlsServer,
    TlsStream,
    report_authenticated,
    start_tls_server,
)

pytestmark = pytest.mark.skipif(not have("haproxy"), reason="Debian haproxy is needed (.ci/run installs it)")

BOUND = 10.0
BALANCER = "127.0.0.2"
NOT_A_BALANCER = "127.0.0.3"
#: One admission per source for the whole test: a charged source is refused its next connection.
ONCE_PER_SOURCE = AdmissionLimits(rate=0.001, burst=1)

Listener = tuple[TlsServer, int, "asyncio.Queue[object]"]
#: Starts an HAProxy in front of a port: (node port, server options, name) -> the running HAProxy.
Start = Callable[[int, str, str], Awaitable[Haproxy]]


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return pki.make_ca("haproxy test CA")


@pytest.fixture(scope="module")
def server_ctx(ca: pki.CertKey) -> ssl.SSLContext:
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["localhost", "IP:127.0.0.1"])
    return server_context(leaf.cert_pem(), leaf.key_pem())


async def listen(server_ctx: ssl.SSLContext, *, balancers: list[str], admission: AdmissionLimits) -> Listener:
    """The TLS listener as the cloud runs it; its handler reports the peer and answers ``ok``."""
    seen: asyncio.Queue[object] = asyncio.Queue()

    async def handler(stream: TlsStream) -> None:
        seen.put_nowait(stream.extra("peername"))
        report_authenticated(stream)
        await stream.write(b"ok")

    server = await start_tls_server(handler, ("127.0.0.1", 0), server_ctx, first_byte_timeout=2.0,
                                    admission=admission, proxy_protocol_from=balancers)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts HAProxies (in a thread: haproxy -c and the wait block) and stops them all at the end."""
    started: list[Haproxy] = []

    async def balancer(port: int, options: str, name: str) -> Haproxy:
        proxy = await asyncio.to_thread(Haproxy, tmp_path, [port], server_options=options, name=name)
        started.append(proxy)
        return proxy

    yield balancer
    for proxy in started:
        await asyncio.to_thread(proxy.stop)


def _dial(port: int, ca: pki.CertKey, *, prefix: bytes, source: str) -> bytes:
    """A blocking client from ``source``: optional bytes first, then TLS; the answer or ``refused``."""
    ctx = client_context(cafile_pems=[ca.cert_pem()])
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND, source_address=(source, 0)) as raw:
        raw.sendall(prefix)
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.recv(16) or b"refused: closed"
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {type(exc).__name__}".encode()


async def dial(port: int, ca: pki.CertKey, *, source: str, prefix: bytes = b"") -> bytes:
    async with asyncio.timeout(BOUND):
        return await asyncio.to_thread(_dial, port, ca, prefix=prefix, source=source)


async def settled(server: TlsServer, **expected: int) -> None:
    """Wait (bounded) until the listener's counters reach ``expected``; they only grow."""
    async with asyncio.timeout(BOUND):
        while any(server.stats[name] < value for name, value in expected.items()):
            await asyncio.sleep(0.02)
    assert {name: server.stats[name] for name in expected} == expected


async def test_only_the_balancer_header_counts(server_ctx: ssl.SSLContext, ca: pki.CertKey,
                                               stack: Start) -> None:
    server, port, seen = await listen(server_ctx, balancers=[f"{BALANCER}/32"], admission=ONCE_PER_SOURCE)
    try:
        good = await stack(port, f"send-proxy-v2 source {BALANCER}", "balancer")
        rogue = await stack(port, f"send-proxy-v2 source {NOT_A_BALANCER}", "rogue")
        bare = await stack(port, f"source {BALANCER}", "bare")

        # the balancer's header names the client: its address is the peer and the admission source
        assert await dial(good.port, ca, source="127.0.0.9") == b"ok"
        async with asyncio.timeout(BOUND):
            peer = await seen.get()
        assert isinstance(peer, tuple) and peer[0] == "127.0.0.9"
        now = asyncio.get_running_loop().time()
        assert server.admission.is_known("127.0.0.9", now) and not server.admission.is_known(BALANCER, now)

        # the balancer omits the header: refused before TLS
        assert (await dial(bare.port, ca, source="127.0.0.10")).startswith(b"refused")
        await settled(server, refused_proxy=1, handshake_failed=0)

        # a proxy that is not a balancer: its (true) header is a bad ClientHello, charged to the proxy
        assert (await dial(rogue.port, ca, source="127.0.0.11")).startswith(b"refused")
        await settled(server, handshake_failed=1, refused_rate=0)
        assert await dial(good.port, ca, source="127.0.0.11") == b"ok"  # its token was never spent
        assert (await dial(port, ca, source=NOT_A_BALANCER)).startswith(b"refused")  # the proxy's was
        await settled(server, refused_rate=1)

        # a client forges a header behind the balancer's: TLS fails, charged to its real address
        forged = encode(("127.0.0.13", 4000), ("127.0.0.1", good.port))
        assert (await dial(good.port, ca, source="127.0.0.12", prefix=forged)).startswith(b"refused")
        await settled(server, handshake_failed=2, refused_rate=1)
        assert await dial(good.port, ca, source="127.0.0.13") == b"ok"
        assert (await dial(good.port, ca, source="127.0.0.12")).startswith(b"refused")
        await settled(server, refused_rate=2)

        # a client forges a header straight to the node (not from a balancer): the same
        forged = encode(("127.0.0.14", 4000), ("127.0.0.1", port))
        assert (await dial(port, ca, source="127.0.0.4", prefix=forged)).startswith(b"refused")
        await settled(server, handshake_failed=3, refused_rate=2)
        assert await dial(good.port, ca, source="127.0.0.14") == b"ok"
        peers = [seen.get_nowait() for _ in range(seen.qsize())]
        assert [p[0] for p in peers if isinstance(p, tuple)] == ["127.0.0.11", "127.0.0.13", "127.0.0.14"]
    finally:
        async with asyncio.timeout(BOUND):
            await server.aclose()


async def test_a_node_without_proxy_protocol_refuses_the_header(server_ctx: ssl.SSLContext, ca: pki.CertKey,
                                                                stack: Start) -> None:
    server, port, seen = await listen(server_ctx, balancers=[], admission=AdmissionLimits())
    try:
        good = await stack(port, f"send-proxy-v2 source {BALANCER}", "balancer")
        assert (await dial(good.port, ca, source="127.0.0.9")).startswith(b"refused")
        await settled(server, handshake_failed=1, refused_proxy=0)
        assert seen.empty()
    finally:
        async with asyncio.timeout(BOUND):
            await server.aclose()


async def test_health_checks_are_not_failed_handshakes(server_ctx: ssl.SSLContext, ca: pki.CertKey,
                                                       stack: Start,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """HAProxy's check on a send-proxy-v2 server: a PROXY ``LOCAL`` header, then a reset."""
    caplog.set_level(logging.DEBUG, logger="iec62676_2_33.transport.tls")
    server, port, seen = await listen(server_ctx, balancers=[f"{BALANCER}/32"], admission=AdmissionLimits())
    try:
        checked = await stack(port, f"send-proxy-v2 source {BALANCER} check inter 200ms fall 1 rise 1",
                              "checked")
        await settled(server, health_checks=3)
        assert await dial(checked.port, ca, source="127.0.0.9") == b"ok"
        assert server.stats["handshake_failed"] == 0 and server.stats["refused_proxy"] == 0
        async with asyncio.timeout(BOUND):
            peer = await seen.get()
        assert isinstance(peer, tuple) and peer[0] == "127.0.0.9"
    finally:
        async with asyncio.timeout(BOUND):
            await server.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == "iec62676_2_33.transport.tls"]
    assert any(f"health check from balancer {BALANCER}" in line for line in lines), lines
    assert not any("handshake" in line for line in lines), lines
