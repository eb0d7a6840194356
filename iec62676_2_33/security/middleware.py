"""WSGI access-control middleware for the SOAP services (SEC-1..SEC-4, UPL-12).

Layer 5 (services): wraps the service WSGI application; the clock is
injected (``clock``), so tests drive it with a fake time.

Theory of operation
-------------------
For each ``POST`` the middleware, *before* the application sees anything:

1. reads the body: ``Content-Length`` larger than ``max_body`` is refused
   with 413 (and a SOAP fault) without reading; without ``Content-Length``
   the body is read up to the cap only when the server marks the input as
   terminated (``wsgi.input_terminated``), else 411; reading stops one byte
   past the cap. When the server already parsed the body (with the same
   :func:`~..soap.envelope.parse_request`, to decide where the request runs:
   ``environ["iec62676.parsed"]``, set by the device application's
   ``runs_inline``, never from the request), that parse is taken instead and
   the body is not read again: still one parse per request;
2. decodes, parses and identifies it **once** with
   :func:`~..soap.envelope.parse_request` (UTF-8/UTF-16 only, no MIME, no
   DTD, exactly one operation element in the Body: see that module) — a
   request it refuses is answered with its fault before any authentication;
   the operation, ``(namespace, local_name)`` of the Body's one element, is
   mapped by ``operation_access`` to an :class:`~.access.AccessClass`
   (``None`` = unknown operation: the application answers it with its own
   fault, after authentication);
3. decides the user levels as of the moment the body has been read
   (``clock`` is read then, not when the request began: a body trickled in
   for a minute would otherwise have its token judged fresh, and its nonce
   looked up in a replay memory that meanwhile forgot it, as of its head):

   * ``environ["iec62676.user_level"]`` set (the uplink runtime marks every
     tunnelled request with the uplink's ``UserLevel``, a list of names) →
     those levels; any credential in the request is ignored (UPL-12, SEC-4);
   * else a ``wsse:UsernameToken`` header → the verified user's level (SEC-2);
   * else an ``Authorization`` header → HTTP Digest (SEC-2 alternative);
   * else ``["Anonymous"]``.

   Credentials that are present but invalid refuse the request; they are
   never downgraded to Anonymous — with one exception, ``lenient_pre_auth``
   (on by default): an operation of class PRE_AUTH, which needs no
   credentials at all, still runs, as Anonymous. This lets a client whose
   token is refused because its clock is off call GetSystemDateAndTime to
   learn the device time (ONVIF Core: PRE_AUTH operations need no
   authentication). The failure is logged all the same.
4. allowed by :func:`~.access.is_allowed` (or by ``authorize``, which also
   weighs user roles: :meth:`~.roles.RoleBook.authorize`, PROV-4) → the application is called with
   the parsed request in ``environ["iec62676.request"]`` — the very tree the
   decision was taken on, and no body to read again (``wsgi.input`` is
   empty) — and ``environ["iec62676.user"]`` (user name or ``None``),
   ``environ["iec62676.levels"]`` (list of level names) and
   ``environ["iec62676.access_class"]``; otherwise it is **not called**
   (SEC-3) and the middleware answers:

   ==========================================================  ==========================
   situation                                                   answer
   ==========================================================  ==========================
   Digest configured, no credentials, operation not allowed    401 + Digest challenges
   Digest credentials refused (stale nonce → ``stale=true``)    401 + Digest challenges
   anything else (bad UsernameToken, level too low, uplink)    400 ``env:Sender``/``ter:NotAuthorized``
   ==========================================================  ==========================

   The 401 responses carry the same SOAP fault as body. Faults are always
   SOAP 1.2 envelopes, also in answer to a (tolerated) SOAP 1.1 request. 400 is the SOAP 1.2
   HTTP binding's status for a Sender fault. Asking an authenticated user
   or an uplink for credentials again would not help, hence 400 there.

Requests of other methods are passed to the application unchanged when they
are in ``passthrough_methods`` (GET and HEAD: WSDL and XSD retrieval; they
carry no SOAP operation), with ``iec62676.levels`` set to the uplink levels
or ``["Anonymous"]``; any other method gets 405.

Logging goes to ``logging.getLogger(__name__)``: refused credentials and
insufficient levels at WARNING with the local reason (which names the user,
``repr``-escaped, but never a password, digest, nonce or the Authorization
header); stale Digest nonces and anonymous requests that need credentials at
INFO; successes at DEBUG.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import quote

from ..soap.envelope import SoapRequest, parse_request
from ..soap.fault import SoapFault, fault_response, not_authorized
from .access import AccessClass, CredentialRejected, UserLevel, is_allowed
from .httpdigest import DigestAuthenticator, StaleNonce
from .wsse import UsernameTokenVerifier, parse_username_token

__all__ = [
    "ENVIRON_ACCESS_CLASS",
    "ENVIRON_LEVELS",
    "ENVIRON_PARSED",
    "ENVIRON_REQUEST",
    "ENVIRON_UPLINK_LEVEL",
    "ENVIRON_USER",
    "AccessControlMiddleware",
    "StartResponse",
    "WSGIApplication",
]

log = logging.getLogger(__name__)

#: Set by the uplink runtime: the uplink's UserLevel (list of names) (UPL-12).
ENVIRON_UPLINK_LEVEL: Final = "iec62676.user_level"
#: Set by the middleware for the application: the authenticated user name or None.
ENVIRON_USER: Final = "iec62676.user"
#: Set by the middleware for the application: the list of level names in force.
ENVIRON_LEVELS: Final = "iec62676.levels"
#: Set by the middleware for the application: the operation's access class (or None).
ENVIRON_ACCESS_CLASS: Final = "iec62676.access_class"
#: Set by the middleware for the application: the one parsed request (:class:`~..soap.envelope.SoapRequest`).
ENVIRON_REQUEST: Final = "iec62676.request"
#: The :class:`~..soap.envelope.SoapRequest` the server parsed before the middleware (step 1).
ENVIRON_PARSED: Final = "iec62676.parsed"


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = ..., /
    ) -> Callable[[bytes], object]: ...


WSGIApplication = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_ANONYMOUS: Final = [UserLevel.ANONYMOUS.value]


@dataclass(frozen=True, kw_only=True)
class _Identity:
    user: str | None
    levels: list[str]
    source: str  # "uplink" | "wsse" | "digest" | "anonymous"
    failure: CredentialRejected | None = None


class _Reject(Exception):
    """Internal: answer ``status`` with ``reason`` without calling the application."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AccessControlMiddleware:
    """Enforce the access policy in front of a SOAP WSGI application (SEC-1..SEC-4)."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        operation_access: Callable[[str, str], AccessClass | None],
        wsse: UsernameTokenVerifier | None,
        digest: DigestAuthenticator | None,
        clock: Callable[[], float] = time.time,
        max_body: int = 1024 * 1024,
        lenient_pre_auth: bool = True,
        passthrough_methods: Collection[str] = ("GET", "HEAD"),
        authorize: Callable[[Sequence[str], str | None, AccessClass, tuple[str, str]], bool] | None = None,
    ) -> None:
        self.app = app
        self.authorize = authorize
        self.operation_access = operation_access
        self.wsse = wsse
        self.digest = digest
        self.clock = clock
        self.max_body = max_body
        self.lenient_pre_auth = lenient_pre_auth
        self.passthrough_methods = frozenset(m.upper() for m in passthrough_methods)

    # ------------------------------------------------------------------ WSGI entry
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method != "POST":
            if method in self.passthrough_methods:
                environ[ENVIRON_USER] = None
                environ[ENVIRON_LEVELS] = self._uplink_levels(environ) or list(_ANONYMOUS)
                environ[ENVIRON_ACCESS_CLASS] = None
                return self.app(environ, start_response)
            return _plain(start_response, 405, "Only POST is accepted here.", [("Allow", "POST")])
        request = environ.pop(ENVIRON_PARSED, None)
        if not isinstance(request, SoapRequest):
            try:
                body = self._read_body(environ)
            except _Reject as exc:
                log.info("request refused before parsing: %s", exc.reason)
                return fault_response(SoapFault(code="Sender", reason=exc.reason), start_response, status=exc.status)
            if not body.strip() and self.digest is not None and self._no_credentials(environ):
                # An empty probe (curl --digest sends one) → challenge straight away.
                return _challenge(start_response, self.digest, self.clock(), stale=False)
            try:
                request = parse_request(environ.get("CONTENT_TYPE"), body)
            except SoapFault as fault:
                log.info("request refused: %s", fault)
                return fault_response(fault, start_response)
            del body  # from here on only the parsed request exists
        now = self.clock()  # the time of the decision: the body has arrived (step 3)
        operation = request.operation_name
        root = request.envelope
        access_class = self.operation_access(*operation)
        op_name = repr(f"{{{operation[0]}}}{operation[1]}")  # repr: no log injection

        identity = self._identify(environ, root, method, now)
        if identity.failure is not None:
            failure = identity.failure
            if access_class is AccessClass.PRE_AUTH and self.lenient_pre_auth:
                log.warning(
                    "credentials refused (%s: %s); PRE_AUTH operation %s runs as Anonymous",
                    type(failure).__name__,
                    failure,
                    op_name,
                )
                identity = _Identity(user=None, levels=list(_ANONYMOUS), source="anonymous")
            else:
                log.log(
                    logging.INFO if isinstance(failure, StaleNonce) else logging.WARNING,
                    "refused %s from %s: %s: %s",
                    op_name,
                    environ.get("REMOTE_ADDR", "?"),
                    type(failure).__name__,
                    failure,
                )
                if identity.source == "digest" and self.digest is not None:
                    stale = isinstance(failure, StaleNonce)
                    return _challenge(start_response, self.digest, now, stale=stale)
                return fault_response(not_authorized(failure.peer_reason), start_response)

        if access_class is not None and not (
                is_allowed(identity.levels, access_class) if self.authorize is None
                else self.authorize(identity.levels, identity.user, access_class, operation)):
            # Valid credentials with too few rights are routine; failed credentials are warned above.
            log.info(
                "refused %s (%s) from %s: levels %s (%s) not allowed",
                op_name,
                access_class.value,
                environ.get("REMOTE_ADDR", "?"),
                identity.levels,
                identity.source,
            )
            if identity.source == "anonymous" and self.digest is not None:
                return _challenge(start_response, self.digest, now, stale=False)
            return fault_response(not_authorized(), start_response)

        log.debug(
            "%s (%s) allowed for %s levels %s",
            op_name,
            access_class.value if access_class else "unknown operation",
            identity.source,
            identity.levels,
        )
        # The application gets the parsed request and nothing it could read again.
        environ["wsgi.input"] = io.BytesIO()
        environ["CONTENT_LENGTH"] = "0"
        environ[ENVIRON_USER] = identity.user
        environ[ENVIRON_LEVELS] = identity.levels
        environ[ENVIRON_ACCESS_CLASS] = access_class
        environ[ENVIRON_REQUEST] = request
        return self.app(environ, start_response)

    # ------------------------------------------------------------------ steps
    def _read_body(self, environ: dict[str, Any]) -> bytes:
        stream = environ.get("wsgi.input")
        raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
        if raw_length:
            if not raw_length.isdigit() or not raw_length.isascii():
                raise _Reject(400, "Content-Length is not a number.")
            length = int(raw_length)
            if length > self.max_body:
                raise _Reject(413, f"Request body larger than {self.max_body} bytes.")
            limit, exact = length, True
        elif environ.get("wsgi.input_terminated"):
            limit, exact = self.max_body + 1, False
        else:
            raise _Reject(411, "Content-Length is required.")
        chunks: list[bytes] = []
        got = 0
        while got < limit and stream is not None:
            chunk = stream.read(min(65536, limit - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > self.max_body:
            raise _Reject(413, f"Request body larger than {self.max_body} bytes.")
        if exact and got < limit:
            raise _Reject(400, "Request body shorter than its Content-Length.")
        return b"".join(chunks)

    @staticmethod
    def _uplink_levels(environ: dict[str, Any]) -> list[str] | None:
        value = environ.get(ENVIRON_UPLINK_LEVEL)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        return [str(level) for level in value]

    @staticmethod
    def _no_credentials(environ: dict[str, Any]) -> bool:
        return environ.get(ENVIRON_UPLINK_LEVEL) is None and not environ.get("HTTP_AUTHORIZATION")

    def _identify(self, environ: dict[str, Any], root: Any, method: str, now: float) -> _Identity:
        uplink = self._uplink_levels(environ)
        if uplink is not None:
            return _Identity(user=None, levels=uplink, source="uplink")
        try:
            token = parse_username_token(root)
        except CredentialRejected as exc:
            return _Identity(user=None, levels=[], source="wsse", failure=exc)
        if token is not None:
            if self.wsse is None:
                failure = CredentialRejected(
                    "a UsernameToken was sent but WS-Security is not enabled"
                )
                return _Identity(user=None, levels=[], source="wsse", failure=failure)
            try:
                user, level = self.wsse.verify(token, datetime.fromtimestamp(now, tz=UTC))
            except CredentialRejected as exc:
                return _Identity(user=None, levels=[], source="wsse", failure=exc)
            return _Identity(user=user, levels=[level], source="wsse")
        header = environ.get("HTTP_AUTHORIZATION")
        if header:
            if self.digest is None:
                failure = CredentialRejected(
                    "an Authorization header was sent but HTTP Digest is not enabled"
                )
                return _Identity(user=None, levels=[], source="digest", failure=failure)
            try:
                user, level = self.digest.verify(
                    method, str(header), now, request_uri=_request_uri(environ)
                )
            except CredentialRejected as exc:
                return _Identity(user=None, levels=[], source="digest", failure=exc)
            return _Identity(user=user, levels=[level], source="digest")
        return _Identity(user=None, levels=list(_ANONYMOUS), source="anonymous")


# ---------------------------------------------------------------------- helpers
def _request_uri(environ: dict[str, Any]) -> str:
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    target = quote(path or "/", safe="/;=,:@!$&'()*+~", encoding="latin-1")
    query = environ.get("QUERY_STRING")
    return f"{target}?{query}" if query else target


def _challenge(
    start_response: StartResponse, digest: DigestAuthenticator, now: float, *, stale: bool
) -> list[bytes]:
    headers = [("WWW-Authenticate", value) for value in digest.challenges(now, stale=stale)]
    return fault_response(not_authorized(), start_response, status=401, extra=headers)


def _plain(
    start_response: StartResponse,
    status: int,
    text: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    payload = (text + "\n").encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload)))]
    start_response(f"{status} {HTTPStatus(status).phrase}", headers + (extra or []))
    return [payload]
