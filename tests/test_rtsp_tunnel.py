"""The sans-IO parts of tunnelled RTSP (splitting, URL rewriting, base64 POST channel, cookie
pairing) and RFC 8441 extended CONNECT on the HTTP/2 roles, driven in memory."""

from __future__ import annotations

import base64

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from iec62676_2_33.errors import LocalProtocolError
from iec62676_2_33.http2.client import H2ClientRole
from iec62676_2_33.http2.role import Event, RequestReceived
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.rtsp_relay import CameraAuth
from iec62676_2_33.sansio.rtsp_tunnel import (
    MAX_HEAD,
    Base64Decoder,
    CookieTable,
    Interleaved,
    RtspError,
    RtspMessage,
    RtspSplitter,
    UrlRewriter,
    basic_authorization,
    cookie_owner,
)
from iec62676_2_33.security.httpdigest import digest_response, parse_auth_header

CAMERA = "rtsp://10.0.0.5:8554/cam"
FRONT = "rtsp://cloud.example:8554/devices/dev1/tok"


def frame(channel: int, payload: bytes) -> bytes:
    return b"$" + bytes([channel]) + len(payload).to_bytes(2, "big") + payload


def test_splitter_cuts_messages_and_joins_interleaved_runs() -> None:
    """STR-1: requests, responses with bodies and interleaved frames, whatever the read sizes."""
    stream = (b"DESCRIBE rtsp://h/devices/d/tok RTSP/1.0\r\nCSeq: 2\r\n\r\n"
              + frame(0, b"rtp-1") + frame(1, b"rtcp")
              + b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
              + frame(0, b"x" * 1000))
    for step in (1, 7, len(stream)):
        splitter = RtspSplitter()
        units = [u for i in range(0, len(stream), step) for u in splitter.feed(stream[i:i + step])]
        joined: list[object] = []
        for unit in units:  # a run may arrive in several reads: join neighbours for the comparison
            if isinstance(unit, Interleaved) and joined and isinstance(joined[-1], Interleaved):
                joined[-1] = Interleaved(joined[-1].data + unit.data)
            else:
                joined.append(unit)
        assert [type(u).__name__ for u in joined] == ["RtspMessage", "Interleaved", "RtspMessage", "Interleaved"]
        first, run, response, last = joined
        assert isinstance(first, RtspMessage) and first.method == "DESCRIBE" and first.header("cseq") == "2"
        assert isinstance(run, Interleaved) and run.data == frame(0, b"rtp-1") + frame(1, b"rtcp")
        assert isinstance(response, RtspMessage) and response.is_response and response.body == b"v=0\r\n"
        assert isinstance(last, Interleaved) and last.data == frame(0, b"x" * 1000)
        assert splitter.buffered == 0


@pytest.mark.parametrize("data", [b"\x00\x01garbage", b"hello world\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",
                                  b"OPTIONS * RTSP/1.0\r\nno colon here\r\n\r\n",
                                  b"OPTIONS * RTSP/1.0\r\nContent-Length: 99999999\r\n\r\n"])
def test_splitter_refuses_garbage(data: bytes) -> None:
    """STR-1: anything that is not RTSP is a 400."""
    with pytest.raises(RtspError) as info:
        RtspSplitter().feed(data)
    assert info.value.status_hint == 400


