"""Public identifiers: a type prefix and 22 base62 characters (about 131 bits, unguessable)."""

from __future__ import annotations

import secrets

from crmgate.security.keys import BASE62


def new_id(prefix: str, length: int = 22) -> str:
    return f"{prefix}_" + "".join(secrets.choice(BASE62) for _ in range(length))
