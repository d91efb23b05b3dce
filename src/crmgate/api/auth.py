"""FastAPI dependencies: the caller's principal from X-API2CRM-USER-KEY, its rate limits (and
those of the application it reaches), and what each route needs (OWASP API1/API5:2023).

Every operation declares what it needs once, by the principal it takes: on crmgate's own routes a
``GatewayAccess`` (a role, and the resource x action a restricted key's ``gateway`` scope must
grant; some operations never take a restricted key), on the routes that reach a CRM a
``CrmAccess`` (a role, and the action on the entity a restricted key's scope must grant). A user
key is bounded by its user's role; a restricted key by the role *and* its scope, on every route,
so authority never grows through a key. ``declare_roles`` writes each route's role and
permission into the OpenAPI document (``x-crmgate-role``, ``x-crmgate-permission``), where
clients and the role-walking test read them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.routing import APIRoute, iter_route_contexts

from crmgate.api.clients import throttle_bucket
from crmgate.api.counting import SUBJECT_KEY
from crmgate.api.errors import ApiError, unauthorized
from crmgate.api.versions import version_limit
from crmgate.limits import STATE_KEY, RateLimits, Verdict
from crmgate.security.authn import AuthenticationFailed
from crmgate.security.scopes import Action, Resource, at_least
from crmgate.security.vault import DecryptionError
from crmgate.store.accounts import AccountError, Principal, Role

USER_KEY_HEADER = "X-API2CRM-USER-KEY"
APPLICATION_KEY_HEADER = "X-API2CRM-APPLICATION-KEY"


UserKey = Annotated[str | None, Header(alias=USER_KEY_HEADER, description="User Key")]


def client_address(request: Request) -> str | None:
    """The client's address, as the request middleware found it (api/clients.py)."""
    address = getattr(request.state, "client_address", None)
    return address if isinstance(address, str) else None


def _too_many(request: Request, verdict: Verdict, message: str, advice: str = "") -> ApiError:
    # RateLimitHeaders (limits.py) adds the RateLimit fields of this verdict to the answer.
    setattr(request.state, STATE_KEY, verdict)
    retry_after = verdict.retry_after(time.time())
    return ApiError(
        429,
        "RATE_LIMITED",
        f"{message}; retry in {retry_after} seconds{advice}",
        headers={"Retry-After": str(retry_after)},
    )


async def _authenticate(request: Request, user_key: str | None, *, internal: bool) -> Principal:
    services = request.app.state.services
    limits: RateLimits = services.limits
    # Failed authentications are counted per address (OWASP API2:2023), and once an address is
    # over its limit its wrong keys get 429 instead of 401. A right key is never refused for
    # what other requests from its address did: behind a shared NAT or proxy one client could
    # otherwise lock out everyone. Guessing is hopeless anyway (190 bits); the throttle keeps
    # the cost and the noise of a flood down (a malformed key never reaches the database, and
    # the audit events of a flood are folded). With that limit off (CRMGATE_RATE_LIMIT_BAD_KEYS="")
    # there is nothing to count or check.
    try:
        principal: Principal = await services.authenticator.authenticate(user_key)
    except AuthenticationFailed as failure:
        address = throttle_bucket(client_address(request)) if limits.bad_keys else None
        throttled = await limits.address_throttled(address) if user_key else None
        if throttled is not None:
            await services.audit.record(
                "limit.exceeded", details={"limit": "failed authentications of this address"}
            )
            raise _too_many(
                request, throttled, "too many failed authentications from this address"
            ) from None
        if user_key:  # a missing header is no guess
            await limits.authentication_failed(address)
        raise unauthorized(str(failure)) from None
    request.state.principal = principal
    # the organisation's usage counters (api/counting.py) count the answer, whatever it is
    setattr(request.state, SUBJECT_KEY, (principal.organisation_id, None))
    if principal.scope is not None:
        # a restricted key's address allow-list, on the address the middleware found
        _refuse(principal.scope.missing_address(client_address(request)))
    application_key = None if internal else request.headers.get(APPLICATION_KEY_HEADER)
    if application_key and (
        (principal.scope is not None and principal.scope.missing_application(application_key))
        or not await _exists(services, principal, application_key)
    ):
        # counted only once it is one of the organisation's applications (and within a
        # restricted key's): made-up keys would each open counters of their own (memory, or
        # Redis, for a month), and a key outside its scope would spend another application's
        # quota; the route answers 404 or 403 for it anyway
        application_key = None
    setattr(request.state, SUBJECT_KEY, (principal.organisation_id, application_key))
    # a deprecated API version's own limit (api/versions.py) counts in the same step
    version = version_limit(request.scope)
    verdict = await limits.hit_request(
        principal.organisation_id, principal.key_id, application_key, version
    )
    if not verdict.allowed:
        await services.audit.record(
            "limit.exceeded",
            organisation_id=principal.organisation_id,
            details={"limit": verdict.refusal()},
        )
        advice = ""
        if version is not None and verdict.refused_by(version.subject):
            advice = f", or move to a current version (see {version.link})"
        raise _too_many(request, verdict, f"{verdict.refusal()} is exceeded", advice)
    setattr(request.state, STATE_KEY, verdict)
    services.usage.record(principal.user_id, internal=internal)
    return principal