@pytest.mark.parametrize("data", [
    b"OPTIONS rtsp://h/devices/d/tok RTSP/1.0\r\nCSeq: 1\r\nX-A: y\n\nDESCRIBE rtsp://10.0.0.5/cam RTSP/1.0\r\n\r\n",
    b"DESCRIBE rtsp://h/devices/d/tok RTSP/1.0\nDESCRIBE rtsp://10.0.0.5/other RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    b"DESCRIBE rtsp://h/devices/d/tok RTSP/1.0\r\nCSeq: 1\rX: 2\r\n\r\n",
    b"DESCRIBE rtsp://h/devices/d/tok RTSP/1.0\r\nX-\x01: 1\r\n\r\n",
    b"DESCRIBE rtsp://h/devices/d/tok RTSP/1.0 extra\r\n\r\n",
    b"DESCRIBE  RTSP/1.0\r\n\r\n",
    b"DESCRIBE rtsp://h/dev\tices/d/tok RTSP/1.0\r\n\r\n",
    b"DESCRIBE rtsp://h/devices/d/tok HTTP/1.1\r\n\r\n",
    b"RTSP/1.0 200 OK\nLocation: rtsp://10.0.0.5/x\r\n\r\n",
    b"ANNOUNCE rtsp://h/devices/d/tok RTSP/1.0\r\nContent-Length: \xc2\xb2\r\n\r\nxx",
    b"ANNOUNCE rtsp://h/devices/d/tok RTSP/1.0\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\nxx",
])
def test_splitter_refuses_what_could_smuggle_a_request_sec_1(data: bytes) -> None:
    """STR-1, SEC-1: a bare LF or CR, a control character, a malformed start line (a fourth part, an empty or
    tabbed URI, another protocol), a Content-Length that is not ASCII digits or is given twice: 400, never
    passed on. Before, a bare LF inside a header reached the camera as written, so a camera that takes LF for a
    line end ran a second request the relay never saw, with the credentials the relay appends."""
    with pytest.raises(RtspError) as info:
        RtspSplitter().feed(data)
    assert info.value.status_hint == 400


def test_splitter_takes_every_rtsp_method_and_utf8_heads() -> None:
    """STR-1: GET_PARAMETER and SET_PARAMETER (the keep-alives of ffmpeg and GStreamer) and PLAY_NOTIFY are
    requests (before, a method with "_" was 400 and ended the session at the first keep-alive); a UTF-8 header
    value passes through unchanged."""
    stream = ("GET_PARAMETER rtsp://h/devices/d/tok RTSP/1.0\r\nCSeq: 5\r\n\r\n"
              "SET_PARAMETER * RTSP/1.0\r\nCSeq: 6\r\nContent-Length: 2\r\n\r\nx\n"
              "PLAY_NOTIFY rtsp://h/devices/d/tok RTSP/2.0\r\nCSeq: 7\r\nUser-Agent: Caméra\r\n\r\n").encode()
    units = RtspSplitter().feed(stream)
    assert [u.method for u in units if isinstance(u, RtspMessage)] == ["GET_PARAMETER", "SET_PARAMETER", "PLAY_NOTIFY"]
    last = units[-1]
    assert isinstance(last, RtspMessage) and last.header("user-agent") == "Caméra"
    assert last.encode().endswith("User-Agent: Caméra\r\n\r\n".encode())


def test_splitter_bounds_the_head() -> None:
    """STR-1: a head over 64 KiB is refused once that much arrived, never buffered further."""
    splitter = RtspSplitter()
    splitter.feed(b"OPTIONS * RTSP/1.0\r\nX-Big: ")
    with pytest.raises(RtspError):
        for _ in range(MAX_HEAD // 1024 + 2):
            splitter.feed(b"a" * 1024)
    assert splitter.buffered <= MAX_HEAD + 1024 + 64


def test_rewriter_maps_player_urls_to_the_camera_and_back() -> None:
    """STR-1, STR-4: request URIs go to the camera with its credentials (the player's own
    Authorization is dropped); Content-Base and SDP come back with the player's URL."""
    auth = CameraAuth("cam", "pw")
    rewriter = UrlRewriter("tok", CAMERA, authorization=auth)
    req = RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1"), ("Authorization", "Basic cGxheWVy")])
    out = rewriter.request(req)
    assert out.start == f"DESCRIBE {CAMERA} RTSP/1.0"
    assert out.header("authorization") is None  # nothing before the camera asks
    assert auth.challenged(RtspMessage("RTSP/1.0 401 Unauthorized", [("WWW-Authenticate", 'Basic realm="cam"')]))
    again = rewriter.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "2")]))
    assert again.header("authorization") == "Basic " + base64.b64encode(b"cam:pw").decode()
    setup = rewriter.request(RtspMessage(f"SETUP {FRONT}/stream=0 RTSP/1.0", [("CSeq", "2")]))
    assert setup.target == CAMERA + "/stream=0"
    assert rewriter.request(RtspMessage("OPTIONS * RTSP/1.0", [])).target == "*"
    sdp = f"v=0\r\na=control:{CAMERA}/stream=0\r\n".encode()
    resp = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [("Content-Base", CAMERA + "/"),
                                                             ("Content-Type", "application/sdp"),
                                                             ("Content-Length", str(len(sdp)))], sdp))
    assert resp.header("content-base") == FRONT + "/"
    assert resp.body == f"v=0\r\na=control:{FRONT}/stream=0\r\n".encode()
    assert f"Content-Length: {len(resp.body)}\r\n".encode() in resp.encode()


