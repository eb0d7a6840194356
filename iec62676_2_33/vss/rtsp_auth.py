"""Layer 4: RTSP Digest authentication on the VSS's RTSP front, against the VSS's own users (SEC-1, SEC-2, STR-1).

Theory of operation
-------------------
A player of ``rtsp://<front>/relay/<id>`` or ``/devices/<id>/<token>`` logs in
as ONVIF cameras ask: its first request is answered ``401 Unauthorized`` with
Digest challenges (RFC 7616 as the SOAP services use it: SHA-256 and MD5,
``qop="auth"``), and it repeats the request with ``Authorization: Digest …``.
The front reads request by request until one is authorized (after
:data:`MAX_ATTEMPTS` refusals the connection ends; each request within the
first-request deadline, :func:`~..runtime.rtsp_relay.first_request`); nothing is relayed
before: the connection to the stream opens with the authorized request.
From then on the TCP connection is the player's session; its later requests
are not verified again (they are the same player's).

Two forms of the answer are taken, both against the VSS's users (``iec62676
device user add``), whose level must allow READ_MEDIA:

* with ``qop=auth`` (ffmpeg, VLC) — verified by the SOAP services'
  :class:`~..security.httpdigest.DigestAuthenticator`: nonces signed and
  expiring (``nonce_lifetime``), a bounded nonce-count memory against
  replays;
* without ``qop`` (RFC 2069 compatibility, which GStreamer's ``rtspsrc``
  sends) — only for the nonce this connection was challenged with, within
  its lifetime: a captured answer cannot be used on another connection.

Before it is authorized a connection may send at most :data:`LOGIN_BYTES`
(:class:`LoginBudget`; more is a bad request) and at most :data:`MAX_LOGINS`
connections log in at once (more are answered ``503`` and closed), so
players without credentials hold bounded memory and connections.

A refused answer gets a fresh challenge (``stale=true`` when only the nonce
aged), a user whose level is too low ``403 Forbidden`` and the connection
ends. Logs name the user and the reason, never an ``Authorization`` value;
the player's ``Authorization`` is removed from every request before it goes
upstream (:class:`WithoutCredentials`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from ..runtime.rtsp_relay import READ_CHUNK
from ..sansio.rtsp_tunnel import Interleaved, RtspMessage, RtspSplitter
from ..security.access import (
    AccessClass,
    CredentialRejected,
    MalformedCredentials,
    UnknownUser,
    WrongPassword,
    is_allowed,
)
from ..security.httpdigest import ALGORITHMS, DigestAuthenticator, StaleNonce, parse_auth_header

__all__ = ["LOGIN_BYTES", "MAX_ATTEMPTS", "MAX_LOGINS", "LoginBudget", "RtspAuthenticator", "RtspChallenge",
           "WithoutCredentials"]

#: Refused requests per connection before it is closed.
MAX_ATTEMPTS = 3
#: Bytes a player may send before it is authorized, over all its attempts (a request head with Digest
#: credentials is well under 4 KiB; without this, each attempt could make the front buffer ~1 MiB).
LOGIN_BYTES = 64 * 1024
#: Connections logging in at once (each held up to ``MAX_ATTEMPTS`` first-request deadlines): more get 503.
MAX_LOGINS = 256


class RtspChallenge:
    """One connection's login: the nonce it was last challenged with (and when)."""

    def __init__(self) -> None:
        self.nonce: str | None = None
        self.issued = 0.0