async def _exists(services: Any, principal: Principal, application_key: str) -> bool:
    # The read the route makes next (EntityService.connect): through the warm cache, so the
    # application is read (and its credentials decrypted) once per request at most, and not at
    # all while it is cached.
    try:
        await services.applications.store.credentials(principal.organisation_id, application_key)
    except AccountError:
        return False
    except DecryptionError:
        return True  # it is the organisation's; the route answers for its credentials
    return True


# ---- crmgate's own routes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayAccess:
    """What one of crmgate's own operations needs: a role, and from a restricted key the
    ``gateway`` grant of ``action`` on ``resource``. ``full_key`` operations mint a full key or
    raise a role: never with a restricted key, whatever its scope. ``application_param`` names
    the path parameter holding an application key, which must be within a restricted key's
    applications too."""

    role: Role
    resource: Resource
    action: Action
    full_key: bool = False
    application_param: str | None = None

    @property
    def required_role(self) -> Role:  # read by declare_roles
        return self.role

    @property
    def permission(self) -> str:
        return f"{self.resource.value}:{self.action.value}"

    async def __call__(self, request: Request, user_key: UserKey = None) -> Principal:
        principal = await _authenticate(request, user_key, internal=True)
        _require_role(principal, self.role)
        scope = principal.scope
        if scope is None:
            return principal
        if self.full_key:
            raise ApiError(
                403,
                "NOT_ALLOWED",
                "this operation needs a full user key (it issues a key or grants a role); "
                "a restricted key never does",
            )
        named = None
        if self.application_param is not None:
            named = str(request.path_params.get(self.application_param, ""))
        require_grant(principal, self.resource, self.action, named)
        return principal


def require_grant(
    principal: Principal, resource: Resource, action: Action, application_key: str | None = None
) -> None:
    """For what an operation does beyond its declaration (e.g. an OAuth session that
    re-authorizes an existing application): a restricted key's grant of ``action`` on
    ``resource``, and ``application_key`` within its applications. A user key passes."""
    if principal.scope is None:
        return
    _refuse(principal.scope.missing_gateway(resource, action))
    if application_key is not None:
        _refuse(principal.scope.missing_application(application_key))


# The principal parameter of each of crmgate's own operations.
PlatformReader = Annotated[
    Principal, Depends(GatewayAccess(Role.VIEWER, Resource.PLATFORM, Action.READ))
]
ApplicationsReader = Annotated[
    Principal, Depends(GatewayAccess(Role.VIEWER, Resource.APPLICATION, Action.READ))
]
ApplicationReader = Annotated[
    Principal,
    Depends(GatewayAccess(Role.VIEWER, Resource.APPLICATION, Action.READ, application_param="key")),
]
ApplicationCreator = Annotated[
    Principal, Depends(GatewayAccess(Role.ADMIN, Resource.APPLICATION, Action.CREATE))
]
ApplicationUpdater = Annotated[
    Principal,
    Depends(
        GatewayAccess(Role.ADMIN, Resource.APPLICATION, Action.UPDATE, application_param="key")
    ),
]
ApplicationDeleter = Annotated[
    Principal,
    Depends(
        GatewayAccess(Role.ADMIN, Resource.APPLICATION, Action.DELETE, application_param="key")
    ),
]
UserReader = Annotated[Principal, Depends(GatewayAccess(Role.VIEWER, Resource.USER, Action.READ))]
UserCreator = Annotated[
    Principal, Depends(GatewayAccess(Role.ADMIN, Resource.USER, Action.CREATE, full_key=True))
]
UserUpdater = Annotated[
    Principal, Depends(GatewayAccess(Role.MEMBER, Resource.USER, Action.UPDATE))
]
UserDeleter = Annotated[Principal, Depends(GatewayAccess(Role.ADMIN, Resource.USER, Action.DELETE))]
UserKeyRotator = Annotated[
    Principal, Depends(GatewayAccess(Role.MEMBER, Resource.KEY, Action.CREATE, full_key=True))
]
KeyReader = Annotated[Principal, Depends(GatewayAccess(Role.ADMIN, Resource.KEY, Action.READ))]
KeyCreator = Annotated[Principal, Depends(GatewayAccess(Role.ADMIN, Resource.KEY, Action.CREATE))]
KeyDeleter = Annotated[Principal, Depends(GatewayAccess(Role.ADMIN, Resource.KEY, Action.DELETE))]
AuditReader = Annotated[Principal, Depends(GatewayAccess(Role.ADMIN, Resource.AUDIT, Action.READ))]