@pytest.mark.parametrize("camera", ["rtsp://10.0.0.5/cam", "rtsp://admin:pw@10.0.0.5/cam/", "RTSP://10.0.0.5:554/cam"])
@pytest.mark.parametrize("answered", ["rtsp://10.0.0.5:554/cam", "rtsp://10.0.0.5/cam", "rtsp://admin@10.0.0.5/cam",
                                      "RTSP://10.0.0.5/cam"])
def test_rewriter_hides_every_form_of_the_camera_url_sec_1(camera: str, answered: str) -> None:
    """STR-1, SEC-1: the camera answers its URL in another form than the one configured (default port written or
    not, user information, trailing ``/``, scheme case): Content-Base, RTP-Info and SDP still come back with the
    player's URL only (before, only the configured spelling was replaced and the camera's address leaked)."""
    rewriter = UrlRewriter("tok", camera)
    rewriter.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1")]))
    sdp = f"v=0\r\na=control:{answered}/trackID=1\r\n".encode()
    resp = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [
        ("Content-Base", answered + "/"), ("RTP-Info", f"url={answered}/trackID=1;seq=1,url={answered}/trackID=2"),
        ("Content-Type", "application/sdp")], sdp))
    assert resp.header("content-base") == FRONT + "/"
    assert resp.header("rtp-info") == f"url={FRONT}/trackID=1;seq=1,url={FRONT}/trackID=2"
    assert resp.body == f"v=0\r\na=control:{FRONT}/trackID=1\r\n".encode()
    assert b"10.0.0.5" not in resp.encode()


def test_rewriter_with_a_camera_url_that_has_a_query_sec_1() -> None:
    """STR-1, SEC-1: an Axis-style camera URL with a query: the camera's answers (Content-Base without the query,
    SDP controls with it) come back with the player's URL only (before, they kept the camera's address), and the
    player's SETUP of a track goes to the camera with the query at the end, where the camera put it."""
    camera = "rtsp://10.0.0.5/axis-media/media.amp?videocodec=h264"
    rewriter = UrlRewriter("tok", camera)
    assert rewriter.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1")])).target == camera
    sdp = b"v=0\r\na=control:rtsp://10.0.0.5/axis-media/media.amp/stream=0?videocodec=h264\r\n"
    resp = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [
        ("Content-Base", "rtsp://10.0.0.5/axis-media/media.amp/"), ("Content-Type", "application/sdp")], sdp))
    assert resp.header("content-base") == FRONT + "/"
    assert resp.body == f"v=0\r\na=control:{FRONT}/stream=0\r\n".encode()
    assert b"10.0.0.5" not in resp.encode()
    setup = rewriter.request(RtspMessage(f"SETUP {FRONT}/stream=0 RTSP/1.0", [("CSeq", "2")]))
    assert setup.target == "rtsp://10.0.0.5/axis-media/media.amp/stream=0?videocodec=h264"
    other = rewriter.request(RtspMessage(f"SETUP {FRONT}/stream=1?x=1 RTSP/1.0", [("CSeq", "3")]))
    assert other.target == "rtsp://10.0.0.5/axis-media/media.amp/stream=1?videocodec=h264&x=1"


