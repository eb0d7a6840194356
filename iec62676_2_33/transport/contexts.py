"""Layer 2: TLS contexts of the device and the cloud (UPL-6, UPL-11, UPL-13).

:func:`client_context` (the device: verification always on, no CN fallback)
and :func:`server_context` (the cloud: client certificates required,
optional or not asked for), both TLS 1.2 or later without compression or
renegotiation. Certificates and keys are given as PEM bytes and never touch a
disk: :func:`_load_chain` hands them to OpenSSL through an anonymous memory
file. :func:`ssl_text` turns an OpenSSL error into one readable line.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["client_context", "server_context", "ssl_text"]

_OPENSSL_NOISE = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def ssl_text(exc: BaseException) -> str:
    """OpenSSL's message without the ``[SSL: X]`` prefix and the ``(_ssl.c:N)`` suffix."""
    if isinstance(exc, ssl.SSLError) and len(exc.args) >= 2 and isinstance(exc.args[1], str):
        text = exc.args[1]
    else:
        text = str(exc) or type(exc).__name__
    return _OPENSSL_NOISE.sub("", text).strip() or type(exc).__name__


def client_context(
    *,
    cafile_pems: list[bytes] | None,
    certfile_pem: bytes | None = None,
    keyfile_pem: bytes | None = None,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    alpn_protocols: list[str] | None = None,
) -> ssl.SSLContext:
    """A TLS client context for the device (UPL-6, UPL-11, UPL-13).

    Verification is always on: the server's chain must lead to one of
    *cafile_pems* (PEM certificates; ``None`` means the system's trust store)
    and its subjectAltName must name the host (no CN fallback, RFC 6125/9525).
    *certfile_pem* (the certificate, optionally followed by its chain) and
    *keyfile_pem* are our client certificate for mutual TLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.hostname_checks_common_name = False
    _common(ctx, minimum_version, alpn_protocols)
    if cafile_pems is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_cas(ctx, cafile_pems, "trust anchors for the server certificate")
    if certfile_pem is not None or keyfile_pem is not None:
        _load_chain(ctx, certfile_pem, keyfile_pem)
    return ctx


def server_context(
    certfile_pem: bytes,
    keyfile_pem: bytes,
    *,
    client_ca_pems: list[bytes] | None = None,
    require_client_cert: bool = False,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    alpn_protocols: list[str] | None = None,
) -> ssl.SSLContext:
    """A TLS server context for the cloud listener (UPL-6, UPL-13).

    With *require_client_cert* a client must present a certificate that
    chains to *client_ca_pems* (CERT_REQUIRED); with CAs but not required, a
    certificate is asked for and verified if sent (CERT_OPTIONAL); else none
    is asked for.
    """
    if require_client_cert and not client_ca_pems:
        raise ConfigurationError(
            "a server that requires client certificates needs client_ca_pems: "
            "give the CA certificates that issue the devices' certificates"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, minimum_version, alpn_protocols)
    _load_chain(ctx, certfile_pem, keyfile_pem)
    if client_ca_pems:
        _load_cas(ctx, client_ca_pems, "trust anchors for client certificates")
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _common(ctx: ssl.SSLContext, minimum_version: ssl.TLSVersion, alpn: list[str] | None) -> None:
    if minimum_version not in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        raise ConfigurationError(
            f"minimum TLS version {minimum_version.name} is not allowed (UPL-6: TLS 1.2 or "
            "later): use TLSv1_2 or TLSv1_3"
        )
    ctx.minimum_version = minimum_version
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    if alpn:
        ctx.set_alpn_protocols(alpn)


def _load_cas(ctx: ssl.SSLContext, pems: list[bytes], what: str) -> None:
    if not pems:
        raise ConfigurationError(
            f"no {what} given: give at least one CA certificate (or None for the system store)"
        )
    try:
        ctx.load_verify_locations(cadata=b"\n".join(pems).decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"cannot load the {what}: {ssl_text(exc)}; give PEM certificates"
        ) from None


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes | None, key_pem: bytes | None) -> None:
    """Load a certificate (chain) and its key from PEM bytes; they never touch a disk.

    :meth:`ssl.SSLContext.load_cert_chain` only reads files: on Linux the PEM
    goes into an anonymous memory file (``memfd_create``) read through
    ``/proc/self/fd``; elsewhere into a private (0700) temporary directory as
    a 0600 file, removed at once.
    """
    if cert_pem is None or key_pem is None:
        raise ConfigurationError("a TLS certificate needs both its PEM certificate and its PEM key")
    try:
        with _pem_file(cert_pem.rstrip(b"\n") + b"\n" + key_pem) as path:
            ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"cannot load the TLS certificate and key: {ssl_text(exc)}; give a PEM "
            "certificate and the unencrypted PEM private key that belongs to it"
        ) from None


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        try:
            fd = memfd_create("iec62676-tls", getattr(os, "MFD_CLOEXEC", 1))
        except OSError:
            pass
        else:
            try:
                os.write(fd, data)
                yield f"/proc/self/fd/{fd}"
            finally:
                os.close(fd)
            return
    with tempfile.TemporaryDirectory(prefix="iec62676-tls-") as tmp:
        path = Path(tmp) / "chain.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield str(path)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
