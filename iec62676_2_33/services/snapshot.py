"""Layer 5: the snapshot relay — a media source's JPEG at ``/onvif/snapshot/<token>`` (ANX-B-1, SEC-1, UPL-12).

GetSnapshotUri (:mod:`.media2`) answers a URI on the device's own HTTP server,
built from the request like every other address the device hands out, so the
same URI works on the device's direct port and through the cloud's HTTP proxy
(``X-Forwarded-*``). A GET on it fetches the media source's configured
``snapshot_url`` (the camera-side HTTP server) and passes the image on.

Theory of operation
-------------------
*Access* is the ONVIF access table's for snapshots: GetSnapshotUri is
READ_MEDIA, and so is fetching the image. A GET is not a SOAP request, so the
decision is taken here with the device's own credential parts, in the order
the SOAP middleware uses: the uplink's configured UserLevel when the request
came over an uplink (any credential in it is ignored: UPL-12, SEC-4); else
HTTP Digest (the same :class:`~..security.httpdigest.DigestAuthenticator`, so
a nonce is shared with the SOAP services); else the caller is Anonymous and is
challenged (401). Too low a level is 403.

*Fetching* is one bounded exchange (:func:`~..bounded_http.request`, blocking:
the WSGI call already runs in the server's bounded worker pool): no redirects,
no proxy from the environment, ``timeout`` for connect and each read, and one
``deadline`` for the whole exchange -- the camera's status line and headers as
much as its body, and Digest's second request -- so a camera that trickles
its answer holds a worker ``deadline`` seconds at most; at most ``max_bytes``
of body (the connection is closed past it), and the answer must be an
``image/*`` with status 200; it is relayed with a sandboxing
``Content-Security-Policy`` and ``nosniff``, so an image that is a document
(SVG) never runs script on the device's origin. The camera's credentials, when the source has
them, are offered as HTTP Digest (ONVIF cameras' scheme) and never leave the
device. The image is read whole (bounded) before the answer starts, so a
camera that fails midway gives a clean 502/504 instead of a truncated JPEG.

==========================================  ======
situation                                   status
==========================================  ======
image relayed                               200
no or refused credentials (direct)          401 + Digest challenges
level below READ_MEDIA                      403
unknown token, or a source without snapshot 404
method other than GET/HEAD                  405
camera unreachable, not 200, not an image,  502
or larger than ``max_bytes``
whole answer slower than ``deadline``       504
==========================================  ======

Error bodies are one line of text and never echo the camera's address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote

import httpx

from ..bounded_http import AnswerTooLong, ExchangeTimeout, NoAnswer, exchange_client, request
from ..domain.media import MediaBackend, MediaSource
from ..errors import TransportError
from ..security.access import AccessClass, CredentialRejected, is_allowed
from ..security.httpdigest import DigestAuthenticator, StaleNonce
from ..security.middleware import ENVIRON_UPLINK_LEVEL

__all__ = ["MAX_SNAPSHOT_BYTES", "SNAPSHOT_PATH", "SnapshotFailed", "SnapshotRelay", "snapshot_uri"]

log = logging.getLogger(__name__)

#: Where the device serves snapshots, one media token per path segment.
SNAPSHOT_PATH = "/onvif/snapshot/"
#: Largest image relayed (a 4K JPEG at high quality is a few MiB).
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024

#: Headers of every relayed image. The camera's bytes go out from the device's origin, where a browser holds
#: the user's HTTP Digest credentials: an "image" that is a document (SVG with a script) must be shown there,
#: never run, whatever the camera sends.
_IMAGE_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                  ("Content-Security-Policy", "default-src 'none'; sandbox"))

StartResponse = Callable[..., Any]


def snapshot_uri(base: str, token: str) -> str:
    """The snapshot URI of media token ``token`` under the request's ``base`` URL."""
    return f"{base}{SNAPSHOT_PATH}{quote(token, safe='')}"


