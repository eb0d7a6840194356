"""HTTP Digest access authentication, server side (RFC 7616; SEC-2 alternative, SEC-3).

Layer 5 (services). No I/O and no clock: the caller passes ``now`` (POSIX
seconds). Nothing here logs; callers must not log the Authorization header.

Theory of operation
-------------------
:meth:`DigestAuthenticator.challenge` issues ``WWW-Authenticate: Digest``
challenges (``qop="auth"``, one per configured algorithm, preferred first:
SHA-256 then MD5 by default). Nonces are stateless: ::

    nonce = base64url( ts(8 bytes, big-endian seconds) | random(12) | mac(16) )
    mac   = HMAC-SHA-256(secret, "iec62676-digest-nonce" | realm | ts | random)[:16]

so the server keeps no state per challenge. :meth:`DigestAuthenticator.verify`
parses the ``Authorization`` header with a tokenizer that honours quoted
strings (commas and escaped quotes inside them), then checks, in order:
scheme, realm, algorithm, ``qop=auth``, ``nc``, the nonce's MAC, the request
URI, the response
``H(H(user:realm:password):nonce:nc:cnonce:auth:H(method:uri))`` (constant
time, an unknown user costs the same), the nonce age, and finally that ``nc``
grows for each nonce (replay protection).

A nonce older than ``nonce_lifetime`` with an otherwise *correct* response
raises :class:`StaleNonce`: the middleware then answers 401 with
``stale=true`` so that the client retries with a new nonce without asking
the user again (RFC 7616 §3.3). A wrong response is :class:`WrongPassword`
whatever the nonce age.

The nonce-count memory is bounded: when it is full the entry first seen
longest ago is evicted and, if its nonce was still valid, the nonce's issue
time becomes a floor; nonces issued at or before the floor are answered as
stale. A replay can therefore never pass because of an eviction: at worst
honest clients are re-challenged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from .access import (
    CredentialRejected,
    ExpiredCredentials,
    MalformedCredentials,
    ReplayDetected,
    UnknownUser,
    WrongPassword,
)
from .replay import ReplayMemory

__all__ = [
    "ALGORITHMS",
    "CredentialRejected",
    "DigestAuthenticator",
    "InvalidNonce",
    "ReplayedNonceCount",
    "StaleNonce",
    "digest_response",
    "parse_auth_header",
]

#: Supported algorithms and their hash functions (RFC 7616 §3.2; no ``-sess``).
ALGORITHMS: Final = {"SHA-256": "sha256", "MD5": "md5"}

MAX_HEADER_LENGTH: Final = 4096
FUTURE_SKEW: Final = 5.0
_NONCE_LABEL: Final = b"iec62676-digest-nonce"
_NONCE_RAW_LEN: Final = 8 + 12 + 16


class StaleNonce(ExpiredCredentials):
    """The response was right but the nonce has expired: re-challenge with ``stale=true``."""


class InvalidNonce(MalformedCredentials):
    """The nonce was not issued by this server (bad MAC or format)."""


class ReplayedNonceCount(ReplayDetected):
    """The nonce count (``nc``) did not grow: a replayed request."""


# --------------------------------------------------------------------------- header tokenizer
_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_OWS: Final = " \t"


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TCHAR:
        pos += 1
    return text[start:pos], pos


def _skip_ows(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _OWS:
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; return (unescaped value, next pos)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            pos += 1
            if pos >= len(text):
                break
            char = text[pos]
        out.append(char)
        pos += 1
    raise MalformedCredentials("Authorization header has an unterminated quoted string")


def parse_auth_header(header: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme param=value, param="quoted, value"`` into ``(scheme, params)``.

    Parameter names are lower-cased; quoted values are unescaped. A repeated
    parameter, a token68 form or any syntax error raises
    :class:`MalformedCredentials` (whose text never contains the header).
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise MalformedCredentials(
            f"Authorization header longer than {MAX_HEADER_LENGTH} characters"
        )
    pos = _skip_ows(header, 0)
    scheme, pos = _token(header, pos)
    if not scheme:
        raise MalformedCredentials("Authorization header has no scheme")
    params: dict[str, str] = {}
    if pos < len(header) and header[pos] not in _OWS:
        raise MalformedCredentials("Authorization header scheme is not a token")
    while True:
        pos = _skip_ows(header, pos)
        while pos < len(header) and header[pos] == ",":
            pos = _skip_ows(header, pos + 1)
        if pos >= len(header):
            return scheme, params
        name, pos = _token(header, pos)
        if not name:
            raise MalformedCredentials("Authorization header has a parameter without a name")
        pos = _skip_ows(header, pos)
        if pos >= len(header) or header[pos] != "=":
            raise MalformedCredentials(
                "Authorization header parameter lacks '=' (token68 is not accepted)"
            )
        pos = _skip_ows(header, pos + 1)
        if pos < len(header) and header[pos] == '"':
            value, pos = _quoted(header, pos)
        else:
            value, pos = _token(header, pos)
            if not value:
                raise MalformedCredentials(f"Authorization header parameter {name!r} has no value")
        key = name.lower()
        if key in params:
            raise MalformedCredentials(f"Authorization header repeats parameter {key!r}")
        params[key] = value
        pos = _skip_ows(header, pos)
        if pos < len(header) and header[pos] != ",":
            raise MalformedCredentials("Authorization header parameters must be separated by ','")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_EXT_VALUE: Final = re.compile(r"(?i)(UTF-8)'[A-Za-z0-9-]*'(.*)")


def _decode_ext_value(value: str) -> str:
    """RFC 8187 ``UTF-8'lang'pct-encoded`` (for ``username*``)."""
    m = _EXT_VALUE.fullmatch(value)
    if m is None:
        raise MalformedCredentials("Authorization header username* is not a UTF-8 ext-value")
    try:
        return unquote(m[2], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedCredentials("Authorization header username* is not valid UTF-8") from None


def _utf8(header: str) -> str:
    """A header handed over as Latin-1 text, read as the UTF-8 the challenges announce (else unchanged)."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:  # a character past U+00FF (already decoded) or bytes that are not UTF-8
        return header