class RtspAuthenticator:
    """Digest of the VSS's users for RTSP requests (module docstring). ``lookup(name) -> (password, level)``."""

    def __init__(self, lookup: Callable[[str], tuple[str, str] | None], realm: str, *,
                 clock: Callable[[], float] = time.time, nonce_lifetime: float = 300.0) -> None:
        self.lookup = lookup
        self.digest = DigestAuthenticator(lookup, realm, nonce_lifetime=nonce_lifetime)
        self.clock = clock

    def challenges(self, state: RtspChallenge, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values with a fresh nonce, remembered in ``state``."""
        now = self.clock()
        values = self.digest.challenges(now, stale=stale)
        state.nonce, state.issued = parse_auth_header(values[0])[1]["nonce"], now
        return values

    def level(self, request: RtspMessage, state: RtspChallenge) -> str:
        """The level of the user whose credentials ``request`` carries (``Anonymous`` without); raises
        :class:`~..security.access.CredentialRejected` (:class:`~..security.httpdigest.StaleNonce`: retry)."""
        header = request.header("authorization")
        if header is None:
            return "Anonymous"
        now = self.clock()
        scheme, params = parse_auth_header(header)
        if scheme.lower() == "digest" and "qop" not in params:
            return self._rfc2069(request, params, state, now)
        return self.digest.verify(request.method, header, now, request_uri=request.target)[1]

    def _rfc2069(self, request: RtspMessage, params: dict[str, str], state: RtspChallenge, now: float) -> str:
        username, uri, nonce = params.get("username", ""), params.get("uri", ""), params.get("nonce", "")
        if not username or not uri or "response" not in params or params.get("realm") != self.digest.realm:
            raise MalformedCredentials("Digest credentials lack username, uri, response or this realm")
        algorithm = next((a for a in self.digest.algorithms if a.lower() == params.get("algorithm", "MD5").lower()),
                         None)
        if algorithm is None:
            raise MalformedCredentials("Digest algorithm is not offered")
        if uri != request.target:
            raise MalformedCredentials("Digest uri does not name the request target")
        if state.nonce is None or not hmac.compare_digest(nonce.encode(), state.nonce.encode()):
            raise StaleNonce(f"Digest nonce of user {username!r} was not issued to this connection")
        entry = self.lookup(username)
        password, level = entry if entry is not None else ("\x00no-such-user\x00", "")

        def h(text: str) -> str:
            return hashlib.new(ALGORITHMS[algorithm], text.encode("utf-8")).hexdigest()

        expected = h(f"{h(f'{username}:{self.digest.realm}:{password}')}:{nonce}:{h(f'{request.method}:{uri}')}")
        matches = hmac.compare_digest(params["response"].lower().encode(), expected.encode())
        if entry is None:
            raise UnknownUser(f"Digest credentials name unknown user {username!r}")
        if not matches:
            raise WrongPassword(f"Digest response for user {username!r} is wrong")
        if now - state.issued > self.digest.nonce_lifetime:
            raise StaleNonce(f"Digest nonce of user {username!r} is {now - state.issued:.0f} s old: stale")
        return level

    def decide(self, request: RtspMessage, state: RtspChallenge) -> tuple[int, bool, str]:
        """(status, stale, why): 200 allowed, 401 challenge again (``stale``), 403 too low a level."""
        try:
            level = self.level(request, state)
        except StaleNonce as exc:
            return 401, True, str(exc)
        except CredentialRejected as exc:
            return 401, False, str(exc)
        if is_allowed([level], AccessClass.READ_MEDIA):
            return 200, False, ""
        if level == "Anonymous":
            return 401, False, "credentials needed"
        return 403, False, f"level {level!r} may not read media (READ_MEDIA)"


class LoginBudget:
    """A player's stream before it is authorized: at most ``left`` bytes are read from it, then it reads as ended."""

    def __init__(self, stream: Any, left: int = LOGIN_BYTES) -> None:
        self._stream = stream
        self.left = left

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        data: bytes = await self._stream.read(min(max_bytes, self.left))
        self.left -= len(data)
        return data


class WithoutCredentials:
    """A player's stream whose RTSP requests lose their ``Authorization`` (interleaved data passes as is)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._splitter = RtspSplitter()

    async def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        while data := await self._stream.read(max_bytes):
            out = b"".join(unit.data if isinstance(unit, Interleaved) else _stripped(unit)
                           for unit in self._splitter.feed(data))
            if out:
                return out
        return b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stripped(message: RtspMessage) -> bytes:
    message.headers = [(k, v) for k, v in message.headers if k.lower() != "authorization"]
    return message.encode()
