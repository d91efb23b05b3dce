"""Least privilege (OWASP API1/API5:2023): roles, and the scope a restricted key carries.

A role orders what a user may do: ``viewer`` reads, ``member`` also writes CRM data, ``admin``
also manages users, keys and applications. A restricted key (``cgr_...``) acts for its user, and
only within its scope: some applications, entities x actions, passthrough or not, crmgate's own
resources x actions (``gateway``), until an expiry, from some client addresses. An operation
needs both its role and, from a restricted key, the scope's grant: authority never grows through
a key. A restricted key never mints a full key, raises a role or issues a key wider than itself
(``delegation_exceeds``). Every check here answers with what is missing (a sentence for the 403),
or None when the call is allowed; what a key may not use, it does not see either
(``visible_applications``).
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


class Resource(StrEnum):
    """crmgate's own resources, as an operation names what it needs and a restricted key's
    ``gateway`` scope grants it (``user`` is crmgate's user, not the CRM's unified entity)."""

    PLATFORM = "platform"
    APPLICATION = "application"
    USER = "user"
    KEY = "key"  # restricted keys
    AUDIT = "audit"


# What a restricted key may do on crmgate's own resources when its issuer says nothing: see the
# platforms and the applications it may use (a client needs both to work).
DEFAULT_GATEWAY: Mapping[Resource, frozenset[Action]] = {
    Resource.PLATFORM: frozenset({Action.READ}),
    Resource.APPLICATION: frozenset({Action.READ}),
}

# Each role can do what the roles before it can (the values of store.accounts.Role).
RANK: dict[str, int] = {"viewer": 0, "member": 1, "admin": 2}


def at_least(role: str, minimum: str) -> bool:
    return RANK[role] >= RANK[minimum]


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What a restricted key may reach. ``applications`` None means every application of the
    organisation; ``networks`` empty means any client address."""

    applications: frozenset[str] | None = None
    permissions: Mapping[str, frozenset[Action]] = field(default_factory=dict)
    passthrough: bool = False
    gateway: Mapping[Resource, frozenset[Action]] = field(
        default_factory=lambda: dict(DEFAULT_GATEWAY)
    )
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

    def missing_gateway(self, resource: Resource, action: Action) -> str | None:
        if action in self.gateway.get(resource, frozenset()):
            return None
        return f"this key lacks the gateway permission {resource.value}:{action.value}"

    # ---- delegation: a key issued by a restricted key -----------------------------------------

    def delegation_exceeds(self, wanted: KeyScope) -> str | None:
        """What ``wanted`` (a key this key would issue) holds that this key lacks, or None when
        it is within this key: a key cannot grant what it lacks."""
        if self.applications is not None:
            if wanted.applications is None:
                return "the new key may use every application; this key may not"
            extra = sorted(wanted.applications - self.applications)
            if extra:
                return f"this key may not use the application {extra[0][:40]}"
        for entity, actions in sorted(wanted.permissions.items()):
            for action in sorted(actions):
                if entity == ANY_ENTITY:
                    if action not in self.permissions.get(ANY_ENTITY, frozenset()):
                        return f"this key lacks the {action.value} permission on every entity"
                elif missing := self.missing_permission(entity, action):
                    return missing
        if wanted.passthrough and (missing := self.missing_passthrough()):
            return missing
        for resource, actions in sorted(wanted.gateway.items()):
            for action in sorted(actions):
                if missing := self.missing_gateway(resource, action):
                    return missing
        if self.expires_at is not None and (
            wanted.expires_at is None or wanted.expires_at > self.expires_at
        ):
            return f"the new key must expire by this key's expiry ({self.expires_at.isoformat()})"
        if self.networks and not (
            wanted.networks
            and all(any(_within(net, own) for own in self.networks) for net in wanted.networks)
        ):
            return "the new key's allowed_ips must lie within this key's"
        return None

    def default_gateway(self) -> dict[Resource, frozenset[Action]]:
        """The default gateway reads (``DEFAULT_GATEWAY``) as far as this key has them: what a
        key it issues gets when its issuer names no gateway permission."""
        return {
            resource: actions & self.gateway.get(resource, frozenset())
            for resource, actions in DEFAULT_GATEWAY.items()
            if actions & self.gateway.get(resource, frozenset())
        }

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
                "gateway": {
                    resource.value: sorted(action.value for action in actions)
                    for resource, actions in sorted(self.gateway.items())
                    if actions
                },
                "allowed_ips": [str(network) for network in self.networks],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, expires_at: datetime | None) -> KeyScope:
        data = json.loads(text)
        applications = data.get("applications")
        granted = data.get("gateway")  # keys issued before the gateway scope: its defaults
        return cls(
            applications=None if applications is None else frozenset(applications),
            permissions=permissions(data.get("permissions") or {}),
            passthrough=bool(data.get("passthrough")),
            gateway=dict(DEFAULT_GATEWAY) if granted is None else gateway_permissions(granted),
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


def gateway_permissions(raw: Mapping[str, Iterable[str]]) -> dict[Resource, frozenset[Action]]:
    """``{"audit": ["read"]}`` -> resource -> actions; ValueError names an unknown resource or
    action."""
    return {
        Resource(resource.lower()): frozenset(Action(action) for action in actions)
        for resource, actions in raw.items()
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


def _within(inner: Network, outer: Network) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]
