"""Layer 4: how a device reaches the cloud for one uplink configuration — TLS,
then the upgrade (UPL-1, UPL-2, UPL-6, UPL-11, UPL-13).

``dial_uplink`` picks the byte transport by the RemoteAddress scheme (the
registry :data:`DIALERS`; ``https`` is native h2c-reverse), verifies the cloud
per RFC 6125 against the trust anchors of the configured
CertPathValidationPolicy (the system store without one — verification is
never skipped), presents the keystore certificate for mTLS, sends the upgrade
and returns the stream plus the bytes read past the ``101``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..errors import AuthenticationError, ConfigurationError, RemoteProtocolError, TransportError
from ..sansio.upgrade import Switched, UpgradeClient, UpgradeRefused, parse_remote_address
from ..store import DeviceStore
from ..transport.base import ByteStream
from ..transport.tls import client_context, connect_tls
from ..uplinkconfig import UplinkConfiguration

HANDSHAKE_TIMEOUT = 15.0
MAX_UPGRADE_RESPONSE = 16384


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


async def upgrade(stream: ByteStream, remote_address: str, headers: Sequence[tuple[str, str]] = (), *,
                  client_certificate: bool = False) -> bytes:
    """Send the upgrade request and wait for the ``101``; returns the bytes read past it.

    With TLS 1.3 a cloud that refuses the client certificate does so after the
    handshake has completed on our side: the first read ends the connection.
    That case is reported as an authentication failure (UPL-13).
    """
    client = UpgradeClient(remote_address, extra_headers=headers)
    received = False
    try:
        await stream.write(client.initiate())
        while True:
            data = await stream.read(MAX_UPGRADE_RESPONSE)
            if not data:
                client.receive_eof()
            received = True
            event = client.receive_data(data)
            if isinstance(event, Switched):
                return event.trailing_data
    except (RemoteProtocolError, TransportError) as exc:
        if received or isinstance(exc, UpgradeRefused):
            raise
        what = "the client certificate" if client_certificate else "this device (no client certificate)"
        raise AuthenticationError(
            f"the cloud closed the connection right after the TLS handshake: it refused {what} ({exc})") from exc


async def dial_https(store: DeviceStore, cfg: UplinkConfiguration,
                     headers: Sequence[tuple[str, str]] = ()) -> DialResult:
    """Native h2c-reverse over TLS (UPL-2)."""
    target = parse_remote_address(cfg.remote_address)
    context = tls_context(store, cfg)
    stream = await connect_tls(target.host, target.port, context, server_hostname=target.host,
                               timeout=HANDSHAKE_TIMEOUT)
    try:
        trailing = await upgrade(stream, cfg.remote_address, headers,
                                 client_certificate=cfg.certificate_id is not None)
    except UpgradeRefused as exc:
        await stream.close()
        if exc.status in (401, 403):
            raise AuthenticationError(str(exc)) from exc
        raise
    except BaseException:
        await stream.close()
        raise
    return DialResult(stream=stream, trailing=trailing, peer=f"{target.host}:{target.port}")


Dialer = Callable[[DeviceStore, UplinkConfiguration, Sequence[tuple[str, str]]], Awaitable[DialResult]]

#: RemoteAddress scheme → dialer. Adding a transport (``wss``) adds an entry here only.
DIALERS: dict[str, Dialer] = {"https": dial_https}


def supported_protocols() -> tuple[str, ...]:
    """The Protocols capability (CFG-5, UPL-5): exactly the schemes we can dial."""
    return tuple(DIALERS)


async def dial_uplink(store: DeviceStore, cfg: UplinkConfiguration,
                      headers: Sequence[tuple[str, str]] = ()) -> DialResult:
    dialer = DIALERS.get(cfg.scheme)
    if dialer is None:
        raise TransportError(f"no transport for the scheme {cfg.scheme!r}")
    return await dialer(store, cfg, headers)
