"""A hostile HTTP peer on loopback for the attack tests (a test helper; names no requirement).

:class:`HostileServer` accepts connections, reads one whole request from each
(its head, then ``Content-Length`` bytes of body), and hands the connection to a
*behaviour*: a function that answers badly -- trickles a head, floods a body,
never ends -- until the server's ``stop`` event is set or the peer hangs up.
Every connection runs on a thread of its own; :meth:`HostileServer.close` sets
``stop`` and joins them, each wait bounded. :func:`tls_serving` is the same
idea for a cloud under test: a TLS server with the test PKI's cloud
certificate that runs a (hostile or faulty) handler per connection.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Self

from iec62676_2_33.testing.harness import UplinkPki
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.contexts import server_context
from iec62676_2_33.transport.tls import start_tls_server

#: ``behaviour(conn, stop, request)``: what the server does once a connection's request is in.
Behaviour = Callable[[socket.socket, threading.Event, bytes], None]


class HostileServer:
    """A TCP server on 127.0.0.1 that plays ``behaviour`` on each connection; ``url`` ends in ``path``."""

    def __init__(self, behaviour: Behaviour, path: str = "/") -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            try:
                request = bytearray()
                while b"\r\n\r\n" not in request or len(request) < _length(request):
                    if not (chunk := conn.recv(65536)):
                        return
                    request += chunk
                self.behaviour(conn, self.stop, bytes(request))
            except OSError:  # the client hung up: what a bounded client does
                pass

    def close(self) -> None:
        self.stop.set()
        self.acceptor.join(5)
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


def _length(request: bytearray) -> int:
    """The whole request's length once its head is in (head plus Content-Length), else the head's."""
    head, _, _ = bytes(request).partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def tls_serving(certs: UplinkPki, handle: Callable[[ByteStream], Awaitable[None]], *, client_certificates: bool = False
                ) -> Callable[[asyncio.Event, Callable[[str], None]], Awaitable[None]]:
    """For a :class:`~iec62676_2_33.runtime.background.BackgroundService`: a TLS server with the PKI's cloud
    certificate (asking for a client certificate when ``client_certificates``) running ``handle`` per
    connection; announces its port, stops with the service."""
    async def serve(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        context = server_context(certs.cert.read_bytes(), certs.key.read_bytes(),
                                 client_ca_pems=[certs.ca.cert_pem()] if client_certificates else None,
                                 require_client_cert=client_certificates)
        server = await start_tls_server(handle, ("127.0.0.1", 0), context)
        announce(str(server.sockets[0].getsockname()[1]))
        try:
            await stop.wait()
        finally:
            server.close()

    return serve
