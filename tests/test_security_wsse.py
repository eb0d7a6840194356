"""WS-Security UsernameToken PasswordDigest (SEC-2), as used by SEC-1/SEC-3/SEC-4 and UPL-12.

SEC-2: PasswordDigest = Base64(SHA-1(nonce + created + password)); nonce and
created both required; replayed nonces and Created outside the freshness
window are refused. The policy (SEC-1), the refusal fault (SEC-3) and the
uplink level (SEC-4, UPL-12) are covered in test_security_middleware.py.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree
from zeep.wsse.username import UsernameToken as ZeepUsernameToken

from iec62676_2_33.errors import AuthenticationError, ConfigurationError
from iec62676_2_33.namespaces import SOAP_ENV, WSSE, WSU
from iec62676_2_33.security.access import (
    CredentialRejected,
    MalformedCredentials,
    UnknownUser,
    WrongPassword,
)
from iec62676_2_33.security.wsse import (
    PASSWORD_DIGEST,
    PASSWORD_TEXT,
    CreatedInFuture,
    CreatedTooOld,
    MissingNonceOrCreated,
    NonceCache,
    ReplayedNonce,
    UnsafeXml,
    UnsupportedPasswordType,
    UsernameToken,
    UsernameTokenVerifier,
    build_username_token,
    parse_created,
    parse_username_token,
    password_digest,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
USERS = {"admin": ("s3cr3t-Pässword", "Administrator"), "viewer": ("view-pw", "User")}


def lookup(name: str) -> tuple[str, str] | None:
    return USERS.get(name)


def verifier(**kw: object) -> UsernameTokenVerifier:
    return UsernameTokenVerifier(lookup, **kw)  # type: ignore[arg-type]


def envelope_with(security: etree._Element | None = None) -> etree._Element:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"env": SOAP_ENV})
    header = etree.SubElement(env, f"{{{SOAP_ENV}}}Header")
    if security is not None:
        header.append(security)
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    etree.SubElement(body, "{urn:test}Op")
    return env


def reference_digest(nonce: bytes, created: str, password: str) -> str:
    """SEC-2 formula, written out independently of the library."""
    sha = hashlib.sha1()
    sha.update(nonce)
    sha.update(created.encode("utf-8"))
    sha.update(password.encode("utf-8"))
    return base64.b64encode(sha.digest()).decode()


def handmade_token(
    *,
    username: str = "admin",
    password: str = "s3cr3t-Pässword",
    nonce: bytes = b"0123456789abcdef",
    created: str = "2024-05-01T12:00:00Z",
    ptype: str = PASSWORD_DIGEST,
) -> UsernameToken:
    return UsernameToken(
        username=username,
        password=reference_digest(nonce, created, password)
        if ptype == PASSWORD_DIGEST
        else password,
        password_type=ptype.rsplit("#", 1)[1],
        nonce=base64.b64encode(nonce).decode(),
        created=created,
    )


# --------------------------------------------------------------------- digest formula
def test_sec2_password_digest_matches_reference_formula() -> None:
    nonce = bytes(range(16))
    created = "2024-05-01T12:00:00.123Z"
    assert password_digest(nonce, created, "s3cr3t-Pässword") == reference_digest(
        nonce, created, "s3cr3t-Pässword"
    )
    # and a fixed vector (computed once with the formula above, pinned here)
    assert (
        password_digest(b"\x00" * 16, "2024-01-01T00:00:00Z", "pw")
        == "xbK05Xmd6IP0JQvOejRFNu+sDBM="
    )
    assert len(base64.b64decode(password_digest(b"n", "c", "p"))) == 20


def test_sec2_built_token_verifies_and_returns_user_and_level() -> None:
    nonce = b"N" * 16
    sec = build_username_token("admin", "s3cr3t-Pässword", NOW, nonce)
    assert etree.QName(sec) == etree.QName(WSSE, "Security")
    tok = sec.find(f"{{{WSSE}}}UsernameToken")
    created = tok.findtext(f"{{{WSU}}}Created")
    assert created == "2024-05-01T12:00:00.000Z"
    assert tok.find(f"{{{WSSE}}}Password").get("Type") == PASSWORD_DIGEST
    assert tok.findtext(f"{{{WSSE}}}Password") == reference_digest(
        nonce, created, "s3cr3t-Pässword"
    )
    assert tok.findtext(f"{{{WSSE}}}Nonce") == base64.b64encode(nonce).decode()
    token = parse_username_token(envelope_with(sec))
    assert token is not None
    assert verifier().verify(token, NOW + timedelta(seconds=1)) == ("admin", "Administrator")


def test_sec2_time_offset_moves_created() -> None:
    offset = timedelta(hours=-2, seconds=7)
    sec = build_username_token("viewer", "view-pw", NOW, time_offset=offset)
    token = parse_username_token(sec)
    assert token is not None and token.created == "2024-05-01T10:00:07.000Z"
    assert verifier().verify(token, NOW + offset) == ("viewer", "User")
    with pytest.raises(CreatedTooOld):
        verifier().verify(token, NOW)


# --------------------------------------------------------------------- zeep interop
@pytest.mark.parametrize("zulu", [False, True])
def test_sec2_zeep_username_token_interop(zulu: bool) -> None:
    created = NOW - timedelta(seconds=3)
    env = envelope_with()
    ZeepUsernameToken(
        "admin", "s3cr3t-Pässword", use_digest=True, created=created, zulu_timestamp=zulu
    ).apply(env, {})
    wire = etree.tostring(env)
    token = parse_username_token(wire)
    assert token is not None
    assert token.password_type == "PasswordDigest"
    assert token.created == ("2024-05-01T11:59:57Z" if zulu else "2024-05-01T11:59:57+00:00")
    assert verifier().verify(token, NOW) == ("admin", "Administrator")


def test_sec2_zeep_token_with_wrong_password_refused() -> None:
    env = envelope_with()
    ZeepUsernameToken("admin", "guess", use_digest=True, created=NOW).apply(env, {})
    token = parse_username_token(env)
    assert token is not None
    with pytest.raises(WrongPassword):
        verifier().verify(token, NOW)


def test_sec2_prefixes_do_not_matter() -> None:
    nonce = b"prefix-nonce-123"
    created = "2024-05-01T12:00:00Z"
    xml = f"""<S:Envelope xmlns:S="{SOAP_ENV}">
      <S:Header><x:Security xmlns:x="{WSSE}" xmlns:y="{WSU}">
        <UsernameToken xmlns="{WSSE}">
          <Username> admin </Username>
          <Password Type="wsse:PasswordDigest">
             {reference_digest(nonce, created, "s3cr3t-Pässword")}
          </Password>
          <Nonce>{base64.b64encode(nonce).decode()}</Nonce>
          <y:Created>{created}</y:Created>
        </UsernameToken></x:Security></S:Header>
      <S:Body><m:Op xmlns:m="urn:test"/></S:Body></S:Envelope>""".encode()
    token = parse_username_token(xml)
    assert token is not None and token.username == "admin"
    assert verifier().verify(token, NOW) == ("admin", "Administrator")


def test_sec2_no_token_is_none_and_token_in_body_is_ignored() -> None:
    env = envelope_with()
    body = env.find(f"{{{SOAP_ENV}}}Body")
    body.append(build_username_token("admin", "s3cr3t-Pässword", NOW))
    assert parse_username_token(env) is None
    assert parse_username_token(env.find(f"{{{SOAP_ENV}}}Header")) is None


def test_sec2_two_tokens_are_malformed() -> None:
    sec = build_username_token("admin", "s3cr3t-Pässword", NOW)
    sec.append(build_username_token("viewer", "view-pw", NOW)[0])
    with pytest.raises(MalformedCredentials):
        parse_username_token(envelope_with(sec))


def test_sec2_doctype_refused_when_parsing_bytes() -> None:
    xml = b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'
    with pytest.raises(UnsafeXml):
        parse_username_token(xml)


def test_sec2_token_repr_hides_secrets() -> None:
    token = handmade_token()
    assert token.password is not None and token.nonce is not None
    assert token.password not in repr(token)
    assert token.nonce not in repr(token)


# --------------------------------------------------------------------- refusals
def test_sec2_replayed_nonce_refused() -> None:
    v = verifier()
    token = handmade_token()
    assert v.verify(token, NOW) == ("admin", "Administrator")
    with pytest.raises(ReplayedNonce):
        v.verify(token, NOW + timedelta(seconds=10))
    # a fresh nonce from the same user still works
    assert v.verify(handmade_token(nonce=b"another-nonce-00"), NOW) == ("admin", "Administrator")


def test_sec2_failed_tokens_do_not_consume_nonces() -> None:
    v = verifier()
    with pytest.raises(WrongPassword):
        v.verify(handmade_token(password="nope"), NOW)
    assert len(v.nonce_cache) == 0
    assert v.verify(handmade_token(), NOW) == ("admin", "Administrator")


def test_sec2_stale_created_refused() -> None:
    v = verifier(freshness=300.0)
    assert v.verify(handmade_token(nonce=b"edge-300"), NOW + timedelta(seconds=300)) == (
        "admin",
        "Administrator",
    )
    with pytest.raises(CreatedTooOld):
        v.verify(handmade_token(nonce=b"edge-301"), NOW + timedelta(seconds=301))


def test_sec2_future_created_refused_beyond_small_skew() -> None:
    v = verifier()
    assert v.verify(handmade_token(nonce=b"skew-4"), NOW - timedelta(seconds=4)) == (
        "admin",
        "Administrator",
    )
    with pytest.raises(CreatedInFuture):
        v.verify(handmade_token(nonce=b"skew-6"), NOW - timedelta(seconds=6))


def test_sec2_password_text_refused_by_default() -> None:
    token = handmade_token(ptype=PASSWORD_TEXT)
    with pytest.raises(UnsupportedPasswordType):
        verifier().verify(token, NOW)
    assert verifier(allow_text=True).verify(token, NOW) == ("admin", "Administrator")
    with pytest.raises(WrongPassword):
        verifier(allow_text=True).verify(handmade_token(ptype=PASSWORD_TEXT, password="x"), NOW)


def test_sec2_unknown_password_type_refused() -> None:
    token = UsernameToken(username="admin", password="x", password_type="PasswordSHA256")
    with pytest.raises(UnsupportedPasswordType):
        verifier(allow_text=True).verify(token, NOW)


@pytest.mark.parametrize("missing", ["nonce", "created"])
def test_sec2_nonce_and_created_both_required(missing: str) -> None:
    full = handmade_token()
    token = UsernameToken(
        username=full.username,
        password=full.password,
        password_type=full.password_type,
        nonce=None if missing == "nonce" else full.nonce,
        created=None if missing == "created" else full.created,
    )
    with pytest.raises(MissingNonceOrCreated):
        verifier().verify(token, NOW)


def test_sec2_missing_elements_in_xml_are_reported() -> None:
    sec = build_username_token("admin", "s3cr3t-Pässword", NOW)
    tok = sec[0]
    tok.remove(tok.find(f"{{{WSU}}}Created"))
    token = parse_username_token(sec)
    assert token is not None and token.created is None
    with pytest.raises(MissingNonceOrCreated, match="no Created"):
        verifier().verify(token, NOW)


@pytest.mark.parametrize(
    "field, value",
    [
        ("nonce", "not*base64!"),
        ("password", "%%%"),
        ("created", "yesterday"),
        ("created", "2024-13-01T00:00:00Z"),
    ],
)
def test_sec2_malformed_fields_refused(field: str, value: str) -> None:
    full = handmade_token()
    fields = {
        "username": full.username,
        "password": full.password,
        "password_type": full.password_type,
        "nonce": full.nonce,
        "created": full.created,
    }
    fields[field] = value
    with pytest.raises(MalformedCredentials):
        verifier().verify(UsernameToken(**fields), NOW)  # type: ignore[arg-type]


def test_sec2_non_base64_nonce_encoding_refused() -> None:
    full = handmade_token()
    token = UsernameToken(
        username=full.username,
        password=full.password,
        password_type=full.password_type,
        nonce=full.nonce,
        nonce_encoding="http://example.org#HexBinary",
        created=full.created,
    )
    with pytest.raises(MalformedCredentials, match="EncodingType"):
        verifier().verify(token, NOW)


def test_sec2_unknown_user_and_wrong_password_look_the_same_to_the_peer() -> None:
    with pytest.raises(UnknownUser) as unknown:
        verifier().verify(handmade_token(username="nobody"), NOW)
    with pytest.raises(WrongPassword) as wrong:
        verifier().verify(handmade_token(password="wrong"), NOW)
    assert isinstance(unknown.value, CredentialRejected) and isinstance(
        wrong.value, AuthenticationError
    )
    assert unknown.value.peer_reason == wrong.value.peer_reason
    assert "nobody" not in unknown.value.peer_reason
    # local reasons are precise
    assert "unknown user 'nobody'" in str(unknown.value)
    assert "wrong password digest" in str(wrong.value)


def test_sec2_local_reasons_never_carry_secrets() -> None:
    token = handmade_token(password="Zq9-guess")
    with pytest.raises(WrongPassword) as exc:
        verifier().verify(token, NOW)
    assert token.password is not None and token.nonce is not None
    for secret in (token.password, token.nonce, "s3cr3t-Pässword", "Zq9-guess"):
        assert secret not in str(exc.value)


# --------------------------------------------------------------------- Created parsing
@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-05-01T12:00:00Z", NOW),
        ("2024-05-01T12:00:00+00:00", NOW),
        ("2024-05-01T14:00:00+02:00", NOW),
        ("2024-05-01T07:30:00-04:30", NOW),
        ("2024-05-01T12:00:00", NOW),
        ("2024-05-01T12:00:00.5Z", NOW + timedelta(milliseconds=500)),
        ("2024-05-01T12:00:00.1234567Z", NOW + timedelta(microseconds=123456)),
    ],
)
def test_sec2_created_formats(text: str, expected: datetime) -> None:
    assert parse_created(text) == expected


# --------------------------------------------------------------------- nonce cache
def test_sec2_nonce_cache_is_bounded() -> None:
    cache = NonceCache()
    assert cache.max_entries == 10000
    t = NOW.timestamp()
    for i in range(20000):
        assert cache.check_and_add(i.to_bytes(4, "big"), t + i * 0.001, t + i * 0.001)
    assert len(cache) <= 10000


def test_sec2_nonce_cache_eviction_raises_floor_so_no_replay_slips_through() -> None:
    cache = NonceCache(max_entries=2, window=300.0)
    assert cache.check_and_add(b"a", 100.0, 100.0)
    assert cache.check_and_add(b"b", 101.0, 101.0)
    assert cache.check_and_add(b"c", 102.0, 102.0)  # evicts a, still inside the window
    assert len(cache) == 2
    assert cache.floor == 100.0
    assert not cache.check_and_add(b"a", 100.0, 103.0)  # replay of the evicted nonce
    assert not cache.check_and_add(b"c", 102.0, 103.0)  # replay still in the cache
    assert cache.check_and_add(b"d", 103.0, 103.0)


def test_sec2_nonce_cache_drops_entries_older_than_window() -> None:
    cache = NonceCache(max_entries=10, window=300.0)
    assert cache.check_and_add(b"old", 0.0, 0.0)
    assert cache.check_and_add(b"new", 400.0, 400.0)
    assert len(cache) == 1
    assert cache.floor == float("-inf")


def test_sec2_cache_window_must_cover_freshness() -> None:
    with pytest.raises(ConfigurationError, match="window"):
        UsernameTokenVerifier(lookup, freshness=300.0, nonce_cache=NonceCache(window=60.0))
    with pytest.raises(ConfigurationError):
        NonceCache(max_entries=0)


def test_sec2_naive_now_rejected() -> None:
    with pytest.raises(ValueError):
        verifier().verify(handmade_token(), NOW.replace(tzinfo=None))
