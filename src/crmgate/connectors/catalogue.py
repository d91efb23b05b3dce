"""The platform catalogue: one TOML descriptor per CRM platform, the single source of what crmgate
knows about it (authorization types and their credential fields, OAuth endpoints, the hosts its
instance URLs may have, the connector that drives it).

A descriptor may ``extends`` another and override keys (SalesforceSandbox is Salesforce with other
login hosts). A platform is *listed* (``/v1/platform/list``, new applications) once a connector
with the descriptor's ``connector`` name is registered.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from yarl import URL

from crmgate.connectors.auth import BEARER, AuthScheme
from crmgate.connectors.describe import Describe, KnownField
from crmgate.connectors.jsonpath import steps
from crmgate.contract.coverage import load_reference
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import ObjectInfo

DESCRIPTORS = Path(__file__).with_name("platforms")
AuthorizationType = Literal["key", "user", "oAuth-internal", "oAuth-external-refresh"]
AUTHORIZATION_TYPES: tuple[str, ...] = ("key", "user", "oAuth-internal", "oAuth-external-refresh")


class CatalogueError(ValueError):
    pass


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CredentialField(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    type: Literal["string", "url", "email", "password", "token"] = "string"
    required: bool = False
    secret: bool = False


class Authorization(_Frozen):
    type: AuthorizationType
    description: str
    credential: tuple[CredentialField, ...]

    def field(self, name: str) -> CredentialField | None:
        return next((field for field in self.credential if field.name == name), None)


class OAuthEndpoints(_Frozen):
    authorize_url: str
    token_url: str
    # RFC 7009 revocation of a refresh token: absolute, or a path on the token endpoint's host;
    # the token in the form (the RFC's way), the query, or as the URL's last segment (HubSpot).
    revoke_url: str | None = None
    revoke_method: Literal["POST", "DELETE"] = "POST"
    revoke_in: Literal["form", "query", "path"] = "form"
    pkce: bool = True
    scopes: tuple[str, ...] = ()
    # Unified entity -> the scopes a flow asks for it, the first being the one its calls need
    # (Google: one per API). A flow may name the entities it authorizes (`entities=`): it asks
    # `scopes` and theirs; one naming none asks every entity's. An application whose token
    # answer granted scopes (`scope`) without an entity's is refused its calls (403
    # NOT_ALLOWED, naming the scope) before any reaches the CRM (connectors/entity_scopes.py).
    entity_scopes: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Sent as `prompt` so the CRM asks the user every time (no silent approval of a link
    # someone else sent them).
    prompt: str | None = None
    # More query parameters of the authorize URL (Zoho: access_type=offline, without which it
    # gives no refresh token); they never replace the flow's own (state, redirect_uri, ...).
    authorize_params: dict[str, str] = Field(default_factory=dict)
    scope_separator: str = " "  # RFC 6749 joins scopes with spaces; Zoho with commas
    # How the client authenticates at the token endpoint (RFC 6749 section 2.3.1).
    client_auth: Literal["form", "basic"] = "form"
    # How the token endpoint is called: RFC 6749's POST of a form, or a GET with the same
    # parameters in the query (Bitrix24's token server); such a URL holds the client secret
    # and the code or refresh token, and is never logged or shown.
    token_method: Literal["POST", "GET"] = "POST"  # noqa: S105 - an HTTP method
    # The authorization is for one instance the client names (Dynamics 365: the organisation,
    # whose URL is part of the scope): the flow needs `instance_url` (checked against the
    # platform's hosts), `{instance}` in a scope is replaced by it, and it becomes the
    # credential's instance_url.
    instance_scoped: bool = False
    # Where the token answer names the instance to call (it becomes the credential's
    # instance_url; checked against the platform's hosts).
    instance_in: str = ""
    # Where a token endpoint's refusal says its code (RFC 6749's `error`, HubSpot's `status`),
    # and the CRM's own codes as RFC 6749's (invalid_grant: authorize again).
    error_in: tuple[str, ...] = ("error",)
    error_codes: dict[str, str] = Field(default_factory=dict)
    # The description's first line only (Entra ID's goes on with trace ids, kept out of messages).
    error_first_line: bool = False
    # A refusal a CRM's code turns into `temporarily_unavailable` (a throttled token endpoint)
    # is a rate limit: retry after these seconds.
    retry_after: int = Field(default=60, ge=1, le=86_400)
    # Each region's login server has its own token endpoint (Zoho's data centres), at the
    # paths of token_url and revoke_url: a refresh and a revocation go to the region of the
    # credential's instance, a code to the region the OAuth callback names in these
    # parameters (its login server, its region's name), if it is one of the platform's.
    regional: bool = False
    callback_login_in: str = ""
    callback_region_in: str = ""
    # The OAuth callback names the instance the user chose in this parameter (Kommo's
    # `referer`): it must be one of the platform's hosts, becomes the credential's instance_url,
    # and the instance's own token endpoint (token_url's path on it) takes the code and every
    # refresh.
    callback_instance_in: str = ""
    # The flow may name the instance (instance_url, optional): the authorize URL is then on the
    # login server of its region (Kommo's www.kommo.com, amoCRM's www.amocrm.ru), and the
    # instance a callback names must be of the region whose login server authorized.
    authorize_in_region: bool = False
    # The refresh_token grant repeats the authorization's redirect_uri (Kommo's token endpoint).
    refresh_redirect_uri: bool = False


ContractCode = Literal[
    "UNAUTHORIZED",
    "NOT_ALLOWED",
    "API_NOT_ENABLED",
    "ENTITY_NOT_FOUND",
    "RATE_LIMITED",
    "NOT_VALID",
    "CRM_UNAVAILABLE",
]


class Paging(_Frozen):
    """One way of reading a list (the descriptor's ``[paging]``). Paths are JSON paths
    (connectors/jsonpath.py) in one answer."""

    kind: Literal["cursor", "next_link", "offset", "page", "link_header", "search", "whole"] = (
        "cursor"
    )
    records: str = "$"  # where the batch's records are
    # cursor, search: the next token; next_link: the next URL (the first path that finds one)
    next: tuple[str, ...] = ()
    # a flag saying more follow (has_more, more_records); without one a full batch says so
    more: tuple[str, ...] = ()
    param: str = ""  # where the token, offset or page number is sent (query, or search body)
    size_param: str = ""  # where the batch size is sent, if the CRM takes one
    batch: int = Field(default=100, ge=1, le=10_000)
    first_page: int = 1  # page: the number of the first page
    cap: int = Field(default=10_000, ge=1)  # whole: at most this many records
    objects: dict[str, Paging] = Field(default_factory=dict)  # per object, where it differs

    @field_validator("records")
    @classmethod
    def _records(cls, value: str) -> str:
        steps(value)
        return value

    @field_validator("next", "more", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        paths = (value,) if isinstance(value, str) else tuple(value)
        for path in paths:
            steps(path)
        return paths

    def of(self, name: str) -> Paging:
        """The paging of object ``name`` (its own where the descriptor gives one)."""
        return self.objects.get(name, self)


class ErrorFormat(_Frozen):
    """Where a CRM's error answer says what went wrong, and what its own codes mean in the
    contract's: read by the one error ladder (connectors/errors.py). Paths are JSON paths:
    ``a.b``, ``a[0]``, ``a[*]``, ``a[key=value]`` (the list's elements with that key), ``$``
    for the answer itself."""

    # Where the error object is in the answer: the first path that finds a JSON object. The
    # paths below are read in it.
    entry: tuple[str, ...] = ("$",)
    # The CRM's reason and its own code: the first path that finds a non-empty value.
    message: tuple[str, ...] = ("message",)
    code: tuple[str, ...] = ()
    # The fields the CRM names as wrong: every value the paths find ...
    fields: tuple[str, ...] = ()
    # ... and group 1 of each match of these regular expressions in the message.
    fields_in_message: tuple[str, ...] = ()
    # Where the reason is within the message: group 1 of the first of these regular expressions
    # that matches (Dynamics' plug-in failures nest the inner exception's after a trace).
    message_within: tuple[str, ...] = ()
    # Headers that say when to retry (seconds, or a moment in epoch seconds or milliseconds),
    # the first that says wins; the seconds when none does.
    retry_after: tuple[str, ...] = ("Retry-After",)
    # Paths in the error object to the seconds to wait (Close's rate_reset), where no header says.
    retry_after_in: tuple[str, ...] = ()
    retry_after_default: int = Field(default=60, ge=1, le=86_400)
    # Paths to objects of field -> reason (Close's field-errors): each key is a refused field,
    # and "field: reason; ..." the message where the answer gives none.
    field_reasons: tuple[str, ...] = ()
    # The CRM's codes -> the contract's; a code not here is judged by the HTTP status (401
    # UNAUTHORIZED, 403 NOT_ALLOWED, 404 ENTITY_NOT_FOUND, 429 RATE_LIMITED, 400/409/412/422
    # NOT_VALID, anything else CRM_UNAVAILABLE). UNAUTHORIZED means the session expired (the
    # token manager renews it once).
    codes: dict[str, ContractCode] = Field(default_factory=dict)

    @field_validator("entry", "message", "code", "fields", "retry_after_in", "field_reasons")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            steps(path)  # ValueError if it is not a path
        return value

    @field_validator("fields_in_message", "message_within")
    @classmethod
    def _patterns(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{info.field_name} {pattern!r}: {error}") from None
            if compiled.groups < 1:
                raise ValueError(f"{info.field_name} {pattern!r}: has no group for what it finds")
        return value


class BatchFormat(_Frozen):
    """The descriptor's ``[bulk]``: how many records one call of the CRM's JSON batch endpoint
    takes, and where its answer says what became of each (connectors/batch.py)."""

    size: int = Field(default=100, ge=1, le=10_000)
    results: str = "$"  # the per-item results, one per item sent, in order (unless `key`)
    ok: str = "success"  # a test (connectors/jsonpath.py) a result passes when it succeeded
    id: str = "id"  # where a result names its record (the id sent where it does not)
    error: str = "$"  # where a failed result's error answer is, read with [errors]
    # Error statuses whose answer still holds the per-item results (Zoho answers 400 when
    # every record of a write failed, each saying why).
    results_on: tuple[int, ...] = ()
    # For a batch endpoint that answers in any order (HubSpot's): where a result names the
    # item it answers (the first path found: a trace the item was sent with, or its id) ...
    key: tuple[str, ...] = ()
    # ... and where failed items are listed apart from the results, naming the keys of theirs.
    errors: str = ""
    error_keys: str = ""

    @field_validator("results", "id", "error")
    @classmethod
    def _path(cls, value: str) -> str:
        steps(value)
        return value

    @field_validator("key", "errors", "error_keys")
    @classmethod
    def _optional_paths(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for path in (value,) if isinstance(value, str) else value:
            if path:
                steps(path)
        return value


class ObjectEntry(_Frozen):
    """What the descriptor says of one of the CRM's objects before any describe: its labels,
    its name for one record, which of the CRM's APIs serves it, where its fields are described
    (or, for an object the CRM does not describe, its fields), and the type of its saved
    filters (for a CRM that has those: Pipedrive)."""

    label: str
    plural: str = ""  # the label's plural ("<label>s" when not given)
    singular: str = ""
    api: str = ""
    fields_at: str = ""
    filter_type: str = ""
    read_only: bool = False  # read through the API, never written (users, owners)
    listed: bool = True  # in the CRM's object list (an owner is no object of HubSpot's)
    id_field: str = ""  # the column holding a record's id (the describe's id_field if not given)
    fields: tuple[KnownField, ...] = ()
    # The CRM's types of fields a write must shape before any describe was read (lookups).
    types: dict[str, str] = Field(default_factory=dict)
    # Native column -> the list's own query parameter, for `eq` (no query language needed) ...
    parameters: dict[str, str] = Field(default_factory=dict)
    # ... and the columns its list sorts by (one key).
    sorts: tuple[str, ...] = ()
    # A nested value's parts shown as flat columns: key -> its parts beside `value`, shown as
    # <key> (the value) and <key>_<part> (Pipedrive's address objects).
    parts: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # Related object -> the association type a create links it with (HubSpot's type ids), and
    # the label an answer gives the primary one, where there is a primary.
    links: dict[str, int] = Field(default_factory=dict)
    primary_links: dict[str, str] = Field(default_factory=dict)

    def info(self, name: str, id_field: str, custom: bool = False) -> ObjectInfo:
        """The object as the descriptor describes it (with its known fields, if any)."""
        writable = not self.read_only
        return ObjectInfo(
            name,
            self.label,
            self.plural or f"{self.label}s",
            custom,
            True,
            writable,
            writable,
            writable,
            tuple(known.info(writable) for known in self.fields),
            self.id_field or id_field,
        )


class Verification(_Frozen):
    """The credential check (``verify``): one GET on the instance whose answer names who the
    credential acts as, read at these JSON paths (the first value each finds). ``then`` is a
    second GET for what the first does not say (the user's own record), its path and query
    values formatted with the first's values (``{user_id}``, ``{email}``); where it fails, what
    it would say stays unknown."""

    path: str  # relative to the instance (or the api_url)
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    then: Verification | None = None
    user_id: str = ""
    name: tuple[str, ...] = ()  # the values found joined by a space (first and last name)
    email: str = ""
    username: str = ""
    company_id: str = ""
    company_name: str = ""

    @field_validator("user_id", "email", "username", "company_id", "company_name")
    @classmethod
    def _paths(cls, value: str) -> str:
        if value:
            steps(value)
        return value

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> tuple[str, ...]:
        paths = (value,) if isinstance(value, str) else tuple(value)
        for path in paths:
            steps(path)
        return paths


def url_host(url: str) -> str:
    """``host`` or ``host:port`` (a port other than 443) of an https ``url`` without user
    information; empty for anything else (an address crmgate would never send a secret to)."""
    try:
        parsed = URL(url)
        host = (parsed.raw_host or "").lower().rstrip(".")
        port = parsed.port
    except (ValueError, TypeError, UnicodeError):
        return ""
    if parsed.scheme != "https" or parsed.raw_user or parsed.raw_password or not host:
        return ""
    return host if port in (None, 443) else f"{host}:{port}"


class Polymorphic(_Frozen):
    """A lookup that may point to records of several objects (Zoho's What_Id): where a record
    says which object (a field of the record's own, or a path in the lookup's value), and the
    objects it may point to. The entity maps show it as one column per object (What_Id.Deals):
    connectors/polymorphic.py."""

    object_field: str = ""  # the record's field naming the object ($se_module) ...
    object_in: str = ""  # ... or where the lookup's value names it (module.api_name)
    targets: tuple[str, ...] = ()
    targets_in: str = ""  # where the field's describe names more of them
    # How object_field names a target where it differs from its name (Bitrix24's
    # OWNER_TYPE_ID: 3 for contact), and whether the lookup holds the bare id (not {id}).
    codes: dict[str, str] = Field(default_factory=dict)
    bare: bool = False

    @field_validator("object_in", "targets_in")
    @classmethod
    def _path(cls, value: str) -> str:
        if value:
            steps(value)
        return value


class Region(_Frozen):
    """One of a CRM's regions (Zoho's data centres, Microsoft's national clouds): the hosts of
    its instances, and its own login (accounts) server, the only one that sees the client
    secret for them. ``name`` is the CRM's own (Zoho's OAuth callback ``location``)."""

    name: str
    login_url: str
    hosts: tuple[str, ...] = ()  # exact instance hosts ...
    host_suffixes: tuple[str, ...] = ()  # ... or their endings (.microsoftdynamics.us)

    def holds(self, host: str) -> bool:
        return host in self.hosts or any(host.endswith(end) for end in self.host_suffixes)


class TypedList(_Frozen):
    """A list of a record whose items each carry a label (a contact's emails and phones), shown
    as one flat column per label, ``<prefix>_<label>`` (connectors/lists.py)."""

    name: str  # the record's list ("emails")
    prefix: str  # its columns' prefix ("email"): email_work, email_home, ...
    label: str = "type"  # where an item says its label ...
    value: str = "value"  # ... and its value
    primary: str = ""  # where an item says it is the primary one (shown first; written first)
    labels: tuple[str, ...] = ()  # the labels with a column (any other is "other"); none: any
    default: str = "other"  # the label of an item that names none


class Platform(_Frozen):
    type: str
    name: str
    connector: str | None = None
    api_version: str | None = None
    login_url: str | None = None
    # The API's address where it is the same for every account (HubSpot); where each account
    # has its own (Salesforce), the credential's instance_url says it.
    api_url: str | None = None
    instance_hosts: tuple[str, ...] = ()
    oauth: OAuthEndpoints | None = None
    authorization: tuple[Authorization, ...]
    verify: Verification | None = None
    # The CRM's objects a connector knows before any describe (by the CRM's name).
    objects: dict[str, ObjectEntry] = Field(default_factory=dict)
    # The records' typed lists shown as flat columns (connectors/lists.py).
    lists: tuple[TypedList, ...] = ()
    # How the CRM describes its objects and fields (connectors/describe.py).
    describe: Describe = Field(default_factory=Describe)
    # Where the CRM's instances are, per region, with each region's login server; a platform
    # with regions and no instance_hosts allows exactly the regions' hosts.
    regions: tuple[Region, ...] = ()
    # Record id prefix -> unified entity, where ids tell their kind (Salesforce: 003 = contact).
    id_prefixes: dict[str, str] = Field(default_factory=dict)
    # Lookups that may point to several objects, by the CRM's column name.
    polymorphic: dict[str, Polymorphic] = Field(default_factory=dict)
    errors: ErrorFormat = Field(default_factory=ErrorFormat)
    bulk: BatchFormat = Field(default_factory=BatchFormat)
    # How calls carry the credential, per authorization type ("default" for the others):
    # a Bearer token unless said (connectors/auth.py).
    auth: dict[str, AuthScheme] = Field(default_factory=dict)
    # How lists are read a batch at a time (connectors/paging.py), per object where it differs.
    paging: Paging = Field(default_factory=Paging)
    entities: dict[str, EntityMap] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_entities(cls, data: Any) -> Any:
        # Each map learns its unified entity name from its key (and checks its fields with it),
        # and the platform's id prefixes (for polymorphic relations).
        if not isinstance(data, Mapping) or not isinstance(data.get("entities"), Mapping):
            return data
        prefixes = data.get("id_prefixes") or {}
        entities = {
            name: {**spec, "entity": name, "id_prefixes": prefixes}
            if isinstance(spec, Mapping)
            else spec
            for name, spec in data["entities"].items()
        }
        return {**data, "entities": entities}

    @model_validator(mode="after")
    def _scoped_entities(self) -> Platform:
        scoped = self.oauth.entity_scopes if self.oauth else {}
        unknown = sorted(set(scoped) - set(self.entities))
        if unknown or not all(scoped.values()):
            raise ValueError(f"oauth.entity_scopes: each names scopes of an entity ({unknown})")
        return self

    @model_validator(mode="after")
    def _region_hosts(self) -> Platform:
        if self.regions and not self.instance_hosts:
            hosts = tuple(host for region in self.regions for host in region.hosts)
            object.__setattr__(self, "instance_hosts", hosts)
        return self

    def region_of(self, url: str) -> Region | None:
        """The region whose instance ``url`` is (None: none of them, e.g. a simulator)."""
        host = url_host(url)
        return next((region for region in self.regions if host and region.holds(host)), None)

    def region_at(self, login_url: str = "", name: str = "") -> Region | None:
        """The region whose login server is ``login_url`` and whose name is ``name`` (each
        where given); None for anything else, however it is spelled."""
        host = url_host(login_url) if login_url else ""
        if (login_url and not host) or not (login_url or name):
            return None
        for region in self.regions:
            if (not host or host == url_host(region.login_url)) and name in ("", region.name):
                return region
        return None

    @field_validator("authorization")
    @classmethod
    def _distinct(cls, value: tuple[Authorization, ...]) -> tuple[Authorization, ...]:
        kinds = [authorization.type for authorization in value]
        if len(set(kinds)) != len(kinds):
            raise ValueError("an authorization type is declared twice")
        return value

    @field_validator("auth")
    @classmethod
    def _auth_types(cls, value: dict[str, AuthScheme]) -> dict[str, AuthScheme]:
        unknown = set(value) - {"default", *AUTHORIZATION_TYPES}
        if unknown:
            raise ValueError(f"auth names unknown authorization types: {sorted(unknown)}")
        return value

    def auth_scheme(self, authorization: str) -> AuthScheme:
        return self.auth.get(authorization) or self.auth.get("default") or BEARER

    def authorization_for(self, kind: str) -> Authorization | None:
        return next((a for a in self.authorization if a.type == kind), None)

    @property
    def authorization_types(self) -> tuple[str, ...]:
        return tuple(a.type for a in self.authorization)


def contract_platform_types() -> tuple[str, ...]:
    """The platform names the contract's enum allows (ApplicationEntityWrite.type)."""
    schema = load_reference()["components"]["schemas"]["ApplicationEntityWrite"]
    return tuple(schema["properties"]["type"]["enum"])


class Catalogue:
    def __init__(self, platforms: Iterable[Platform], connectors: Iterable[str]) -> None:
        self._platforms = {platform.type: platform for platform in platforms}
        self._connectors = frozenset(connectors)

    @classmethod
    def load(
        cls,
        connectors: Iterable[str],
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        directory: Path = DESCRIPTORS,
    ) -> Catalogue:
        """The descriptors, with the operator's overrides applied (CRMGATE_PLATFORM_OVERRIDES:
        e.g. a self-hosted CRM's hosts, or the simulators' URLs in tests and the demo)."""
        platforms = []
        for platform in load_descriptors(directory):
            change = (overrides or {}).get(platform.type)
            if change:
                data = platform.model_dump()
                for key, value in change.items():
                    if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                        data[key] = {**data[key], **value}
                    else:
                        data[key] = value
                try:
                    platform = Platform.model_validate(data)
                except ValueError as error:
                    raise CatalogueError(f"override of {platform.type}: {error}") from error
            platforms.append(platform)
        unknown = set(overrides or {}) - {platform.type for platform in platforms}
        if unknown:
            raise CatalogueError(f"overrides name unknown platforms: {', '.join(sorted(unknown))}")
        return cls(platforms, connectors)

    def known(self, platform_type: str) -> Platform | None:
        return self._platforms.get(platform_type)

    def listed(self) -> list[Platform]:
        return [p for p in self._platforms.values() if p.connector in self._connectors]

    def get(self, platform_type: str) -> Platform | None:
        """A listed platform (its connector works), or None."""
        platform = self._platforms.get(platform_type)
        return platform if platform and platform.connector in self._connectors else None


@cache
def load_descriptors(directory: Path = DESCRIPTORS) -> tuple[Platform, ...]:
    raw: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        if data.get("type") != path.stem:
            raise CatalogueError(f"{path.name}: type must be {path.stem!r}, as the file is named")
        raw[path.stem] = data
    allowed = set(contract_platform_types())
    platforms = []
    for name in raw:
        if name not in allowed:
            raise CatalogueError(f"{name}: not a platform type of the contract")
        try:
            platforms.append(Platform.model_validate(_resolve(name, raw, ())))
        except ValueError as error:
            raise CatalogueError(f"{name}.toml: {error}") from error
    return tuple(platforms)


def _resolve(name: str, raw: dict[str, dict[str, Any]], seen: tuple[str, ...]) -> dict[str, Any]:
    if name in seen:
        raise CatalogueError(f"{name}: extends itself through {' -> '.join(seen)}")
    data = dict(raw[name])
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if parent not in raw:
        raise CatalogueError(f"{name}: extends unknown platform {parent!r}")
    return {**_resolve(parent, raw, (*seen, name)), **data}
