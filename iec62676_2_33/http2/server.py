"""Layer 3 (sans-IO): the device's HTTP/2 server role on the uplink (UPL-3, UPL-15, UPL-16).

Theory of operation
-------------------
After the ``101`` the device answers the cloud's connection preface as an
HTTP/2 *server* (UPL-3): ``initiate()`` queues its SETTINGS (UPL-15), then
the cloud's requests arrive as :class:`~.role.RequestReceived` events and the
device serves them like any HTTP server, many streams at once (UPL-16)::

    RequestReceived(stream_id, headers)   -> the runtime starts the handler
    DataReceived* / StreamEnded           -> request body; acknowledge() as taken
    send_response(stream_id, 200, hdrs)   -> HEADERS
    send_data(stream_id, chunk, end?)     -> DATA as the peer's windows allow

Before a request reaches the caller the role checks it (the caller never sees
a rejected one):

* more than ``max_concurrent_streams`` open -> RST_STREAM REFUSED_STREAM (the
  client may retry it; counts against ``reset_rate``);
* decoded header list over ``max_header_list_size`` -> ``431``;
* ``content-length`` over ``max_body_size`` -> ``413``;
* an extended CONNECT (``:protocol``, RFC 8441) unless :meth:`enable_connect_protocol`
  advertised SETTINGS_ENABLE_CONNECT_PROTOCOL -> RST_STREAM PROTOCOL_ERROR;
* a ``:method`` that is not a token (RFC 9110 §9.1), or a ``:path`` that is neither a path
  (``/...``) nor ``*`` (RFC 9113 §8.3.1) -> RST_STREAM PROTOCOL_ERROR (a malformed request,
  §8.1.1): the application sees the request forms HTTP/1.1 would give it, never
  ``GET /x`` as a method or an absolute URL as a path.

A body that grows past ``max_body_size`` without a declared length is cut
off when it does: ``413`` if the response has not started (else RST_STREAM
CANCEL), and the caller gets ``StreamReset(remote=False)``. Every rejection
that answers before the request body is complete is followed by RST_STREAM
NO_ERROR, which RFC 9113 §8.1 prescribes to stop the upload after a complete
response; nothing more of the body is buffered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import h2.exceptions
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from ..errors import LocalProtocolError
from .limits import DEFAULT_LIMITS, H2Limits
from .role import Event, H2Role, RequestReceived, StreamReset, _Stream

if TYPE_CHECKING:
    from hpack.struct import Header

__all__ = ["H2ServerRole"]

#: RFC 9110 §5.6.2 token: what a method is (§9.1).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class H2ServerRole(H2Role):
    """The device end: serves the cloud's requests (see the module docstring)."""

    def __init__(
        self, *, limits: H2Limits = DEFAULT_LIMITS, now: float, auto_acknowledge: bool = False
    ) -> None:
        super().__init__(
            client_side=False, limits=limits, now=now, auto_acknowledge=auto_acknowledge
        )
        self._connect_protocol = False

    def enable_connect_protocol(self) -> None:
        """RFC 8441: advertise SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 and accept extended CONNECT
        (``:method CONNECT`` with ``:protocol``); call before :meth:`initiate`. Without it an
        extended CONNECT is refused with RST_STREAM PROTOCOL_ERROR (h2 itself accepts one)."""
        if self._initiated:
            raise LocalProtocolError("enable_connect_protocol() must come before initiate()")
        settings = self._conn.local_settings
        settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        settings.acknowledge()  # an initial value: sent with our first SETTINGS
        self._connect_protocol = True

    def send_response(
        self,
        stream_id: int,
        status: int,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        body: bytes | None = None,
        end_stream: bool = True,
    ) -> None:
        """Send the response head, and ``body`` if given; ``end_stream=False`` keeps it open.

        A response to a stream that is already gone (the peer reset it, or
        the connection closed) is dropped silently.
        """
        st = self._writable_stream(stream_id)
        if st is None:
            return
        if st.headers_sent:
            raise LocalProtocolError(f"stream {stream_id}: the response was already started")
        if not 200 <= status <= 999:
            raise LocalProtocolError(f"status {status}: only final responses (200-999) can be sent")
        fields = self._with_length([(":status", str(status)), *headers], body, end_stream)
        encoded = self._encode(fields, response=True)
        headers_end = end_stream and not body
        try:
            self._conn.send_headers(stream_id, encoded, end_stream=headers_end)
        except h2.exceptions.ProtocolError as e:
            raise LocalProtocolError(f"stream {stream_id}: cannot send the response: {e}") from e
        st.headers_sent = True
        self._flush()
        if headers_end:
            st.local_closed = True
            self._maybe_forget(stream_id)
        else:
            self._queue(stream_id, st, body or b"", end_stream)
            self._pump()

    # ------------------------------------------------------------------ hooks

    def _on_request(
        self, stream_id: int, headers: list[Header], ended: bool, out: list[Event]
    ) -> None:
        limits = self.limits
        if not self._connect_protocol and any(n in (b":protocol", ":protocol") for n, _ in headers):
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)  # RFC 8441 §3: not advertised
            self._count_refusal(out)
            return
        if _malformed_target(headers):
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.1.1: malformed
            self._count_refusal(out)
            return
        if self._conn.open_inbound_streams > limits.max_concurrent_streams:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            self._count_refusal(out)
            return
        if self._header_list_size(headers) > limits.max_header_list_size:
            self._reject(stream_id, 431, ended)
            return
        length = _content_length(headers)
        if length is not None and length > limits.max_body_size:
            self._reject(stream_id, 413, ended)
            return
        self._streams[stream_id] = _Stream(remote_closed=ended)
        out.append(RequestReceived(stream_id=stream_id, headers=self._decode(headers)))

    def _body_too_large(self, stream_id: int, st: _Stream, ended: bool, out: list[Event]) -> None:
        if st.headers_sent:
            super()._body_too_large(stream_id, st, ended, out)
            return
        self._reject(stream_id, 413, ended)
        out.append(StreamReset(stream_id=stream_id, error_code=ErrorCodes.NO_ERROR, remote=False))

    def _reject(self, stream_id: int, status: int, ended: bool) -> None:
        """Answer ``status`` with an empty body; stop an unfinished upload (RFC 9113 §8.1)."""
        try:
            self._conn.send_headers(
                stream_id,
                [(b":status", str(status).encode()), (b"content-length", b"0")],
                end_stream=True,
            )
        except h2.exceptions.ProtocolError:
            ended = False  # the stream cannot take a response: just reset it
        if ended:
            self._forget(stream_id)
            self._flush()
        else:
            self._reset(stream_id, ErrorCodes.NO_ERROR)


def _malformed_target(headers: list[Header]) -> bool:
    """``:method`` not a token, or ``:path`` neither ``/...`` nor ``*`` (pseudo-header fields come first)."""
    for name, value in headers:
        if name == b":method":
            if not _TOKEN.fullmatch(value):
                return True
        elif name == b":path":
            if value[:1] != b"/" and value != b"*":
                return True
        elif name[:1] != b":":
            return False
    return False


def _content_length(headers: list[Header]) -> int | None:
    for name, value in headers:
        if name in (b"content-length", "content-length"):
            try:
                return int(value)
            except ValueError:
                return None
    return None
