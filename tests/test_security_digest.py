"""HTTP Digest (RFC 7616), the SEC-2 alternative to WS-Security; SEC-3 401 challenges.

Related: SEC-1 (the policy decides after authentication), SEC-4/UPL-12 (an
uplink request needs no Digest; see test_security_middleware.py). The curl
tests run the real ``curl --digest`` against a loopback wsgiref server whose
application is wrapped by the access-control middleware.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.security.access import (
    AccessClass,
    CredentialRejected,
    MalformedCredentials,
    UnknownUser,
    WrongPassword,
)
from iec62676_2_33.security.httpdigest import (
    DigestAuthenticator,
    InvalidNonce,
    ReplayedNonceCount,
    StaleNonce,
    digest_response,
    parse_auth_header,
)
from iec62676_2_33.security.middleware import AccessControlMiddleware

REALM = "iec62676@device"
USERS = {
    "admin": ("Adm1n-Secret", "Administrator"),
    "viewer": ("View-Secret", "User"),
    'q"uote, user': ('pw, with "quotes"', "Operator"),
}
T0 = 1_714_564_800.0
SECRET = b"0123456789abcdef0123456789abcdef"


def lookup(name: str) -> tuple[str, str] | None:
    return USERS.get(name)


def authenticator(**kw: Any) -> DigestAuthenticator:
    kw.setdefault("nonce_secret", SECRET)
    return DigestAuthenticator(lookup, REALM, **kw)


def H(algorithm: str, text: str) -> str:
    """RFC 7616 §3.4: H = the algorithm's hash, lower-case hex (independent of the library)."""
    fn = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    return fn(text.encode("utf-8")).hexdigest()


def header_for(
    *,
    nonce: str,
    username: str = "admin",
    password: str = "Adm1n-Secret",
    algorithm: str = "SHA-256",
    method: str = "POST",
    uri: str = "/onvif/device_service",
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    realm: str = REALM,
    extra: str = "",
) -> str:
    """An Authorization header computed with the RFC 7616 §3.4.1 formula, by hand."""
    ha1 = H(algorithm, f"{username}:{realm}:{password}")
    ha2 = H(algorithm, f"{method}:{uri}")
    response = H(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}", '
        f'response="{response}"{extra}'
    )


def nonce_of(challenge: str) -> str:
    m = re.search(r'nonce="([^"]+)"', challenge)
    assert m is not None
    return m.group(1)


