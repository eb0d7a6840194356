"""Clause 6 resource addressing: reference tokens, remote tokens, token adaption, token context.

Covers ADR-1 (tokens, unique within the serving system), ADR-2 (``Prefix:LocalToken``),
ADR-3 (64 / 36 character limits, no colon, never truncated), ADR-4 (one prefix per
device), ADR-5 (reuse or map; no way back by stripping the prefix) and ADR-6 (token
context on the client side).
"""

from __future__ import annotations

import re

import pytest

from iec62676_2_33.domain.tokens import (
    MAPPED_ID_LENGTH,
    MAX_LOCAL_TOKEN,
    MAX_REMOTE_TOKEN,
    SEPARATOR,
    InvalidToken,
    RemoteToken,
    TokenContext,
    TokenContextError,
    TokenMapper,
    UnknownToken,
    validate_reference_token,
)
from iec62676_2_33.errors import ConfigurationError

UUID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"  # 36 characters


def test_constants_adr_2_adr_3() -> None:
    """ADR-2 / ADR-3: the separator and the two limits."""
    assert (MAX_REMOTE_TOKEN, MAX_LOCAL_TOKEN, SEPARATOR) == (64, 36, ":")
    assert len(UUID) == MAX_LOCAL_TOKEN


def test_errors_are_configuration_errors_adr_3() -> None:
    """ADR-3: violations are the library's ConfigurationError subclasses."""
    for cls in (InvalidToken, UnknownToken, TokenContextError):
        assert issubclass(cls, ConfigurationError)


# --- ADR-1 / ADR-3: tt:ReferenceToken -------------------------------------------------


def test_reference_token_boundaries_adr_1_adr_3() -> None:
    """ADR-1/ADR-3: 1..64 characters accepted and returned unchanged."""
    assert validate_reference_token("a") == "a"
    assert validate_reference_token("x" * 64) == "x" * 64


def test_reference_token_65_rejected_adr_3() -> None:
    """ADR-3: 65 characters are refused, never truncated."""
    with pytest.raises(InvalidToken) as info:
        validate_reference_token("x" * 65)
    assert str(info.value) == (
        f"reference token {'x' * 65!r} is 65 characters long; the limit is 64 (ADR-3); "
        "tokens are never truncated, use a shorter one"
    )


def test_reference_token_empty_rejected_adr_1() -> None:
    """ADR-1: an empty token is refused."""
    with pytest.raises(InvalidToken, match=r"^reference token is empty; "):
        validate_reference_token("")


def test_reference_token_counts_characters_not_bytes_adr_3() -> None:
    """ADR-3: the limit counts characters: 64 three-byte characters pass, 65 fail."""
    assert validate_reference_token("€" * 64) == "€" * 64
    with pytest.raises(InvalidToken, match="is 65 characters long"):
        validate_reference_token("€" * 65)


def test_reference_token_must_be_str_adr_1() -> None:
    """ADR-1: a tt:ReferenceToken is a string."""
    with pytest.raises(InvalidToken, match="must be a string, not bytes"):
        validate_reference_token(b"abc")  # type: ignore[arg-type]


# --- ADR-2 / ADR-3: RemoteToken --------------------------------------------------------


def test_parse_and_format_round_trip_adr_2() -> None:
    """ADR-2: ``Prefix:LocalToken`` parses into its parts and formats back."""
    token = RemoteToken.parse("cam1:profile_1")
    assert token == RemoteToken("cam1", "profile_1")
    assert (token.prefix, token.local) == ("cam1", "profile_1")
    assert token.format() == "cam1:profile_1"
    assert str(token) == "cam1:profile_1"
    assert RemoteToken.parse(str(token)) == token


def test_of_validates_and_round_trips_adr_2() -> None:
    """ADR-2: ``of`` builds the same value as ``parse``."""
    assert RemoteToken.of("32010001071321008015", UUID) == RemoteToken.parse(
        f"32010001071321008015:{UUID}"
    )


def test_local_36_accepted_adr_3() -> None:
    """ADR-3: a 36-character local token (a UUID) fits."""
    token = RemoteToken.parse(f"p:{UUID}")
    assert token.local == UUID


def test_local_37_rejected_with_exact_message_adr_3() -> None:
    """ADR-3: 37 characters are refused with the value and the limit; not truncated."""
    local = "a" * 37
    expected = (
        f"local token {local!r} is 37 characters long; the limit is 36 (ADR-3); "
        "tokens are never truncated, use a shorter one or map it"
    )
    with pytest.raises(InvalidToken) as info:
        RemoteToken.parse(f"p:{local}")
    assert str(info.value) == expected
    with pytest.raises(InvalidToken) as info:
        RemoteToken.of("p", local)
    assert str(info.value) == expected
    with pytest.raises(InvalidToken) as info:
        RemoteToken("p", local)
    assert str(info.value) == expected


