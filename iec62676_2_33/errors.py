"""The library's exception tree (all layers).

Every error a user can meet derives from :class:`Iec62676Error` and says what
was wrong and what to do. Protocol errors say whose fault it was (``local`` or
``remote``), the way h11 does, and carry a wire hint where one exists.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "Iec62676Error",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SchemaError",
    "TransportError",
    "shown_url",
]


def shown_url(url: str) -> str:
    """``url`` fit for a message: any user info (``user:password@``) replaced by ``…@``, so an error never
    shows a password someone put in a URL."""
    scheme, sep, rest = url.partition("://")
    authority, at, tail = rest.partition("@")
    return f"{scheme}{sep}…@{tail}" if sep and at and "/" not in authority else url


class Iec62676Error(Exception):
    """Root of every exception raised by this library."""


class ConfigurationError(Iec62676Error):
    """Bad input from the user: a value, a file, a flag or stored state is wrong."""


class SchemaError(Iec62676Error):
    """A WSDL/XSD file is missing or a document does not validate against it."""


class ProtocolError(Iec62676Error):
    """A protocol rule was broken.

    ``status_hint`` is the HTTP status (or 0) that best answers the peer;
    ``error_code`` is the HTTP/2 error code (RFC 7540 §7) when the error ends a
    connection, else ``None``.
    """

    def __init__(self, msg: str, *, status_hint: int = 400, error_code: int | None = None) -> None:
        super().__init__(msg)
        self.status_hint = status_hint
        self.error_code = error_code


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (our fault)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (its fault)."""


class AuthenticationError(Iec62676Error):
    """A peer or a user could not be authenticated or was not authorised."""


class TransportError(Iec62676Error):
    """A byte transport failed: connect, TLS handshake, read or write."""
