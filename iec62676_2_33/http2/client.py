"""Layer 3 (sans-IO): the cloud's HTTP/2 client role on the uplink (UPL-3, UPL-15, UPL-16).

Theory of operation
-------------------
Once the cloud has answered the device's upgrade with ``101``, the cloud
opens HTTP/2 "as if it had opened the connection" (UPL-3): ``initiate()``
queues the client connection preface -- the RFC 7540 §3.5 magic
``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` followed by SETTINGS (UPL-15) -- and
the cloud then sends requests to the device, which serves them (UPL-16)::

    sid = send_request("POST", "/onvif/device_service", hdrs, body,
                       authority="device.example")        -> HEADERS (+ DATA)
    ResponseReceived(sid, headers)                         <- the device answers
    DataReceived* / StreamEnded                            <- acknowledge() as taken

``send_request`` raises :class:`~iec62676_2_33.errors.LocalProtocolError`
(``status_hint`` 503) when the device's MAX_CONCURRENT_STREAMS -- or our own
``max_concurrent_streams``, whichever is lower -- is reached: the runtime
queues the request and retries after a stream ends. A response head over
``max_header_list_size`` or a body over ``max_body_size`` resets that stream
(ENHANCE_YOUR_CALM, CANCEL) and reports ``StreamReset(remote=False)``.
Server push is disabled (SETTINGS_ENABLE_PUSH = 0); a PUSH_PROMISE ends the
connection with PROTOCOL_ERROR.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import h2.exceptions
from h2.errors import ErrorCodes

from ..errors import LocalProtocolError
from .limits import DEFAULT_LIMITS, H2Limits
from .role import Event, H2Role, ResponseReceived, StreamReset, _Stream

if TYPE_CHECKING:
    from hpack.struct import Header

__all__ = ["H2ClientRole"]


class H2ClientRole(H2Role):
    """The cloud end: sends requests to the device (see the module docstring)."""

    def __init__(
        self, *, limits: H2Limits = DEFAULT_LIMITS, now: float, auto_acknowledge: bool = False
    ) -> None:
        super().__init__(
            client_side=True, limits=limits, now=now, auto_acknowledge=auto_acknowledge
        )

    def send_request(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        body: bytes | None = None,
        *,
        authority: str,
        scheme: str = "https",
        end_stream: bool | None = None,
        protocol: str | None = None,
    ) -> int:
        """Open a stream with a request; returns its id.

        ``end_stream`` None or True ends the request after ``body`` (or after
        the head when there is none); False leaves it open for ``send_data``.
        ``protocol`` makes it an extended CONNECT (RFC 8441, ``method`` must be
        ``CONNECT``), allowed once the peer advertised :attr:`peer_accepts_connect_protocol`.
        """
        self._require_open()
        conn = self._conn
        if protocol is not None and (method != "CONNECT" or not self.peer_accepts_connect_protocol):
            raise LocalProtocolError(
                "an extended CONNECT needs method CONNECT and a peer that sent "
                "SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441)")
        limit = min(conn.remote_settings.max_concurrent_streams, self.limits.max_concurrent_streams)
        if conn.open_outbound_streams >= limit:
            raise LocalProtocolError(
                f"{limit} streams are open, the most the device allows; queue the request "
                "and send it when a stream ends",
                status_hint=503,
            )
        end = True if end_stream is None else end_stream
        fields = self._with_length(
            [
                (":method", method),
                *([(":protocol", protocol)] if protocol is not None else []),
                (":scheme", scheme),
                (":authority", authority),
                (":path", path),
                *headers,
            ],
            body,
            end,
        )
        encoded = self._encode(fields, response=False)
        headers_end = end and not body
        try:
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, encoded, end_stream=headers_end)
        except h2.exceptions.NoAvailableStreamIDError as e:
            raise LocalProtocolError(
                "stream ids of this connection are used up; open a new uplink connection",
                status_hint=503,
            ) from e
        except h2.exceptions.ProtocolError as e:
            raise LocalProtocolError(f"cannot send the request: {e}", status_hint=503) from e
        st = _Stream(headers_sent=True, local_closed=headers_end)
        self._streams[stream_id] = st
        self._flush()
        if not headers_end:
            self._queue(stream_id, st, body or b"", end)
            self._pump()
        return stream_id

    @property
    def peer_accepts_connect_protocol(self) -> bool:
        """The device advertised SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 extended CONNECT)."""
        return bool(self._conn.remote_settings.enable_connect_protocol)

    # ------------------------------------------------------------------ hooks

    def _on_response(self, stream_id: int, headers: list[Header], out: list[Event]) -> None:
        if stream_id not in self._streams:
            return
        if self._header_list_size(headers) > self.limits.max_header_list_size:
            self._reset(stream_id, ErrorCodes.ENHANCE_YOUR_CALM)
            out.append(
                StreamReset(
                    stream_id=stream_id, error_code=ErrorCodes.ENHANCE_YOUR_CALM, remote=False
                )
            )
            return
        out.append(ResponseReceived(stream_id=stream_id, headers=self._decode(headers)))