class SnapshotFailed(TransportError):
    """A snapshot that cannot be relayed: ``status`` (502, 504) and one line for the client."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass
class SnapshotRelay:
    """WSGI app serving ``SNAPSHOT_PATH<token>`` (see the module docstring)."""

    media: MediaBackend
    digest: DigestAuthenticator | None
    clock: Callable[[], float] = time.time
    timeout: float = 5.0
    deadline: float = 10.0
    max_bytes: int = MAX_SNAPSHOT_BYTES

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method not in ("GET", "HEAD"):
            return _text(start_response, 405, "snapshots are fetched with GET", [("Allow", "GET, HEAD")])
        refusal = self._refusal(environ, start_response)
        if refusal is not None:
            return refusal
        path = str(environ.get("PATH_INFO") or "")
        token = unquote(path[len(SNAPSHOT_PATH):]) if path.startswith(SNAPSHOT_PATH) else ""
        source = self.media.media_source(token) if token else None
        if source is None or source.snapshot_url is None:
            return _text(start_response, 404, f"no snapshot for media token {token[:64]!r}")
        try:
            content_type, image = self.fetch(source)
        except SnapshotFailed as exc:
            log.info("snapshot of media source %s: %s", source.token, exc)
            return _text(start_response, exc.status, str(exc))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(image))),
                                  *_IMAGE_HEADERS])
        return [b"" if method == "HEAD" else image]

    # ------------------------------------------------------------------ access (SEC-1, UPL-12)

    def _refusal(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        uplink = environ.get(ENVIRON_UPLINK_LEVEL)
        if uplink is not None:
            levels = [uplink] if isinstance(uplink, str) else [str(level) for level in uplink]
        elif environ.get("HTTP_AUTHORIZATION") and self.digest is not None:
            now = self.clock()
            target = quote(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")), safe="/%")
            query = environ.get("QUERY_STRING")
            try:
                _, level = self.digest.verify(str(environ.get("REQUEST_METHOD", "GET")).upper(),
                                              str(environ["HTTP_AUTHORIZATION"]), now,
                                              request_uri=f"{target}?{query}" if query else target)
            except CredentialRejected as exc:
                log.info("snapshot refused to %s: %s", environ.get("REMOTE_ADDR", "?"), exc)
                return self._challenge(start_response, stale=isinstance(exc, StaleNonce))
            levels = [level]
        else:
            levels = ["Anonymous"]
        if is_allowed(levels, AccessClass.READ_MEDIA):
            return None
        if uplink is None and levels == ["Anonymous"] and self.digest is not None:
            return self._challenge(start_response, stale=False)
        return _text(start_response, 403, "this user level may not read media (READ_MEDIA)")

    def _challenge(self, start_response: StartResponse, *, stale: bool) -> Iterable[bytes]:
        assert self.digest is not None
        headers = [("WWW-Authenticate", value) for value in self.digest.challenges(self.clock(), stale=stale)]
        return _text(start_response, 401, "credentials needed (HTTP Digest)", headers)

    # ------------------------------------------------------------------ the camera side

    def fetch(self, source: MediaSource) -> tuple[str, bytes]:
        """The image of ``source`` as (content type, bytes), within the budget; a subclass may fetch it
        another way (the VSS over an uplink). Raises :class:`SnapshotFailed`."""
        assert source.snapshot_url is not None
        auth = httpx.DigestAuth(source.username, source.password or "") if source.username else None
        try:
            with exchange_client(self.timeout, trust_env=False) as client:
                answer = request(client, "GET", source.snapshot_url, {}, auth=auth, timeout=self.deadline,
                                 max_bytes=self.max_bytes)
        except ExchangeTimeout:
            raise SnapshotFailed(504, f"the camera took longer than {self.deadline:g} s for the snapshot") from None
        except AnswerTooLong:
            raise SnapshotFailed(502, f"the camera's snapshot is larger than {self.max_bytes} bytes") from None
        except NoAnswer as exc:
            raise SnapshotFailed(502, f"cannot fetch the camera's snapshot ({exc})") from None
        if answer.status != 200:
            raise SnapshotFailed(502, f"the camera answered {answer.status} to the snapshot request")
        headers = httpx.Headers(answer.headers)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith("image/"):
            raise SnapshotFailed(502, "the camera's snapshot is not an image")
        return content_type, answer.body


def _text(start_response: StartResponse, status: int, text: str,
          extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(f"{status} {HTTPStatus(status).phrase}", [("Content-Type", "text/plain; charset=utf-8"),
                                                             ("Content-Length", str(len(body))), *(extra or [])])
    return [body]
