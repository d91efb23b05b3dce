"""User key format: prefix, entropy, checksum, digest (security/keys.py)."""

from __future__ import annotations

import math
import re

import pytest

from crmgate.security import keys
from crmgate.security.keys import BASE62, IssuedKey, KeyHasher


def test_key_has_prefix_and_base62_body() -> None:
    key = keys.generate()
    assert re.fullmatch(r"cgu_[0-9A-Za-z]{38}", key)


def test_key_carries_at_least_128_bits_of_randomness() -> None:
    assert keys.RANDOM_LENGTH * math.log2(len(BASE62)) >= 128
    generated = {keys.generate() for _ in range(2000)}
    assert len(generated) == 2000
    # Every base62 character shows up in random bodies: the alphabet is really used.
    assert set("".join(key[4:36] for key in generated)) == set(BASE62)


def test_generated_keys_are_well_formed() -> None:
    assert all(keys.is_well_formed(keys.generate()) for _ in range(200))


def test_any_single_character_typo_is_refused_offline() -> None:
    key = keys.generate()
    for position in range(4, len(key)):
        for replacement in "0aZ":
            if key[position] == replacement:
                continue
            typo = key[:position] + replacement + key[position + 1 :]
            assert not keys.is_well_formed(typo), (position, replacement)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "cgu_",
        "e2a6379ab878ae7e58119d4ec842bf9c",  # a Data2CRM-style hex key
        "xyz_" + "A" * 38,
        "CGU_" + "A" * 38,
        "cgu_" + "A" * 37,
        "cgu_" + "A" * 39,
        "cgu_" + "A" * 37 + "-",
    ],
)
def test_malformed_keys_are_refused(candidate: str) -> None:
    assert not keys.is_well_formed(candidate)


def test_swapped_adjacent_characters_are_refused() -> None:
    key = keys.generate()
    refused = 0
    for position in range(4, 35):
        a, b = key[position], key[position + 1]
        if a == b:
            continue
        swapped = key[:position] + b + a + key[position + 2 :]
        refused += not keys.is_well_formed(swapped)
        assert not keys.is_well_formed(swapped)
    assert refused > 0


def test_hint_reveals_only_the_prefix_and_six_characters() -> None:
    key = keys.generate()
    assert keys.hint(key) == key[:10]


def test_digest_is_keyed_by_the_pepper() -> None:
    key = keys.generate()
    one = KeyHasher(b"p" * 32)
    other = KeyHasher(b"q" * 32)
    assert one.digest(key) == one.digest(key)
    assert one.digest(key) != other.digest(key)
    assert len(one.digest(key)) == 32
    assert key.encode() not in one.digest(key)


def test_short_pepper_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        KeyHasher(b"short")


def test_reprs_do_not_show_secrets() -> None:
    key = keys.generate()
    issued = IssuedKey(user_id="usr_1", key_id="key_1", hint=keys.hint(key), secret=key)
    hasher = KeyHasher(b"pepper-canary-" * 4)
    assert key not in repr(issued)
    assert "pepper-canary" not in repr(hasher)