def test_total_64_accepted_adr_3() -> None:
    """ADR-3: prefix 27 + ':' + local 36 = 64 characters fits."""
    text = "P" * 27 + ":" + UUID
    assert len(text) == 64
    assert RemoteToken.parse(text).format() == text


def test_total_65_rejected_with_exact_message_adr_3() -> None:
    """ADR-3: 65 characters are refused with the value and the limit; not truncated."""
    text = "P" * 28 + ":" + UUID
    with pytest.raises(InvalidToken) as info:
        RemoteToken.parse(text)
    assert str(info.value) == (
        f"remote token {text!r} is 65 characters long; the limit is 64 (ADR-3); "
        "tokens are never truncated, use a shorter prefix or local token"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "remote token is empty; expected 'Prefix:LocalToken' (ADR-2)"),
        ("abc", "remote token 'abc' has no ':' separator; expected 'Prefix:LocalToken' (ADR-2)"),
        (":abc", "remote token ':abc' has an empty prefix; expected 'Prefix:LocalToken' (ADR-2)"),
        (
            "abc:",
            "remote token 'abc:' has an empty local token; expected 'Prefix:LocalToken' (ADR-2)",
        ),
        (
            "a:b:c",
            (
                "local token 'b:c' contains ':'; a local token should contain no colon (ADR-3); "
                "pass allow_colon_in_local=True only for a token a lower VSS already prefixed"
            ),
        ),
        (
            "a: b",
            (
                "remote token 'a: b' contains whitespace or a control character (' ' at "
                "position 3); tokens must not contain them (ADR-2)"
            ),
        ),
        (
            "a:b\x00",
            (
                "remote token 'a:b\\x00' contains whitespace or a control character ('\\x00' at "
                "position 4); tokens must not contain them (ADR-2)"
            ),
        ),
        (
            "a:b\n",
            (
                "remote token 'a:b\\n' contains whitespace or a control character ('\\n' at "
                "position 4); tokens must not contain them (ADR-2)"
            ),
        ),
    ],
)
def test_parse_rejections_adr_2_adr_3(text: str, message: str) -> None:
    """ADR-2/ADR-3: every malformed remote token is refused with what was wrong."""
    with pytest.raises(InvalidToken) as info:
        RemoteToken.parse(text)
    assert str(info.value) == message


def test_parse_splits_at_first_colon_hierarchy_adr_2_adr_3() -> None:
    """ADR-2/ADR-3: ``Upper:Lower:tok`` from a lower VSS is accepted when allowed."""
    token = RemoteToken.parse("Upper:Lower:tok", allow_colon_in_local=True)
    assert (token.prefix, token.local) == ("Upper", "Lower:tok")
    assert token.format() == "Upper:Lower:tok"
    assert RemoteToken.of("Upper", "Lower:tok", allow_colon_in_local=True) == token


def test_hierarchy_still_limited_to_36_adr_3() -> None:
    """ADR-3: allowing a colon does not lift the 36-character limit."""
    with pytest.raises(InvalidToken, match="is 37 characters long; the limit is 36"):
        RemoteToken.parse("U:" + "L:" + "t" * 35, allow_colon_in_local=True)


def test_of_rejects_colon_or_space_in_prefix_adr_2() -> None:
    """ADR-2: a prefix with ':' would not round-trip; whitespace is refused too."""
    with pytest.raises(InvalidToken) as info:
        RemoteToken.of("a:b", "c")
    assert str(info.value) == (
        "remote token prefix 'a:b' contains ':'; the first ':' separates prefix and local "
        "token, so a prefix cannot contain one (ADR-2)"
    )
    with pytest.raises(InvalidToken, match="whitespace or a control character"):
        RemoteToken.of("a b", "c")
    with pytest.raises(InvalidToken, match="empty prefix"):
        RemoteToken.of("", "c")
    with pytest.raises(InvalidToken, match="contains ':'; a local token should contain no colon"):
        RemoteToken.of("a", "b:c")


def test_remote_token_is_frozen_and_hashable_adr_2() -> None:
    """ADR-2: remote tokens are values."""
    token = RemoteToken.parse("a:b")
    with pytest.raises(AttributeError):
        token.prefix = "x"  # type: ignore[misc]
    assert {token, RemoteToken("a", "b")} == {token}


# --- ADR-4 / ADR-5: TokenMapper -----------------------------------------------------------


def _mapper(*devices: str) -> TokenMapper:
    mapper = TokenMapper()
    for device in devices:
        mapper.register_device(device)
    return mapper


