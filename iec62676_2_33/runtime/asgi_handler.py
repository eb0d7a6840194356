"""Layer 4: serve an ASGI ``http`` application on an :class:`~.exchange.Exchange` (GEN-3).

The cloud's proxy (:class:`~.proxy.UplinkProxy`) and the test authorization
server stay plain ASGI applications, independent of the server.
Only the ``http`` scope is served (ASGI 3.0, spec 2.3); no lifespan. Over TLS
the scope carries the ASGI TLS extension (``scope["extensions"]["tls"]``:
``client_cert_chain`` as PEM strings, the client's own first, and
``client_cert_name`` as RFC 4514 text), so an application such as the test
authorization server can authenticate a client by its certificate (RFC 8705).

* ``receive()`` reads the streaming body on demand: each call returns one
  ``http.request`` message with at most 64 KiB and ``more_body``; only what
  the application took is acknowledged to the client. Once the body is complete,
  ``receive()`` waits until the response is over or the client is gone and
  returns ``http.disconnect``; a broken body (reset, closed connection, over
  its limit) also gives ``http.disconnect``.
* ``send()`` applies back-pressure: ``http.response.body`` returns when the
  connection can take more. After the client is gone it raises
  :class:`~.exchange.ClientDisconnected` (an ``OSError``, as the ASGI spec asks).
* An application that raises an ``OSError`` (the library's transport errors
  included) aborts its response without a traceback in the log; any other
  exception is logged with its traceback. Either way the client gets a 500
  when nothing was sent yet (the body's own status, 413 or 408, when reading it
  failed), else its stream or connection is cut (a
  truncated body is never passed off as complete). An application that
  returns without completing its response is treated the same way.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from cryptography import x509

from .body import READ_CHUNK, BodyError
from .exchange import ClientDisconnected, Exchange

__all__ = ["AsgiApp", "AsgiHandler"]

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
AsgiApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class AsgiHandler:
    """Serves exchanges with the ASGI application ``app`` (an :data:`~.exchange.Handler`)."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app

    async def __call__(self, ex: Exchange) -> None:
        body_done = False

        async def receive() -> Message:
            nonlocal body_done
            if not body_done:
                try:
                    chunk = await ex.body.read_async(READ_CHUNK)
                except BodyError:
                    body_done = True
                    return {"type": "http.disconnect"}
                more = bool(chunk) and not (ex.body.complete and not ex.body.buffered)
                body_done = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            await ex.wait_over()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                if ex.gone:
                    raise ClientDisconnected(f"{ex.describe()}: the client is gone")
                ex.start_response(int(message["status"]), message.get("headers", ()))
            elif kind == "http.response.body":
                await ex.write(bytes(message.get("body", b"")), end=not message.get("more_body", False))
            else:
                raise ValueError(f"unexpected ASGI message type {kind!r} for an http scope")

        try:
            await self.app(self.scope(ex), receive, send)
        except OSError as exc:
            log.debug("%s: aborted: %s", ex.describe(), exc)
        except Exception:
            log.exception("the application failed on %s", ex.describe())
        if ex.finished or ex.gone:
            return
        if ex.head_sent:
            ex.abort()
            return
        error = ex.body.error
        status, text = (error.status, str(error)) if error is not None and error.status else (500, "internal error")
        try:
            await ex.respond(status, [(b"content-type", b"text/plain; charset=utf-8")], f"{text}\n".encode())
        except ClientDisconnected:
            pass

    @staticmethod
    def scope(ex: Exchange) -> Scope:
        raw_path = ex.path.encode("latin-1")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": ex.http_version,
            "method": ex.method,
            "scheme": ex.scheme,
            "path": unquote(ex.path),
            "raw_path": raw_path,
            "query_string": ex.query.encode("latin-1"),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ex.headers],
            "client": ex.client,
            "server": ex.server,
        }
        if ex.peercert_chain is not None:
            scope["extensions"] = {"tls": _tls_extension(ex.peercert_chain)}
        return scope


def _tls_extension(chain: tuple[bytes, ...]) -> dict[str, Any]:
    """The ASGI TLS extension's fields for a client certificate chain (DER; empty: no client certificate)."""
    name = x509.load_der_x509_certificate(chain[0]).subject.rfc4514_string() if chain else None
    return {"server_cert": None, "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der) for der in chain],
            "client_cert_name": name, "client_cert_error": None, "tls_version": None, "cipher_suite": None}
