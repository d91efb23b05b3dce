"""Request and response bodies, named as the contract's schemas are named."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)

from crmgate.connectors.catalogue import Platform, contract_platform_types
from crmgate.model.contract import ContractModel
from crmgate.model.contract import model as contract_model
from crmgate.store.accounts import Role, UserStatus, UserView
from crmgate.store.applications import ApplicationView

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# ISO 8601 with an explicit offset and no fractions: 2013-10-20T19:20:30+00:00
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(timespec="seconds"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# The gateway sets these; a client never writes them (readOnly in the document).
READ_ONLY: Any = {"readOnly": True}


def _never_sent(reason: str) -> dict[str, Any]:
    """A property of the reference that crmgate never sends, and why (read by
    `crmgate contract-coverage`, contract/coverage.py)."""
    return {"readOnly": True, "x-crmgate-differs": reason}


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(examples=["SERVICE_UNAUTHORIZED"])
    message: str
    errors: list[FieldError] | None = None


class Error(BaseModel):
    """The contract's error body; ``request_id`` is crmgate's addition."""

    type: str
    title: str = Field(examples=["Unauthorized"])
    status: int = Field(examples=[401])
    detail: ErrorDetail
    request_id: str | None = None


class Count(BaseModel):
    total: int = Field(json_schema_extra={"format": "int32"})


class InternalUserEntity(BaseModel):
    """A member of the caller's organisation. ``key`` is the user's id, not a secret."""

    key: str = Field(description="User id (not the secret user key)", json_schema_extra=READ_ONLY)
    name: str
    email: str
    phone: str | None = None
    organization: str = Field(description="Organisation name", json_schema_extra=READ_ONLY)
    roles: list[str]
    status: str = Field(examples=["active"])
    created_at: Timestamp = Field(json_schema_extra=READ_ONLY)
    updated_at: Timestamp = Field(json_schema_extra=READ_ONLY)
    last_used_at: Timestamp | None = Field(
        default=None,
        description="Last time one of the user's keys authenticated a request",
        json_schema_extra=READ_ONLY,
    )
    request_count: int = Field(
        description="Requests to connected CRMs in the date range",
        json_schema_extra={**READ_ONLY, "format": "int32"},
    )
    internal_request_count: int = Field(
        description="Requests to the gateway's own API",
        json_schema_extra={**READ_ONLY, "format": "int32"},
    )
    user_key_hint: str | None = Field(
        default=None,
        description="The non-secret beginning of the user's active key",
        json_schema_extra=READ_ONLY,
    )

    @classmethod
    def of(cls, view: UserView) -> InternalUserEntity:
        return cls(
            key=view.id,
            name=view.name,
            email=view.email,
            phone=view.phone,
            organization=view.organisation_name,
            roles=[view.role.value],
            status=view.status.value,
            created_at=view.created_at,
            updated_at=view.updated_at,
            last_used_at=view.last_used_at,
            request_count=view.request_count,
            internal_request_count=view.internal_request_count,
            user_key_hint=view.key_hint,
        )


class InternalUserEntityRelation(BaseModel):
    key: str = Field(description="User id")
    user_key: str | None = Field(
        default=None,
        description="The new user key: shown only in this response, store it now",
    )


# Fields of InternalUserEntity a client may send back unchanged after a GET; they are ignored.
_READ_ONLY = {
    "key",
    "organization",
    "created_at",
    "updated_at",
    "last_used_at",
    "request_count",
    "internal_request_count",
    "user_key_hint",
}


class _UserInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Read-only fields are accepted so a GET-modify-PUT round trip works, and then dropped.
    key: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    organization: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    created_at: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    updated_at: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    last_used_at: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    request_count: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})
    internal_request_count: Any = Field(
        default=None, exclude=True, json_schema_extra={"readOnly": True}
    )
    user_key_hint: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})

    @field_validator("name", "phone", check_fields=False)
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("control characters are not allowed")
        return value

    @field_validator("roles", check_fields=False)
    @classmethod
    def _one_role(cls, roles: list[Role] | None) -> list[Role] | None:
        if roles is not None and len(set(roles)) != 1:
            raise ValueError("give exactly one role: admin, member or viewer")
        return roles

    def changes(self) -> dict[str, Any]:
        data = {
            name: getattr(self, name) for name in self.model_fields_set if name not in _READ_ONLY
        }
        if "roles" in data:
            roles = data.pop("roles")
            if roles is not None:
                data["role"] = roles[0]
        return data


class InternalUserCreate(_UserInput):
    """A new member of the caller's organisation; the response carries the user's key once."""

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    phone: str | None = Field(default=None, max_length=64)
    roles: list[Role] | None = Field(
        default=None, description="['admin'], ['member'] (default) or ['viewer'] (reads only)"
    )
    status: UserStatus = UserStatus.ACTIVE


class InternalUserUpdate(_UserInput):
    """Fields to change; absent fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=64)
    roles: list[Role] | None = None
    status: UserStatus | None = None

    @field_validator("name", "email", "status")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null")
        return value


# ---- platforms ----------------------------------------------------------------------------------


class PlatformCredential(BaseModel):
    name: str
    label: str
    type: str = Field(description="string, url, email, password or token")
    required: bool
    secret: bool = Field(description="Never shown again once stored")