# --------------------------------------------------------------------- formula and tokenizer
@pytest.mark.parametrize(
    "algorithm, expected",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_sec2_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    assert (
        digest_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_sec2_tokenizer_handles_commas_and_escapes_in_quotes() -> None:
    scheme, params = parse_auth_header(
        'Digest  username="a, \\"b\\"", realm="r,1",nc=00000001 ,  qop=auth,,uri="/x?a=1,2"'
    )
    assert scheme == "Digest"
    assert params == {
        "username": 'a, "b"',
        "realm": "r,1",
        "nc": "00000001",
        "qop": "auth",
        "uri": "/x?a=1,2",
    }


@pytest.mark.parametrize(
    "header",
    [
        'Digest username="unterminated',
        'Digest username="a", username="b"',
        "Digest dGhpcyBpcyB0b2tlbjY4",
        'Digest username="a" realm="b"',
        "Digest =x",
        "",
        "Digest " + "a=b, " * 1000,
    ],
)
def test_sec2_tokenizer_rejects_malformed_headers(header: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_auth_header(header)


def test_sec3_challenge_format() -> None:
    auth = authenticator()
    values = auth.challenges(T0)
    assert [parse_auth_header(v)[1]["algorithm"] for v in values] == ["SHA-256", "MD5"]
    scheme, params = parse_auth_header(values[0])
    assert scheme == "Digest"
    assert params["realm"] == REALM and params["qop"] == "auth" and params["charset"] == "UTF-8"
    assert "stale" not in params
    assert parse_auth_header(auth.challenges(T0, stale=True)[1])[1]["stale"] == "true"
    combined = auth.challenge(T0)
    assert combined.count("Digest ") == 2
    assert nonce_of(values[0]) == nonce_of(values[1])


def test_sec2_realm_with_quote_is_escaped() -> None:
    auth = DigestAuthenticator(lookup, 'a "quoted" realm')
    assert parse_auth_header(auth.challenges(T0)[0])[1]["realm"] == 'a "quoted" realm'


# --------------------------------------------------------------------- verification
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_sec2_independently_computed_header_verifies(algorithm: str) -> None:
    auth = authenticator()
    nonce = nonce_of(auth.challenge(T0))
    header = header_for(nonce=nonce, algorithm=algorithm)
    assert auth.verify("POST", header, T0 + 1, request_uri="/onvif/device_service") == (
        "admin",
        "Administrator",
    )


def test_sec2_algorithm_defaults_to_md5_when_absent() -> None:
    auth = authenticator()
    nonce = nonce_of(auth.challenge(T0))
    header = header_for(nonce=nonce, algorithm="MD5").replace("algorithm=MD5, ", "")
    assert auth.verify("POST", header, T0) == ("admin", "Administrator")


def test_sec2_algorithm_not_offered_refused() -> None:
    auth = authenticator(algorithms=("SHA-256",))
    nonce = nonce_of(auth.challenge(T0))
    with pytest.raises(MalformedCredentials, match="not offered"):
        auth.verify("POST", header_for(nonce=nonce, algorithm="MD5"), T0)


def test_sec2_nc_replay_refused() -> None:
    auth = authenticator()
    nonce = nonce_of(auth.challenge(T0))
    first = header_for(nonce=nonce, nc="00000001")
    assert auth.verify("POST", first, T0) == ("admin", "Administrator")
    with pytest.raises(ReplayedNonceCount):
        auth.verify("POST", first, T0 + 1)
    assert auth.verify("POST", header_for(nonce=nonce, nc="00000002"), T0 + 2)[0] == "admin"
    with pytest.raises(ReplayedNonceCount):
        auth.verify("POST", header_for(nonce=nonce, nc="00000002", cnonce="other"), T0 + 3)


def test_sec2_stale_nonce_with_right_response_is_stale() -> None:
    auth = authenticator(nonce_lifetime=300.0)
    nonce = nonce_of(auth.challenge(T0))
    with pytest.raises(StaleNonce):
        auth.verify("POST", header_for(nonce=nonce), T0 + 301)
    # a wrong response is never "stale": the client must not retry silently
    with pytest.raises(WrongPassword):
        auth.verify("POST", header_for(nonce=nonce, password="bad", nc="00000002"), T0 + 301)


def test_sec2_nonce_not_ours_refused() -> None:
    other = DigestAuthenticator(lookup, REALM, nonce_secret=b"another-secret-of-32-bytes......")
    foreign = nonce_of(other.challenge(T0))
    with pytest.raises(InvalidNonce):
        authenticator().verify("POST", header_for(nonce=foreign), T0)
    nonce = nonce_of(authenticator().challenge(T0))
    tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    with pytest.raises(InvalidNonce):
        authenticator().verify("POST", header_for(nonce=tampered), T0)
    with pytest.raises(InvalidNonce):
        authenticator().verify("POST", header_for(nonce="short"), T0)


def test_sec2_nonce_from_the_future_refused() -> None:
    auth = authenticator()
    nonce = nonce_of(auth.challenge(T0 + 60))
    with pytest.raises(InvalidNonce):
        auth.verify("POST", header_for(nonce=nonce), T0)


def test_sec2_unknown_user_and_wrong_password_same_peer_reason() -> None:
    auth = authenticator()
    nonce = nonce_of(auth.challenge(T0))
    with pytest.raises(UnknownUser) as unknown:
        auth.verify("POST", header_for(nonce=nonce, username="ghost"), T0)
    with pytest.raises(WrongPassword) as wrong:
        auth.verify("POST", header_for(nonce=nonce, password="nope"), T0)
    assert unknown.value.peer_reason == wrong.value.peer_reason
    assert isinstance(unknown.value, CredentialRejected)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda h: h.replace(f'realm="{REALM}"', 'realm="elsewhere"'), "another realm"),
        (lambda h: h.replace("qop=auth", "qop=auth-int"), "qop"),
        (lambda h: h.replace("nc=00000001", "nc=1"), "nc"),
        (lambda h: re.sub(r', cnonce="[^"]*"', "", h), "cnonce"),
        (lambda h: h + ", userhash=true", "userhash"),
        (lambda h: h.replace("Digest ", "Basic "), "not Digest"),
        (
            lambda h: h.replace('username="admin"', "username=\"admin\", username*=UTF-8''admin"),
            "both",
        ),
    ],
)
def test_sec2_malformed_credentials_refused(mutate: Callable[[str], str], match: str) -> None:
    auth = authenticator()
    header = mutate(header_for(nonce=nonce_of(auth.challenge(T0))))
    with pytest.raises(MalformedCredentials, match=match):
        auth.verify("POST", header, T0)


