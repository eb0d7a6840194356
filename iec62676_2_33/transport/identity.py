"""Layer 2: who the peer of a TLS connection is, from its certificate (UPL-13).

The cloud names a device by its client certificate: the subject commonName,
the serial number or the first subjectAltName (``cloud serve --identity``).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from .base import ByteStream

__all__ = ["peer_identity"]


def peer_identity(stream: ByteStream, mode: Literal["cn", "serial", "san"]) -> str | None:
    """The peer certificate's identity, or ``None`` when it sent none (or has none).

    ``"cn"``: the first subject commonName; ``"serial"``: the serial number in
    lower-case hex without ``0x``; ``"san"``: the first DNS name, URI or IP
    address of its subjectAltName, in the certificate's order.
    """
    der = stream.extra("peercert")
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    if mode == "cn":
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not attrs:
            return None
        value = attrs[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    if mode == "serial":
        return format(cert.serial_number, "x")
    if mode == "san":
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        for name in san:
            if isinstance(name, (x509.DNSName, x509.UniformResourceIdentifier)):
                return name.value
            if isinstance(name, x509.IPAddress) and isinstance(
                name.value, (ipaddress.IPv4Address, ipaddress.IPv6Address)
            ):
                return str(name.value)
        return None
    raise ValueError(f"identity mode must be 'cn', 'serial' or 'san', not {mode!r}")