def test_mapper_reuses_short_tokens_adr_5() -> None:
    """ADR-5: a device token of <= 36 characters without colon is reused as it is."""
    mapper = _mapper("cam1")
    assert mapper.remote_for("cam1", "profile_1") == RemoteToken("cam1", "profile_1")
    assert mapper.remote_for("cam1", UUID) == RemoteToken("cam1", UUID)
    assert mapper.local_for("cam1:profile_1") == ("cam1", "profile_1")
    assert mapper.local_for(RemoteToken("cam1", UUID)) == ("cam1", UUID)


def test_mapper_same_prefix_for_every_token_of_a_device_adr_4() -> None:
    """ADR-4: every token of one device carries the same prefix."""
    mapper = TokenMapper()
    assert mapper.register_device("cam1", "32010001071321008015") == "32010001071321008015"
    tokens = [mapper.remote_for("cam1", t) for t in ("a", "b", "x" * 40, "p:q")]
    assert {t.prefix for t in tokens} == {"32010001071321008015"}
    assert mapper.prefix_of("cam1") == "32010001071321008015"


@pytest.mark.parametrize("device_token", ["x" * 37, "lower:tok", "with space", "€" * 37])
def test_mapper_maps_unusable_tokens_deterministically_adr_3_adr_5(device_token: str) -> None:
    """ADR-3/ADR-5: long, colon or whitespace tokens become a short id and map back."""
    first = _mapper("cam1").remote_for("cam1", device_token)
    mapper = _mapper("cam1")
    remote = mapper.remote_for("cam1", device_token)
    assert remote == first  # deterministic across mapper instances
    assert remote.prefix == "cam1"
    assert len(remote.local) == MAPPED_ID_LENGTH
    assert re.fullmatch(r"[A-Z2-7]+", remote.local)
    assert mapper.remote_for("cam1", device_token) == remote  # remembered
    assert mapper.local_for(remote) == ("cam1", device_token)
    assert mapper.local_for(remote.format()) == ("cam1", device_token)


def test_mapper_maps_when_prefix_leaves_no_room_adr_3_adr_5() -> None:
    """ADR-3/ADR-5: a 36-character token behind a 36-character prefix would be 73: mapped."""
    mapper = TokenMapper()
    mapper.register_device("cam1", UUID)
    remote = mapper.remote_for("cam1", UUID)
    assert remote.local != UUID
    assert len(remote.format()) == 36 + 1 + MAPPED_ID_LENGTH
    assert mapper.local_for(remote) == ("cam1", UUID)


def test_mapper_collision_with_reused_token_adr_1_adr_5() -> None:
    """ADR-1/ADR-5: a device token equal to an already issued mapped id gets another id."""
    mapper = _mapper("cam1")
    mapped = mapper.remote_for("cam1", "y" * 40)
    clash = mapper.remote_for("cam1", mapped.local)
    assert clash != mapped
    assert mapper.local_for(mapped) == ("cam1", "y" * 40)
    assert mapper.local_for(clash) == ("cam1", mapped.local)


def test_mapper_devices_are_separate_adr_1_adr_4() -> None:
    """ADR-1/ADR-4: the same device token on two devices gives two distinct remote tokens."""
    mapper = _mapper("cam1", "cam2")
    one, two = mapper.remote_for("cam1", "p1"), mapper.remote_for("cam2", "p1")
    assert (one.format(), two.format()) == ("cam1:p1", "cam2:p1")
    assert mapper.local_for(one) == ("cam1", "p1")
    assert mapper.local_for(two) == ("cam2", "p1")


def test_mapper_unknown_prefix_adr_5() -> None:
    """ADR-5: an unknown prefix is an UnknownToken."""
    mapper = _mapper("cam1")
    with pytest.raises(UnknownToken) as info:
        mapper.local_for("cam9:p1")
    assert str(info.value) == (
        "remote token 'cam9:p1': prefix 'cam9' belongs to no registered device (ADR-4)"
    )


def test_mapper_never_strips_prefix_adr_5() -> None:
    """ADR-5: a token never issued is refused, even when stripping would 'work'."""
    mapper = _mapper("cam1")
    with pytest.raises(UnknownToken) as info:
        mapper.local_for("cam1:p1")
    assert str(info.value) == (
        "remote token 'cam1:p1' was never issued for device 'cam1'; use a token received "
        "from this VSS, device tokens cannot be derived by stripping the prefix (ADR-5)"
    )


def test_mapper_malformed_remote_is_invalid_adr_2() -> None:
    """ADR-2: a malformed remote token is an InvalidToken, not an UnknownToken."""
    with pytest.raises(InvalidToken, match="has no ':' separator"):
        _mapper("cam1").local_for("cam1")


def test_mapper_unregistered_device_adr_4() -> None:
    """ADR-4: tokens of a device without a prefix cannot be issued."""
    with pytest.raises(UnknownToken) as info:
        TokenMapper().remote_for("cam1", "p1")
    assert str(info.value) == (
        "device 'cam1' is not registered; call register_device() first (ADR-4)"
    )


