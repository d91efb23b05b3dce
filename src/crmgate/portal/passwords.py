"""Portal passwords: argon2id hashes (RFC 9106), parameters from the settings, rehashed at the
next sign-in when they change; a sign-in for an unknown address costs the same as one for a
known address (OWASP ASVS 2.2: no user enumeration by timing)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a cap keeps a request from costing more


class Passwords:
    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # the hash an unknown address is checked against, so that it takes as long (made at
        # the first sign-in: a process that serves no portal never pays for it)
        self._decoy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash, the same work for a
        False."""
        if stored is None and self._decoy is None:
            self._decoy = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            return self._hasher.verify(stored or self._decoy or "", password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)

    def __repr__(self) -> str:
        return "Passwords(argon2id)"


def problem(password: str, email: str) -> str | None:
    """Why a new password is refused, or None (NIST SP 800-63B 5.1.1.2: length, not rules)."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if password.strip().lower() == email.strip().lower():
        return "Your password cannot be your e-mail address."
    return None