def _require_role(principal: Principal, minimum: Role) -> None:
    if not at_least(principal.role, minimum):
        key = "a restricted key" if principal.scope is not None else "a key"
        raise ApiError(
            403,
            "NOT_ALLOWED",
            f"this operation needs the {minimum} role; this is {key} of a {principal.role}",
        )


def _refuse(missing: str | None) -> None:
    if missing is not None:
        raise ApiError(403, "NOT_ALLOWED", missing)


# ---- routes that reach a CRM ---------------------------------------------------------------------

GENERIC_ENTITY = "{entity_id}"  # the CRM's own objects, named in the path
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class CrmAccess:
    """What one kind of CRM route needs: a role, and from a restricted key the application it
    names, plus ``action`` on the entity (or the passthrough permission)."""

    role: Role
    action: Action | None = None  # None: the CRM's catalogue and fields (the application only)
    passthrough: bool = False

    def __call__(self, handler: H) -> H:
        """``READS(_list)``: the handler, marked with what its routes need."""

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            return await handler(*args, **kwargs)

        guarded.access = self  # type: ignore[attr-defined]
        guarded.__name__ = getattr(handler, "__name__", "handler")
        return guarded  # type: ignore[return-value]

    def principal(self, entity: str) -> Any:
        """The principal parameter of a route on ``entity`` (a unified entity, GENERIC_ENTITY,
        or "" for the routes that name none)."""
        access = self

        async def check(request: Request, user_key: UserKey = None) -> Principal:
            principal = await _authenticate(request, user_key, internal=False)
            _require_role(principal, access.role)
            scope = principal.scope
            if scope is None:
                return principal
            application_key = request.headers.get(APPLICATION_KEY_HEADER)
            if application_key:
                _refuse(scope.missing_application(application_key))
            if access.passthrough:
                _refuse(scope.missing_passthrough())
            if access.action is not None and entity:
                name = (
                    str(request.path_params.get("entity_id", ""))
                    if entity == GENERIC_ENTITY
                    else entity
                )
                _refuse(scope.missing_permission(name, access.action))
            return principal

        check.required_role = self.role  # type: ignore[attr-defined]
        check.permission = (  # type: ignore[attr-defined]
            "passthrough" if self.passthrough else self.action.value if self.action else None
        )
        return Annotated[Principal, Depends(check)]


def access_of(handler: Callable[..., Any]) -> CrmAccess:
    """What a CRM handler's routes need; a handler that declares nothing needs a member."""
    access = getattr(handler, "access", None)
    return access if isinstance(access, CrmAccess) else MEMBER_ONLY


READS = CrmAccess(Role.VIEWER, Action.READ)  # list, count, get, describe, aggregate
CREATES = CrmAccess(Role.MEMBER, Action.CREATE)
UPDATES = CrmAccess(Role.MEMBER, Action.UPDATE)
DELETES = CrmAccess(Role.MEMBER, Action.DELETE)
CATALOGUE = CrmAccess(Role.VIEWER)  # the CRM's objects and fields: the application only
MEMBER_ONLY = CrmAccess(Role.MEMBER)  # changes to the CRM's setup (refused: NOT_SUPPORTED)
PASSTHROUGH = CrmAccess(Role.MEMBER, passthrough=True)


def declare_roles(app: FastAPI, document: dict[str, Any]) -> None:
    """``x-crmgate-role``, ``x-crmgate-permission`` (what a restricted key's scope must grant)
    and ``x-crmgate-full-key`` (never a restricted key) on every operation whose principal
    declares them; operations without a key (health, the OAuth browser flow) have none."""
    paths = document.get("paths", {})
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or context.path_format not in paths:
            continue
        found = _declared(route)
        if found is None:
            continue
        for method in route.methods or ():
            operation = paths[context.path_format].get(method.lower())
            if operation is None:
                continue
            operation["x-crmgate-role"] = str(found.required_role)
            if getattr(found, "permission", None):
                operation["x-crmgate-permission"] = found.permission
            if getattr(found, "full_key", False):
                operation["x-crmgate-full-key"] = True  # never with a restricted key


def _declared(route: APIRoute) -> Any:
    level = list(route.dependant.dependencies)
    while level:
        for dependant in level:
            if hasattr(dependant.call, "required_role"):
                return dependant.call
        level = [sub for dependant in level for sub in dependant.dependencies]
    return None
