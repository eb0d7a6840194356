"""Layer 4: how a device reaches the cloud for one uplink configuration — TLS,
then the upgrade (UPL-1, UPL-2, UPL-4, UPL-6, UPL-11, UPL-13, UPL-14).

``dial_uplink`` picks the byte transport by the RemoteAddress scheme (the
registry :data:`DIALERS`; ``https`` is native h2c-reverse, ``wss`` the
WebSocket handshake with subprotocol ``h2c-reverse``), verifies the cloud
per RFC 6125 against the trust anchors of the configured
CertPathValidationPolicy (the system store without one — verification is
never skipped), presents the keystore certificate for mTLS, sends the upgrade
and returns the stream plus the bytes read past the ``101``.

Access tokens (UPL-14) arrive as an ``Authorization: Bearer`` header from the
agent's ``auth_headers`` hook. For ``wss`` the token goes into the
``access_token`` query parameter instead (RFC 6750 §2.3, UPL-4) when the
RemoteAddress itself asks for it with an *empty* ``access_token`` parameter,
e.g. ``wss://cloud.example.com/uplink?access_token=``: the configuration
shows where the token goes and never holds it. A refusal of the upgrade with
401/403 raises :class:`UplinkRefused` (an
:class:`~iec62676_2_33.errors.AuthenticationError` with the ``status``).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import AuthenticationError, ConfigurationError, TransportError
from ..sansio.upgrade import Switched, UpgradeClient, UpgradeRefused, parse_remote_address
from ..store import DeviceStore
from ..transport.base import ByteStream, PeerClosed, TlsHandshakeError
from ..transport.contexts import client_context
from ..transport.tls import connect_tls
from ..transport.websocket import websocket_connect
from ..uplinkconfig import UplinkConfiguration

HANDSHAKE_TIMEOUT = 15.0
T = TypeVar("T")
MAX_UPGRADE_RESPONSE = 16384


class UplinkRefused(AuthenticationError):
    """The cloud refused the upgrade with 401 or 403; ``status`` says which (UPL-13, UPL-14)."""

    def __init__(self, msg: str, *, status: int) -> None:
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class DialResult:
    stream: ByteStream
    trailing: bytes
    peer: str


def tls_context(store: DeviceStore, cfg: UplinkConfiguration) -> ssl.SSLContext:
    """The TLS client context of one uplink: trust anchors and client certificate from the store."""
    anchors = None
    if cfg.cert_path_validation_policy_id is not None:
        anchors = store.get_policy(cfg.cert_path_validation_policy_id)
        if anchors is None:
            raise ConfigurationError(
                f"CertPathValidationPolicyID {cfg.cert_path_validation_policy_id!r} is no longer stored")
    cert = key = None
    if cfg.certificate_id is not None:
        material = store.get_certificate(cfg.certificate_id)
        if material is None:
            raise ConfigurationError(f"CertificateID {cfg.certificate_id!r} is no longer stored")
        cert, key = material
    return client_context(cafile_pems=anchors, certfile_pem=cert, keyfile_pem=key)


async def upgrade(stream: ByteStream, remote_address: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """Send the native upgrade request and wait for the ``101``; returns the bytes read past it (UPL-2, UPL-3)."""
    client = UpgradeClient(remote_address, extra_headers=headers)
    await stream.write(client.initiate())
    while True:
        data = await stream.read(MAX_UPGRADE_RESPONSE)
        if not data:
            client.receive_eof()
        event = client.receive_data(data)
        if isinstance(event, Switched):
            return event.trailing_data


async def _handshake(stream: ByteStream, step: Awaitable[T], cfg: UplinkConfiguration, peer: str) -> T:
    """Run the upgrade ``step`` on a fresh TLS stream with a deadline; on any failure close the stream.

    With TLS 1.3 a cloud that refuses the client certificate does so after the
    handshake has completed on our side: the first read fails with the alert or
    a bare close. That is reported as an authentication failure (UPL-13); a
    401/403 answer as :class:`UplinkRefused` (UPL-14).
    """
    try:
        try:
            return await asyncio.wait_for(step, HANDSHAKE_TIMEOUT)
        except TimeoutError:
            raise TransportError(f"the cloud {peer} did not answer the upgrade within {HANDSHAKE_TIMEOUT:g} s") \
                from None
        except (PeerClosed, TlsHandshakeError) as exc:
            what = ("the client certificate" if cfg.certificate_id is not None
                    else "this device (no client certificate)")
            raise AuthenticationError(
                f"the cloud closed the connection right after the TLS handshake: it refused {what} ({exc})") \
                from exc
        except UpgradeRefused as exc:
            if exc.status in (401, 403):
                raise UplinkRefused(str(exc), status=exc.status) from exc
            raise
    except BaseException:
        await stream.close()
        raise


async def dial_https(store: DeviceStore, cfg: UplinkConfiguration,
                     headers: Sequence[tuple[str, str]] = ()) -> DialResult:
    """Native h2c-reverse over TLS (UPL-2)."""
    target = parse_remote_address(cfg.remote_address)
    stream = await connect_tls(target.host, target.port, tls_context(store, cfg), server_hostname=target.host,
                               timeout=HANDSHAKE_TIMEOUT)
    peer = f"{target.host}:{target.port}"
    trailing = await _handshake(stream, upgrade(stream, cfg.remote_address, headers), cfg, peer)
    return DialResult(stream=stream, trailing=trailing, peer=peer)


def _token_in_query(target: str, headers: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """Move a bearer token from the header into an empty ``access_token`` query parameter (RFC 6750 §2.3)."""
    path, sep, query = target.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True) if sep else []
    if not any(name == "access_token" and not value for name, value in pairs):
        return target, list(headers)
    token = next((v[7:].strip() for n, v in headers
                  if n.lower() == "authorization" and v[:7].lower() == "bearer "), None)
    if token is None:
        return target, list(headers)
    pairs = [(n, token if n == "access_token" and not v else v) for n, v in pairs]
    rest = [(n, v) for n, v in headers if n.lower() != "authorization"]
    return f"{path}?{urllib.parse.urlencode(pairs)}", rest


async def dial_wss(store: DeviceStore, cfg: UplinkConfiguration,
                   headers: Sequence[tuple[str, str]] = ()) -> DialResult:
    """WebSocket h2c-reverse over TLS (UPL-4): same TLS, roles, liveness and backoff as native."""
    target = parse_remote_address(cfg.remote_address)
    request_target, request_headers = _token_in_query(target.target, headers)
    stream = await connect_tls(target.host, target.port, tls_context(store, cfg), server_hostname=target.host,
                               timeout=HANDSHAKE_TIMEOUT)
    peer = f"{target.host}:{target.port}"
    ws = await _handshake(stream, websocket_connect(stream, host=target.host_header, target=request_target,
                                                    extra_headers=request_headers, label=f"the cloud {peer}"),
                          cfg, peer)
    return DialResult(stream=ws, trailing=b"", peer=peer)


Dialer = Callable[[DeviceStore, UplinkConfiguration, Sequence[tuple[str, str]]], Awaitable[DialResult]]

#: RemoteAddress scheme → dialer. Adding a transport (``wss``) adds an entry here only.
DIALERS: dict[str, Dialer] = {"https": dial_https, "wss": dial_wss}


def supported_protocols() -> tuple[str, ...]:
    """The Protocols capability (CFG-5, UPL-5): exactly the schemes we can dial."""
    return tuple(DIALERS)


async def dial_uplink(store: DeviceStore, cfg: UplinkConfiguration,
                      headers: Sequence[tuple[str, str]] = ()) -> DialResult:
    dialer = DIALERS.get(cfg.scheme)
    if dialer is None:
        raise TransportError(f"no transport for the scheme {cfg.scheme!r}")
    return await dialer(store, cfg, headers)
