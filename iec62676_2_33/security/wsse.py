"""WS-Security UsernameToken with PasswordDigest (SEC-2).

Layer 5 (services). No I/O and no clock: the caller passes ``now``.

Theory of operation
-------------------
A direct (non-uplink) SOAP request authenticates with a
``wsse:Security/wsse:UsernameToken`` header (OASIS UsernameToken Profile 1.0)::

    <wsse:UsernameToken>
      <wsse:Username>admin</wsse:Username>
      <wsse:Password Type="...#PasswordDigest">Base64(SHA-1(nonce + created + password))</wsse:Password>
      <wsse:Nonce EncodingType="...#Base64Binary">Base64(nonce)</wsse:Nonce>
      <wsu:Created>2024-05-01T12:00:00Z</wsu:Created>
    </wsse:UsernameToken>

``nonce`` is the *decoded* nonce bytes, ``created`` the UTF-8 bytes of the
Created text exactly as sent, ``password`` the UTF-8 bytes of the password.

:func:`parse_username_token` extracts the token (namespace URIs are matched,
prefixes do not matter); :class:`UsernameTokenVerifier` checks it in this
order, so that nothing is remembered for a request that fails:

1. password type: PasswordDigest (PasswordText only with ``allow_text=True``);
2. Nonce and Created both present, nonce valid base64, Created a valid
   ``xs:dateTime`` (no time zone = UTC);
3. freshness: Created not older than ``freshness`` seconds and not more than
   ``future_skew`` seconds in the future;
4. user known and digest equal (``hmac.compare_digest``; an unknown user
   costs the same work as a known one);
5. nonce not seen before (:class:`NonceCache`). Only nonces of tokens that
   passed 1-4 enter the cache, so strangers cannot flood it.

:class:`NonceCache` is bounded and keeps a nonce only while its token could
still pass the freshness check, its window counted back from the latest time it
was given; when full, an eviction floor refuses possible replays, and a clock
set back starts it afresh (:mod:`.replay` says how and why).

Every failure raises a :class:`~.access.CredentialRejected` subclass whose text
is the precise local reason (never the password, digest or nonce); the peer
only ever gets :attr:`~.access.CredentialRejected.peer_reason`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from lxml import etree

from ..errors import ConfigurationError, RemoteProtocolError, SchemaError
from ..namespaces import SOAP_ENV, WSSE, WSU
from ..schemas import parse_xml
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
    "BASE64_BINARY",
    "MAX_NONCE_BYTES",
    "PASSWORD_DIGEST",
    "PASSWORD_TEXT",
    "SOAP11_ENV",
    "CreatedInFuture",
    "CreatedTooOld",
    "CredentialRejected",
    "MissingNonceOrCreated",
    "NonceCache",
    "ReplayedNonce",
    "UnsafeXml",
    "UnsupportedPasswordType",
    "UsernameToken",
    "UsernameTokenVerifier",
    "build_username_token",
    "parse_created",
    "parse_username_token",
    "password_digest",
    "safe_fromstring",
]

SOAP11_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
_UT_PROFILE: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
)
_SOAP_MESSAGE_SECURITY: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0"
)
PASSWORD_DIGEST: Final = f"{_UT_PROFILE}#PasswordDigest"
PASSWORD_TEXT: Final = f"{_UT_PROFILE}#PasswordText"
BASE64_BINARY: Final = f"{_SOAP_MESSAGE_SECURITY}#Base64Binary"

#: Largest accepted decoded nonce, in bytes.
MAX_NONCE_BYTES: Final = 256
#: Largest accepted length of any token field, in characters.
_MAX_FIELD: Final = 1024


# --------------------------------------------------------------------------- errors
class MissingNonceOrCreated(MalformedCredentials):
    """A PasswordDigest token lacks its Nonce or its Created element."""


class UnsupportedPasswordType(MalformedCredentials):
    """The password type is not PasswordDigest (or PasswordText when allowed)."""


class ReplayedNonce(ReplayDetected):
    """The nonce was already used within the freshness window."""


class CreatedTooOld(ExpiredCredentials):
    """Created lies further in the past than the freshness window."""


class CreatedInFuture(ExpiredCredentials):
    """Created lies further in the future than the allowed clock skew."""


class UnsafeXml(RemoteProtocolError):
    """The peer sent XML that is not well formed or carries a DTD (refused unparsed)."""


# --------------------------------------------------------------------------- safe XML
def safe_fromstring(data: bytes) -> Any:
    """Parse ``data`` with the library's locked-down parser (:func:`..schemas.parse_xml`).

    No entity is resolved, nothing is fetched, no DTD is loaded, and a
    document carrying a DOCTYPE is refused — all as :class:`UnsafeXml`.
    """
    try:
        return parse_xml(data)
    except SchemaError as exc:
        raise UnsafeXml(f"request refused: {exc}") from None


# --------------------------------------------------------------------------- token
@dataclass(frozen=True, kw_only=True)
class UsernameToken:
    """The fields of a ``wsse:UsernameToken`` as sent (texts stripped of surrounding blanks).

    ``password_type`` is ``"PasswordDigest"`` or ``"PasswordText"`` (or the
    unknown type's text). Secrets are kept out of ``repr``.
    """

    username: str
    password: str | None = field(default=None, repr=False)
    password_type: str = "PasswordText"
    nonce: str | None = field(default=None, repr=False)
    nonce_encoding: str | None = None
    created: str | None = None


def _type_suffix(value: str) -> str:
    """``...#PasswordDigest`` / ``wsse:PasswordDigest`` / ``PasswordDigest`` -> ``PasswordDigest``."""
    value = value.strip()
    if "#" in value:
        return value.rsplit("#", 1)[1]
    if ":" in value:
        return value.rsplit(":", 1)[1]
    return value


def _only_child(parent: Any, tag: str) -> Any:
    found = parent.findall(tag)
    if len(found) > 1:
        raise MalformedCredentials(
            f"UsernameToken has {len(found)} {etree.QName(tag).localname} elements"
        )
    return found[0] if found else None


def _text(element: Any) -> str:
    text = "".join(element.itertext()).strip()
    if len(text) > _MAX_FIELD:
        raise MalformedCredentials(
            f"UsernameToken {etree.QName(element).localname} is longer than {_MAX_FIELD} characters"
        )
    return text


def _find_token(root: Any) -> Any:
    """Locate the one ``wsse:UsernameToken`` element to check, or ``None``."""
    tag = etree.QName(root)
    if tag.namespace == WSSE and tag.localname == "UsernameToken":
        return root
    if tag.namespace == WSSE and tag.localname == "Security":
        securities = [root]
    elif tag.namespace in (SOAP_ENV, SOAP11_ENV) and tag.localname == "Envelope":
        headers = root.findall(f"{{{tag.namespace}}}Header")
        if len(headers) > 1:
            raise MalformedCredentials("the envelope has more than one Header")
        securities = headers[0].findall(f"{{{WSSE}}}Security") if headers else []
    elif tag.namespace in (SOAP_ENV, SOAP11_ENV) and tag.localname == "Header":
        securities = root.findall(f"{{{WSSE}}}Security")
    else:
        securities = root.findall(f".//{{{WSSE}}}Security")
    tokens = [tok for sec in securities for tok in sec.findall(f"{{{WSSE}}}UsernameToken")]
    if len(tokens) > 1:
        raise MalformedCredentials(f"the request carries {len(tokens)} UsernameTokens; send one")
    return tokens[0] if tokens else None


def parse_username_token(source: Any) -> UsernameToken | None:
    """Extract the UsernameToken from an envelope (bytes or element), a header, or the token.

    ``source`` may be the envelope bytes (parsed with :func:`safe_fromstring`)
    or an lxml element: the ``Envelope`` (SOAP 1.2 or 1.1), its ``Header``,
    a ``wsse:Security`` element or the ``wsse:UsernameToken`` itself.
    Returns ``None`` when there is no UsernameToken; raises
    :class:`MalformedCredentials` when there is one that cannot be read.
    """
    root = safe_fromstring(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
    token = _find_token(root)
    if token is None:
        return None
    username_el = _only_child(token, f"{{{WSSE}}}Username")
    if username_el is None:
        raise MalformedCredentials("UsernameToken has no Username")
    username = _text(username_el)
    if not username:
        raise MalformedCredentials("UsernameToken has an empty Username")
    password_el = _only_child(token, f"{{{WSSE}}}Password")
    nonce_el = _only_child(token, f"{{{WSSE}}}Nonce")
    created_el = _only_child(token, f"{{{WSU}}}Created")
    password_type = "PasswordText"
    password: str | None = None
    if password_el is not None:
        password = _text(password_el)
        declared = password_el.get("Type")
        if declared is not None:
            password_type = _type_suffix(declared)
    return UsernameToken(
        username=username,
        password=password,
        password_type=password_type,
        nonce=_text(nonce_el) if nonce_el is not None else None,
        nonce_encoding=nonce_el.get("EncodingType") if nonce_el is not None else None,
        created=_text(created_el) if created_el is not None else None,
    )


# --------------------------------------------------------------------------- digest and time
def password_digest(nonce: bytes, created: str, password: str) -> str:
    """SEC-2: ``Base64(SHA-1(nonce + created + password))`` (created and password UTF-8)."""
    raw = hashlib.sha1(nonce + created.encode("utf-8") + password.encode("utf-8")).digest()
    return base64.b64encode(raw).decode("ascii")


_B64_BLANKS = re.compile(r"\s+")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(_B64_BLANKS.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedCredentials(f"UsernameToken {what} is not valid base64") from None


_DATETIME = re.compile(
    r"(?P<y>-?\d{4,})-(?P<mo>\d{2})-(?P<d>\d{2})T(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d{2}:\d{2})?"
)


def parse_created(text: str) -> datetime:
    """Parse an ``xs:dateTime`` (``Z``, ``±hh:mm`` or no zone = UTC) to an aware datetime."""
    m = _DATETIME.fullmatch(text)
    if m is None:
        raise MalformedCredentials("UsernameToken Created is not an xs:dateTime")
    tz = UTC
    zone = m["tz"]
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        if offset > timedelta(hours=14):
            raise MalformedCredentials("UsernameToken Created has an invalid time zone")
        tz = timezone(sign * offset)
    micro = int((m["frac"] or "0")[:6].ljust(6, "0"))
    try:
        value = datetime(
            int(m["y"]),
            int(m["mo"]),
            int(m["d"]),
            int(m["h"]),
            int(m["mi"]),
            int(m["s"]),
            micro,
            tz,
        ).astimezone(UTC)
    except (ValueError, OverflowError):  # a year beyond C long, or out of range once moved to UTC
        raise MalformedCredentials("UsernameToken Created is not a valid date and time") from None
    return value


def _format_created(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------- nonce cache
class NonceCache:
    """Bounded memory of recently used nonces (replay protection, SEC-2).

    Keys are SHA-256 hashes of the nonce, kept with the token's Created time
    (POSIX seconds) in a :class:`~.replay.ReplayMemory`. Thread-safe.
    """

    def __init__(self, max_entries: int = 10000, window: float = 300.0) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"NonceCache max_entries must be >= 1, not {max_entries}")
        if window <= 0:
            raise ConfigurationError(f"NonceCache window must be > 0 seconds, not {window}")
        self.max_entries = max_entries
        self.window = float(window)
        self._memory: ReplayMemory[bytes, None] = ReplayMemory(max_entries, self.window)

    def __len__(self) -> int:
        return len(self._memory)

    @property
    def floor(self) -> float:
        """Tokens created at or before this time (POSIX seconds) are refused."""
        return self._memory.floor

    def check_and_add(self, nonce: bytes, created: float, now: float) -> bool:
        """Remember ``nonce``; False if it was seen before (or may have been: floor, or older than the window
        back from the latest ``now`` given, whose entries are dropped)."""
        key = hashlib.sha256(nonce).digest()
        memory = self._memory
        with memory.lock:
            memory.advance(now)
            if key in memory or memory.too_old(created):
                return False
            return memory.put(key, created, None)


# --------------------------------------------------------------------------- verifier
_DUMMY_PASSWORD: Final = "\x00no-such-user\x00"


class UsernameTokenVerifier:
    """Verify UsernameTokens against ``lookup(username) -> (password, level) | None`` (SEC-2).

    ``freshness`` is how old Created may be (seconds); ``future_skew`` how far
    ahead of ``now`` it may be. ``nonce_cache`` defaults to a new
    :class:`NonceCache` whose window covers freshness plus skew.
    """

    def __init__(
        self,
        lookup: Callable[[str], tuple[str, str] | None],
        *,
        freshness: float = 300.0,
        nonce_cache: NonceCache | None = None,
        future_skew: float = 5.0,
        allow_text: bool = False,
    ) -> None:
        if freshness <= 0 or future_skew < 0:
            raise ConfigurationError("freshness must be > 0 and future_skew >= 0 seconds")
        if nonce_cache is None:
            nonce_cache = NonceCache(window=freshness + future_skew)
        if nonce_cache.window < freshness + future_skew:
            raise ConfigurationError(
                f"the nonce cache window ({nonce_cache.window} s) must cover freshness plus "
                f"future skew ({freshness + future_skew} s), or replays could slip through"
            )
        self._lookup = lookup
        self.freshness = float(freshness)
        self.future_skew = float(future_skew)
        self.nonce_cache = nonce_cache
        self.allow_text = allow_text

    def verify(self, token: UsernameToken, now: datetime) -> tuple[str, str]:
        """Return ``(username, level)`` or raise a :class:`CredentialRejected` subclass."""
        if now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        name = token.username
        if token.password is None:
            raise MalformedCredentials(f"UsernameToken for user {name!r} has no Password")
        if token.password_type == "PasswordDigest":
            digest = True
        elif token.password_type == "PasswordText" and self.allow_text:
            digest = False
        else:
            raise UnsupportedPasswordType(
                f"UsernameToken for user {name!r} uses password type {token.password_type!r}; "
                "only PasswordDigest is accepted"
            )
        nonce: bytes | None = None
        created: datetime | None = None
        if digest and (token.nonce is None or token.created is None):
            raise MissingNonceOrCreated(
                f"UsernameToken for user {name!r} has no "
                + ("Nonce" if token.nonce is None else "Created")
                + "; PasswordDigest needs both"
            )
        if token.nonce is not None:
            encoding = token.nonce_encoding
            if encoding is not None and _type_suffix(encoding) != "Base64Binary":
                raise MalformedCredentials(
                    f"UsernameToken for user {name!r} has Nonce EncodingType {encoding!r}; "
                    "only Base64Binary is accepted"
                )
            nonce = _b64decode(token.nonce, "Nonce")
            if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
                raise MalformedCredentials(
                    f"UsernameToken for user {name!r} has a nonce of {len(nonce)} bytes "
                    f"(1..{MAX_NONCE_BYTES} accepted)"
                )
        if token.created is not None:
            created = parse_created(token.created)
            age = (now - created).total_seconds()
            if age > self.freshness:
                raise CreatedTooOld(
                    f"UsernameToken for user {name!r} was created {age:.1f} s ago "
                    f"(more than {self.freshness:g} s): stale or replayed, or the client clock is off"
                )
            if -age > self.future_skew:
                raise CreatedInFuture(
                    f"UsernameToken for user {name!r} was created {-age:.1f} s in the future "
                    f"(more than {self.future_skew:g} s): the client clock is off"
                )
        entry = self._lookup(name)
        password, level = entry if entry is not None else (_DUMMY_PASSWORD, "")
        if digest:
            if nonce is None or token.created is None:  # pragma: no cover - checked above
                raise MissingNonceOrCreated("PasswordDigest needs Nonce and Created")
            sent = _b64decode(token.password, "Password digest")
            expected = hashlib.sha1(
                nonce + token.created.encode("utf-8") + password.encode("utf-8")
            ).digest()
        else:
            sent = token.password.encode("utf-8")
            expected = password.encode("utf-8")
        matches = hmac.compare_digest(sent, expected)
        if entry is None:
            raise UnknownUser(f"UsernameToken names unknown user {name!r}")
        if not matches:
            raise WrongPassword(f"UsernameToken for user {name!r} has a wrong password digest")
        if nonce is not None:
            when = created.timestamp() if created is not None else now.timestamp()
            if not self.nonce_cache.check_and_add(nonce, when, now.timestamp()):
                raise ReplayedNonce(
                    f"UsernameToken for user {name!r} reuses a nonce (replay) or predates "
                    "the replay-cache floor"
                )
        return name, level


def build_username_token(
    username: str,
    password: str,
    now: datetime,
    nonce: bytes | None = None,
    *,
    time_offset: timedelta = timedelta(0),
) -> Any:
    """Client side: a ``wsse:Security`` element holding a PasswordDigest UsernameToken.

    ``time_offset`` is added to ``now`` for Created (the device-minus-client
    clock difference learnt from GetSystemDateAndTime). ``nonce`` defaults
    to 16 random bytes.
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    nonce = os.urandom(16) if nonce is None else nonce
    created = _format_created(now + time_offset)
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    token = etree.SubElement(security, f"{{{WSSE}}}UsernameToken")
    etree.SubElement(token, f"{{{WSSE}}}Username").text = username
    pw = etree.SubElement(token, f"{{{WSSE}}}Password", Type=PASSWORD_DIGEST)
    pw.text = password_digest(nonce, created, password)
    nonce_el = etree.SubElement(token, f"{{{WSSE}}}Nonce", EncodingType=BASE64_BINARY)
    nonce_el.text = base64.b64encode(nonce).decode("ascii")
    etree.SubElement(token, f"{{{WSU}}}Created").text = created
    return security