def test_rewriter_hides_the_camera_address_in_sdp_sec_1() -> None:
    """STR-1, SEC-1: the host addresses a camera writes into SDP (origin, connection, RTCP, source filter, IPv4 and
    IPv6, a host name) come back as the unspecified address, so the player does not learn where the camera is
    (before, only URLs were rewritten); multicast groups and ``*`` stay, and Content-Length follows the body."""
    rewriter = UrlRewriter("tok", "rtsp://10.0.0.5/cam")
    rewriter.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1")]))
    sdp = (b"v=0\r\no=- 1188340656180883 1 IN IP4 10.0.0.5\r\ns=Session\r\nc=IN IP4 10.0.0.5\r\n"
           b"m=video 0 RTP/AVP 96\r\nc=IN IP6 fd00::5\r\na=rtcp:5001 IN IP4 cam.site.local\r\n"
           b"a=source-filter: incl IN IP4 * 10.0.0.5\r\nm=audio 0 RTP/AVP 0\r\nc=IN IP4 224.2.1.1/127\r\n"
           b"a=control:rtsp://10.0.0.5/cam/trackID=1\r\n")
    resp = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [("Content-Type", "application/sdp"),
                                                             ("Content-Length", str(len(sdp)))], sdp))
    assert resp.body.decode().split("\r\n") == [
        "v=0", "o=- 1188340656180883 1 IN IP4 0.0.0.0", "s=Session", "c=IN IP4 0.0.0.0", "m=video 0 RTP/AVP 96",
        "c=IN IP6 ::", "a=rtcp:5001 IN IP4 0.0.0.0", "a=source-filter: incl IN IP4 * 0.0.0.0", "m=audio 0 RTP/AVP 0",
        "c=IN IP4 224.2.1.1/127", f"a=control:{FRONT}/trackID=1", ""]
    encoded = resp.encode()
    assert b"10.0.0.5" not in encoded and b"fd00" not in encoded and b"cam.site" not in encoded
    assert f"Content-Length: {len(resp.body)}\r\n".encode() in encoded


def test_rewriter_sends_only_tunnel_transports_sec_1() -> None:
    """STR-1, SEC-1: a SETUP goes to the camera with only the transports a tunnel carries (RTP over the RTSP
    connection) and no ``destination``, so a player cannot point the camera's packets at another host; a SETUP
    offering nothing else is 461. The camera's answer loses ``source``/``destination``; ``*`` is refused where
    RFC 2326 does not allow it (a ``DESCRIBE *`` used to leave every answer unrewritten)."""
    rewriter = UrlRewriter("tok", CAMERA)
    setup = rewriter.request(RtspMessage(f"SETUP {FRONT}/trackID=0 RTSP/1.0", [("CSeq", "3"), (
        "Transport", ("RTP/AVP;unicast;client_port=53-54;destination=192.0.2.9,"
                      "RTP/AVP/TCP;unicast;interleaved=0-1;destination=192.0.2.9"))]))
    assert setup.header("transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"
    with pytest.raises(RtspError) as info:
        rewriter.request(RtspMessage(f"SETUP {FRONT}/trackID=1 RTSP/1.0", [
            ("CSeq", "4"), ("Transport", "RTP/AVP;multicast;destination=232.1.1.1")]))
    assert info.value.status_hint == 461
    answer = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [
        ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;source=10.0.0.5;destination=10.0.0.9;ssrc=1A2B")]))
    assert answer.header("transport") == "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1A2B"
    for method in ("OPTIONS", "GET_PARAMETER", "SET_PARAMETER"):
        assert rewriter.request(RtspMessage(f"{method} * RTSP/1.0", [("CSeq", "5")])).target == "*"
    with pytest.raises(RtspError) as info:
        UrlRewriter("tok", CAMERA).request(RtspMessage("DESCRIBE * RTSP/1.0", [("CSeq", "1")]))
    assert info.value.status_hint == 400


def test_rewriter_hides_the_camera_everywhere_it_writes_itself_sec_1() -> None:
    """STR-1, SEC-1: the camera's own requests (ANNOUNCE, SET_PARAMETER) name the player's URL; bodies without
    an SDP content type are rewritten too; a camera configured by name that writes its address (an alias, as
    the relay learns it from the connection), or an IPv6 address in another spelling, does not show it."""
    rewriter = UrlRewriter("tok", "rtsp://cam.site.local/cam")
    rewriter.add_alias("10.0.0.5")
    rewriter.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1")]))
    announce = rewriter.response(RtspMessage("ANNOUNCE rtsp://10.0.0.5/cam RTSP/1.0", [("CSeq", "9")],
                                             b"v=0\r\nc=IN  IP4 10.0.0.5\r\na=control:rtsp://cam.site.local/cam/t=1\r\n"))
    assert announce.start == f"ANNOUNCE {FRONT} RTSP/1.0"
    assert announce.body == f"v=0\r\nc=IN  IP4 0.0.0.0\r\na=control:{FRONT}/t=1\r\n".encode()
    params = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [("Content-Type", "text/parameters")],
                                           b"position: 1\r\nsource: rtsp://10.0.0.5/cam\r\n"))
    assert params.body == f"position: 1\r\nsource: {FRONT}\r\n".encode()
    six = UrlRewriter("tok", "rtsp://[fd00::5]/cam")
    six.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1")]))
    answer = six.response(RtspMessage("RTSP/1.0 200 OK", [("Content-Base", "rtsp://[FD00:0:0:0:0:0:0:5%eth0]:554/cam/")]))
    assert answer.header("content-base") == FRONT + "/"


