"""The restricted-key form: what its fields mean as the body of POST /v1/key (which the API's
own model then validates, so the form refuses what the API refuses, in the same words), and a
key's scope told in words for the list (security/scopes.py says what a scope is)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from crmgate.model.mapping import entity_schemas
from crmgate.security.scopes import ANY_ENTITY, Action, KeyScope

ACTIONS: tuple[Action, ...] = tuple(Action)
EVERY = "all"  # the applications choice: every application, those connected later too
SOME = "some"


@cache
def entities() -> tuple[str, ...]:
    """The rows of the permission table: any entity first, then the contract's entities."""
    return (ANY_ENTITY, *sorted(entity_schemas()))


def _text(data: FormData, name: str, limit: int) -> str:
    value = data.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _all(data: FormData, name: str) -> list[str]:
    return [value for value in data.getlist(name) if isinstance(value, str)]


@dataclass
class Submitted:
    """The form as it was sent (and shown again, as sent, when it is refused)."""

    description: str = ""
    user: str = ""
    applications_mode: str = EVERY
    applications: set[str] = field(default_factory=set)
    permissions: set[str] = field(default_factory=set)  # "contact:read"
    passthrough: bool = False
    expires: str = ""  # a date (YYYY-MM-DD): the key stops working at its start, UTC
    networks: str = ""  # one address or network a line

    @classmethod
    def read(cls, data: FormData) -> Submitted:
        return cls(
            description=_text(data, "description", 300),
            user=_text(data, "user", 60),
            applications_mode=SOME if _text(data, "applications_mode", 10) == SOME else EVERY,
            applications=set(_all(data, "application")),
            permissions=set(_all(data, "permission")),
            passthrough=_text(data, "passthrough", 10) == "yes",
            expires=_text(data, "expires", 40),
            networks=_text(data, "networks", 5000),
        )

    def body(self, default_user: str) -> dict[str, Any]:
        """The request body the API would get for this form (not checked here: the API's
        model checks it)."""
        granted: dict[str, list[str]] = {}
        for choice in sorted(self.permissions):
            entity, _, action = choice.partition(":")
            granted.setdefault(entity, []).append(action)
        body: dict[str, Any] = {
            "user": self.user or default_user,
            "applications": sorted(self.applications) if self.applications_mode == SOME else None,
            "permissions": granted,
            "passthrough": self.passthrough,
            "allowed_ips": [line.strip() for line in self.networks.splitlines() if line.strip()],
        }
        if self.description:
            body["description"] = self.description
        if self.expires:
            body["expires_at"] = f"{self.expires}T00:00:00Z"
        return body


def problems(error: ValidationError) -> str:
    """The refusal as the API words it (its 422 NOT_VALID message): ``field: problem; ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors()
    )


def summary(scope: KeyScope, applications: Mapping[str, str]) -> list[tuple[str, str]]:
    """What a key may reach, a line per part: (what, in words). ``applications`` names the
    organisation's applications by key."""
    if scope.applications is None:
        reach = "every application"
    elif not scope.applications:
        reach = "none"
    else:
        reach = ", ".join(
            sorted(applications.get(key, f"{key[:8]}… (deleted)") for key in scope.applications)
        )
    granted = "; ".join(
        f"{'every entity' if entity == ANY_ENTITY else entity}: "
        + ", ".join(action.value for action in ACTIONS if action in actions)
        for entity, actions in sorted(scope.permissions.items())
        if actions
    )
    gateway = "; ".join(
        f"{resource.value}: " + ", ".join(action.value for action in ACTIONS if action in actions)
        for resource, actions in sorted(scope.gateway.items())
        if actions
    )
    return [
        ("Applications", reach),
        ("Entities", granted or "none"),
        ("Passthrough", "yes" if scope.passthrough else "no"),
        ("crmgate", gateway or "none"),
        ("Addresses", ", ".join(str(net) for net in scope.networks) or "any"),
    ]


def expiry(scope: KeyScope, now: datetime) -> tuple[str, bool]:
    """When the key stops working, in words, and whether it has."""
    if scope.expires_at is None:
        return "never", False
    return scope.expires_at.strftime("%Y-%m-%d %H:%M UTC"), scope.expired(now)
