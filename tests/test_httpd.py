"""The library's own HTTP server (runtime/httpd.py) over HTTP/1.1, spoken by hand on raw sockets:
reason phrases, head limits, chunked bodies, pipelining, deadlines, the connection cap, stopping.

Every wait is bounded by a socket timeout; durations are never asserted."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading

import pytest
from httpd_env import Reader, SampleApp, connect, request, running_server, wsgi

from iec62676_2_33.runtime.asgi_handler import AsgiHandler
from iec62676_2_33.runtime.httpd import HttpSettings
from iec62676_2_33.testing.harness import wait_until


@pytest.fixture
def app() -> SampleApp:
    return SampleApp()


def test_every_status_line_carries_the_standard_reason_phrase(app: SampleApp) -> None:
    """The application's reason phrase is kept; an empty one becomes the standard phrase (h2load --h1
    counts a status line without one as a failed request); the server's own refusals have one too."""
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        reader = Reader(sock)
        for path, line in (("/echo", b"HTTP/1.1 200 OK"), ("/status/418", b"HTTP/1.1 418 I'm a Teapot"),
                           ("/status/204", b"HTTP/1.1 204 No Content"), ("/nothing", b"HTTP/1.1 404 Not Found"),
                           ("/status/599", b"HTTP/1.1 599 Unknown")):
            sock.sendall(request("GET", path))
            assert reader.response().status_line == line
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: h11 refuses the request
        assert reader.response().status_line == b"HTTP/1.1 400 Bad Request"


def test_head_limits_are_enforced_before_the_application_runs(app: SampleApp) -> None:
    """Too many header fields: 431; a head over max_head_size: 431; a long request line: 414, whether
    or not it fits in the head limit; a declared body over the size limit: 413. The app never runs."""
    settings = HttpSettings(max_head_size=8192, max_request_line=1024, max_header_count=20)
    cases = [
        (request("GET", "/echo", headers={f"X-H{i}": "v" for i in range(21)}), 431),
        (request("GET", "/echo", headers={"X-Big": "v" * 9000}), 431),
        (request("GET", "/echo?" + "q" * 2000), 414),
        (request("GET", "/echo?" + "q" * 9000), 414),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
         % (settings.max_body_size + 1), 413),
    ]
    with running_server(wsgi(app), settings) as srv:
        for data, status in cases:
            with connect(srv.port) as sock:
                sock.sendall(data)
                reader = Reader(sock)
                got = reader.response()
                assert got.status == status, (data[:60], got)
                assert got.headers["connection"] == "close"
                assert reader.at_eof()
    assert app.calls == []


def test_chunked_and_content_length_bodies_reach_the_application(app: SampleApp) -> None:
    """A chunked body and a Content-Length body are read whole through ``wsgi.input``; CONTENT_LENGTH is
    set only when the client declared it, and ``wsgi.input_terminated`` is True."""
    body = bytes(range(256)) * 1000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:70000], body[70000:]))
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
        assert reader.response().body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
        sock.sendall(request("POST", "/echo", body))
        assert reader.response().body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
        sock.sendall(b"POST /environ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-Test: 1\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n")
        seen = reader.response().body.decode()
        assert "'CONTENT_LENGTH': None" in seen and "'wsgi.input_terminated': True" in seen
        assert "'SERVER_PROTOCOL': 'HTTP/1.1'" in seen and "'HTTP_X_TEST': '1'" in seen
        sock.sendall(request("POST", "/environ", b"abc"))
        assert "'CONTENT_LENGTH': '3'" in reader.response().body.decode()


def test_a_chunked_body_over_the_size_limit_gets_413(app: SampleApp) -> None:
    """A chunked body that grows past max_body_size fails while it is read: 413, connection closed."""
    from iec62676_2_33.http2.limits import H2Limits

    settings = HttpSettings(h2_limits=H2Limits(max_body_size=100_000))
    with running_server(wsgi(app), settings) as srv, connect(srv.port) as sock:
        part = b"x" * 30_000
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for _ in range(4)))
        reader = Reader(sock)
        got = reader.response()
        assert got.status == 413 and got.headers["connection"] == "close"
        assert reader.at_eof()


def test_pipelined_requests_are_answered_in_order(app: SampleApp) -> None:
    """Three requests in one write (two with bodies) get three answers in order on one connection."""
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        sock.sendall(request("POST", "/echo", b"one") + request("GET", "/status/418")
                     + request("POST", "/echo", b"three!"))
        reader = Reader(sock)
        answers = [reader.response() for _ in range(3)]
        assert [a.status for a in answers] == [200, 418, 200]
        assert answers[0].body.startswith(b"3 ") and answers[2].body.startswith(b"6 ")
        assert "connection" not in answers[0].headers  # kept alive


