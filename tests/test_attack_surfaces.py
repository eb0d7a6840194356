"""Attacks on the cloud's proxy, the VSS's RTSP-over-HTTP tunnels and the VSS's default prefix, on real loopback.

* UPL-16, GEN-3: a device cannot forge the proxy's own-answer marker (``x-iec62676-proxy-answer``), by which a
  cluster node relaying a Python API call tells the proxy's refusals from the device's answers: the proxy drops
  the device's copy, and still marks its own answers.
* SEC-1, STR-2: an RTSP-over-HTTP POST channel joins only the GET channel of the same VSS user; another user
  who knows the ``x-sessioncookie`` gets 404 and cannot drive the session.
* SEC-1, STR-1: the VSS's RTSP front (RTSP Digest) bounds players that are not logged in: at most
  ``LOGIN_BYTES`` read from one (a request with a large body is 400, not buffered), at most ``max_logins`` at once
  (503).
* SEC-1, STR-1: an RFC 2069 Digest answer (no ``qop``) captured on one connection is refused on another (its
  nonce was not issued there); a player authorized for one relayed stream who asks for another stream on the same
  connection gets 404 and the session ends (the other upstream is never contacted).
* ADR-4: asking a lower system for its Annex A device ID reads at most ``MAX_ANSWER`` bytes within the
  deadline for the whole answer: a huge or a trickling answer is one ConfigurationError line.

Real parts: the cloud listener and a device on its uplink (TLS, certificates made here), the library's HTTP
server with the VSS's tunnel handler, plain HTTP servers on loopback; every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_proxy_budgets
from helpers import http_serving, rtsp_stub_server
from test_proxy_budgets import Sink, proxy_env

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime.exchange import Exchange
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.runtime.httpd import start_http_server
from iec62676_2_33.runtime.proxy import PROXY_ANSWER, ProxyLimits
from iec62676_2_33.security.httpdigest import DigestAuthenticator
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.transport.tcp import start_tcp_server
from iec62676_2_33.vss.prefix import MAX_ANSWER, default_prefix
from iec62676_2_33.vss.rtsp import RelayTable, VssRtspFront
from iec62676_2_33.vss.rtsp_auth import LOGIN_BYTES, RtspAuthenticator
from iec62676_2_33.vss.rtsp_http import HttpTunnels

MARKER = PROXY_ANSWER.decode()


class ForgingSink(Sink):
    """A device app that answers 404 marked as if the proxy had answered (``x-iec62676-proxy-answer``)."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = b"device says: not connected"
        start_response("404 Not Found", [("Content-Type", "text/plain"), (MARKER, "1"),
                                         ("Content-Length", str(len(body)))])
        return [body]