def test_mapper_registration_rules_adr_1_adr_4() -> None:
    """ADR-1/ADR-4: one prefix per device, one device per prefix, prefix fits the limits."""
    mapper = TokenMapper()
    assert mapper.register_device("cam1", "P1") == "P1"
    assert mapper.register_device("cam1", "P1") == "P1"  # idempotent
    with pytest.raises(InvalidToken) as info:
        mapper.register_device("cam1", "P2")
    assert str(info.value) == (
        "device 'cam1' already has prefix 'P1'; a VSS uses the same prefix for every token "
        "of one device, so 'P2' is refused (ADR-4)"
    )
    with pytest.raises(InvalidToken) as info:
        mapper.register_device("cam2", "P1")
    assert str(info.value) == (
        "prefix 'P1' is already used by device 'cam1'; every device needs a prefix of its "
        "own (ADR-1, ADR-4)"
    )
    with pytest.raises(InvalidToken, match="contains ':'"):
        mapper.register_device("a:b")
    mapper.register_device("cam3", "Q" * 43)
    with pytest.raises(InvalidToken) as info:
        mapper.register_device("cam4", "Q" * 44)
    assert str(info.value) == (
        f"device prefix {'Q' * 44!r} is 44 characters long; the limit is 43 so that prefix, "
        "':' and a 20-character mapped id fit in 64 (ADR-3); choose a shorter prefix"
    )


def test_mapper_rejects_empty_device_token_adr_1() -> None:
    """ADR-1: an empty device token is refused."""
    with pytest.raises(InvalidToken, match="must be a non-empty string"):
        _mapper("cam1").remote_for("cam1", "")


# --- ADR-6: TokenContext ------------------------------------------------------------------

A = "https://a.example/onvif/device_service"
B = "https://b.example/onvif/device_service"


def test_context_passes_for_issuer_adr_6() -> None:
    """ADR-6: a token goes back to the server that issued it."""
    context = TokenContext()
    context.record(A, "cam1:p1")
    context.check(A, "cam1:p1")
    assert context.origin("cam1:p1") == A
    assert context.origin("nope") is None


def test_context_refuses_other_server_adr_6() -> None:
    """ADR-6: a token issued by A is not sent to B; the message names both."""
    context = TokenContext()
    context.record(A, "cam1:p1")
    with pytest.raises(TokenContextError) as info:
        context.check(B, "cam1:p1")
    assert str(info.value) == (
        f"token 'cam1:p1' was issued by {A!r}, not by {B!r}; a client addresses each server "
        "only with tokens received from it (ADR-6); pass override=True to send it anyway"
    )
    context.check(B, "cam1:p1", override=True)


def test_context_refuses_unseen_token_unless_not_strict_adr_6() -> None:
    """ADR-6: a token never received is refused in strict mode only."""
    with pytest.raises(TokenContextError) as info:
        TokenContext().check(A, "p1")
    assert str(info.value) == (
        f"token 'p1' was never received from any server, so it cannot be sent to {A!r} "
        "(ADR-6); record it first or pass override=True"
    )
    TokenContext(strict=False).check(A, "p1")
    TokenContext().check(A, "p1", strict=False)
    TokenContext().check(A, "p1", override=True)
    with pytest.raises(TokenContextError):
        TokenContext(strict=False).check(A, "p1", strict=True)


def test_context_same_text_from_two_servers_adr_6() -> None:
    """ADR-6: coinciding tokens of two servers are both recorded; each server passes."""
    context = TokenContext()
    context.record(A, "Profile_1")
    context.record(B, "Profile_1")
    context.record(A, "Profile_1")  # recorded once
    context.check(A, "Profile_1")
    context.check(B, "Profile_1")
    assert context.origin("Profile_1") == A
    assert context.origins("Profile_1") == (A, B)
    with pytest.raises(TokenContextError) as info:
        context.check("https://c.example/", "Profile_1")
    assert f"was issued by {A!r}, {B!r}, not by 'https://c.example/'" in str(info.value)


def test_context_strict_refuses_different_server_even_if_not_strict_adr_6() -> None:
    """ADR-6: strict=False only covers unseen tokens, not tokens of another server."""
    context = TokenContext(strict=False)
    context.record(A, "t")
    with pytest.raises(TokenContextError):
        context.check(B, "t")


def test_context_record_rejects_empty_adr_6() -> None:
    """ADR-6: server key and token must be non-empty."""
    with pytest.raises(TokenContextError, match="server key must be a non-empty string"):
        TokenContext().record("", "t")
    with pytest.raises(InvalidToken, match="token must be a non-empty string"):
        TokenContext().record(A, "")