def test_slow_loris_head_is_cut_at_the_header_deadline(app: SampleApp) -> None:
    """A client that trickles its head one byte at a time gets 408 and a closed connection at
    header_timeout after its head began: new bytes do not move the deadline."""
    settings = HttpSettings(header_timeout=0.5)
    with running_server(wsgi(app), settings) as srv, connect(srv.port) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n")
        sock.settimeout(0.05)
        answer = b""
        for _ in range(400):  # at most 20 s of trickling; the server must cut it off long before
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        else:
            pytest.fail("the server kept accepting a head that never ends")
        sock.settimeout(5)
        try:
            while data := sock.recv(4096):
                answer += data
        except (ConnectionResetError, OSError):
            pass
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert app.calls == []


def test_the_first_head_has_one_header_deadline_sec_1(app: SampleApp) -> None:
    """SEC-1: the first head must be complete ``header_timeout`` after the connection was accepted, however long
    its first bytes took to come (before, the wait for those bytes and the head each had the whole time, so a
    client could hold a connection for twice as long)."""
    settings = HttpSettings(header_timeout=1.0)
    with running_server(wsgi(app), settings) as srv, connect(srv.port) as sock:
        threading.Event().wait(0.8)
        sock.sendall(b"GET /echo HTTP/1.1\r\n")
        threading.Event().wait(0.9)  # well past the deadline of the connection, within one of the head
        try:
            sock.sendall(b"Host: t\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = Reader(sock).response()
    assert answer.status == 408
    assert app.calls == []


def test_request_targets_are_paths_or_absolute_urls_of_the_host_sec_1(app: SampleApp) -> None:
    """SEC-1: a path with "://" in it stays that path and keeps its query (before, ``/nope://x/echo`` ran
    ``/echo`` and ``/environ?u=http://x/y/z`` ran ``/y/z``: a front filtering by path and this server
    disagreed); an absolute URL runs its path when its authority is the Host, and is 400 when it names
    another host (routing by Host and by target cannot disagree)."""
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        reader = Reader(sock)
        sock.sendall(request("GET", "/nope://x/echo"))
        assert reader.response().status == 404
        sock.sendall(request("POST", "/environ?u=http://x/y/z", b""))
        assert reader.response().status == 200
        sock.sendall(b"GET http://T/echo?q=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.response().status == 200
        sock.sendall(b"GET http://other.example/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        refused = reader.response()
        assert refused.status == 400 and refused.headers["connection"] == "close"
    assert app.calls == ["/nope://x/echo", "/environ", "/echo"]  # the refused one never ran


def test_content_length_with_transfer_encoding_is_refused_sec_1(app: SampleApp) -> None:
    """SEC-1: a request with both Content-Length and Transfer-Encoding is 400 and the connection closes, the
    request behind it unread (before, it was served by its chunks, the application was told the other length,
    and the connection stayed open for the next request: a front that went by Content-Length would desync)."""
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nAAAAA\r\n0\r\n\r\n" + request("GET", "/echo"))
        reader = Reader(sock)
        answer = reader.response()
        assert answer.status == 400 and answer.headers["connection"] == "close"
        assert reader.at_eof()
    assert app.calls == []


def test_idle_keep_alive_connections_are_closed(app: SampleApp) -> None:
    """After an answer, a connection that sends nothing more is closed at idle_timeout (and a fresh
    connection that sends nothing at header_timeout), without an answer."""
    settings = HttpSettings(idle_timeout=0.3, header_timeout=0.3)
    with running_server(wsgi(app), settings) as srv:
        with connect(srv.port) as sock:
            reader = Reader(sock)
            sock.sendall(request("GET", "/status/204"))
            assert reader.response().status == 204
            assert reader.at_eof()
        with connect(srv.port) as sock:
            assert Reader(sock).at_eof()


def test_an_early_answer_closes_after_the_response_intact(app: SampleApp) -> None:
    """The app answers 413 without reading a 4 MiB body: the head says Connection: close, the answer
    arrives whole before the server closes (the unread body is dropped, never buffered)."""
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (4 << 20))
        sender = threading.Thread(target=lambda: _send_quietly(sock, b"z" * (4 << 20)), daemon=True)
        sender.start()
        reader = Reader(sock)
        got = reader.response()
        assert (got.status, got.body, got.headers["connection"]) == (413, b"not reading that\n", "close")
        assert reader.at_eof()
        sender.join(10)
        assert srv.server.budget.used == 0


def test_expect_100_continue_is_answered_only_when_the_body_is_read(app: SampleApp) -> None:
    """``Expect: 100-continue``: an app that reads the body makes the server send 100 first; one that
    answers without reading gets its final answer with no 100 before it."""
    with running_server(wsgi(app)) as srv:
        with connect(srv.port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            reader = Reader(sock)
            assert reader.response().status_line == b"HTTP/1.1 100 Continue"
            sock.sendall(b"hello")
            assert reader.response().body.startswith(b"5 ")
        with connect(srv.port) as sock:
            sock.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            reader = Reader(sock)
            assert reader.response().status == 413
            assert reader.at_eof()


def test_head_requests_get_no_body(app: SampleApp) -> None:
    """HEAD gets the head (with the GET's Content-Length) and no body bytes; the connection stays usable."""
    with running_server(wsgi(app)) as srv, connect(srv.port) as sock:
        sock.sendall(request("HEAD", "/nothing") + request("GET", "/status/204"))
        reader = Reader(sock)
        head = reader.head()  # the HEAD answer: head only
        assert head.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"content-length: 13" in head
        assert reader.response().status == 204


def test_application_failures_are_500_and_client_failures_log_no_traceback(
        app: SampleApp, caplog: pytest.LogCaptureFixture) -> None:
    """An app that raises: 500 and its traceback in the log (a bug). A client that disconnects in the
    middle of its body: nothing but a debug line."""
    caplog.set_level(logging.DEBUG, logger="iec62676_2_33")
    with running_server(wsgi(app)) as srv:
        with connect(srv.port) as sock:
            sock.sendall(request("GET", "/fail"))
            assert Reader(sock).response().status_line == b"HTTP/1.1 500 Internal Server Error"
        with connect(srv.port) as sock:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 50_000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with connect(srv.port) as sock:  # the server is still fine
            sock.sendall(request("GET", "/status/204"))
            assert Reader(sock).response().status == 204
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "/fail" in tracebacks[0].getMessage()


def test_the_connection_cap_refuses_one_more(app: SampleApp) -> None:
    """With max_connections=2 and two connections open, a third is closed at once (counted); once one
    of the two went away a new one is served."""
    settings = HttpSettings(max_connections=2)
    with running_server(wsgi(app), settings) as srv:
        first, second = connect(srv.port), connect(srv.port)
        for sock in (first, second):  # both are being served
            sock.sendall(request("GET", "/status/204"))
            assert Reader(sock).response().status == 204
        with connect(srv.port) as third:
            assert Reader(third).at_eof()
        assert srv.server.stats["refused"] == 1
        first.close()
        wait_until(lambda: srv.server.stats["active"] == 1, what="the server to notice the close")
        with connect(srv.port) as fourth:
            fourth.sendall(request("GET", "/status/204"))
            assert Reader(fourth).response().status == 204
        second.close()


def test_stopping_closes_idle_connections_and_finishes_running_requests(app: SampleApp) -> None:
    """``aclose()`` closes an idle keep-alive connection at once and lets a running request finish
    (its answer says Connection: close)."""
    app.pause = 0.01
    with running_server(wsgi(app)) as srv:
        idle, busy = connect(srv.port), connect(srv.port)
        idle.sendall(request("GET", "/status/204"))
        idle_reader = Reader(idle)
        assert idle_reader.response().status == 204
        body = b"b" * 200_000  # 25 reads of 8 KiB with a pause each: still running when the stop comes
        busy.sendall(request("POST", "/slow", body))
        assert app.slow_started.wait(10)
    # running_server's exit stopped the server (aclose, 1 s grace)
    got = Reader(busy).response()
    assert got.status == 200 and got.body.startswith(b"200000 ") and got.headers["connection"] == "close"
    assert idle_reader.at_eof()
    idle.close()
    busy.close()


async def _asgi_chunks(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Echoes the sizes of the body messages it received, then checks http.disconnect comes after."""
    sizes = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        sizes.append((len(message["body"]), message["more_body"]))
        if not message["more_body"]:
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": repr(sizes).encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    assert (await receive())["type"] == "http.disconnect"


def test_asgi_receive_gives_bounded_chunks_with_more_body() -> None:
    """An ASGI app gets the body as http.request messages of at most 64 KiB with more_body set until
    the last; a response in several messages goes out chunked; http.disconnect follows the end."""
    body = b"q" * 200_000
    with running_server(lambda _pool: AsgiHandler(_asgi_chunks)) as srv, connect(srv.port) as sock:
        sock.sendall(request("POST", "/", body))
        got = Reader(sock).response()
        assert got.status_line == b"HTTP/1.1 200 OK" and got.headers["transfer-encoding"] == "chunked"
        sizes = eval(got.body)
        assert sum(n for n, _ in sizes) == len(body) and max(n for n, _ in sizes) <= 65536
        assert [more for _, more in sizes] == [True] * (len(sizes) - 1) + [False]


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closed after its answer: expected

