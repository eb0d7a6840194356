"""Test helper: a device application served on loopback, and raw SOAP 1.2 calls to it.

:func:`serve_app` runs any WSGI app with the library's own HTTP server on a free loopback port
(bounded start and stop); :func:`soap_call` posts one envelope (optionally with a WS-Security
UsernameToken) and returns the HTTP status and the parsed envelope; :func:`body_of` is the
answer's Body child.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from helpers import soap_post
from lxml import etree

from iec62676_2_33.namespaces import SOAP_ENV
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.http_server import bind_listen, serve_wsgi, wait_event
from iec62676_2_33.security.wsse import build_username_token
from iec62676_2_33.soap.envelope import body_element


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1; yields ``http://127.0.0.1:<port>``."""
    sock = bind_listen("127.0.0.1", 0)
    port = sock.getsockname()[1]

    async def run(stop: Any, announce: Any) -> None:
        announce("serving")
        await serve_wsgi(app, sock, lambda: wait_event(stop))

    service = BackgroundService(run, name="served-app").start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()
        sock.close()


def envelope(body: str, namespaces: dict[str, str], user: tuple[str, str] | None) -> bytes:
    header = ""
    if user is not None:
        token = build_username_token(user[0], user[1], datetime.now(UTC))
        header = f"<env:Header>{etree.tostring(token).decode()}</env:Header>"
    declared = " ".join(f'xmlns:{p}="{ns}"' for p, ns in namespaces.items() if p != "env")
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" {declared}>{header}'
            f"<env:Body>{body}</env:Body></env:Envelope>").encode()


def soap_call(url: str, body: str, namespaces: dict[str, str], *, user: tuple[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, etree._Element]:
    return soap_post(url, envelope(body, namespaces, user), timeout=timeout)


def body_of(root: etree._Element) -> etree._Element:
    element = body_element(root)
    assert element is not None, "the answer's SOAP Body is empty"
    return element
