"""Conformance kit: where the tool's device gets the access token it presents to a cloud under test (UPL-14).

The engineer gives either a token as it is (read from a file: the tool never
needs to know how it was made) or an OAuth2 client-credentials grant — a
ServerUri as a device's authorization server configuration holds it (the
token endpoint itself, or RFC 8414 metadata or the issuer), a client ID and
secret, and the trust anchors of the authorization server's certificate.
The grant is the device's own (:func:`~iec62676_2_33.security.oauth.fetch_token`:
discovery, verified HTTPS, bounded). Neither the secret nor a token is ever
shown: :meth:`TokenSource.__repr__` and the reports name only where it comes
from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import ConfigurationError
from ..pki import load_certs_pem
from ..security.oauth import fetch_token
from ..store import AuthServerConfig


@dataclass(frozen=True, repr=False)
class TokenSource:
    """A fixed ``token``, or the client-credentials grant at ``server_uri`` for ``client_id``/``client_secret``
    (the server's certificate checked against ``ca``, default the system store)."""

    token: str | None = None
    server_uri: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        grant = (self.server_uri, self.client_id, self.client_secret)
        if (self.token is None) == (self.server_uri is None):
            raise ConfigurationError("give an access token (--token-file) or an authorization server "
                                     "(--token-server with --client-id and --client-secret-file), not both")
        if self.server_uri is not None and None in grant:
            raise ConfigurationError("--token-server needs --client-id and --client-secret-file")

    def __repr__(self) -> str:
        return "TokenSource(a fixed token)" if self.token is not None else f"TokenSource({self.server_uri})"

    async def fetch(self, timeout: float) -> str:
        """The token to present (one client-credentials grant for a server source)."""
        if self.token is not None:
            return self.token
        assert self.server_uri is not None and self.client_id is not None and self.client_secret is not None
        anchors = None if self.ca is None else [c.public_bytes(Encoding.PEM) for c in load_certs_pem(self.ca)]
        config = AuthServerConfig(token="conformance", url=self.server_uri, client_id=self.client_id,
                                  client_secret=self.client_secret)
        return (await fetch_token(config, anchors, timeout=timeout)).value
