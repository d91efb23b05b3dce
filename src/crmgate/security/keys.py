"""API key format, checksum and digest (GitHub-style tokens; HMAC-SHA256 under a server pepper).

A key reads ``cgu_`` + 32 base62 characters of randomness (190 bits) + 6 base62 characters of
CRC32 checksum. The prefix lets secret scanners recognise a leaked key; the checksum lets the
gateway refuse a mistyped or made-up key without touching the database. Only the HMAC-SHA256 of
a key under the pepper is stored: a high-entropy machine key needs one fast keyed hash, not a slow
password hash, and the pepper keeps a stolen database from being enough to test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass, field
from enum import StrEnum

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
HINT_LENGTH = 6  # random characters kept in clear to tell keys apart in listings and logs


class KeyKind(StrEnum):
    """The type prefix of a key; later kinds (restricted keys) get their own prefix."""

    USER = "cgu"
    RESTRICTED = "cgr"  # a key limited to a scope (security/scopes.py)


_SHAPE = re.compile(
    rf"^(?P<kind>[a-z]{{3}})_(?P<body>[0-9A-Za-z]{{{RANDOM_LENGTH}}})"
    rf"(?P<check>[0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)


def _base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, rest = divmod(number, 62)
        chars.append(BASE62[rest])
    return "".join(reversed(chars)).rjust(width, "0")


def _checksum(kind: str, body: str) -> str:
    return _base62(zlib.crc32(f"{kind}_{body}".encode()), CHECKSUM_LENGTH)


def generate(kind: KeyKind = KeyKind.USER) -> str:
    body = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return f"{kind.value}_{body}{_checksum(kind.value, body)}"


def is_well_formed(key: str, kind: KeyKind = KeyKind.USER) -> bool:
    """Shape and checksum only; says nothing about whether the key exists."""
    match = _SHAPE.match(key)
    if match is None or match["kind"] != kind.value:
        return False
    return hmac.compare_digest(match["check"], _checksum(match["kind"], match["body"]))


def is_well_formed_any(key: str) -> bool:
    """Shape and checksum of a key of any kind."""
    return any(is_well_formed(key, kind) for kind in KeyKind)


def hint(key: str) -> str:
    """The non-secret beginning of a key (``cgu_AbC123``), for listings and log lines."""
    return key[: len(KeyKind.USER.value) + 1 + HINT_LENGTH]


class KeyHasher:
    """Digests keys with HMAC-SHA256 under the server pepper."""

    __slots__ = ("_pepper",)

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("the key pepper must be at least 32 bytes")
        self._pepper = pepper

    def digest(self, key: str) -> bytes:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "KeyHasher(pepper=<hidden>)"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key at the one moment its full value exists: right after creation or rotation."""

    user_id: str
    key_id: str
    hint: str
    secret: str = field(repr=False)
