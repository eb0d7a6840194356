"""Conformance kit: the access-token variant of the device cases (TEST-1; UPL-14, UPL-2, UPL-4, UPL-16, PROV-3).

The draft's connect-and-disconnect case, with OAuth2 client credentials
instead of a client certificate: the tool's authorization server and token
endpoint (:mod:`.toolauth`) are started on first use, the device gets an
authorization server configuration through its Security service and an
uplink that names it (the token variant of
:func:`~iec62676_2_33.enroll.enroll`); a device that also lists ``wss`` is
checked once more over a wss RemoteAddress. The case applies only to devices
whose ``AuthorizationModes`` capability lists ``AccessToken`` (UPL-5 makes the
listing a promise). At the end the uplinks and the authorization server
configuration the run made are deleted again.

``EXT-TOKEN-REFETCH`` has the tool's cloud revoke the first valid token the
device presents (``401``, ``WWW-Authenticate: Bearer error="invalid_token"``,
RFC 6750 §3.1; :class:`~.toolauth.TokenGate`): the device must fetch one new
token and get in with it. The gate's record of the tokens presented (short
fingerprints) and the authorization server's issue count show whether it
reused the rejected token or fetched more than one.
"""

from __future__ import annotations

import time

from ..enroll import enroll
from ..namespaces import TDS
from .device_cases import answered, case, device_xaddr, note_connection
from .device_session import DeviceSession, wait_for
from .registry import Evidence
from .toolauth import Presented, TokenWorld


def _why_not_connected(s: DeviceSession, world: TokenWorld, address: str) -> str:
    """One line saying what the device did instead of connecting with a valid token."""
    endpoint = world.endpoint
    attempts = list(endpoint.connections)
    status = s.status(address)
    seen = f"GetUplinks: {status}; tokens issued by the tool's authorization server: {world.issued}"
    if not attempts:
        return (f"the device made no connection to the access-token endpoint within {s.target.connect_timeout:g} s "
                f"({seen})")
    last = attempts[-1]
    authorization = getattr(last.request, "authorization", None)
    if last.request is not None and not authorization and "access_token=" not in last.request.query:
        return ("the device's upgrade request carries no Authorization: Bearer token (UPL-14); the tool answered "
                f"{last.answer_line()!r} ({seen})")
    if authorization and not authorization.lower().startswith("bearer "):
        return f"the device's Authorization header is not a Bearer token (UPL-14) ({seen})"
    return f"the tool's cloud did not accept the device's upgrade: it answered {last.answer_line()!r} ({seen})"


def _delete_server(s: DeviceSession, ev: Evidence, server_token: str) -> None:
    """Delete an authorization server configuration this case made."""
    security = s.security()
    if security is None:
        return
    try:
        security.DeleteAuthorizationServerConfiguration(Token=server_token)
    except Exception as exc:  # noqa: BLE001 - a leftover configuration is noted, never the verdict
        ev.note("cleanup", f"could not delete the authorization server configuration {server_token}: "
                           f"{str(exc)[:200]}")


def _configure(s: DeviceSession, ev: Evidence, world: TokenWorld, address: str, made: list[str]) -> None:
    """SetUplink with the tool's authorization server to ``address`` (the server configured first when the device
    has none for it yet; one made now is added to ``made``)."""
    result = enroll(s.target.dut, username=s.target.username, password=s.target.password, ca=s.pki.ca,
                    remote_address=address, token=world.client, identity=world.subject, timeout=s.target.timeout)
    s.created_addresses.add(address)
    if result.authorization_server and any(item.startswith("authorization server") for item in result.created):
        made.append(result.authorization_server)
    ev.note(f"configured {address}", f"authorization server configuration {result.authorization_server} "
                                     f"(ServerUri {world.client.server_uri}, ClientID {world.client.client_id}); "
                                     "SetUplink with AuthorizationServer, no CertificateID")


def _token_uplink(s: DeviceSession, ev: Evidence, world: TokenWorld, address: str, made: list[str]) -> None:
    """SetUplink with the authorization server to ``address``; the device connects with a token, a request is
    answered, DeleteUplink ends it. An authorization server configuration made now is added to ``made``."""
    since = time.monotonic()
    _configure(s, ev, world, address, made)
    try:
        conn = s.wait_connected(world.endpoint, since, identity=world.subject)
    except TimeoutError:
        ev.fail(_why_not_connected(s, world, address))
    note_connection(ev, conn, address)
    request = conn.request
    authorization = (getattr(request, "authorization", None) or "").lower()
    in_query = "access_token=" in getattr(request, "query", "")
    if address.startswith("wss:"):
        ev.check(getattr(request, "kind", None) == "websocket", "the device asked for no WebSocket upgrade on a wss "
                                                                "RemoteAddress (UPL-4)")
        ev.check(authorization.startswith("bearer ") or in_query, "the device's WebSocket upgrade carries no token, "
                 "neither Authorization: Bearer nor access_token (UPL-4, UPL-14)")
    else:
        ev.check(authorization.startswith("bearer "), "the device connected without an Authorization: Bearer header "
                                                      "(UPL-14)")
    ev.note("authenticated", f"token subject {conn.identity!r}; the tool's authorization server issued "
                             f"{world.issued} token(s) so far")
    answered(ev, s.tunnel(world.endpoint, device_xaddr(s), TDS, "GetDeviceInformation", identity=world.subject),
             "GetDeviceInformation", "GetDeviceInformationResponse")
    s.delete_uplink(address)
    try:
        s.wait_closed(conn, s.target.notice_timeout)
    except TimeoutError:
        ev.fail(f"the device kept the token uplink {address} open {s.target.notice_timeout:g} s after DeleteUplink")


