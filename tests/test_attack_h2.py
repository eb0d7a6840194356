"""Attacks on the HTTP/2 server path (the device's direct h2c port and the library's HTTP server):
what a client's request head may make the application see (UPL-16: the device serves HTTP/2
requests as a normal HTTP server, so an HTTP/2 request reaches the application in the forms an
HTTP/1.1 request would).

* ``:scheme`` is the client's text: it must not name the transport, nor start the URLs the device
  builds for the client (GetServices' XAddrs).
* A ``:method`` that is not a token, or a ``:path`` that is neither ``/...`` nor ``*`` (an absolute
  URL, a bare word), is a malformed request (RFC 9113 §8.1.1, §8.3.1): RST_STREAM PROTOCOL_ERROR,
  the application never runs, the connection serves on.

Frames are built by hand with hyperframe/hpack on real loopback servers; every wait is bounded."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from conftest import RunningDevice
from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from httpd_env import SampleApp, decode_headers, h2_open, read_frames, running_server, wsgi
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

GET_SERVICES = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
                b'<GetServices xmlns="http://www.onvif.org/ver10/device/wsdl"><IncludeCapability>false'
                b'</IncludeCapability></GetServices></s:Body></s:Envelope>')


def _ended(stream_id: int) -> Callable[[list[Frame]], bool]:
    def until(frames: list[Frame]) -> bool:
        return any(isinstance(f, GoAwayFrame) or (f.stream_id == stream_id and (
            isinstance(f, RstStreamFrame) or (isinstance(f, (DataFrame, HeadersFrame)) and "END_STREAM" in f.flags)))
            for f in frames)
    return until


def test_the_clients_scheme_does_not_start_the_device_addresses(device: RunningDevice) -> None:
    """UPL-16: GetServices over h2c on the device's cleartext port, with ``:scheme`` ``https`` and
    ``javascript:alert(1)//evil.example/#``: every XAddr starts ``http://cam/`` (the port's own
    scheme and the request's host), as over HTTP/1.1; before, the client's ``:scheme`` started them."""
    port = urlsplit(device.url).port
    assert port is not None
    for scheme in ("https", "javascript:alert(1)//evil.example/#"):
        sock = h2_open(port)
        try:
            encoder, decoder = Encoder(), Decoder()
            fields = [(":method", "POST"), (":scheme", scheme), (":authority", "cam"),
                      (":path", "/onvif/device_service"), ("content-type", "application/soap+xml"),
                      ("content-length", str(len(GET_SERVICES)))]
            sock.sendall(HeadersFrame(1, data=encoder.encode(fields), flags=["END_HEADERS"]).serialize()
                         + DataFrame(1, data=GET_SERVICES, flags=["END_STREAM"]).serialize())
            frames = read_frames(sock, _ended(1))
        finally:
            sock.close()
        heads = [decode_headers(f, decoder) for f in frames if isinstance(f, HeadersFrame)]
        assert [h[":status"] for h in heads] == ["200"], frames
        body = b"".join(bytes(f.data) for f in frames if isinstance(f, DataFrame))
        addresses = re.findall(rb"<[^>]*XAddr>([^<]*)<", body)
        assert addresses, body[:300]
        assert all(a.startswith(b"http://cam/onvif/") for a in addresses), (scheme, addresses)


def test_a_malformed_method_or_path_is_refused_and_the_connection_serves_on() -> None:
    """UPL-16: ``:path`` ``http://other/echo`` or ``echo`` and ``:method`` ``GET /x`` each get RST_STREAM
    PROTOCOL_ERROR and never reach the application (before, it ran them with that path or method);
    ``*`` and a path holding ``://`` are paths and still run; the same connection then serves ``/echo``."""
    app = SampleApp()
    with running_server(wsgi(app)) as srv:
        sock = h2_open(srv.port)
        try:
            encoder, decoder = Encoder(), Decoder()
            cases = [("GET", "http://other/echo"), ("GET", "echo"), ("GET /x", "/echo"),
                     ("OPTIONS", "*"), ("GET", "/nope://x/echo"), ("GET", "/echo")]
            outcome: dict[int, object] = {}
            for index, (method, path) in enumerate(cases):
                stream_id = 1 + 2 * index
                fields = [(":method", method), (":scheme", "http"), (":authority", "test"), (":path", path)]
                sock.sendall(HeadersFrame(stream_id, data=encoder.encode(fields),
                                          flags=["END_HEADERS", "END_STREAM"]).serialize())
                for frame in read_frames(sock, _ended(stream_id)):
                    assert not isinstance(frame, GoAwayFrame), frame
                    if frame.stream_id != stream_id:
                        continue
                    if isinstance(frame, RstStreamFrame):
                        outcome[stream_id] = ("reset", frame.error_code)
                    elif isinstance(frame, HeadersFrame):
                        outcome[stream_id] = ("status", decode_headers(frame, decoder)[":status"])
        finally:
            sock.close()
    refused = ("reset", ErrorCodes.PROTOCOL_ERROR)
    assert outcome == {1: refused, 3: refused, 5: refused, 7: ("status", "404"), 9: ("status", "404"),
                       11: ("status", "200")}
    assert app.calls == ["*", "/nope://x/echo", "/echo"]