class Authorization(BaseModel):
    type: str = Field(description="key, user, oAuth-internal or oAuth-external-refresh")
    description: str
    platform_credential: list[PlatformCredential]


class PlatformEntity(BaseModel):
    type: str
    name: str
    authorization: list[Authorization]
    resource: dict[str, Any] = Field(
        description="What the platform's connector serves: entity -> methods"
    )

    @classmethod
    def of(cls, platform: Platform) -> PlatformEntity:
        return cls(
            type=platform.type,
            name=platform.name,
            authorization=[
                Authorization(
                    type=a.type,
                    description=a.description,
                    platform_credential=[
                        PlatformCredential(
                            name=f.name,
                            label=f.label,
                            type=f.type,
                            required=f.required,
                            secret=f.secret,
                        )
                        for f in a.credential
                    ],
                )
                for a in platform.authorization
            ],
            resource={
                "entities": {
                    name: list(entity.methods)
                    for name, entity in platform.entities.items()
                    if entity.methods
                }
            },
        )


# ---- applications -------------------------------------------------------------------------------

if TYPE_CHECKING:  # models built at import time from the contract's schemas

    class Company(ContractModel): ...

    class UserEntity(ContractModel): ...

    class RequestsLimit(ContractModel): ...

else:
    Company = contract_model("Company")
    UserEntity = contract_model("UserEntity")
    RequestsLimit = contract_model("RequestsLimit")


# The platform types the reference knows; crmgate's are among them (connectors/catalogue.py).
_PLATFORM_ENUM: dict[str, Any] = {"enum": list(contract_platform_types())}


class ApplicationEntityWrite(BaseModel):
    """A connected CRM: its platform, how crmgate authorizes, and the credentials for that."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Application platform type, e.g. Salesforce")
    authorization: str = Field(description="key, user, oAuth-internal or oAuth-external-refresh")
    credential: dict[str, Any] = Field(
        description="The fields the platform's authorization type declares "
        "(GET /v1/platform/{type})"
    )
    description: str = Field(default="", max_length=1000)


class ApplicationEntityUpdate(BaseModel):
    """Fields to change. A credential with the same authorization type replaces only the fields
    it names (e.g. a new access_token); with another type it must be complete."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = None
    authorization: str | None = None
    credential: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=1000)


class ApplicationEntityRelation(BaseModel):
    key: str = Field(description="Application key")


class _ApplicationCommon(BaseModel):
    """What the gateway shows of a connected CRM. Absent values are left out (never null): ``url``
    for a platform without an instance URL, ``last_used_at`` before the first call, and always
    ``user_id`` (see its description)."""

    key: str = Field(
        description="Application key (X-API2CRM-APPLICATION-KEY)", json_schema_extra=READ_ONLY
    )
    type: str = Field(
        description="Application platform type",
        json_schema_extra=_PLATFORM_ENUM,
    )
    authorization: str
    description: str
    is_authorized: bool = Field(json_schema_extra=READ_ONLY)
    company: Company | None = Field(default=None, json_schema_extra=READ_ONLY)
    url: str | None = Field(
        default=None, description="The CRM instance URL", json_schema_extra=READ_ONLY
    )
    user_id: int | None = Field(
        default=None,
        description="Never sent by crmgate: its user ids are strings (usr_...), see user_key",
        json_schema_extra=_never_sent(
            "crmgate's user ids are strings (usr_...), not the integer the reference has: the "
            "id is in user_key"
        ),
    )
    user_key: str | None = Field(
        default=None,
        description="Id of the user who connected the application (not a secret)",
        json_schema_extra=READ_ONLY,
    )
    credential: dict[str, str] = Field(
        description="The credential's non-secret fields (secret ones are never shown)"
    )
    created_at: Timestamp = Field(json_schema_extra=READ_ONLY)
    updated_at: Timestamp = Field(json_schema_extra=READ_ONLY)
    last_used_at: Timestamp | None = Field(default=None, json_schema_extra=READ_ONLY)


class ApplicationEntityList(_ApplicationCommon):
    # crmgate's addition to the contract's list item: the same live state as on one application
    requests_limit: RequestsLimit | None = Field(default=None, json_schema_extra=READ_ONLY)


class ApplicationEntity(_ApplicationCommon):
    me: UserEntity | None = Field(default=None, json_schema_extra=READ_ONLY)
    plan: str | None = Field(
        default=None,
        description="Never sent by crmgate: it has no plans",
        json_schema_extra=_never_sent("crmgate has no plans"),
    )
    requests_limit: RequestsLimit | None = Field(default=None, json_schema_extra=READ_ONLY)


def application_fields(view: ApplicationView) -> dict[str, Any]:
    identity = view.identity
    return {
        "key": view.key,
        "type": view.type,
        "authorization": view.authorization,
        "description": view.description,
        "is_authorized": view.is_authorized,
        "company": {"id": company} if (company := identity.get("company", {}).get("id")) else None,
        "url": view.public_credential.get("instance_url"),
        "user_id": None,
        "user_key": view.user_id,
        "credential": view.public_credential,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "last_used_at": view.last_used_at,
    }