def test_sec2_username_star_ext_value() -> None:
    users = {"jürgen": ("pw-ü", "Operator")}
    auth = DigestAuthenticator(users.get, REALM, nonce_secret=SECRET)
    nonce = nonce_of(auth.challenge(T0))
    header = header_for(nonce=nonce, username="jürgen", password="pw-ü").replace(
        'username="jürgen"', "username*=UTF-8''j%C3%BCrgen"
    )
    assert auth.verify("POST", header, T0) == ("jürgen", "Operator")


def test_sec2_uri_must_name_the_request_target() -> None:
    auth = authenticator()
    header = header_for(nonce=nonce_of(auth.challenge(T0)), uri="/onvif/dev%20x?a=b")
    assert auth.verify("POST", header, T0, request_uri="/onvif/dev x?a=b")[0] == "admin"
    header = header_for(nonce=nonce_of(auth.challenge(T0)), uri="/other")
    with pytest.raises(MalformedCredentials, match="uri"):
        auth.verify("POST", header, T0, request_uri="/onvif/device_service")


def test_sec2_method_is_part_of_the_response() -> None:
    auth = authenticator()
    header = header_for(nonce=nonce_of(auth.challenge(T0)), method="GET")
    with pytest.raises(WrongPassword):
        auth.verify("POST", header, T0)


def test_sec2_nc_memory_bounded_and_eviction_means_stale() -> None:
    auth = authenticator(nc_cache_size=2)
    nonces = [nonce_of(auth.challenge(T0 + i)) for i in range(3)]
    for i, nonce in enumerate(nonces):
        assert auth.verify("POST", header_for(nonce=nonce), T0 + 3 + i)[0] == "admin"
    assert len(auth._counts) == 2
    # the first nonce was evicted while valid: a replay of it is answered stale, not accepted
    with pytest.raises(StaleNonce):
        auth.verify("POST", header_for(nonce=nonces[0]), T0 + 10)


def test_sec2_a_late_check_cannot_replay_a_count_a_later_check_forgot() -> None:
    """A check whose clock lags another's (it waited for a worker) must not find a nonce's count forgotten
    that its own clock still calls fresh: the memory counts its lifetime back from the latest time given."""
    auth = authenticator(nonce_lifetime=300.0)
    nonce = nonce_of(auth.challenge(T0))
    captured = header_for(nonce=nonce, nc="00000001")
    assert auth.verify("POST", captured, T0 + 1)[0] == "admin"
    other = nonce_of(auth.challenge(T0 + 350))
    auth.verify("POST", header_for(nonce=other), T0 + 350)  # a later check: the first nonce leaves the memory
    with pytest.raises(StaleNonce):
        auth.verify("POST", captured, T0 + 299)  # fresh by its own clock, but its count is forgotten


def test_sec2_a_clock_set_back_locks_nobody_out() -> None:
    """After the clock is set back by more than two lifetimes, a fresh nonce is not answered stale for
    ever: the nonce-count memory (full, with a floor, in the old time) starts afresh."""
    auth = authenticator(nonce_lifetime=300.0, nc_cache_size=2)
    for i in range(3):  # full, and an eviction inside the lifetime raised the floor
        late = T0 + 3600 + i
        assert auth.verify("POST", header_for(nonce=nonce_of(auth.challenge(late))), late)[0] == "admin"
    nonce = nonce_of(auth.challenge(T0))
    assert auth.verify("POST", header_for(nonce=nonce, nc="00000001"), T0)[0] == "admin"
    with pytest.raises(ReplayedNonceCount):
        auth.verify("POST", header_for(nonce=nonce, nc="00000001"), T0 + 1)


def test_sec2_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="algorithms"):
        DigestAuthenticator(lookup, REALM, algorithms=("MD5-sess",))
    with pytest.raises(ConfigurationError):
        DigestAuthenticator(lookup, "")
    with pytest.raises(ConfigurationError):
        DigestAuthenticator(lookup, REALM, nonce_secret=b"short")


