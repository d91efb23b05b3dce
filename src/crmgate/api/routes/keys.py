"""/v1/key (a crmgate addition): restricted keys. An admin issues a key for a user of the
organisation, limited to some applications, to entities x actions, to the passthrough or not, to
crmgate's own resources x actions, until an expiry, from some addresses (security/scopes.py).
A restricted key granted ``key:create`` issues keys for its own user within its own scope only.
The secret is shown once; listings show its hint."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crmgate.api.auth import KeyCreator, KeyDeleter, KeyReader
from crmgate.api.errors import ApiError
from crmgate.api.params import Page, PageSize
from crmgate.api.responses import JSONResponse
from crmgate.api.routes.users import ERRORS
from crmgate.api.schemas import Count, Timestamp
from crmgate.contract.shape import without_nulls
from crmgate.security.keys import IssuedKey
from crmgate.security.scopes import (
    ANY_ENTITY,
    DEFAULT_GATEWAY,
    Action,
    KeyScope,
    Resource,
    networks,
    permissions,
)
from crmgate.store.accounts import Principal
from crmgate.store.restricted_keys import RestrictedKeyStore, RestrictedKeyView

router = APIRouter(prefix="/v1/key", tags=["crmgate"], responses=ERRORS)

_ENTITY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_APPLICATION = re.compile(r"^[0-9a-f]{40}$")


class RestrictedKeyCreate(BaseModel):
    """A restricted key to issue. Left out: every application, no entity, no passthrough,
    reading platforms and applications only of crmgate's own resources, no expiry, any address
    (from a restricted key: its own applications, expiry and addresses)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(
        default=None, max_length=40, description="The user the key acts for (default: the caller)"
    )
    description: str | None = Field(default=None, max_length=200)
    applications: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Application keys the key may use; null: every application",
    )
    permissions: dict[str, list[Action]] = Field(
        default_factory=dict,
        max_length=100,
        description='Entity -> actions, e.g. {"contact": ["read", "update"]}; "*" is any entity',
        examples=[{"contact": ["read"], "account": ["read", "create"]}],
    )
    passthrough: bool = Field(default=False, description="May use /application/request")
    gateway: dict[Resource, list[Action]] | None = Field(
        default=None,
        description='crmgate\'s own resources -> actions, e.g. {"audit": ["read"]}; left '
        "out: platform and application reads. Issuing a full key (user creation, key rotation) "
        "and role changes are never granted",
        examples=[{"platform": ["read"], "application": ["read"], "audit": ["read"]}],
    )
    expires_at: datetime | None = Field(default=None, description="When the key stops working")
    allowed_ips: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Addresses or networks the key may be used from; empty: any",
        examples=[["203.0.113.0/24", "2001:db8::/48"]],
    )

    @field_validator("description")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("control characters are not allowed")
        return value

    @field_validator("applications")
    @classmethod
    def _application_keys(cls, value: list[str] | None) -> list[str] | None:
        for key in value or ():
            if not _APPLICATION.match(key):
                raise ValueError(f"{key[:40]!r} is not an application key")
        return value

    @field_validator("permissions")
    @classmethod
    def _entities(cls, value: dict[str, list[Action]]) -> dict[str, list[Action]]:
        for entity in value:
            if entity != ANY_ENTITY and not _ENTITY.match(entity):
                raise ValueError(f"{entity[:80]!r} is not an entity name")
        return value

    @field_validator("allowed_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                networks([cidr])
            except ValueError:
                raise ValueError(f"{cidr[:60]!r} is not an address or network") from None
        return value

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-31T00:00:00Z")
        return value.astimezone(UTC).replace(microsecond=0)

    def scope(self, issuer: KeyScope | None = None) -> KeyScope:
        """The scope asked for. What it leaves out is the default, or, when a restricted key
        issues it (``issuer``), that key's applications, expiry and addresses, and the default
        gateway reads that key has."""
        given = self.model_fields_set
        scope = KeyScope(
            applications=None if self.applications is None else frozenset(self.applications),
            permissions=permissions(
                {entity: [a.value for a in actions] for entity, actions in self.permissions.items()}
            ),
            passthrough=self.passthrough,
            gateway=(
                dict(DEFAULT_GATEWAY)
                if self.gateway is None
                else {resource: frozenset(actions) for resource, actions in self.gateway.items()}
            ),
            expires_at=self.expires_at,
            networks=networks(self.allowed_ips),
        )
        if issuer is None:
            return scope
        return replace(
            scope,
            applications=scope.applications if "applications" in given else issuer.applications,
            gateway=scope.gateway if self.gateway is not None else issuer.default_gateway(),
            expires_at=scope.expires_at if "expires_at" in given else issuer.expires_at,
            networks=scope.networks if "allowed_ips" in given else issuer.networks,
        )


class RestrictedKeyEntity(BaseModel):
    """A restricted key, without its secret."""

    id: str = Field(examples=["key_4Jx0cZ9mQ2wLr8TtYb1NaP"])
    user: str = Field(description="The user the key acts for")
    user_key_hint: str = Field(description="The key's first characters (not secret)")
    description: str | None = None
    applications: list[str] | None = Field(
        default=None, description="The applications it may use; left out: every application"
    )
    permissions: dict[str, list[str]]
    passthrough: bool
    gateway: dict[str, list[str]] = Field(description="crmgate's own resources -> actions")
    expires_at: Timestamp | None = Field(default=None, description="Left out: never")
    allowed_ips: list[str]
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(default=None, description="Left out: never used")

    @classmethod
    def of(cls, view: RestrictedKeyView) -> RestrictedKeyEntity:
        return cls.model_validate(
            {
                **view.scope.as_dict(),
                "id": view.id,
                "user": view.user_id,
                "user_key_hint": view.hint,
                "description": view.description,
                "created_at": view.created_at,
                "last_used_at": view.last_used_at,
            }
        )


class RestrictedKeyCreated(RestrictedKeyEntity):
    user_key: str = Field(description="The key itself: shown only in this answer")


def _store(request: Request) -> RestrictedKeyStore:
    store: RestrictedKeyStore = request.app.state.services.restricted_keys
    return store


@router.post(
    "",
    status_code=201,
    response_model=RestrictedKeyCreated,
    operation_id="createRestrictedKey",
    summary="Issue a restricted key (crmgate extension)",
)
async def create_key(
    request: Request, principal: KeyCreator, body: Annotated[RestrictedKeyCreate, Body()]
) -> JSONResponse:
    """Issue a key for a user of the organisation (admins only), limited to the scope given.
    The key (``user_key``) is in this answer only. It acts as its user, within its scope. From
    a restricted key (granted ``key:create``): a key of its own user, within its own scope."""
    view, issued = await issue(_store(request), principal, body)
    return JSONResponse({**rendered(view), "user_key": issued.secret}, status_code=201)


async def issue(
    store: RestrictedKeyStore, principal: Principal, body: RestrictedKeyCreate
) -> tuple[RestrictedKeyView, IssuedKey]:
    """Issue the key ``body`` asks for, once ``principal`` may issue keys at all: within the
    issuer's own scope when a restricted key issues it. The portal's form issues through here
    too, so both refuse the same keys with the same words."""
    issuer = principal.scope
    scope = body.scope(issuer)
    if issuer is not None:
        if body.user not in (None, principal.user_id):
            raise ApiError(403, "NOT_ALLOWED", "a restricted key issues keys for its own user only")
        exceeds = issuer.delegation_exceeds(scope)
        if exceeds is not None:
            raise ApiError(403, "NOT_ALLOWED", f"a key cannot grant what it lacks: {exceeds}")
    return await store.create(
        principal.organisation_id, body.user or principal.user_id, scope, body.description
    )


@router.get(
    "/list",
    response_model=list[RestrictedKeyEntity],
    operation_id="getRestrictedKeyCollection",
    summary="The organisation's restricted keys (crmgate extension)",
)
async def list_keys(
    request: Request, principal: KeyReader, page: Page = 1, page_size: PageSize = 25
) -> JSONResponse:
    """Unrevoked restricted keys, oldest first, without their secrets (admins only)."""
    views = await _store(request).list_page(
        principal.organisation_id, page=page, page_size=page_size
    )
    return JSONResponse([rendered(view) for view in views])


@router.get(
    "/count",
    response_model=Count,
    operation_id="getRestrictedKeyCount",
    summary="How many restricted keys (crmgate extension)",
)
async def count_keys(request: Request, principal: KeyReader) -> Count:
    """The number of unrevoked restricted keys of the organisation (admins only)."""
    return Count(total=await _store(request).count(principal.organisation_id))


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    operation_id="deleteRestrictedKey",
    summary="Revoke a restricted key (crmgate extension)",
)
async def delete_key(
    request: Request,
    principal: KeyDeleter,
    key_id: Annotated[str, Path(description="The key's id (key_...)", max_length=40)],
) -> Response:
    """Revoke the key for good; it gets 401 from now on (admins only)."""
    await _store(request).revoke(principal.organisation_id, key_id)
    return Response(status_code=204)


def rendered(view: RestrictedKeyView) -> dict[str, Any]:
    """A key as answers show it: what it does not have (an expiry, a description, ``applications``
    for a key of every application) is left out, never null."""
    shown: dict[str, Any] = without_nulls(RestrictedKeyEntity.of(view).model_dump(mode="json"))
    return shown
