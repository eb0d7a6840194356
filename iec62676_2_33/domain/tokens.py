"""Layer 6 (domain): reference tokens, remote tokens, token adaption and token context.

Implements ADR-1 .. ADR-6 (clause 6, resource addressing); the mapper is the
token adaption that Annex B (ANX-B-1 .. ANX-B-5) builds on.

Theory of operation
-------------------
A resource is addressed by a ``tt:ReferenceToken``: a non-empty string of at
most 64 characters, unique within the system that serves it (ADR-1). A VSS
that exposes the resources of its devices gives them *remote tokens*
``Prefix ":" LocalToken`` (ADR-2): the prefix names the device and is the same
for every token of that device (ADR-4); the local token is at most 36
characters, so an RFC 4122 UUID fits, and should contain no colon; the whole
token is at most 64 characters (ADR-3). Nothing here ever truncates: a value
over a limit is refused with an :class:`InvalidToken` saying which limit.

:class:`TokenMapper` is the VSS side (ADR-4, ADR-5): it reuses a device-local
token when it fits, otherwise it maps it to a deterministic short id, and it is
the only way back from a remote token to the device token — a client (or any
other code) must not strip the prefix to get the device token.

:class:`TokenContext` is the client side (ADR-6): it remembers which server
issued which token and refuses to send a token to a server that did not issue
it.

Everything here is pure (no I/O, no clock); the two stateful classes guard
their tables with a lock so the runtimes may share them between threads.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = [
    "MAPPED_ID_LENGTH",
    "MAX_LOCAL_TOKEN",
    "MAX_REMOTE_TOKEN",
    "SEPARATOR",
    "InvalidToken",
    "RemoteToken",
    "TokenContext",
    "TokenContextError",
    "TokenMapper",
    "UnknownToken",
    "validate_reference_token",
]

#: ADR-3 / tt:ReferenceToken: the longest token on the wire, in characters.
MAX_REMOTE_TOKEN = 64
#: ADR-3: the longest local token (an RFC 4122 UUID is 36 characters).
MAX_LOCAL_TOKEN = 36
#: ADR-2: the separator between prefix and local token.
SEPARATOR = ":"
#: Length of the short id :class:`TokenMapper` substitutes for a device token
#: that cannot be reused (base32 of a truncated SHA-256, 100 bits).
MAPPED_ID_LENGTH = 20


class InvalidToken(ConfigurationError):
    """A reference or remote token breaks a rule of ADR-1 .. ADR-3."""


class UnknownToken(ConfigurationError):
    """A remote token, prefix or device the :class:`TokenMapper` does not know (ADR-5)."""


class TokenContextError(ConfigurationError):
    """A token is about to be sent to a server that did not issue it (ADR-6)."""


def _bad_character(text: str) -> tuple[int, str] | None:
    """The first whitespace or control character in *text* (1-based position), if any."""
    for index, char in enumerate(text, start=1):
        if char.isspace() or not char.isprintable():
            return index, char
    return None


def validate_reference_token(s: str) -> str:
    """Check a ``tt:ReferenceToken`` and return it unchanged (ADR-1, ADR-3).

    The rules: a ``str``, not empty, at most :data:`MAX_REMOTE_TOKEN` (64)
    *characters* — counted as code points, not as UTF-8 bytes. A longer value
    is refused, never truncated.
    """
    if not isinstance(s, str):
        raise InvalidToken(f"reference token must be a string, not {type(s).__name__} (ADR-1)")
    if not s:
        raise InvalidToken(
            "reference token is empty; a tt:ReferenceToken has 1 to 64 characters (ADR-1)"
        )
    if len(s) > MAX_REMOTE_TOKEN:
        raise InvalidToken(
            f"reference token {s!r} is {len(s)} characters long; the limit is "
            f"{MAX_REMOTE_TOKEN} (ADR-3); tokens are never truncated, use a shorter one"
        )
    return s


def _check_prefix(prefix: str, what: str = "remote token") -> None:
    if not isinstance(prefix, str):
        raise InvalidToken(f"{what} prefix must be a string, not {type(prefix).__name__} (ADR-2)")
    if not prefix:
        raise InvalidToken(f"{what} has an empty prefix; expected 'Prefix:LocalToken' (ADR-2)")
    if SEPARATOR in prefix:
        raise InvalidToken(
            f"{what} prefix {prefix!r} contains ':'; the first ':' separates prefix and "
            "local token, so a prefix cannot contain one (ADR-2)"
        )
    bad = _bad_character(prefix)
    if bad is not None:
        raise InvalidToken(
            f"{what} prefix {prefix!r} contains whitespace or a control character "
            f"({bad[1]!r} at position {bad[0]}); tokens must not contain them (ADR-2)"
        )


def _check_local(local: str, *, allow_colon: bool) -> None:
    if not isinstance(local, str):
        raise InvalidToken(f"local token must be a string, not {type(local).__name__} (ADR-2)")
    if not local:
        raise InvalidToken(
            "remote token has an empty local token; expected 'Prefix:LocalToken' (ADR-2)"
        )
    bad = _bad_character(local)
    if bad is not None:
        raise InvalidToken(
            f"local token {local!r} contains whitespace or a control character "
            f"({bad[1]!r} at position {bad[0]}); tokens must not contain them (ADR-3)"
        )
    if not allow_colon and SEPARATOR in local:
        raise InvalidToken(
            f"local token {local!r} contains ':'; a local token should contain no colon "
            "(ADR-3); pass allow_colon_in_local=True only for a token a lower VSS already "
            "prefixed"
        )
    if len(local) > MAX_LOCAL_TOKEN:
        raise InvalidToken(
            f"local token {local!r} is {len(local)} characters long; the limit is "
            f"{MAX_LOCAL_TOKEN} (ADR-3); tokens are never truncated, use a shorter one or map it"
        )


@dataclass(frozen=True)
class RemoteToken:
    """A remote token ``Prefix ":" LocalToken`` (ADR-2, ADR-3).

    Construction checks the hard rules (non-empty parts, no ``:`` or whitespace
    in the prefix, local part <= 36 and whole token <= 64 characters). The
    "should contain no colon" rule for the local part is checked by
    :meth:`of` and :meth:`parse`, which accept ``allow_colon_in_local=True``
    for hierarchies (``Upper:Lower:tok``, GEN-1).
    """

    prefix: str
    local: str

    def __post_init__(self) -> None:
        _check_prefix(self.prefix)
        _check_local(self.local, allow_colon=True)
        total = len(self.prefix) + len(SEPARATOR) + len(self.local)
        if total > MAX_REMOTE_TOKEN:
            raise InvalidToken(
                f"remote token {self.prefix + SEPARATOR + self.local!r} is {total} characters "
                f"long; the limit is {MAX_REMOTE_TOKEN} (ADR-3); tokens are never truncated, "
                "use a shorter prefix or local token"
            )

    @classmethod
    def of(cls, prefix: str, local: str, *, allow_colon_in_local: bool = False) -> RemoteToken:
        """Build a remote token from its parts, checking every ADR-2/ADR-3 rule."""
        _check_prefix(prefix)
        _check_local(local, allow_colon=allow_colon_in_local)
        return cls(prefix, local)

    @classmethod
    def parse(cls, text: str, *, allow_colon_in_local: bool = False) -> RemoteToken:
        """Split *text* at the FIRST ``:`` into prefix and local token (ADR-2, ADR-3).

        Refused (:class:`InvalidToken`): not a string, empty, whitespace or
        control characters, no ``:``, empty prefix, empty local token, a ``:``
        in the local token (unless ``allow_colon_in_local``), a local token
        over 36 or a whole token over 64 characters.
        """
        if not isinstance(text, str):
            raise InvalidToken(f"remote token must be a string, not {type(text).__name__} (ADR-2)")
        if not text:
            raise InvalidToken("remote token is empty; expected 'Prefix:LocalToken' (ADR-2)")
        bad = _bad_character(text)
        if bad is not None:
            raise InvalidToken(
                f"remote token {text!r} contains whitespace or a control character "
                f"({bad[1]!r} at position {bad[0]}); tokens must not contain them (ADR-2)"
            )
        prefix, sep, local = text.partition(SEPARATOR)
        if not sep:
            raise InvalidToken(
                f"remote token {text!r} has no ':' separator; expected 'Prefix:LocalToken' (ADR-2)"
            )
        if not prefix:
            raise InvalidToken(
                f"remote token {text!r} has an empty prefix; expected 'Prefix:LocalToken' (ADR-2)"
            )
        if not local:
            raise InvalidToken(
                f"remote token {text!r} has an empty local token; expected "
                "'Prefix:LocalToken' (ADR-2)"
            )
        return cls.of(prefix, local, allow_colon_in_local=allow_colon_in_local)

    def format(self) -> str:
        """The wire form ``Prefix:LocalToken``."""
        return f"{self.prefix}{SEPARATOR}{self.local}"

    def __str__(self) -> str:
        return self.format()


def _short_id(local: str, attempt: int) -> str:
    """Deterministic colon-free short id for a device token (ADR-5)."""
    seed = local if attempt == 0 else f"{attempt}\x00{local}"
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii")[:MAPPED_ID_LENGTH]


def _reusable(local: str) -> bool:
    return (
        len(local) <= MAX_LOCAL_TOKEN and SEPARATOR not in local and _bad_character(local) is None
    )


class TokenMapper:
    """Token adaption of one VSS: (device, device-local token) <-> remote token.

    ADR-4: every token of one device carries the device's prefix, fixed at
    :meth:`register_device`. ADR-5: a device token that is a valid local token
    (<= 36 characters, no colon, no whitespace) and fits the 64-character limit
    behind the prefix is reused as it is; any other is replaced by a
    deterministic :data:`MAPPED_ID_LENGTH`-character base32 id, and the
    mapping is remembered. :meth:`local_for` knows only tokens that
    :meth:`remote_for` issued — there is no way back by stripping the prefix.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prefix_of: dict[str, str] = {}  # device -> prefix
        self._device_of: dict[str, str] = {}  # prefix -> device
        self._forward: dict[tuple[str, str], str] = {}  # (device, device token) -> local part
        self._reverse: dict[tuple[str, str], str] = {}  # (prefix, local part) -> device token

    def register_device(self, device: str, prefix: str | None = None) -> str:
        """Give *device* its prefix (default: the device key itself) and return it (ADR-4).

        Registering again with the same prefix is a no-op; a different prefix
        for the same device, or a prefix already used by another device
        (ADR-1: tokens unique within the system), is refused. The prefix must
        leave room for a mapped id within 64 characters.
        """
        if not isinstance(device, str) or not device:
            raise InvalidToken("device key must be a non-empty string (ADR-4)")
        chosen = device if prefix is None else prefix
        _check_prefix(chosen, "device")
        room = MAX_REMOTE_TOKEN - len(SEPARATOR) - MAPPED_ID_LENGTH
        if len(chosen) > room:
            raise InvalidToken(
                f"device prefix {chosen!r} is {len(chosen)} characters long; the limit is "
                f"{room} so that prefix, ':' and a {MAPPED_ID_LENGTH}-character mapped id fit "
                f"in {MAX_REMOTE_TOKEN} (ADR-3); choose a shorter prefix"
            )
        with self._lock:
            current = self._prefix_of.get(device)
            if current is not None:
                if current != chosen:
                    raise InvalidToken(
                        f"device {device!r} already has prefix {current!r}; a VSS uses the same "
                        f"prefix for every token of one device, so {chosen!r} is refused (ADR-4)"
                    )
                return current
            owner = self._device_of.get(chosen)
            if owner is not None:
                raise InvalidToken(
                    f"prefix {chosen!r} is already used by device {owner!r}; every device needs "
                    "a prefix of its own (ADR-1, ADR-4)"
                )
            self._prefix_of[device] = chosen
            self._device_of[chosen] = device
            return chosen

    def prefix_of(self, device: str) -> str:
        """The prefix of a registered device (ADR-4)."""
        with self._lock:
            try:
                return self._prefix_of[device]
            except KeyError:
                raise UnknownToken(
                    f"device {device!r} is not registered; call register_device() first (ADR-4)"
                ) from None

    def remote_for(self, device: str, local: str) -> RemoteToken:
        """The remote token for the device-local token *local* of *device* (ADR-4, ADR-5)."""
        if not isinstance(local, str) or not local:
            raise InvalidToken(f"device token of {device!r} must be a non-empty string (ADR-1)")
        prefix = self.prefix_of(device)
        with self._lock:
            known = self._forward.get((device, local))
            if known is None:
                known = self._assign(device, prefix, local)
            return RemoteToken(prefix, known)

    def _assign(self, device: str, prefix: str, local: str) -> str:
        """Pick the local part for a new device token; called with the lock held."""
        fits = len(prefix) + len(SEPARATOR) + len(local) <= MAX_REMOTE_TOKEN
        if _reusable(local) and fits and (prefix, local) not in self._reverse:
            candidate = local
        else:
            attempt = 0
            candidate = _short_id(local, attempt)
            while (prefix, candidate) in self._reverse:  # a collision: derive the next id
                attempt += 1
                candidate = _short_id(local, attempt)
        self._forward[(device, local)] = candidate
        self._reverse[(prefix, candidate)] = local
        return candidate

    def local_for(self, remote: RemoteToken | str) -> tuple[str, str]:
        """``(device, device-local token)`` for a remote token this mapper issued (ADR-5).

        Raises :class:`UnknownToken` for an unknown prefix or a token never
        issued by :meth:`remote_for`; :class:`InvalidToken` for a malformed one.
        """
        token = (
            remote
            if isinstance(remote, RemoteToken)
            else RemoteToken.parse(remote, allow_colon_in_local=True)
        )
        with self._lock:
            device = self._device_of.get(token.prefix)
            if device is None:
                raise UnknownToken(
                    f"remote token {token.format()!r}: prefix {token.prefix!r} belongs to no "
                    "registered device (ADR-4)"
                )
            local = self._reverse.get((token.prefix, token.local))
            if local is None:
                raise UnknownToken(
                    f"remote token {token.format()!r} was never issued for device {device!r}; "
                    "use a token received from this VSS, device tokens cannot be derived by "
                    "stripping the prefix (ADR-5)"
                )
            return device, local


