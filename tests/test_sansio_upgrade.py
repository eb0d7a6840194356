"""The h2c-reverse upgrade handshake, both roles (UPL-2, UPL-3, UPL-4, UPL-14).

UpgradeClient (device) is driven against UpgradeServer (cloud) in memory and
against hand-written responses; the server against hand-written requests.
After the switch a real h2 exchange proves the trailing bytes reach HTTP/2
with the roles reversed (UPL-3).
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from iec62676_2_33.errors import ConfigurationError, LocalProtocolError, RemoteProtocolError
from iec62676_2_33.sansio.upgrade import (
    MAX_HEAD_BYTES,
    UPGRADE_TOKEN,
    BadUpgradeRequest,
    Switched,
    UpgradeClient,
    UpgradeRefused,
    UpgradeRequest,
    UpgradeServer,
    parse_remote_address,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
SWITCH_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n"
)
ADDRESS = "https://cloud.example.com/uplink?tenant=7"


def started(address: str = ADDRESS, **kwargs: object) -> UpgradeClient:
    client = UpgradeClient(address, **kwargs)  # type: ignore[arg-type]
    client.initiate()
    return client


def refusal(raw: bytes) -> UpgradeRefused:
    client = started()
    with pytest.raises(UpgradeRefused) as info:
        client.receive_data(raw)
    return info.value


# ------------------------------------------------------------------ RemoteAddress


class TestRemoteAddress:
    """UPL-2: the request target and Host come from RemoteAddress."""

    @pytest.mark.parametrize(
        ("uri", "target", "host_header", "host", "port"),
        [
            ("https://cloud.example.com/uplink?tenant=7", "/uplink?tenant=7", "cloud.example.com", "cloud.example.com", 443),
            ("https://cloud.example.com", "/", "cloud.example.com", "cloud.example.com", 443),
            ("https://cloud.example.com?x=1", "/?x=1", "cloud.example.com", "cloud.example.com", 443),
            ("https://Cloud.Example.COM:443/a/b", "/a/b", "cloud.example.com", "cloud.example.com", 443),
            ("https://cloud.example.com:8443/a", "/a", "cloud.example.com:8443", "cloud.example.com", 8443),
            ("https://[2001:db8::1]/u", "/u", "[2001:db8::1]", "2001:db8::1", 443),
            ("https://[2001:db8::1]:8443/u", "/u", "[2001:db8::1]:8443", "2001:db8::1", 8443),
            ("https://192.0.2.7:9000/x#frag", "/x", "192.0.2.7:9000", "192.0.2.7", 9000),
        ],
    )  # fmt: skip
    def test_parse(self, uri: str, target: str, host_header: str, host: str, port: int) -> None:
        remote = parse_remote_address(uri)
        assert (remote.scheme, remote.target, remote.host_header, remote.host, remote.port) == (
            "https",
            target,
            host_header,
            host,
            port,
        )

    def test_wss_is_parsed_but_not_native(self) -> None:
        remote = parse_remote_address("wss://cloud.example.com/ws?access_token=secret")
        assert remote.scheme == "wss"
        assert remote.target == "/ws?access_token=secret"
        with pytest.raises(ConfigurationError, match="wss addresses use the WebSocket"):
            UpgradeClient("wss://cloud.example.com/ws")

    @pytest.mark.parametrize(
        ("uri", "message"),
        [
            ("http://cloud.example.com/", "scheme 'http' is not supported"),
            ("cloud.example.com/uplink", "scheme '' is not supported"),
            ("https:///nohost", "has no host"),
            ("https://user:pw@cloud.example.com/", "must not carry user information"),
            ("https://cloud.example.com:99999/", "not a valid URI"),
            ("https://cloud.example.com/a b", "percent-encode"),
        ],
    )
    def test_bad_uri(self, uri: str, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            UpgradeClient(uri)

    def test_error_never_repeats_the_uri(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            parse_remote_address("https://user:s3cret@cloud.example.com/?access_token=t0k")
        assert "s3cret" not in str(info.value) and "t0k" not in str(info.value)


# ------------------------------------------------------------------- device role


class TestClientRequest:
    """UPL-2 / UPL-14: the exact upgrade request."""

    def test_exact_bytes(self) -> None:
        client = UpgradeClient(ADDRESS, extra_headers=[("Authorization", "Bearer t0k3n")])
        assert client.initiate() == (
            b"GET /uplink?tenant=7 HTTP/1.1\r\n"
            b"Host: cloud.example.com\r\n"
            b"User-Agent: iec62676-2-33\r\n"
            b"Connection: Upgrade\r\n"
            b"Upgrade: h2c-reverse\r\n"
            b"Authorization: Bearer t0k3n\r\n"
            b"\r\n"
        )
        assert client.state == "sent"

    def test_ipv6_port_and_user_agent(self) -> None:
        client = UpgradeClient("https://[2001:db8::1]:8443", user_agent="cam/1.0")
        assert client.initiate() == (
            b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\nUser-Agent: cam/1.0\r\n"
            b"Connection: Upgrade\r\nUpgrade: h2c-reverse\r\n\r\n"
        )

    def test_reserved_extra_header_is_refused(self) -> None:
        with pytest.raises(LocalProtocolError, match="'Upgrade' header field"):
            UpgradeClient(ADDRESS, extra_headers=[("Upgrade", "websocket")])

    def test_invalid_header_value_does_not_leak_the_value(self) -> None:
        with pytest.raises(LocalProtocolError) as info:
            UpgradeClient(ADDRESS, extra_headers=[("Authorization", "Bearer s3cret\r\nX: y")])
        assert "s3cret" not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_call_order(self) -> None:
        client = UpgradeClient(ADDRESS)
        with pytest.raises(LocalProtocolError, match="receive_data"):
            client.receive_data(SWITCH_101)
        client.initiate()
        with pytest.raises(LocalProtocolError, match="initiate"):
            client.initiate()


class TestClientSwitch:
    """UPL-2 / UPL-3: a 101 naming h2c-reverse; trailing bytes are never lost."""

    def test_101_and_preface_in_one_chunk(self) -> None:
        client = started()
        event = client.receive_data(SWITCH_101 + PREFACE)
        assert event == Switched(
            trailing_data=PREFACE,
            headers=[("connection", "Upgrade"), ("upgrade", "h2c-reverse")],
        )
        assert client.state == "switched"

    def test_byte_by_byte(self) -> None:
        client = started()
        stream = SWITCH_101 + PREFACE
        for i in range(len(stream)):
            event = client.receive_data(stream[i : i + 1])
            if event is not None:
                break
        assert i == len(SWITCH_101) - 1
        assert isinstance(event, Switched)
        assert event.trailing_data == b""
        assert stream[i + 1 :] == PREFACE

    @pytest.mark.parametrize("cut", range(len(SWITCH_101) + len(PREFACE) + 1))
    def test_every_split_point_keeps_every_byte(self, cut: int) -> None:
        client = started()
        stream = SWITCH_101 + PREFACE
        first, second = stream[:cut], stream[cut:]
        event = client.receive_data(first)
        if event is None:
            event = client.receive_data(second)
            assert isinstance(event, Switched)
            assert event.trailing_data == stream[len(SWITCH_101) :]
        else:
            assert isinstance(event, Switched)
            assert event.trailing_data + second == PREFACE

    def test_token_match_is_case_insensitive(self) -> None:
        raw = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: H2C-Reverse\r\n\r\n"
        event = started().receive_data(raw)
        assert isinstance(event, Switched) and event.trailing_data == b""

    def test_interim_100_is_skipped(self) -> None:
        event = started().receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCH_101 + b"xy")
        assert isinstance(event, Switched) and event.trailing_data == b"xy"

    def test_head_of_exactly_the_limit_is_accepted(self) -> None:
        base = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c-reverse\r\nX-Pad: \r\n\r\n"
        pad = b"p" * (MAX_HEAD_BYTES - len(base))
        raw = base.replace(b"X-Pad: ", b"X-Pad: " + pad)
        assert len(raw) == MAX_HEAD_BYTES
        event = started().receive_data(raw + PREFACE)
        assert isinstance(event, Switched) and event.trailing_data == PREFACE

    def test_data_after_switch_is_a_local_error(self) -> None:
        client = started()
        client.receive_data(SWITCH_101)
        with pytest.raises(LocalProtocolError, match="belong to HTTP/2"):
            client.receive_data(PREFACE)


class TestClientFailures:
    """UPL-2: refusals and broken responses raise with a precise message."""

    def test_401_with_body(self) -> None:
        exc = refusal(
            b"HTTP/1.1 401 Unauthorized\r\n"
            b'WWW-Authenticate: Bearer error="invalid_token"\r\n'
            b"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\ninvalid token\n"
        )
        assert isinstance(exc, RemoteProtocolError)
        assert (exc.status, exc.reason, exc.body_excerpt) == (401, "Unauthorized", "invalid token")
        assert exc.status_hint == 401
        assert ("www-authenticate", 'Bearer error="invalid_token"') in exc.headers
        assert str(exc) == "the cloud refused the uplink upgrade: 401 Unauthorized: invalid token"

    def test_401_body_arriving_later(self) -> None:
        client = started()
        assert (
            client.receive_data(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 7\r\n\r\n") is None
        )
        assert client.state == "refused"
        assert client.receive_data(b"expi") is None
        with pytest.raises(UpgradeRefused, match=r"401 Unauthorized: expired$"):
            client.receive_data(b"red")
        assert client.state == "failed"
        with pytest.raises(LocalProtocolError):
            client.receive_data(b"more")

    def test_200_is_a_refusal(self) -> None:
        exc = refusal(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert (exc.status, exc.reason, exc.body_excerpt) == (200, "OK", "")
        assert str(exc) == "the cloud refused the uplink upgrade: 200 OK"

    def test_missing_reason_phrase_is_filled_in(self) -> None:
        exc = refusal(b"HTTP/1.1 403 \r\nContent-Length: 0\r\n\r\n")
        assert (exc.status, exc.reason) == (403, "Forbidden")

    def test_body_read_up_to_4_kib(self) -> None:
        exc = refusal(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10000\r\n\r\n" + b"a" * 5000
        )
        assert exc.body_excerpt == "a" * 4096
        assert str(exc).endswith(": " + "a" * 300 + "…")

    def test_body_up_to_close(self) -> None:
        client = started()
        raw = b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\nbackend down"
        assert client.receive_data(raw) is None
        with pytest.raises(
            UpgradeRefused,
            match=r"^the cloud refused the uplink upgrade: 502 Bad Gateway: backend down$",
        ):
            client.receive_eof()

    def test_body_control_characters_are_neutralised(self) -> None:
        exc = refusal(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 22\r\n\r\nbad\r\nX-Injected: 1\x1b[0m"
        )
        assert exc.body_excerpt == "bad X-Injected: 1 [0m"

    def test_101_naming_websocket(self) -> None:
        client = started()
        raw = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        with pytest.raises(
            RemoteProtocolError, match="switched to 'websocket' instead of 'h2c-reverse'"
        ) as info:
            client.receive_data(raw)
        assert not isinstance(info.value, UpgradeRefused)
        assert client.state == "failed"

    def test_101_without_upgrade_header(self) -> None:
        with pytest.raises(RemoteProtocolError, match="an unnamed protocol"):
            started().receive_data(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")

    def test_101_naming_two_protocols(self) -> None:
        raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c-reverse, websocket\r\n\r\n"
        with pytest.raises(RemoteProtocolError, match="switched to 'h2c-reverse, websocket'"):
            started().receive_data(raw)

    def test_garbage(self) -> None:
        with pytest.raises(RemoteProtocolError, match="malformed upgrade response") as info:
            started().receive_data(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        assert not isinstance(info.value, UpgradeRefused)

    def test_head_of_20_kib_in_one_chunk(self) -> None:
        raw = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c-reverse\r\nX-Pad: "
            + b"p" * 20480
            + b"\r\n\r\n"
        )
        assert len(raw) == 20547
        with pytest.raises(
            RemoteProtocolError, match=r"head is 20547 bytes, more than the 16384 allowed"
        ):
            started().receive_data(raw)

    def test_head_of_20_kib_in_pieces(self) -> None:
        client = started()
        raw = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c-reverse\r\nX-Pad: "
            + b"p" * 20480
            + b"\r\n\r\n"
        )
        fed = 0
        with pytest.raises(RemoteProtocolError, match="larger than 16384 bytes"):
            for start in range(0, len(raw), 1024):
                client.receive_data(raw[start : start + 1024])
                fed = start + 1024
        assert fed <= MAX_HEAD_BYTES

    def test_eof_before_response(self) -> None:
        client = started()
        client.receive_data(b"HTTP/1.1 10")
        with pytest.raises(
            RemoteProtocolError, match="^connection closed before the upgrade response$"
        ):
            client.receive_eof()
        assert client.state == "failed"


# -------------------------------------------------------------------- cloud role


def request(
    *,
    method: str = "GET",
    target: str = "/uplink",
    version: str = "1.1",
    fields: str = "Host: cloud.example.com\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n",
) -> bytes:
    return f"{method} {target} HTTP/{version}\r\n{fields}\r\n".encode()


def bad(raw: bytes, **kwargs: object) -> tuple[UpgradeServer, BadUpgradeRequest]:
    server = UpgradeServer(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(BadUpgradeRequest) as info:
        server.receive_data(raw)
    assert server.state == "error"
    return server, info.value


class TestServer:
    """UPL-2 / UPL-4 / UPL-14: the cloud parses, classifies and answers the request."""

    def test_request_fields(self) -> None:
        client = UpgradeClient(ADDRESS, extra_headers=[("Authorization", "Bearer t0k3n")])
        server = UpgradeServer()
        req = server.receive_data(client.initiate())
        assert req == UpgradeRequest(
            method="GET",
            target="/uplink?tenant=7",
            path="/uplink",
            query="tenant=7",
            headers=[
                ("host", "cloud.example.com"),
                ("user-agent", "iec62676-2-33"),
                ("connection", "Upgrade"),
                ("upgrade", "h2c-reverse"),
                ("authorization", "Bearer t0k3n"),
            ],
            host="cloud.example.com",
            authorization="Bearer t0k3n",
            kind="h2c-reverse",
        )
        assert server.request == req and server.state == "request"

    def test_accept_exact_bytes(self) -> None:
        server = UpgradeServer()
        server.receive_data(request())
        assert server.accept() == SWITCH_101
        assert server.state == "switched" and server.trailing_data == b""

    def test_accept_extra_headers(self) -> None:
        server = UpgradeServer()
        server.receive_data(request())
        assert server.accept([("X-Cloud", "a")]) == (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c-reverse\r\nX-Cloud: a\r\n\r\n"
        )

    def test_byte_by_byte_and_trailing_data(self) -> None:
        server = UpgradeServer()
        stream = request() + b"early"
        results = [server.receive_data(stream[i : i + 1]) for i in range(len(stream))]
        assert [i for i, r in enumerate(results) if r is not None] == [len(request()) - 1]
        assert server.trailing_data == b"early"
        server.receive_data(b"+more")
        server.accept()
        assert server.trailing_data == b"early+more"

    def test_early_bytes_are_bounded(self) -> None:
        server = UpgradeServer(max_head_bytes=1024)
        assert server.receive_data(request()) is not None
        assert server.receive_data(b"x" * 1024) is None
        with pytest.raises(BadUpgradeRequest, match="sent 1025 bytes before the upgrade"):
            server.receive_data(b"x")
        assert server.state == "error"

    def test_trailing_data_in_one_chunk(self) -> None:
        server = UpgradeServer()
        assert isinstance(server.receive_data(request() + PREFACE), UpgradeRequest)
        server.accept()
        assert server.trailing_data == PREFACE

    def test_websocket_is_classified_not_accepted(self) -> None:
        fields = (
            "Host: c\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: h2c-reverse\r\n"
        )
        server = UpgradeServer()
        req = server.receive_data(request(target="/ws?access_token=abc", fields=fields) + b"x")
        assert req is not None and req.kind == "websocket"
        assert (req.path, req.query) == ("/ws", "access_token=abc")
        assert server.trailing_data == b"x"
        with pytest.raises(LocalProtocolError, match="WebSocket module"):
            server.accept()

    def test_absolute_form_target(self) -> None:
        req = UpgradeServer().receive_data(request(target="https://cloud.example.com/u?q=1"))
        assert req is not None and (req.path, req.query) == ("/u", "q=1")

    def test_not_get(self) -> None:
        server, exc = bad(request(method="POST"))
        assert exc.status_hint == 405 and exc.response_headers == (("Allow", "GET"),)
        assert str(exc) == "the uplink upgrade request must use GET, not POST (UPL-2)"
        body = b"the uplink upgrade request must use GET, not POST (UPL-2)\n"
        assert server.reject_error(exc) == (
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        assert server.state == "rejected"

    def test_missing_upgrade(self) -> None:
        server, exc = bad(request(fields="Host: c\r\n"))
        assert exc.status_hint == 426 and exc.response_headers == (("Upgrade", UPGRADE_TOKEN),)
        assert "has no Upgrade header field" in str(exc)
        assert server.reject_error(exc, body=b"").startswith(
            b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c-reverse\r\nContent-Length: 0\r\n"
        )

    def test_other_upgrade_token(self) -> None:
        _, exc = bad(request(fields="Host: c\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"))
        assert exc.status_hint == 426 and "offers 'h2c'" in str(exc)

    def test_connection_lacks_upgrade(self) -> None:
        _, exc = bad(
            request(fields="Host: c\r\nConnection: keep-alive\r\nUpgrade: h2c-reverse\r\n")
        )
        assert exc.status_hint == 400
        assert "Connection header field must contain 'upgrade'" in str(exc)

    @pytest.mark.parametrize("framing", ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"])
    def test_request_body(self, framing: str) -> None:
        fields = f"Host: c\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\n{framing}"
        _, exc = bad(request(fields=fields) + b"hello")
        assert exc.status_hint == 400 and str(exc) == "the upgrade request must not have a body"

    def test_content_length_zero_is_fine(self) -> None:
        fields = "Host: c\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\nContent-Length: 0\r\n"
        assert UpgradeServer().receive_data(request(fields=fields)) is not None

    def test_head_too_large_in_one_chunk(self) -> None:
        fields = (
            "Host: c\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\nX-Pad: "
            + "p" * 20480
            + "\r\n"
        )
        _, exc = bad(request(fields=fields))
        assert exc.status_hint == 431 and "more than the 16384 allowed" in str(exc)

    def test_head_too_large_in_pieces(self) -> None:
        server = UpgradeServer(max_head_bytes=1024)
        raw = request(fields="Host: c\r\nX-Pad: " + "p" * 4000 + "\r\n")
        with pytest.raises(BadUpgradeRequest) as info:
            for start in range(0, len(raw), 100):
                server.receive_data(raw[start : start + 100])
        assert info.value.status_hint == 431
        assert str(info.value) == "the upgrade request head is larger than 1024 bytes"
        assert server.reject(431).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")

    def test_http_1_0(self) -> None:
        _, exc = bad(request(version="1.0"))
        assert exc.status_hint == 400 and "needs HTTP/1.1, not HTTP/1.0" in str(exc)

    def test_missing_host(self) -> None:
        _, exc = bad(request(fields="Connection: Upgrade\r\nUpgrade: h2c-reverse\r\n"))
        assert exc.status_hint == 400 and "Host" in str(exc)

    def test_two_authorizations(self) -> None:
        fields = "Host: c\r\nConnection: Upgrade\r\nUpgrade: h2c-reverse\r\nAuthorization: a\r\nAuthorization: b\r\n"
        _, exc = bad(request(fields=fields))
        assert exc.status_hint == 400 and "more than one Authorization" in str(exc)

    def test_garbage(self) -> None:
        _, exc = bad(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        assert exc.status_hint == 400 and str(exc).startswith("malformed upgrade request")

    def test_accepted_paths(self) -> None:
        seen: list[str] = []

        def only_uplink(path: str) -> bool:
            seen.append(path)
            return path == "/uplink"

        assert UpgradeServer(accepted_paths=only_uplink).receive_data(request()) is not None
        _, exc = bad(request(target="/other?x=1"), accepted_paths=only_uplink)
        assert exc.status_hint == 404 and str(exc) == "no uplink endpoint at '/other'"
        assert seen == ["/uplink", "/other"]

    def test_reject_401_exact_bytes(self) -> None:
        server = UpgradeServer()
        server.receive_data(request())
        raw = server.reject(
            401,
            body=b"invalid token",
            headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')],
        )
        assert raw == (
            b"HTTP/1.1 401 Unauthorized\r\n"
            b'WWW-Authenticate: Bearer error="invalid_token"\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 13\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"invalid token"
        )
        with pytest.raises(LocalProtocolError):
            server.accept()

    def test_reject_without_body_adds_no_content_type(self) -> None:
        server = UpgradeServer()
        server.receive_data(request())
        assert server.reject(403, "Go away") == (
            b"HTTP/1.1 403 Go away\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )

    def test_reject_reason_quoting_a_peer_falls_back_to_the_standard_phrase_upl_13(self) -> None:
        """UPL-13: the 409 for a device identity held in another mode quotes the identity (a certificate CN,
        any Unicode); a status line cannot carry it, so the line gets the standard phrase and the body the text."""
        for reason in ("device identity 'カメラ-1' is connected with mTLS", "line\r\nX-Injected: 1"):
            server = UpgradeServer()
            server.receive_data(request())
            body = f"{reason}\n".encode()
            raw = server.reject(409, reason, body=body)
            assert raw.startswith(b"HTTP/1.1 409 Conflict\r\n")
            assert raw.endswith(body)
            assert b"X-Injected: 1\r\n" not in raw.split(b"\r\n\r\n", 1)[0]

    def test_reject_misuse(self) -> None:
        server = UpgradeServer()
        server.receive_data(request())
        with pytest.raises(LocalProtocolError, match="300..599"):
            server.reject(101)
        with pytest.raises(LocalProtocolError, match="'Content-Length'"):
            server.reject(400, headers=[("Content-Length", "3")])
        with pytest.raises(LocalProtocolError, match="invalid header"):
            server.reject(400, headers=[("X-A", "b\r\nc")])

    def test_call_order(self) -> None:
        server = UpgradeServer()
        with pytest.raises(LocalProtocolError):
            server.accept()
        with pytest.raises(LocalProtocolError):
            _ = server.trailing_data
        server.receive_data(request())
        server.accept()
        with pytest.raises(LocalProtocolError):
            server.receive_data(PREFACE)
        with pytest.raises(LocalProtocolError):
            server.reject(400)

    def test_eof_before_request(self) -> None:
        server = UpgradeServer()
        server.receive_data(b"GET /uplink HTTP/1.1\r\nHo")
        with pytest.raises(
            BadUpgradeRequest, match="before the upgrade request was complete"
        ) as info:
            server.receive_eof()
        assert info.value.status_hint == 400

    def test_eof_after_request(self) -> None:
        server = UpgradeServer()
        server.receive_data(request())
        with pytest.raises(RemoteProtocolError, match="before the upgrade was answered"):
            server.receive_eof()


# ------------------------------------------------------------- both, in memory


class TestInMemory:
    """UPL-2 / UPL-3 / UPL-14: device and cloud state machines against each other."""

    def test_refused_in_memory(self) -> None:
        client = UpgradeClient(ADDRESS, extra_headers=[("Authorization", "Bearer expired")])
        server = UpgradeServer()
        req = server.receive_data(client.initiate())
        assert req is not None and req.authorization == "Bearer expired"
        answer = server.reject(401, body=b"invalid token", headers=[("WWW-Authenticate", "Bearer")])
        with pytest.raises(UpgradeRefused, match="401 Unauthorized: invalid token") as info:
            client.receive_data(answer)
        assert ("www-authenticate", "Bearer") in info.value.headers

    def test_rejected_error_in_memory(self) -> None:
        client = UpgradeClient("https://cloud.example.com/wrong")
        server = UpgradeServer(accepted_paths=lambda p: p == "/uplink")
        with pytest.raises(BadUpgradeRequest) as info:
            server.receive_data(client.initiate())
        with pytest.raises(UpgradeRefused, match="404 Not Found: no uplink endpoint at '/wrong'"):
            client.receive_data(server.reject_error(info.value))

    def test_switch_then_http2_with_reversed_roles(self) -> None:
        """UPL-3: the cloud is the HTTP/2 client, the device the HTTP/2 server."""
        client = UpgradeClient(ADDRESS)
        server = UpgradeServer()
        assert server.receive_data(client.initiate()) is not None
        cloud_h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        cloud_h2.initiate_connection()
        stream_id = cloud_h2.get_next_available_stream_id()
        cloud_h2.send_headers(
            stream_id,
            [(":method", "GET"), (":path", "/onvif/device_service"),
             (":scheme", "https"), (":authority", "device")],
            end_stream=True,
        )  # fmt: skip
        # The 101 and the cloud's first HTTP/2 bytes leave in one write.
        switched = client.receive_data(server.accept() + cloud_h2.data_to_send())
        assert isinstance(switched, Switched)
        assert switched.trailing_data.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

        device_h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        device_h2.initiate_connection()
        events = device_h2.receive_data(switched.trailing_data)
        requests = [e for e in events if isinstance(e, h2.events.RequestReceived)]
        assert [dict(r.headers)[b":path"] for r in requests] == [b"/onvif/device_service"]
        device_h2.send_headers(requests[0].stream_id, [(":status", "200")], end_stream=True)

        answers = cloud_h2.receive_data(device_h2.data_to_send())
        responses = [e for e in answers if isinstance(e, h2.events.ResponseReceived)]
        assert [(r.stream_id, dict(r.headers)[b":status"]) for r in responses] == [(1, b"200")]


def test_malformed_request_never_echoes_its_bytes_upl_14() -> None:
    """UPL-14: h11 quotes an illegal header line; a token in it must not reach the error (logs, 400 body)."""
    raw = b"GET /uplink HTTP/1.1\r\nHost: c\r\nAuthorization : Bearer SECRET-TOKEN\r\nUpgrade: h2c-reverse\r\n\r\n"
    _, exc = bad(raw)
    assert exc.status_hint == 400
    assert str(exc) == "malformed upgrade request: not valid HTTP/1.1"
    assert "SECRET" not in str(exc)
