"""Conformance kit: the WebSocket and access-token variants of the cloud cases (TEST-1; UPL-4, UPL-14, UPL-3,
UPL-15).

With a ``wss`` address every cloud case dials with the WebSocket handshake
(subprotocol ``h2c-reverse``), so the request, PING, reconnection and
hostile-frame cases run over WebSocket too; ``CLOUD-WSS`` checks what is
particular to it: the form of the ``101`` (``Upgrade: websocket``,
``Connection: Upgrade``, ``Sec-WebSocket-Protocol: h2c-reverse``; the
``Sec-WebSocket-Accept`` is checked by the handshake itself) and the HTTP/2
preface travelling in binary frames. It is skipped for an ``https`` address.

With an access-token source (:mod:`.tokensource`) every case presents the
token; ``CLOUD-TOKEN`` checks the token alone: a device without a client
certificate gets in with the valid token, and is refused with a tampered one
(``401`` with a ``WWW-Authenticate: Bearer`` challenge, RFC 6750 §3); over
``wss`` the token is also accepted as the ``access_token`` query parameter
(UPL-4, RFC 6750 §2.3). It is skipped without a token source.
"""

from __future__ import annotations

from ..sansio.upgrade import UpgradeRefused
from .cloud_cases import CloudSession, Probe, _ping, _with_probe, case
from .registry import Evidence
from .wire import CLIENT_MAGIC, SETTINGS


def _fields(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return lines[0], fields


@case("CLOUD-WSS", "the WebSocket form of the uplink for a wss address", "UPL-4", "UPL-3", "UPL-15")
def websocket(s: CloudSession, ev: Evidence) -> None:
    """``HTTP/1.1 101`` with ``Upgrade: websocket``, ``Connection: Upgrade`` and ``Sec-WebSocket-Protocol:
    h2c-reverse``; then the cloud's HTTP/2 preface in binary frames and a PING answered through them."""
    if not s.websocket:
        ev.skip("the address is not wss (give a wss:// address to test the WebSocket variant)")

    async def check(probe: Probe) -> None:
        status, fields = _fields(probe.head)
        ev.check(status.startswith("HTTP/1.1 101"), f"status line {status!r}")
        ev.check(fields.get("upgrade", "").lower() == "websocket",
                 f"Upgrade header {fields.get('upgrade')!r}, expected 'websocket'")
        ev.check("upgrade" in fields.get("connection", "").lower(),
                 f"Connection header {fields.get('connection')!r} lacks 'Upgrade'")
        ev.check(fields.get("sec-websocket-protocol") == "h2c-reverse",
                 f"Sec-WebSocket-Protocol {fields.get('sec-websocket-protocol')!r}, expected 'h2c-reverse'")
        await probe.pump(lambda: len(probe.after) >= len(CLIENT_MAGIC) + 9, s.target.timeout)
        ev.note("first bytes in the WebSocket frames", repr(bytes(probe.after[:80])))
        ev.check(probe.after.startswith(CLIENT_MAGIC),
                 f"the cloud did not start with the HTTP/2 client preface: {bytes(probe.after[:40])!r}")
        frames = list(probe.scanner.frames)
        ev.check(frames and frames[0].type == SETTINGS, "the preface magic is not followed by SETTINGS")
        opaque, acked = await _ping(probe, s.target.timeout)
        ev.note("PING", f"{opaque.hex()}: {'acknowledged' if acked else 'no ACK'}")
        ev.check(acked, f"no PING ACK with payload {opaque.hex()} within 5 s over the WebSocket")

    _with_probe(s, ev, check)


def tampered(token: str) -> str:
    """``token`` with one character in the middle of its last part (a JWT's signature) changed."""
    start = token.rfind(".") + 1
    middle = start + (len(token) - start) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]


@case("CLOUD-TOKEN", "an access token instead of a client certificate, a tampered one refused", "UPL-14",
      "UPL-4")
def access_token(s: CloudSession, ev: Evidence) -> None:
    """Without a client certificate: with the valid token (``Authorization: Bearer``) the cloud switches
    protocols and sends its preface; with the token tampered it does not (``401`` with ``WWW-Authenticate:
    Bearer``, RFC 6750 §3). Over wss the valid token as ``access_token`` query parameter gets in too."""
    if s.target.token is None:
        ev.skip("no access-token source given (--token-file, or --token-server with --client-id and "
                "--client-secret-file)")
    ev.note("token source", repr(s.target.token))

    async def go() -> None:
        token = await s.bearer()
        assert token is not None
        ev.note("token", f"{len(token)} characters")
        tries: list[tuple[str, str | None, str | None]] = [("Authorization: Bearer", token, None)]
        if s.websocket:
            path = s.address.target
            tries.append(("access_token query parameter", None,
                          f"{path}{'&' if '?' in path else '?'}access_token={token}"))
        for label, bearer, target in tries:
            probe = Probe(s)
            try:
                try:
                    await probe.open(with_certificate=False, token=bearer, target=target)
                except UpgradeRefused as exc:
                    ev.fail(f"the cloud refused a device with a valid access token ({label}) and no client "
                            f"certificate: {exc}")
                await probe.pump(lambda p=probe: len(p.after) >= len(CLIENT_MAGIC), s.target.timeout)  # type: ignore[misc]
                ev.note(f"valid token ({label})", probe.head.decode("latin-1"))
                ev.check(probe.after.startswith(CLIENT_MAGIC),
                         f"no HTTP/2 preface after the 101 for the valid token ({label})")
            finally:
                await probe.close()
        probe = Probe(s)
        try:
            try:
                await probe.open(with_certificate=False, token=tampered(token))
            except UpgradeRefused as exc:
                challenge = dict(exc.headers).get("www-authenticate", "")
                ev.note("tampered token", f"refused: {exc.status} {exc.reason}; WWW-Authenticate: "
                                          f"{challenge or '(none)'}")
                ev.check(exc.status != 401 or challenge.lower().startswith("bearer"),
                         "the cloud answered the tampered token 401 without a WWW-Authenticate: Bearer challenge "
                         "(RFC 6750 §3)")
                ev.check(exc.status in (401, 403), f"the cloud answered the tampered token {exc.status}, not 401 "
                                                   "(RFC 6750 §3.1: invalid_token)")
                return
            ev.note("tampered token", probe.head.decode("latin-1"))
            ev.fail("the cloud switched protocols for a tampered access token: it does not validate tokens (UPL-14)")
        finally:
            await probe.close()

    s.run(go)
