"""Access control of the service interfaces: SEC-1 policy, SEC-2 authentication in the
middleware, SEC-3 refusal without execution, SEC-4 / UPL-12 uplink UserLevel.

The application behind the middleware is a spy that counts its calls, so
"nothing of the request is executed" (SEC-3) is checked directly.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from datetime import UTC, datetime
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from lxml import etree

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.namespaces import SOAP_ENV, TER, TUP, WSSE
from iec62676_2_33.security import (
    DEFAULT_POLICY,
    UPLINK_SERVICE_ACCESS,
    AccessClass,
    AccessControlMiddleware,
    DigestAuthenticator,
    NonceCache,
    UnknownUserLevel,
    UserLevel,
    UsernameTokenVerifier,
    build_username_token,
    is_allowed,
    operation_access_from,
    parse_level,
)
from iec62676_2_33.security.httpdigest import digest_response

# --------------------------------------------------------------------- SEC-1 table
# The SEC-1 table copied from REQUIREMENTS.md, independent of the library's own.
SEC1_TABLE = """
PRE_AUTH               X X X X
READ_SYSTEM            X X X .
READ_SYSTEM_SENSITIVE  X X . .
READ_SYSTEM_SECRET     X . . .
WRITE_SYSTEM           X . . .
UNRECOVERABLE          X . . .
READ_MEDIA             X X X .
ACTUATE                X X . .
"""
LEVELS = ["Administrator", "Operator", "User", "Anonymous"]
EXPECTED = {
    (row.split()[0], LEVELS[i]): mark == "X"
    for row in SEC1_TABLE.strip().splitlines()
    for i, mark in enumerate(row.split()[1:])
}


@pytest.mark.parametrize("access_class, level", sorted(EXPECTED))
def test_sec1_default_policy_every_class_and_level(access_class: str, level: str) -> None:
    assert is_allowed([level], AccessClass[access_class]) is EXPECTED[(access_class, level)]
    assert (level in DEFAULT_POLICY[AccessClass[access_class]]) is EXPECTED[(access_class, level)]


def test_sec1_table_is_complete() -> None:
    assert len(EXPECTED) == 32
    assert {c.value for c in AccessClass} == {c for c, _ in EXPECTED}
    assert set(DEFAULT_POLICY) == set(AccessClass)
    assert [lvl.value for lvl in UserLevel] == LEVELS


def test_sec1_several_levels_any_allows_unknown_grants_nothing() -> None:
    assert is_allowed(["User", "Operator"], AccessClass.ACTUATE)
    assert not is_allowed(["User", "Anonymous"], AccessClass.ACTUATE)
    assert not is_allowed(["administrator", "ADMIN", "Extended"], AccessClass.PRE_AUTH)
    assert not is_allowed([], AccessClass.PRE_AUTH)
    assert is_allowed("Operator", AccessClass.ACTUATE)  # a single name is one level


def test_sec1_parse_level() -> None:
    for name in LEVELS:
        assert parse_level(name) == name
    with pytest.raises(UnknownUserLevel) as exc:
        parse_level("administrator")
    assert isinstance(exc.value, ConfigurationError)
    assert "Administrator, Operator, User, Anonymous" in str(exc.value)


def test_sec1_uplink_service_access_classes() -> None:
    assert dict(UPLINK_SERVICE_ACCESS) == {
        (TUP, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
        (TUP, "GetUplinks"): AccessClass.READ_SYSTEM,
        (TUP, "SetUplink"): AccessClass.WRITE_SYSTEM,
        (TUP, "DeleteUplink"): AccessClass.WRITE_SYSTEM,
    }


# --------------------------------------------------------------------- harness
NS = "urn:test:svc"
OPS = {
    "Ping": AccessClass.PRE_AUTH,
    "Read": AccessClass.READ_SYSTEM,
    "Sens": AccessClass.READ_SYSTEM_SENSITIVE,
    "Write": AccessClass.WRITE_SYSTEM,
}
OPERATION_ACCESS = operation_access_from(
    UPLINK_SERVICE_ACCESS, {(NS, k): v for k, v in OPS.items()}
)
USERS = {
    "admin": ("Adm1n-Pa55word", "Administrator"),
    "operator": ("0perat0r-Pa55", "Operator"),
    "viewer": ("V1ewer-Pa55", "User"),
}
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
REALM = "device@test"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SpyApp:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request = environ.get("iec62676.request")
        self.calls.append(
            {
                "user": environ.get("iec62676.user"),
                "levels": environ.get("iec62676.levels"),
                "access_class": environ.get("iec62676.access_class"),
                # the application gets the parsed request and no bytes to read again
                "operation": None if request is None else request.operation_name,
                "unread": environ["wsgi.input"].read(),
            }
        )
        start_response("200 OK", [("Content-Type", "application/soap+xml")])
        return [b"<ok/>"]


def envelope(op: str = "Read", ns: str = NS, security: Any = None, env_ns: str = SOAP_ENV) -> bytes:
    env = etree.Element(f"{{{env_ns}}}Envelope", nsmap={"s": env_ns})
    if security is not None:
        etree.SubElement(env, f"{{{env_ns}}}Header").append(security)
    body = etree.SubElement(env, f"{{{env_ns}}}Body")
    etree.SubElement(body, f"{{{ns}}}{op}")
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def token(user: str, password: str, now: float = T0, nonce: bytes | None = None) -> Any:
    return build_username_token(user, password, datetime.fromtimestamp(now, tz=UTC), nonce)


class Harness:
    def __init__(
        self, *, digest: bool = False, wsse: bool = True, max_body: int = 1024 * 1024, **kw: Any
    ) -> None:
        self.app = SpyApp()
        self.clock = Clock()
        self.digest = (
            DigestAuthenticator(USERS.get, REALM, nonce_secret=b"k" * 32) if digest else None
        )
        self.mw = AccessControlMiddleware(
            self.app,
            operation_access=OPERATION_ACCESS,
            wsse=UsernameTokenVerifier(USERS.get, nonce_cache=NonceCache(window=400.0))
            if wsse
            else None,
            digest=self.digest,
            clock=self.clock,
            max_body=max_body,
            **kw,
        )

    def call(
        self,
        body: bytes = b"",
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        environ: dict[str, Any] | None = None,
        content_length: bool = True,
    ) -> tuple[int, dict[str, list[str]], bytes]:
        env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": "/onvif/device_service"}
        setup_testing_defaults(env)
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_TYPE"] = "application/soap+xml; charset=utf-8"
        if content_length:
            env["CONTENT_LENGTH"] = str(len(body))
        for name, value in (headers or {}).items():
            env["HTTP_" + name.upper().replace("-", "_")] = value
        env.update(environ or {})
        captured: dict[str, Any] = {}

        def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = int(status.split()[0])
            grouped: dict[str, list[str]] = {}
            for k, v in hdrs:
                grouped.setdefault(k.lower(), []).append(v)
            captured["headers"] = grouped
            return lambda data: None

        out = b"".join(self.mw(env, start_response))
        return captured["status"], captured["headers"], out


def fault_codes(body: bytes) -> tuple[str | None, str | None]:
    root = etree.fromstring(body)
    ns = {"env": SOAP_ENV}
    value = root.findtext("env:Body/env:Fault/env:Code/env:Value", namespaces=ns)
    sub = root.findtext("env:Body/env:Fault/env:Code/env:Subcode/env:Value", namespaces=ns)
    fault = root.find("env:Body/env:Fault", namespaces=ns)
    assert fault is not None and fault.nsmap.get("ter") == TER
    return value, sub


NOT_AUTHORIZED = ("env:Sender", "ter:NotAuthorized")


# --------------------------------------------------------------------- SEC-3: refusal, nothing executed
def test_sec3_anonymous_refused_app_not_called() -> None:
    h = Harness()
    status, headers, body = h.call(envelope("Write"))
    assert status == 400
    assert headers["content-type"] == ["application/soap+xml; charset=utf-8"]
    assert fault_codes(body) == NOT_AUTHORIZED
    assert h.app.calls == []


def test_sec1_anonymous_may_call_pre_auth() -> None:
    h = Harness()
    status, _, _ = h.call(envelope("GetServiceCapabilities", ns=TUP))
    assert status == 200
    assert h.app.calls[0]["levels"] == ["Anonymous"] and h.app.calls[0]["user"] is None
    assert h.app.calls[0]["access_class"] is AccessClass.PRE_AUTH


@pytest.mark.parametrize(
    "user, op, allowed",
    [
        ("admin", "Write", True),
        ("operator", "Sens", True),
        ("operator", "Write", False),
        ("viewer", "Read", True),
        ("viewer", "Sens", False),
    ],
)
def test_sec2_wsse_user_levels_applied(user: str, op: str, allowed: bool) -> None:
    h = Harness()
    request = envelope(op, security=token(user, USERS[user][0]))
    status, _, body = h.call(request)
    if allowed:
        assert status == 200 and body == b"<ok/>"
        assert h.app.calls == [
            {"user": user, "levels": [USERS[user][1]], "access_class": OPS[op], "operation": (NS, op),
             "unread": b""}
        ]
    else:
        assert status == 400 and fault_codes(body) == NOT_AUTHORIZED
        assert h.app.calls == []


def test_sec3_unknown_user_and_wrong_password_same_peer_answer() -> None:
    h = Harness()
    a = h.call(envelope("Read", security=token("ghost", "whatever", nonce=b"n1" * 8)))
    b = h.call(envelope("Read", security=token("admin", "not-it", nonce=b"n2" * 8)))
    assert a == b
    assert a[0] == 400 and fault_codes(a[2]) == NOT_AUTHORIZED
    assert h.app.calls == []


def test_sec2_replay_refused_through_middleware() -> None:
    h = Harness()
    request = envelope("Write", security=token("admin", "Adm1n-Pa55word"))
    assert h.call(request)[0] == 200
    h.clock.now += 5
    status, _, body = h.call(request)
    assert status == 400 and fault_codes(body) == NOT_AUTHORIZED
    assert len(h.app.calls) == 1


def test_sec2_stale_and_future_created_refused_through_middleware() -> None:
    h = Harness()
    h.clock.now = T0 + 301
    assert h.call(envelope("Read", security=token("admin", "Adm1n-Pa55word")))[0] == 400
    h.clock.now = T0 - 6
    assert h.call(envelope("Read", security=token("admin", "Adm1n-Pa55word")))[0] == 400
    assert h.app.calls == []


def test_sec3_bad_credentials_not_downgraded_to_anonymous() -> None:
    h = Harness(lenient_pre_auth=False)
    bad = token("admin", "not-it")
    # an unknown operation runs for Anonymous (the app faults it) but not with bad credentials
    assert h.call(envelope("Unknown"))[0] == 200
    status, _, body = h.call(envelope("Unknown", security=bad))
    assert status == 400 and fault_codes(body) == NOT_AUTHORIZED
    # PRE_AUTH with bad credentials is refused too when lenient_pre_auth is off
    assert h.call(envelope("Ping", security=token("admin", "not-it", nonce=b"x" * 16)))[0] == 400
    assert len(h.app.calls) == 1 and h.app.calls[0]["levels"] == ["Anonymous"]


def test_sec3_lenient_pre_auth_runs_as_anonymous_with_bad_token() -> None:
    h = Harness()
    h.clock.now = T0 + 3600  # the client's clock is an hour behind: token stale
    status, _, _ = h.call(envelope("Ping", security=token("admin", "Adm1n-Pa55word")))
    assert status == 200
    assert h.app.calls[0]["user"] is None and h.app.calls[0]["levels"] == ["Anonymous"]
    # but the same token buys nothing beyond PRE_AUTH
    assert h.call(envelope("Read", security=token("admin", "Adm1n-Pa55word")))[0] == 400
    assert len(h.app.calls) == 1


def test_sec2_token_without_wsse_configured_is_refused() -> None:
    h = Harness(wsse=False)
    assert h.call(envelope("Read", security=token("admin", "Adm1n-Pa55word")))[0] == 400
    assert h.app.calls == []


# --------------------------------------------------------------------- SEC-4 / UPL-12
@pytest.mark.parametrize(
    "levels, op, allowed",
    [
        (["Operator"], "Sens", True),
        (["Operator"], "Write", False),
        (["User", "Administrator"], "Write", True),
        (["Anonymous"], "Read", False),
        (["Anonymous"], "Ping", True),
        ("Administrator", "Write", True),
        (["administrator"], "Read", False),
    ],
)
def test_sec4_upl12_uplink_level_honoured(levels: Any, op: str, allowed: bool) -> None:
    h = Harness()
    status, _, body = h.call(envelope(op), environ={"iec62676.user_level": levels})
    assert (status == 200) is allowed
    if allowed:
        expected = [levels] if isinstance(levels, str) else levels
        assert h.app.calls[0]["levels"] == expected and h.app.calls[0]["user"] is None
    else:
        assert fault_codes(body) == NOT_AUTHORIZED and h.app.calls == []


def test_sec4_upl12_uplink_level_overrides_headers() -> None:
    h = Harness(digest=True)
    admin_token = token("admin", "Adm1n-Pa55word")
    # a valid Administrator token does not lift an uplink marked "User"
    status, _, body = h.call(
        envelope("Write", security=admin_token), environ={"iec62676.user_level": ["User"]}
    )
    assert status == 400 and fault_codes(body) == NOT_AUTHORIZED
    # invalid credentials are ignored on an uplink: no authentication there (UPL-12)
    status, _, _ = h.call(
        envelope("Write", security=token("admin", "wrong")),
        headers={"Authorization": 'Digest username="x"'},
        environ={"iec62676.user_level": ["Administrator"]},
    )
    assert status == 200
    assert h.app.calls[0]["levels"] == ["Administrator"] and h.app.calls[0]["user"] is None
    # the uplink never gets a Digest challenge
    status, headers, _ = h.call(envelope("Write"), environ={"iec62676.user_level": ["User"]})
    assert status == 400 and "www-authenticate" not in headers


# --------------------------------------------------------------------- HTTP Digest in the middleware
def digest_header(
    h: Harness, user: str, password: str, nc: str = "00000001", uri: str = "/onvif/device_service"
) -> str:
    assert h.digest is not None
    nonce = re.search(r'nonce="([^"]+)"', h.digest.challenge(h.clock.now))
    assert nonce is not None
    response = digest_response(
        algorithm="SHA-256",
        username=user,
        realm=REALM,
        password=password,
        method="POST",
        uri=uri,
        nonce=nonce.group(1),
        nc=nc,
        cnonce="c0ffee",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce.group(1)}", uri="{uri}", '
        f'algorithm=SHA-256, qop=auth, nc={nc}, cnonce="c0ffee", response="{response}"'
    )


def test_sec3_digest_configured_no_credentials_gets_401_challenge() -> None:
    h = Harness(digest=True)
    status, headers, body = h.call(envelope("Read"))
    assert status == 401
    assert len(headers["www-authenticate"]) == 2
    assert all(
        v.startswith(f'Digest realm="{REALM}", qop="auth"') for v in headers["www-authenticate"]
    )
    assert fault_codes(body) == NOT_AUTHORIZED
    # the empty probe curl sends first is challenged too
    assert h.call(b"")[0] == 401
    assert h.app.calls == []


def test_sec2_digest_allowed_and_stale_nonce_gives_401_stale_true() -> None:
    h = Harness(digest=True)
    header = digest_header(h, "operator", "0perat0r-Pa55")
    assert h.call(envelope("Sens"), headers={"Authorization": header})[0] == 200
    assert h.app.calls[0]["user"] == "operator" and h.app.calls[0]["levels"] == ["Operator"]
    # nc replay
    status, headers, _ = h.call(envelope("Sens"), headers={"Authorization": header})
    assert status == 401 and all("stale" not in v for v in headers["www-authenticate"])
    # stale nonce (correct response): re-challenge with stale=true
    old = digest_header(h, "operator", "0perat0r-Pa55")
    h.clock.now += 301
    status, headers, body = h.call(envelope("Sens"), headers={"Authorization": old})
    assert status == 401
    assert all(v.endswith("stale=true") for v in headers["www-authenticate"])
    assert fault_codes(body) == NOT_AUTHORIZED
    assert len(h.app.calls) == 1


def test_sec2_digest_low_level_gets_400_not_401() -> None:
    h = Harness(digest=True)
    status, headers, body = h.call(
        envelope("Write"), headers={"Authorization": digest_header(h, "viewer", "V1ewer-Pa55")}
    )
    assert status == 400 and "www-authenticate" not in headers
    assert fault_codes(body) == NOT_AUTHORIZED and h.app.calls == []


def test_sec2_digest_header_without_digest_configured_refused() -> None:
    h = Harness()
    status, _, body = h.call(envelope("Ping"), headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert status == 200  # lenient PRE_AUTH
    status, _, body = h.call(envelope("Read"), headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert status == 400 and fault_codes(body) == NOT_AUTHORIZED
    assert len(h.app.calls) == 1


def test_sec2_wsse_takes_precedence_over_digest() -> None:
    h = Harness(digest=True)
    status, _, _ = h.call(
        envelope("Write", security=token("admin", "Adm1n-Pa55word")),
        headers={"Authorization": digest_header(h, "viewer", "V1ewer-Pa55")},
    )
    assert status == 200 and h.app.calls[0]["user"] == "admin"


# --------------------------------------------------------------------- body handling and XML safety
def test_sec3_body_cap_413_without_reading() -> None:
    class Exploding(io.BytesIO):
        def read(self, *a: Any) -> bytes:
            raise AssertionError("body must not be read")

    h = Harness(max_body=1000)
    env = {"wsgi.input": Exploding(), "CONTENT_LENGTH": "1001"}
    status, headers, body = h.call(environ=env)
    assert status == 413 and headers["content-type"] == ["application/soap+xml; charset=utf-8"]
    assert fault_codes(body)[0] == "env:Sender" and b"1000" in body and h.app.calls == []


def test_sec3_body_cap_without_content_length() -> None:
    h = Harness(max_body=1000)
    big = envelope("Read") + b" " * 2000
    status, _, _ = h.call(big, content_length=False, environ={"wsgi.input_terminated": True})
    assert status == 413
    status, _, _ = h.call(
        envelope("Ping"), content_length=False, environ={"wsgi.input_terminated": True}
    )
    assert status == 200
    status, _, _ = h.call(envelope("Ping"), content_length=False)
    assert status == 411
    assert len(h.app.calls) == 1


def test_sec3_truncated_and_bad_content_length() -> None:
    h = Harness()
    assert h.call(environ={"wsgi.input": io.BytesIO(b"<a/>"), "CONTENT_LENGTH": "10"})[0] == 400
    assert h.call(environ={"CONTENT_LENGTH": "-1"})[0] == 400
    assert h.app.calls == []


@pytest.mark.parametrize(
    "payload",
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<t:Ping xmlns:t="urn:test:svc">&lol2;</t:Ping></s:Body></s:Envelope>'
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<t:Ping xmlns:t="urn:test:svc">&xxe;</t:Ping></s:Body></s:Envelope>'
        ),
        (
            b'<!DOCTYPE s:Envelope SYSTEM "http://example.invalid/x.dtd">'
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<t:Ping xmlns:t="urn:test:svc"/></s:Body></s:Envelope>'
        ),
    ],
)
def test_sec3_doctype_and_entities_refused(payload: bytes) -> None:
    h = Harness()
    status, _, body = h.call(payload)
    assert status == 400
    assert fault_codes(body)[0] == "env:Sender"
    assert b"DOCTYPE" in body and b"root:" not in body
    assert h.app.calls == []


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not xml", b"not well-formed"),
        (b"<a/>", b"not a SOAP 1.2 envelope"),
        (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>',
            b"no operation",
        ),
    ],
)
def test_sec3_not_an_operation_refused(payload: bytes, reason: bytes) -> None:
    h = Harness()
    status, _, body = h.call(payload)
    assert status == 400 and reason in body and h.app.calls == []


def test_sec3_soap11_envelope_gets_version_mismatch() -> None:
    """SEC-3: a SOAP 1.1 envelope is answered env:VersionMismatch (SOAP 1.2 §5.4.7) and never executed,
    even with valid credentials."""
    h = Harness()
    soap11 = "http://schemas.xmlsoap.org/soap/envelope/"
    for request in (envelope("Write", env_ns=soap11),
                    envelope("Write", env_ns=soap11, security=token("admin", "Adm1n-Pa55word"))):
        status, _, body = h.call(request)
        assert status == 500 and fault_codes(body)[0] == "env:VersionMismatch"
    assert h.app.calls == []


def test_sec1_get_passes_through_other_methods_405() -> None:
    h = Harness()
    status, _, _ = h.call(method="GET", content_length=False)
    assert status == 200 and h.app.calls[0]["levels"] == ["Anonymous"]
    status, headers, _ = h.call(envelope("Read"), method="PUT")
    assert status == 405 and headers["allow"] == ["POST"]
    assert len(h.app.calls) == 1


# --------------------------------------------------------------------- logging hygiene
def test_sec2_no_secret_reaches_any_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = Harness(digest=True)
    secrets: list[str] = []

    def wsse_request(user: str, password: str, nonce: bytes) -> None:
        sec = token(user, password, h.clock.now, nonce)
        secrets.extend(
            [password, base64.b64encode(nonce).decode(), sec[0].findtext(f"{{{WSSE}}}Password")]
        )
        h.call(envelope("Write", security=sec))

    wsse_request("admin", "Adm1n-Pa55word", b"nonce-one-16byte")  # ok
    wsse_request("admin", "Adm1n-Pa55word", b"nonce-one-16byte")  # replay
    wsse_request("admin", "Wr0ng-Secret!", b"nonce-two-16byte")  # wrong password
    wsse_request("nobody", "N0body-Secret", b"nonce-3-16bytes!")  # unknown user
    for user, password in [("operator", "0perat0r-Pa55"), ("operator", "Bad-0perat0r")]:
        header = digest_header(h, user, password)
        secrets.append(password)
        secrets.append(header)
        secrets.extend(re.findall(r'(?:nonce|response)="([^"]+)"', header))
        h.call(envelope("Sens"), headers={"Authorization": header})
    old = digest_header(h, "operator", "0perat0r-Pa55", nc="00000009")
    secrets.extend([old, *re.findall(r'(?:nonce|response)="([^"]+)"', old)])
    h.clock.now += 1000
    h.call(envelope("Sens"), headers={"Authorization": old})  # stale

    assert len(h.app.calls) == 2
    assert any(r.levelno >= logging.WARNING for r in caplog.records)
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret and secret not in text, "a secret reached the log"