class TokenContext:
    """Client-side token context: which server issued which token (ADR-6).

    *server* is an opaque key (typically the service endpoint URL); it is
    compared as given. The same token text may come from several servers: all
    of them are recorded and :meth:`check` passes for each. With
    ``strict=True`` (the default) a token never recorded is refused too.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self._lock = threading.Lock()
        self._issuers: dict[str, list[str]] = {}  # token -> servers, in recording order

    def record(self, server: str, token: str) -> None:
        """Remember that *server* issued *token* (ADR-6)."""
        if not isinstance(server, str) or not server:
            raise TokenContextError("server key must be a non-empty string (ADR-6)")
        if not isinstance(token, str) or not token:
            raise InvalidToken("token must be a non-empty string (ADR-1)")
        with self._lock:
            servers = self._issuers.setdefault(token, [])
            if server not in servers:
                servers.append(server)

    def check(
        self, server: str, token: str, *, override: bool = False, strict: bool | None = None
    ) -> None:
        """Refuse to address *server* with a token it did not issue (ADR-6).

        ``override=True`` skips the check (the caller knows better);
        ``strict`` overrides the instance default for tokens never recorded.
        """
        if override:
            return
        with self._lock:
            servers = list(self._issuers.get(token, ()))
        if server in servers:
            return
        if servers:
            issuers = ", ".join(repr(s) for s in servers)
            raise TokenContextError(
                f"token {token!r} was issued by {issuers}, not by {server!r}; a client "
                "addresses each server only with tokens received from it (ADR-6); pass "
                "override=True to send it anyway"
            )
        if self.strict if strict is None else strict:
            raise TokenContextError(
                f"token {token!r} was never received from any server, so it cannot be sent "
                f"to {server!r} (ADR-6); record it first or pass override=True"
            )

    def origin(self, token: str) -> str | None:
        """The server that first issued *token*, or ``None`` if it was never recorded."""
        with self._lock:
            servers = self._issuers.get(token)
            return servers[0] if servers else None

    def origins(self, token: str) -> tuple[str, ...]:
        """Every server that issued *token*, in recording order."""
        with self._lock:
            return tuple(self._issuers.get(token, ()))