def test_rewriter_keeps_the_camera_query_the_cameras_sec_1() -> None:
    """STR-1, SEC-1: the player cannot set again what the camera URL's query sets (``channel=5`` after an NVR's
    ``channel=1`` named another camera), and the camera's query items do not come back to the player (a
    camera URL may carry credentials there); the player's other items still pass both ways."""
    camera = "rtsp://10.0.0.5/cam/realmonitor?channel=1&subtype=0&password=pw"
    rewriter = UrlRewriter("tok", camera)
    described = rewriter.request(RtspMessage(f"DESCRIBE {FRONT}?channel=5&Password=x&tcp RTSP/1.0", [("CSeq", "1")]))
    assert described.target == f"{camera}&tcp"
    answer = rewriter.response(RtspMessage("RTSP/1.0 200 OK", [
        ("Content-Base", "rtsp://10.0.0.5/cam/realmonitor/?channel=1&subtype=0&password=pw&tcp")]))
    assert answer.header("content-base") == f"{FRONT}/?tcp"


def test_rewriter_leaves_other_urls_alone() -> None:
    """STR-1: a URL of another server is not taken for the camera's; one of another path, port or scheme of the
    camera's host is not taken for the stream, but loses the camera's address (SEC-1: it becomes the front's)."""
    rewriter = UrlRewriter("tok", "rtsp://10.0.0.5/cam")
    rewriter.request(RtspMessage(f"DESCRIBE {FRONT} RTSP/1.0", [("CSeq", "1")]))
    for other, seen in (("rtsp://10.0.0.6/cam", "rtsp://10.0.0.6/cam"),
                        ("rtsp://10.0.0.5/camera2", "rtsp://cloud.example:8554/camera2"),
                        ("rtsp://10.0.0.5:8554/cam", "rtsp://cloud.example:8554/cam"),
                        ("rtsps://admin:pw@10.0.0.5/cam?user=admin&password=pw", "rtsps://cloud.example:8554/cam")):
        assert rewriter.response(RtspMessage("RTSP/1.0 200 OK", [("Content-Base", other)])).header("content-base") \
            == seen


def test_rewriter_refuses_other_streams() -> None:
    """STR-1: a URL that does not name this media source is a 404, never sent to the camera."""
    rewriter = UrlRewriter("tok", CAMERA)
    rewriter.request(RtspMessage(f"OPTIONS {FRONT} RTSP/1.0", []))
    for target in ("rtsp://cloud.example:8554/devices/dev1/other", "rtsp://10.0.0.5:8554/secret/tok"):
        with pytest.raises(RtspError) as info:
            rewriter.request(RtspMessage(f"DESCRIBE {target} RTSP/1.0", []))
        assert info.value.status_hint == 404
    with pytest.raises(RtspError):
        UrlRewriter("tok", CAMERA).request(RtspMessage("DESCRIBE rtsp://h/tokens RTSP/1.0", []))