def test_a_device_cannot_forge_the_proxy_answer_marker_upl_16(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """UPL-16, GEN-3: the device's 404 reaches the client as the device's (no marker); the proxy's own 404 for a
    device that is not connected keeps the marker."""
    monkeypatch.setattr(test_proxy_budgets, "Sink", ForgingSink)
    with proxy_env(tmp_path, ProxyLimits()) as env:
        forged = httpx.get(f"{env.url}/devices/sink/onvif/device_service", timeout=15)
        assert forged.status_code == 404 and forged.text == "device says: not connected"
        assert MARKER not in forged.headers
        own = httpx.get(f"{env.url}/devices/nobody/onvif/device_service", timeout=15)
        assert own.status_code == 404 and own.headers[MARKER] == "1"


USERS = {"alice": ("alice-pw", "User"), "mallory": ("mallory-pw", "User")}


async def _not_here(ex: Exchange) -> None:
    await ex.respond(404, [("content-type", "text/plain")], b"not here\n")


@pytest.fixture
def tunnels() -> Iterator[str]:
    """The VSS's RTSP-over-HTTP handler (HTTP Digest of ``USERS``) on the library's HTTP server; its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sock = bind_listen("127.0.0.1", 0)
    handler = HttpTunnels(_not_here, VssRtspFront(RelayTable("rtsp://127.0.0.1:9")),
                          DigestAuthenticator(USERS.get, "vss"), pair_timeout=10.0)
    server = asyncio.run_coroutine_threadsafe(start_http_server(handler, sock), loop).result(10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_tunnel_cookie_is_the_users_own_sec_1(tunnels: str) -> None:
    """SEC-1, STR-2: alice's GET channel waits under cookie ``c``; mallory's POST with ``c`` is 404 (before, it
    was joined to alice's session); alice's own POST with ``c`` is joined (the session ends: 204)."""
    uri = f"{tunnels}/relay/abc"
    head = {"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": "c"}
    with httpx.Client(auth=httpx.DigestAuth("alice", "alice-pw"), timeout=10) as alice, \
            httpx.Client(auth=httpx.DigestAuth("mallory", "mallory-pw"), timeout=10) as mallory, \
            alice.stream("GET", uri, headers=head) as channel:
        assert channel.status_code == 200
        hijack = mallory.post(uri, content=b"", headers=head)
        assert hijack.status_code == 404, hijack.text
        own = alice.post(uri, content=b"", headers=head)
        assert own.status_code == 204


def test_one_user_cannot_hold_every_waiting_tunnel_sec_1(tunnels: str) -> None:
    """SEC-1, STR-2: mallory's GET channels that never get a POST hold at most 8 waiting slots (before, one user
    could take all 64 for the pairing deadline): the ninth is 503, and alice's GET is still served."""
    uri = f"{tunnels}/relay/abc"
    with contextlib.ExitStack() as held, \
            httpx.Client(auth=httpx.DigestAuth("alice", "alice-pw"), timeout=10) as alice, \
            httpx.Client(auth=httpx.DigestAuth("mallory", "mallory-pw"), timeout=10,
                         limits=httpx.Limits(max_connections=16)) as mallory:
        for n in range(8):
            channel = held.enter_context(mallory.stream(
                "GET", uri, headers={"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": f"m{n}"}))
            assert channel.status_code == 200
        ninth = mallory.get(uri, headers={"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": "m8"})
        assert ninth.status_code == 503, ninth.text
        with alice.stream("GET", uri, headers={"accept": "application/x-rtsp-tunnelled",
                                               "x-sessioncookie": "a0"}) as channel:
            assert channel.status_code == 200


async def _status(reader: asyncio.StreamReader) -> str:
    """The status line of the front's next answer."""
    return (await asyncio.wait_for(reader.readline(), 15)).decode("latin-1").strip()


async def test_the_rtsp_front_bounds_players_before_login_sec_1() -> None:
    """SEC-1, STR-1: a DESCRIBE without credentials whose body is over ``LOGIN_BYTES`` is 400 (before, the front
    read up to 1 MiB per attempt and answered 401); with ``max_logins`` players logging in, the next gets 503."""
    front = VssRtspFront(RelayTable("rtsp://127.0.0.1:9"), auth=RtspAuthenticator(USERS.get, "vss"))
    front.max_logins = 2
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    opened: list[asyncio.StreamWriter] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        opened.append(writer)
        body = b"v=0\r\n" * (LOGIN_BYTES // 4)
        writer.write(f"DESCRIBE rtsp://127.0.0.1:{port}/relay/abc RTSP/1.0\r\nCSeq: 1\r\n"
                     f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert await _status(reader) == "RTSP/1.0 400 Bad Request"
        for _ in range(2):  # two players that say nothing yet
            opened.append((await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10))[1])
        await asyncio.to_thread(wait_until, lambda: front.logins == 2, 10, what="two players logging in")
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        opened.append(writer)
        assert await _status(reader) == "RTSP/1.0 503 Service Unavailable"
    finally:
        for writer in opened:
            writer.close()
        server.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, list[str]]]:
    """The front's next answer: status line and headers (lower-case names; its body is read and dropped)."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)).decode("latin-1").split("\r\n")
    fields: dict[str, list[str]] = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    if length := int(fields.get("content-length", ["0"])[0]):
        await asyncio.wait_for(reader.readexactly(length), 15)
    return head[0], fields


def _rfc2069(user: str, password: str, nonce: str, method: str, uri: str) -> str:
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = h(f"{h(f'{user}:vss:{password}')}:{nonce}:{h(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="vss", nonce="{nonce}", uri="{uri}", algorithm=MD5, '
            f'response="{response}"')


async def test_rtsp_digest_is_bound_to_the_connection_and_the_stream_sec_1() -> None:
    """SEC-1, STR-1: RFC 2069 replay on another connection, and another stream on an authorized connection."""
    seen: list[str] = []
    upstream = await rtsp_stub_server(seen)
    at = f"rtsp://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    table = RelayTable("rtsp://front")
    stream_a = table.expose(f"{at}/a", "cam").rsplit("/", 1)[1]
    stream_b = table.expose(f"{at}/b", "cam").rsplit("/", 1)[1]
    front = VssRtspFront(table, auth=RtspAuthenticator(USERS.get, "vss"))
    server = await start_tcp_server(front.handle, bind_listen("127.0.0.1", 0))
    base = f"rtsp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    uri_a, uri_b = f"{base}/relay/{stream_a}", f"{base}/relay/{stream_b}"
    opened: list[asyncio.StreamWriter] = []

    async def challenged() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1])), 10)
        opened.append(writer)
        writer.write(f"DESCRIBE {uri_a} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        status, fields = await _answer(reader)
        assert status == "RTSP/1.0 401 Unauthorized"
        nonce = re.search(r'nonce="([^"]+)"', fields["www-authenticate"][0])
        assert nonce is not None
        return reader, writer, nonce.group(1)

    try:
        reader1, writer1, nonce1 = await challenged()
        reader2, writer2, _ = await challenged()
        captured = _rfc2069("alice", "alice-pw", nonce1, "DESCRIBE", uri_a)
        writer2.write(f"DESCRIBE {uri_a} RTSP/1.0\r\nCSeq: 2\r\nAuthorization: {captured}\r\n\r\n".encode())
        status, fields = await _answer(reader2)
        assert status == "RTSP/1.0 401 Unauthorized" and "stale=true" in fields["www-authenticate"][0].lower()
        writer1.write(f"DESCRIBE {uri_a} RTSP/1.0\r\nCSeq: 2\r\nAuthorization: {captured}\r\n\r\n".encode())
        assert (await _answer(reader1))[0] == "RTSP/1.0 200 OK"
        writer1.write(f"DESCRIBE {uri_b} RTSP/1.0\r\nCSeq: 3\r\n\r\n".encode())
        assert (await _answer(reader1))[0] == "RTSP/1.0 404 Not Found"
        assert await asyncio.wait_for(reader1.read(), 15) == b""  # the session ended
        assert seen == [f"DESCRIBE {at}/a RTSP/1.0"]
    finally:
        for writer in opened:
            writer.close()
        server.close()
        upstream.close()


async def test_the_relay_hides_the_address_of_a_camera_named_by_host_name_sec_1() -> None:
    """SEC-1, STR-1: a camera configured by host name (``localhost``) writes its address into Content-Base, SDP
    controls and ``c=``; the player, through a relay, sees its own URL and the unspecified address only (the
    relay takes the address of its connection to the camera for the camera's too). Before, the address passed."""
    async def camera(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            cseq = next(line for line in head.decode().split("\r\n") if line.lower().startswith("cseq"))
            here = f"rtsp://127.0.0.1:{port}/cam"
            sdp = f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nc=IN IP4 127.0.0.1\r\na=control:{here}/trackID=1\r\n".encode()
            writer.write(f"RTSP/1.0 200 OK\r\n{cseq}\r\nContent-Base: {here}/\r\nContent-Type: application/sdp\r\n"
                         f"Content-Length: {len(sdp)}\r\n\r\n".encode() + sdp)
            await writer.drain()
        finally:
            writer.close()

    upstream = await asyncio.start_server(camera, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    table = RelayTable("rtsp://front")
    stream = table.expose(f"rtsp://localhost:{port}/cam", "cam").rsplit("/", 1)[1]
    server = await start_tcp_server(VssRtspFront(table).handle, bind_listen("127.0.0.1", 0))
    uri = f"rtsp://127.0.0.1:{server.sockets[0].getsockname()[1]}/relay/{stream}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*server.sockets[0].getsockname()[:2]), 10)
        writer.write(f"DESCRIBE {uri} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)).decode()
        length = int(re.search(r"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = (await asyncio.wait_for(reader.readexactly(length), 15)).decode()
        writer.close()
        assert head.startswith("RTSP/1.0 200 OK") and f"Content-Base: {uri}/\r\n" in head
        assert body == f"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nc=IN IP4 0.0.0.0\r\na=control:{uri}/trackID=1\r\n"
        assert f":{port}" not in head + body
    finally:
        server.close()
        upstream.close()


class _Answers(BaseHTTPRequestHandler):
    """A "device service" whose answer is huge (``/huge``) or trickles a byte at a time (``/slow``)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/soap+xml")
        self.end_headers()
        try:
            if self.path == "/huge":
                chunk = b" " * 65536
                for _ in range(64 * 16):  # 64 MiB, unless the client stops reading
                    self.wfile.write(chunk)
            else:
                for _ in range(60):  # a byte every 0.2 s: each read is in time, the whole never is
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[str]:
    with http_serving(_Answers) as port:
        yield f"http://127.0.0.1:{port}"


def test_the_prefix_question_reads_a_bounded_answer_adr_4(answering: str) -> None:
    """ADR-4: a GetDeviceInformation answer over ``MAX_ANSWER`` bytes, and one that trickles past the deadline,
    are each refused with one line asking for ``--prefix``."""
    with pytest.raises(ConfigurationError, match=f"longer than {MAX_ANSWER} bytes.*--prefix"):
        default_prefix(url=f"{answering}/huge", timeout=5)
    with pytest.raises(ConfigurationError, match="no whole answer within 1 s.*--prefix"):
        default_prefix(url=f"{answering}/slow", timeout=1)