@case("EXT-TOKEN", "the access-token variant when AuthorizationModes lists AccessToken", "TEST-1", "UPL-14",
      "UPL-2", "UPL-4", "UPL-16", "PROV-3")
def access_token(s: DeviceSession, ev: Evidence) -> None:
    """With an authorization server configuration (the tool's: client-credentials grant) and an uplink naming
    it instead of a certificate, the device fetches a token, sends ``Authorization: Bearer`` in its upgrade
    request, the cloud accepts the token's subject, and GetDeviceInformation is answered over that uplink;
    DeleteUplink ends it. When Protocols also lists ``wss``, the same over a wss RemoteAddress (the token in
    the header or as ``access_token``)."""
    world, protocols = _token_world(s, ev)
    https = world.endpoint.url("/uplink")
    addresses = [https] + (["wss://" + https.split("://", 1)[1]] if "wss" in protocols else [])
    made: list[str] = []
    try:
        for address in addresses:
            _token_uplink(s, ev, world, address, made)
    finally:
        for address in addresses:
            if s.status(address) is not None:
                s.delete_uplink(address)
        for server_token in made:
            _delete_server(s, ev, server_token)


def _token_world(s: DeviceSession, ev: Evidence) -> tuple[TokenWorld, list[str]]:
    """The tool's token world for a device that lists AccessToken (skip otherwise), and the Protocols it lists."""
    caps = s.uplink().get_service_capabilities()
    ev.note("AuthorizationModes", " ".join(caps.authorization_modes) or "(none)")
    if "AccessToken" not in caps.authorization_modes:
        ev.skip("the device does not list AccessToken among its AuthorizationModes")
    if s.security() is None:
        ev.fail("the device lists AccessToken but no Security service: an authorization server cannot be "
                "configured (CreateAuthorizationServerConfiguration)")
    return s.token_world(), list(caps.protocols)


def _presented(world: TokenWorld, since: float) -> list[Presented]:
    return [p for p in list(world.gate.presented) if p.at >= since]


def _describe(presented: list[Presented]) -> str:
    return "\n".join(f"token {p.fingerprint}: {p.outcome} (tokens issued by then: {p.issued})"
                     for p in presented) or "none"


@case("EXT-TOKEN-REFETCH", "one new token after a 401 on the token, not the rejected one again", "UPL-14")
def token_refetch(s: DeviceSession, ev: Evidence) -> None:
    """The tool's cloud answers the device's first upgrade with a valid token ``401`` with
    ``WWW-Authenticate: Bearer error="invalid_token"`` and keeps refusing that token (revoked). The device must
    fetch one new token from the authorization server (not the rejected one again, not a token per attempt
    in a loop) and get in with it; GetDeviceInformation is then answered over that uplink."""
    world, _ = _token_world(s, ev)
    address = world.endpoint.url("/uplink-refetch")
    made: list[str] = []
    since = time.monotonic()
    world.gate.revoke_next = True
    try:
        _configure(s, ev, world, address, made)
        try:
            wait_for(lambda: len(_presented(world, since)) >= 2, s.target.connect_timeout,
                     "the device's second upgrade with a token")
        except TimeoutError:
            ev.note("tokens presented", _describe(_presented(world, since)))
            ev.fail(f"the device made no second upgrade with a token within {s.target.connect_timeout:g} s of the "
                    f"first ({_why_not_connected(s, world, address)})")
        first, retry = _presented(world, since)[:2]
        opened = [c for c in list(world.endpoint.connections) if c.opened_at >= since and c.request is not None]
        if opened:
            note_connection(ev, opened[0], "first upgrade (its token revoked)")
            ev.note("the tool's answer head", bytes(opened[0].outbound).split(b"\r\n\r\n", 1)[0][:600].decode("latin-1"))
        if first.outcome != "revoked now":
            ev.note("tokens presented", _describe(_presented(world, since)))
            ev.fail(f"the device's first token was {first.outcome} before the tool revoked it")
        if retry.fingerprint == first.fingerprint:
            ev.note("tokens presented", _describe(_presented(world, since)))
            ev.fail("after the 401 (invalid_token) the device retried with the rejected token instead of fetching a "
                    f"new one (UPL-14, RFC 6750 §3.1); tokens issued meanwhile: {retry.issued - first.issued}")
        conn = s.wait_connected(world.endpoint, since, identity=world.subject)
        note_connection(ev, conn, address)
        answered(ev, s.tunnel(world.endpoint, device_xaddr(s), TDS, "GetDeviceInformation", identity=world.subject),
                 "GetDeviceInformation", "GetDeviceInformationResponse")
        seen = _presented(world, since)
        ev.note("tokens presented", _describe(seen) + f"\nthe retry came {retry.at - first.at:.2f} s after the 401")
        fetched = world.issued - first.issued
        ev.check(fetched == 1, f"the device fetched {fetched} tokens after the one 401 (once is enough: no loop)")
        refused = [p for p in seen if p.outcome != "accepted"]
        ev.check(len(refused) == 1, f"{len(refused)} of the device's upgrades were refused; only the first should be")
        s.delete_uplink(address)
        try:
            s.wait_closed(conn, s.target.notice_timeout)
        except TimeoutError:
            ev.fail(f"the device kept the token uplink open {s.target.notice_timeout:g} s after DeleteUplink")
    finally:
        world.gate.revoke_next = False
        if s.status(address) is not None:
            s.delete_uplink(address)
        for server_token in made:
            _delete_server(s, ev, server_token)