def test_base64_decoder_takes_padded_pieces_in_any_split() -> None:
    """STR-2: the POST channel is base64 in pieces each padded on its own, split anywhere."""
    pieces = [b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", b"x", b"yz", frame(1, b"rtcp")]
    text = b"".join(base64.b64encode(p) for p in pieces) + b"\r\n"
    for step in (1, 3, 5, len(text)):
        decoder = Base64Decoder()
        assert b"".join(decoder.feed(text[i:i + step]) for i in range(0, len(text), step)) == b"".join(pieces)
    with pytest.raises(RtspError):
        Base64Decoder().feed(b"!!!!")


def test_cookie_table_is_bounded_and_expires() -> None:
    """STR-2: GET channels wait for their POST at most ``wait`` seconds, at most ``max_entries``."""
    table: CookieTable[str] = CookieTable(max_entries=2, wait=10.0)
    assert table.add("a", "get-a", now=0.0)
    assert not table.add("a", "again", now=0.0)
    assert table.add("b", "get-b", now=1.0)
    assert not table.add("c", "get-c", now=2.0)  # full
    assert table.take("a", now=3.0) == "get-a"
    assert table.take("a", now=3.0) is None
    assert table.expire(now=11.5) == ["get-b"]
    assert len(table) == 0


def test_cookie_owner_counts_a_client_by_its_source_sec_1() -> None:
    """STR-2, SEC-1: the device counts the waiting channels of a proxied client by its source, as admission does:
    every address of one IPv6 /64 is one owner (before, each address was, so a client with a /64 took every
    waiting slot), an IPv4 address is its own, and a cookie without an address is an owner of its own."""
    assert cookie_owner("2001:db8::1 a") == cookie_owner("2001:db8::ffff:2 b") == "2001:db8::/64"
    assert cookie_owner("2001:db8:0:1::1 a") == "2001:db8:0:1::/64"
    assert cookie_owner("192.0.2.7 a") == "192.0.2.7" != cookie_owner("192.0.2.8 a")
    assert cookie_owner("::ffff:192.0.2.7 c") == "192.0.2.7"
    assert cookie_owner("front-cookie") == "front-cookie"
    table: CookieTable[str] = CookieTable(max_entries=8, wait=10.0, max_per_owner=2)
    assert [table.add(c, c, 0.0, cookie_owner(c)) for c in ("2001:db8::1 a", "2001:db8::2 b", "2001:db8::3 c")] == [
        True, True, False]
    assert table.add("2001:db8:0:1::1 d", "d", 0.0, cookie_owner("2001:db8:0:1::1 d"))


def test_cookie_table_bounds_each_owner() -> None:
    """STR-2, SEC-1: one owner holds at most ``max_per_owner`` waiting GET channels; its slots come back
    when a POST takes one, its GET gives up or the wait expires, and other owners are not affected."""
    table: CookieTable[str] = CookieTable(max_entries=8, wait=10.0, max_per_owner=2)
    assert table.add("a1", "a1", now=0.0, owner="alice")
    assert table.add("a2", "a2", now=1.0, owner="alice")
    assert not table.add("a3", "a3", now=1.0, owner="alice")  # alice's two slots are taken
    assert table.add("b1", "b1", now=1.0, owner="bob")
    assert table.take("a1", now=2.0) == "a1"
    assert table.add("a3", "a3", now=2.0, owner="alice")  # a POST freed one
    table.remove("a3", "a3")
    assert table.add("a4", "a4", now=3.0, owner="alice")  # a GET that gave up freed one
    assert table.expire(now=11.5) == ["a2", "b1"]
    assert table.add("a5", "a5", now=11.5, owner="alice")  # expiry freed one; a4 still waits
    assert not table.add("a6", "a6", now=11.5, owner="alice")
    assert len(table) == 2


def _pair() -> tuple[H2ClientRole, H2ServerRole]:
    client, server = H2ClientRole(now=0.0), H2ServerRole(now=0.0)
    return client, server


def _exchange(client: H2ClientRole, server: H2ServerRole) -> list[Event]:
    events: list[Event] = []
    for _ in range(4):
        events += server.receive_data(client.data_to_send(), 0.0)
        client.receive_data(server.data_to_send(), 0.0)
    return events


def test_extended_connect_between_the_roles() -> None:
    """STR-3: the device role advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and receives an
    extended CONNECT with :protocol websocket; a role that did not advertise it refuses one,
    and the client role sends none to a peer that did not advertise it."""
    client, server = _pair()
    server.enable_connect_protocol()
    client.initiate()
    server.initiate()
    _exchange(client, server)
    assert client.peer_accepts_connect_protocol
    sid = client.send_request("CONNECT", "/onvif/rtsp/tok", [("sec-websocket-protocol", "rtsp.onvif.org")],
                              authority="dev", end_stream=False, protocol="websocket")
    (request,) = [e for e in _exchange(client, server) if isinstance(e, RequestReceived)]
    assert request.stream_id == sid
    assert (":protocol", "websocket") in request.headers and (":method", "CONNECT") in request.headers
    with pytest.raises(LocalProtocolError):
        server.enable_connect_protocol()  # after initiate()

    client, server = _pair()
    client.initiate()
    server.initiate()
    _exchange(client, server)
    assert not client.peer_accepts_connect_protocol
    with pytest.raises(LocalProtocolError):
        client.send_request("CONNECT", "/onvif/rtsp/tok", authority="dev", protocol="websocket")
    # A peer that sends one anyway (plain h2 as the client) gets RST_STREAM PROTOCOL_ERROR.
    raw = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    raw.initiate_connection()
    server = H2ServerRole(now=0.0)
    server.initiate()
    server.receive_data(raw.data_to_send(), 0.0)
    raw.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                         (":authority", "dev"), (":path", "/onvif/rtsp/tok")])
    events = server.receive_data(raw.data_to_send(), 0.0)
    assert not [e for e in events if isinstance(e, RequestReceived)]
    resets = [e for e in raw.receive_data(server.data_to_send()) if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, ErrorCodes.PROTOCOL_ERROR)]