# --------------------------------------------------------------------- curl against loopback
NS = "urn:test:svc"
OPS = {"Read": AccessClass.READ_SYSTEM, "Write": AccessClass.WRITE_SYSTEM}
BODY = (
    '<?xml version="1.0"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">'
    '<env:Body><t:{op} xmlns:t="urn:test:svc"/></env:Body></env:Envelope>'
)
CURL = shutil.which("curl")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def digest_server() -> Iterator[Callable[..., tuple[str, list[dict[str, Any]]]]]:
    servers: list[WSGIServer] = []

    def start(**auth_kw: Any) -> tuple[str, list[dict[str, Any]]]:
        calls: list[dict[str, Any]] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            request = environ["iec62676.request"]
            m = re.search(r"algorithm=\"?([\w-]+)", environ.get("HTTP_AUTHORIZATION", ""))
            calls.append(
                {
                    "user": environ["iec62676.user"],
                    "levels": environ["iec62676.levels"],
                    "algorithm": m.group(1) if m else None,
                    "operation": request.operation_name,
                }
            )
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"executed"]

        mw = AccessControlMiddleware(
            app,
            operation_access=lambda ns, name: OPS.get(name) if ns == NS else None,
            wsse=None,
            digest=DigestAuthenticator(lookup, REALM, **auth_kw),
        )
        server = make_server("127.0.0.1", 0, mw, handler_class=_QuietHandler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/onvif/device_service", calls

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def curl(url: str, user: str, op: str, *extra: str) -> tuple[int, str]:
    assert CURL is not None
    result = subprocess.run(
        [
            CURL,
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-u",
            user,
            "-H",
            "Content-Type: application/soap+xml; charset=utf-8",
            "--data-binary",
            BODY.format(op=op),
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


pytestmark_curl = pytest.mark.skipif(CURL is None, reason="curl not installed")


@pytestmark_curl
@pytest.mark.parametrize(
    "algorithms, flag",
    [(("MD5",), "--digest"), (("SHA-256",), "--digest"), (("SHA-256", "MD5"), "--digest")],
)
def test_sec2_curl_digest_md5_and_sha256(
    digest_server: Callable[..., tuple[str, list[dict[str, Any]]]],
    algorithms: tuple[str, ...],
    flag: str,
) -> None:
    url, calls = digest_server(algorithms=algorithms)
    code, body = curl(url, "admin:Adm1n-Secret", "Write", flag)
    assert (code, body) == (200, "executed")
    assert calls == [
        {
            "user": "admin",
            "levels": ["Administrator"],
            "algorithm": algorithms[0],
            "operation": (NS, "Write"),
        }
    ]


@pytestmark_curl
def test_sec2_curl_quoted_username_survives_the_tokenizer(
    digest_server: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    url, calls = digest_server()
    code, body = curl(url, 'q"uote, user:pw, with "quotes"', "Read", "--digest")
    assert (code, body) == (200, "executed")
    assert [(c["user"], c["levels"]) for c in calls] == [('q"uote, user', ["Operator"])]


@pytestmark_curl
def test_sec3_curl_wrong_password_and_low_level_not_executed(
    digest_server: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    url, calls = digest_server()
    code, body = curl(url, "admin:wrong-one", "Read", "--digest")
    assert code == 401 and "NotAuthorized" in body
    code, body = curl(url, "viewer:View-Secret", "Write", "--digest")
    assert code == 400 and "ter:NotAuthorized" in body
    assert calls == []
    code, body = curl(url, "viewer:View-Secret", "Read", "--digest")
    assert (code, body) == (200, "executed")
    assert [c["user"] for c in calls] == ["viewer"]


@pytestmark_curl
def test_sec3_curl_without_digest_gets_401_challenge(
    digest_server: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    url, calls = digest_server()
    assert CURL is not None
    result = subprocess.run(
        [
            CURL,
            "-sS",
            "--noproxy",
            "*",
            "-D",
            "-",
            "-o",
            os.devnull,
            "--data-binary",
            BODY.format(op="Read"),
            "-H",
            "Content-Type: application/soap+xml",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.startswith("HTTP/1.0 401")
    assert result.stdout.count("WWW-Authenticate: Digest ") == 2
    assert calls == []
