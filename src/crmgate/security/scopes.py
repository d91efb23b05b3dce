"""Least privilege (OWASP API1/API5:2023): roles, and the scope a restricted key carries.

A role orders what a user may do: ``viewer`` reads, ``member`` also writes CRM data, ``admin``
also manages users, keys and applications. A restricted key (``cgr_...``) acts for its user with
at most the member role, and only within its scope: some applications, entities x actions,
passthrough or not, until an expiry, from some client addresses. Every check here answers with
what is missing (a sentence for the 403), or None when the call is allowed; what a key may not
use, it does not see either (``visible_applications``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

ANY_ENTITY = "*"


class Action(StrEnum):
    READ = "read"  # list, count, get, describe, aggregate
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


# Each role can do what the roles before it can (the values of store.accounts.Role).
RANK: dict[str, int] = {"viewer": 0, "member": 1, "admin": 2}
RESTRICTED_KEY_ROLE = "member"  # the most a restricted key may act as


def at_least(role: str, minimum: str) -> bool:
    return RANK[role] >= RANK[minimum]


def capped(role: str, ceiling: str = RESTRICTED_KEY_ROLE) -> str:
    return role if RANK[role] <= RANK[ceiling] else ceiling


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What a restricted key may reach. ``applications`` None means every application of the
    organisation; ``networks`` empty means any client address."""

    applications: frozenset[str] | None = None
    permissions: Mapping[str, frozenset[Action]] = field(default_factory=dict)
    passthrough: bool = False
    expires_at: datetime | None = None
    networks: tuple[Network, ...] = ()

    # ---- checks: None when allowed, else what is missing --------------------------------------

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def missing_address(self, address: str | None) -> str | None:
        if not self.networks:
            return None
        ip = _ip(address)
        if ip is not None and any(ip in network for network in self.networks):
            return None
        return f"this key may not be used from the address {address or '(unknown)'}"

    def missing_application(self, application_key: str) -> str | None:
        if self.applications is None or application_key in self.applications:
            return None
        return f"this key may not use the application {application_key[:40]}"

    def missing_permission(self, entity: str, action: Action) -> str | None:
        name = entity.lower()
        granted = self.permissions.get(name, frozenset()) | self.permissions.get(
            ANY_ENTITY, frozenset()
        )
        if action in granted:
            return None
        return f"this key lacks the {action.value} permission on {name[:80]}"

    def missing_passthrough(self) -> str | None:
        if self.passthrough:
            return None
        return "this key lacks the passthrough permission (/application/request)"

    # ---- storage ------------------------------------------------------------------------------

    def to_json(self) -> str:
        """The scope as stored (without expiry, which has its own column)."""
        return json.dumps(
            {
                "applications": None if self.applications is None else sorted(self.applications),
                "permissions": {
                    entity: sorted(action.value for action in actions)
                    for entity, actions in sorted(self.permissions.items())
                },
                "passthrough": self.passthrough,
                "allowed_ips": [str(network) for network in self.networks],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, expires_at: datetime | None) -> KeyScope:
        data = json.loads(text)
        applications = data.get("applications")
        return cls(
            applications=None if applications is None else frozenset(applications),
            permissions=permissions(data.get("permissions") or {}),
            passthrough=bool(data.get("passthrough")),
            expires_at=expires_at,
            networks=networks(data.get("allowed_ips") or ()),
        )

    def as_dict(self) -> dict[str, object]:
        """The scope as the API shows it."""
        stored = json.loads(self.to_json())
        return {**stored, "expires_at": self.expires_at}


def visible_applications(scope: KeyScope | None) -> frozenset[str] | None:
    """The application keys a caller may see: a restricted key's, or None (a user key: every
    application of its organisation). Listings and counts filter by it in their query, so their
    pages and totals are those of the key; one application by key outside it is a 403 before
    anything is looked up (``missing_application``), whether or not it exists."""
    return None if scope is None else scope.applications


def permissions(raw: Mapping[str, Iterable[str]]) -> dict[str, frozenset[Action]]:
    """``{"contact": ["read", "update"]}`` -> entity (lower case) -> actions; ValueError names
    an unknown action."""
    return {
        entity.lower(): frozenset(Action(action) for action in actions)
        for entity, actions in raw.items()
    }


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """ValueError for anything that is not an address or a network."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