def test_camera_auth_answers_digest_challenges() -> None:
    """STR-4: no camera credentials until a challenge; Digest when offered, even beside Basic
    (qop=auth counted); a challenge with the nonce already answered is not retried."""
    auth = CameraAuth("cam", "pw")
    request = RtspMessage(f"DESCRIBE {CAMERA} RTSP/1.0", [("CSeq", "1")])
    assert auth(request) is None
    challenge = RtspMessage("RTSP/1.0 401 Unauthorized", [
        ("WWW-Authenticate", 'Basic realm="cam"'),
        ("WWW-Authenticate", 'Digest realm="cam", nonce="n1", qop="auth", opaque="o"')])
    assert auth.challenged(challenge)
    scheme, params = parse_auth_header(auth(request))
    assert scheme == "Digest" and params["nc"] == "00000001" and params["opaque"] == "o"
    assert params["response"] == digest_response(algorithm="MD5", username="cam", realm="cam", password="pw",
                                                 method="DESCRIBE", uri=CAMERA, nonce="n1", nc="00000001",
                                                 cnonce=params["cnonce"])
    assert parse_auth_header(auth(request))[1]["nc"] == "00000002"
    assert not auth.challenged(challenge)  # the same nonce refused again: wrong credentials


def test_camera_auth_sends_basic_only_when_it_is_the_scheme_asked_for() -> None:
    """STR-4: a Basic-only challenge gets Basic once; refused again, it is not retried."""
    auth = CameraAuth("cam", "pw")
    request = RtspMessage(f"DESCRIBE {CAMERA} RTSP/1.0", [("CSeq", "1")])
    challenge = RtspMessage("RTSP/1.0 401 Unauthorized", [("WWW-Authenticate", 'Basic realm="cam"')])
    assert auth.challenged(challenge)
    assert auth(request) == basic_authorization("cam", "pw")
    assert not auth.challenged(challenge)


@pytest.mark.parametrize("suffix", ["/../../admin/replay", "/%2e%2e/admin", "/%2E%2e/x", "/./x", "/..", "/a\\..\\b",
                                    "/%5c..%5cadmin"])
def test_rewriter_refuses_paths_that_leave_the_stream(suffix: str) -> None:
    """STR-1, STR-4: a player cannot reach other paths of the camera's server through the stream's URL."""
    rewriter = UrlRewriter("tok", CAMERA)
    with pytest.raises(RtspError) as refused:
        rewriter.request(RtspMessage(f"DESCRIBE {FRONT}{suffix} RTSP/1.0", [("CSeq", "1")]))
    assert refused.value.status_hint == 404
    kept = rewriter.request(RtspMessage(f"SETUP {FRONT}/trackID=0?x=..y RTSP/1.0", [("CSeq", "2")]))
    assert kept.target == CAMERA + "/trackID=0?x=..y"