# --------------------------------------------------------------------------- digest formula
def _h(algorithm: str, data: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm], data.encode("utf-8")).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """RFC 7616 §3.4.1 ``response`` for ``qop=auth`` (hex, lower case)."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _same_target(digest_uri: str, request_uri: str) -> bool:
    """Does the ``uri`` parameter name the request target (origin or absolute form)?"""
    if digest_uri == request_uri:
        return True
    try:
        theirs = urlsplit(digest_uri)
        ours = urlsplit(request_uri)
    except ValueError:  # e.g. an unclosed IPv6 bracket: names no target of ours
        return False
    return (
        unquote(theirs.path, encoding="latin-1") == unquote(ours.path, encoding="latin-1")
        and theirs.query == ours.query
    )


# --------------------------------------------------------------------------- nc cache
class _NonceCounts:
    """Bounded ``nonce -> highest nc`` memory (a :class:`~.replay.ReplayMemory` by the nonce's issue time)."""

    OK: Final = 0
    REPLAY: Final = 1
    EVICTED: Final = 2

    def __init__(self, max_entries: int, lifetime: float) -> None:
        self._memory: ReplayMemory[str, int] = ReplayMemory(max_entries, lifetime)

    def __len__(self) -> int:
        return len(self._memory)

    def check(self, nonce: str, issued: float, nc: int, now: float) -> int:
        """``nc`` for ``nonce``: OK, REPLAY (not above the highest seen), or EVICTED (its count may have been
        forgotten: :meth:`~.replay.ReplayMemory.too_old`)."""
        memory = self._memory
        with memory.lock:
            memory.advance(now)
            if memory.too_old(issued):
                return self.EVICTED
            known = memory.get(nonce)
            if known is not None and nc <= known:
                return self.REPLAY
            return self.OK if memory.put(nonce, issued, nc) else self.EVICTED


# --------------------------------------------------------------------------- authenticator
_DUMMY_PASSWORD: Final = "\x00no-such-user\x00"
_NC: Final = re.compile(r"[0-9a-fA-F]{8}")


class DigestAuthenticator:
    """RFC 7616 HTTP Digest, server side: challenges and verification.

    ``lookup(username) -> (password, level) | None``; ``realm`` is shown to
    users; ``nonce_secret`` signs nonces (random per instance when ``None``,
    so nonces do not survive a restart: clients are simply re-challenged);
    ``nonce_lifetime`` is how long a nonce is accepted (seconds);
    ``algorithms`` are offered in this order (``"SHA-256"``, ``"MD5"``);
    ``nc_cache_size`` bounds the nonce-count memory.
    """

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, str] | None],
        realm: str,
        *,
        nonce_secret: bytes | None = None,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nc_cache_size: int = 10000,
    ) -> None:
        if not realm or any(ord(c) < 0x20 or ord(c) == 0x7F for c in realm):
            raise ConfigurationError(
                "the Digest realm must be a non-empty string without control characters"
            )
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ConfigurationError(
                f"unsupported Digest algorithms {unknown!r}; use some of {', '.join(ALGORITHMS)}"
            )
        if nonce_lifetime <= 0:
            raise ConfigurationError(f"nonce_lifetime must be > 0 seconds, not {nonce_lifetime}")
        if nc_cache_size < 1:
            raise ConfigurationError(f"nc_cache_size must be >= 1, not {nc_cache_size}")
        if nonce_secret is not None and len(nonce_secret) < 16:
            raise ConfigurationError("nonce_secret must be at least 16 bytes")
        self._lookup = lookup
        self.realm = realm
        self.algorithms = tuple(algorithms)
        self.nonce_lifetime = float(nonce_lifetime)
        self._secret = nonce_secret if nonce_secret is not None else os.urandom(32)
        self._counts = _NonceCounts(nc_cache_size, self.nonce_lifetime + FUTURE_SKEW)

    # -- nonces
    def _mac(self, ts_and_random: bytes) -> bytes:
        msg = _NONCE_LABEL + self.realm.encode("utf-8") + ts_and_random
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:16]

    def make_nonce(self, now: float) -> str:
        """A fresh signed nonce carrying ``now`` (whole seconds)."""
        body = struct.pack(">Q", max(0, int(now))) + os.urandom(12)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii").rstrip("=")

    def _nonce_time(self, nonce: str) -> float:
        """Issue time of a nonce we signed; :class:`InvalidNonce` otherwise."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            raise InvalidNonce("Digest nonce is not one of ours (not base64url)") from None
        if len(raw) != _NONCE_RAW_LEN:
            raise InvalidNonce("Digest nonce is not one of ours (wrong length)")
        body, mac = raw[:20], raw[20:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidNonce("Digest nonce is not one of ours (bad signature)")
        return float(struct.unpack(">Q", body[:8])[0])

    # -- challenges
    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """One ``WWW-Authenticate`` value per algorithm, preferred first (send each as a header)."""
        nonce = self.make_nonce(now)
        out = []
        for algorithm in self.algorithms:
            parts = [
                f"Digest realm={_quote(self.realm)}",
                'qop="auth"',
                f"algorithm={algorithm}",
                f"nonce={_quote(nonce)}",
                "charset=UTF-8",
            ]
            if stale:
                parts.append("stale=true")
            out.append(", ".join(parts))
        return out

    def challenge(self, now: float, stale: bool = False) -> str:
        """All challenges as one header value (comma-separated, RFC 7235 §4.1)."""
        return ", ".join(self.challenges(now, stale))

    # -- verification
    def verify(
        self, method: str, authorization_header: str, now: float, *, request_uri: str | None = None
    ) -> tuple[str, str]:
        """Return ``(username, level)`` or raise a :class:`CredentialRejected` subclass.

        ``request_uri`` (the request target as received) is compared with the
        ``uri`` parameter when given. Raises :class:`StaleNonce` when only the
        nonce's age is wrong. The header may be given as servers hand headers
        over, each byte a Latin-1 character: the challenges say
        ``charset=UTF-8``, so bytes that read as UTF-8 are taken as UTF-8
        (RFC 7616 §4: a ``username`` such as ``jörg`` as the client hashed it).
        """
        scheme, params = parse_auth_header(_utf8(authorization_header))
        if scheme.lower() != "digest":
            raise MalformedCredentials(f"Authorization scheme {scheme[:20]!r} is not Digest")
        if "username*" in params:
            if "username" in params:
                raise MalformedCredentials("Digest credentials carry both username and username*")
            username = _decode_ext_value(params["username*"])
        else:
            username = params.get("username", "")
        missing = [
            k
            for k in ("realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
            if k not in params
        ]
        if not username or missing:
            raise MalformedCredentials(
                "Digest credentials lack "
                + ", ".join((["username"] if not username else []) + missing)
            )
        if params["realm"] != self.realm:
            raise MalformedCredentials(
                f"Digest credentials for user {username!r} name another realm"
            )
        if params.get("userhash", "false").lower() != "false":
            raise MalformedCredentials("Digest userhash is not supported")
        algorithm = params.get("algorithm", "MD5")
        canonical = next((a for a in self.algorithms if a.lower() == algorithm.lower()), None)
        if canonical is None:
            raise MalformedCredentials(f"Digest algorithm {algorithm[:20]!r} is not offered")
        if params["qop"].lower() != "auth":
            raise MalformedCredentials("Digest qop must be 'auth'")
        nc_text = params["nc"]
        if not _NC.fullmatch(nc_text):
            raise MalformedCredentials("Digest nc must be 8 hex digits")
        nc = int(nc_text, 16)
        nonce = params["nonce"]
        issued = self._nonce_time(nonce)
        if issued > now + FUTURE_SKEW:
            raise InvalidNonce("Digest nonce was issued in the future")
        if request_uri is not None and not _same_target(params["uri"], request_uri):
            raise MalformedCredentials("Digest uri does not name the request target")
        entry = self._lookup(username)
        password, level = entry if entry is not None else (_DUMMY_PASSWORD, "")
        expected = digest_response(
            algorithm=canonical,
            username=username,
            realm=self.realm,
            password=password,
            method=method,
            uri=params["uri"],
            nonce=nonce,
            nc=nc_text,
            cnonce=params["cnonce"],
            qop=params["qop"],
        )
        matches = hmac.compare_digest(
            params["response"].lower().encode("utf-8"), expected.encode("ascii")
        )
        if entry is None:
            raise UnknownUser(f"Digest credentials name unknown user {username!r}")
        if not matches:
            raise WrongPassword(f"Digest response for user {username!r} is wrong")
        if now - issued > self.nonce_lifetime:
            raise StaleNonce(
                f"Digest nonce of user {username!r} is {now - issued:.0f} s old: stale"
            )
        verdict = self._counts.check(nonce, issued, nc, now)
        if verdict == _NonceCounts.REPLAY:
            raise ReplayedNonceCount(
                f"Digest nonce count of user {username!r} did not grow: replay"
            )
        if verdict == _NonceCounts.EVICTED:
            raise StaleNonce(
                f"Digest nonce of user {username!r} left the nonce-count memory: stale"
            )
        return username, level
