"""A Dataverse organisation (Dynamics 365): the subset of the Web API v9.2 that crmgate and
Microsoft's Python SDK use, and the Microsoft Entra ID token endpoint in front of it.

- Entra ID: ``POST /{tenant}/oauth2/v2.0/token`` with the ``refresh_token`` and
  ``client_credentials`` grants (scope ``{org}/user_impersonation`` or ``{org}/.default``);
  RFC 6749 error bodies with AADSTS codes.
- ``GET /api/data/v9.2/WhoAmI``; ``EntityDefinitions`` (``$filter`` by LogicalName or
  EntitySetName, ``$select``), ``EntityDefinitions(LogicalName='x')`` or ``(MetadataId)`` and
  their ``/Attributes`` (with the PicklistAttributeMetadata cast and ``$expand=OptionSet``) and
  ``/ManyToOneRelationships``.
- Records: ``GET/POST /{set}``, ``GET/PATCH/DELETE /{set}({id})``: ``$select``, ``$filter``,
  ``$orderby``, ``$top`` (ignored beside ``Prefer: odata.maxpagesize``), ``$count`` (capped at
  5,000), ``$apply=[filter(...)/]aggregate($count as x)`` (at most ``aggregate_limit`` records),
  ``Prefer: odata.maxpagesize`` with
  ``@odata.nextLink`` ($skiptoken paging cookies), ``Prefer: return=representation`` and
  ``odata.include-annotations``; lookups read as ``_x_value`` and written with
  ``nav@odata.bind``; ``If-Match: *`` (update, never upsert) and ``If-None-Match: *``;
  ``CreateMultiple`` and ``UpdateMultiple``; ``$batch`` (multipart/mixed, change sets with
  Content-ID references, ``Prefer: odata.continue-on-error``).
- Errors ``{"error": {"code": "0x...", "message": ...}}``; 401 with ``WWW-Authenticate`` for
  missing or expired tokens; 403 ``0x80040220`` for a user without the privilege; service
  protection limits: ``request_limit`` requests per 300 s per user, then 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from aiohttp import web

from crmsim import records, seed
from crmsim.app import Route, Simulator, UserTokens, overrides
from crmsim.dynamics_odata import (
    COMPARISONS,
    GUID,
    BatchItem,
    BatchPart,
    Comparison,
    ODataError,
    PartReply,
    columns_of,
    evaluate,
    parse_batch,
    parse_filter,
    render_batch,
    syntax_error,
)
from crmsim.dynamics_schema import Attr, Table, metadata_id, standard_tables
from crmsim.guard import Guard, RateWindow, Verdict, bearer
from crmsim.oauth import AuthorizationServer, Issued, OAuthError
from crmsim.query import evaluate as evaluate_with
from crmsim.tokens import AccessToken, Client, TokenStore

API = "/api/data/v9.2"
COUNT_LIMIT = 5000
MAX_PAGE = 5000
WINDOW = 300.0  # seconds of the service protection limits' sliding window
_APPLY = re.compile(r"(?:filter\((?P<filter>.*)\)/)?aggregate\(\$count as (?P<alias>[^)]*)\)")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _payload_error(set_name: str, message: str) -> ODataError:
    return ODataError(
        400,
        "0x80048d19",
        f"Error identified in Payload provided by the user for Entity :'{set_name}', For more "
        "information on this error please follow this help link "
        "https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
        f"Microsoft.OData.ODataException: {message}",
    )


def _validation(message: str) -> ODataError:
    return ODataError(400, "0x80044331", f"A validation error occurred.  {message}")


def _not_found(table: str, record_id: str) -> ODataError:
    return ODataError(404, "0x80040217", f"{table} With Id = {record_id} Does Not Exist")


def _no_segment(segment: str) -> ODataError:
    return ODataError(404, "0x8006088a", f"Resource not found for the segment '{segment}'.")


def _not_allowed(method: str) -> ODataError:
    return ODataError(405, "0x80060888", f"The HTTP method {method} is not allowed.")


def _exists() -> ODataError:
    return ODataError(412, "0x80040237", "A record with matching key values already exists.")


@dataclass
class User:
    """Who a token acts as; its name and addresses are its systemusers record's."""

    id: str
    read_only: bool = False


Token = AccessToken[User]


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able, or None
    headers: dict[str, str] = field(default_factory=dict)

    def wire(self) -> tuple[dict[str, str], bytes]:
        """Its headers and body as sent: JSON, with OData's minimal metadata."""
        headers = {"OData-Version": "4.0", **self.headers}
        if self.body is None:
            return headers, b""
        headers["Content-Type"] = "application/json; odata.metadata=minimal"
        return headers, json.dumps(self.body).encode()


@dataclass
class Call:
    """One Web API request, alone or a part of a batch: its query, its headers (by lower-case
    name), and the Content-IDs its change set has answered (``$1``: a record's URL)."""

    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    user: User
    references: Mapping[str, str] | None = None

    @property
    def prefer(self) -> dict[str, str]:
        return _prefer(self.headers.get("prefer", ""))


class _Guard(Guard[User]):
    """Bearer tokens; Dataverse's service protection limit: ``request_limit`` requests per
    user in any 300 seconds, then 429 with Retry-After."""

    def __init__(self, sim: DynamicsSimulator) -> None:
        window = RateWindow(lambda: sim.request_limit, WINDOW)
        super().__init__(sim.tokens, [bearer()], window, sim.faults)
        self.sim = sim

    def unauthorized(self, request: web.Request, token: Token | None) -> web.StreamResponse:
        reason = "The token is expired" if token is not None else "No token or bad token"
        challenge = (
            f'Bearer error=invalid_token, error_description="Error identified: {reason}", '
            "authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize, "
            f"resource_id={self.sim.base_url}"
        )
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    def limited(self, verdict: Verdict) -> web.StreamResponse:
        message = f"Number of requests exceeded the limit of {verdict.limit} over time window of "
        body = {"error": {"code": "0x80072322", "message": message + f"{int(WINDOW)} seconds."}}
        return web.json_response(
            body, status=429, headers={"Retry-After": str(verdict.retry_after)}
        )

    def rate_key(self, text: str, token: Token) -> Hashable:
        return token.subject.id  # per user, whichever of its tokens


# Entra ID's refusals of the shared checks, by their reason: (HTTP status, error, description)
_AADSTS = {
    "bad_secret": (
        401,
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
        "request is the client secret value, not the client secret ID.",
    ),
    "code": (
        400,
        "invalid_grant",
        "AADSTS70008: The provided authorization code or refresh token has expired or is invalid.",
    ),
    "refresh": (400, "invalid_grant", "AADSTS70000: Provided grant is invalid or malformed."),
    "grant": (400, "unsupported_grant_type", "AADSTS70003: grant not supported."),
}


class _EntraID(AuthorizationServer[User]):
    """Entra ID's v2.0 endpoints under ``/{tenant}/oauth2/v2.0/``: the organisation's admin
    consents at once; scopes name the organisation (``{org}/user_impersonation``, and
    ``{org}/.default`` for client credentials, which need the tenant named); a refresh answers a
    new refresh token while the old one lives on; errors carry AADSTS codes."""

    grant_types = ("authorization_code", "refresh_token", "client_credentials")
    refresh_rotation = "add"

    def __init__(self, sim: DynamicsSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim

    async def parameters(self, request: web.Request) -> dict[str, str]:
        # the tenant of the path, for check_token_request (a form field cannot name another)
        return {**await super().parameters(request), "tenant": request.match_info["tenant"]}

    def authenticate(self, request: web.Request, params: Mapping[str, str]) -> Client:
        client_id = params.get("client_id", "")
        if client_id not in self.tokens.clients:
            message = f"AADSTS700016: Application with identifier '{client_id}' was not found "
            raise OAuthError("unauthorized_client", message + "in the directory.", "700016")
        return super().authenticate(request, params)

    def requested_scopes(self, params: Mapping[str, str], client: Client) -> tuple[str, ...]:
        scopes = tuple(params.get("scope", "").split())
        if f"{self.sim.base_url}/user_impersonation" not in scopes:
            message = "AADSTS500011: The resource principal was not found."
            raise OAuthError("invalid_resource", message, "resource")
        return scopes

    def check_token_request(
        self, grant_type: str, params: Mapping[str, str], client: Client
    ) -> None:
        scopes = params.get("scope", "").split()
        resources = {s.rsplit("/", 1)[0] for s in scopes if s.startswith("https://")}
        if resources and resources != {self.sim.base_url}:
            message = f"AADSTS500011: The resource principal named {sorted(resources)[0]} was "
            raise OAuthError("invalid_resource", message + "not found in the tenant.", "500011")
        if grant_type == "refresh_token" and not resources:
            message = "AADSTS70011: The provided scope is invalid."
            raise OAuthError("invalid_scope", message, "70011")
        if grant_type != "client_credentials":
            return
        tenant = params["tenant"]
        if tenant in ("common", "organizations") or tenant not in (
            client.extra["tenant"],
            "contoso.example",
        ):
            message = "AADSTS90002: Tenant not found; client credentials need the tenant id."
            raise OAuthError("invalid_request", message, "90002")
        if f"{self.sim.base_url}/.default" not in scopes:
            message = "AADSTS1002012: The scope must be {resource}/.default."
            raise OAuthError("invalid_scope", message, "1002012")

    def client_subject(self, client: Client, params: Mapping[str, str]) -> User:
        user_id = self.sim.app_users.get(client.client_id)
        if user_id is None:
            message = "AADSTS50020: no application user in this org."
            raise OAuthError("invalid_grant", message, "50020")
        return self.sim.users[user_id]

    def token_answer(self, issued: Issued[User], request: web.Request) -> dict[str, Any]:
        answer = super().token_answer(issued, request)
        if issued.grant_type != "client_credentials":
            answer["scope"] = f"{self.sim.base_url}/user_impersonation"
        return answer | {"ext_expires_in": answer["expires_in"]}

    def error_answer(self, error: OAuthError) -> web.StreamResponse:
        if error.reason.isdigit():  # an AADSTS code of Entra ID's own checks
            return _aad_error(400, error.error, error.description, int(error.reason))
        reason = {"expired_code": "code", "redirect_mismatch": "code", "verifier": "code"}
        status, code, description = _AADSTS[reason.get(error.reason, error.reason)]
        return _aad_error(status, code, description, int(description[6:].partition(":")[0]))

    def error_page(self, error: OAuthError) -> web.StreamResponse:
        text = "AADSTS50011: The redirect URI does not match the app's."
        return web.Response(status=400, text=text)


class DynamicsSimulator(UserTokens[User], Simulator[User]):
    client_max_size = 32 * 1024 * 1024

    def __init__(self, organisation: str = "Contoso (sim)") -> None:
        super().__init__()
        self.organisation = organisation
        self.organization_id = str(uuid.uuid4())
        self.business_unit_id = str(uuid.uuid4())
        self.tenant_id = str(uuid.uuid4())
        self.tables: dict[str, Table] = standard_tables()
        self.records = records.Store(
            self.tables,
            key=lambda logical: self.tables[logical].primary_id,
            new_id=lambda logical: str(uuid.uuid4()),
            now=_now,
            created=("createdon",),
            modified=("modifiedon",),
            derive=self._computed,
        )
        self.users: dict[str, User] = {}
        self.tokens = TokenStore(
            access_format=lambda: (
                "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)
            ),
            refresh_format=lambda user: "0.AX" + secrets.token_urlsafe(64),
            code_format=lambda: "0.A" + secrets.token_urlsafe(48),
            access_lifetime=3599,
        )
        self.app_users: dict[str, str] = {}  # client id -> application user id
        self.request_limit = 6000  # per user and 300 s window, as Dataverse's default
        self.aggregate_limit = 50_000
        self.batch_delay = 0.0  # seconds a $batch answer waits after its work (for tests)
        self.guard = _Guard(self)
        self.oauth = _EntraID(self)
        self._versions = itertools.count(1_000_001)
        self.admin = self.add_user("Ada", "Admin", "ada@contoso.example")

    # ---- state ----------------------------------------------------------------------------------

    def add_user(self, first: str, last: str, email: str, read_only: bool = False) -> User:
        user = User(str(uuid.uuid4()), read_only)
        self.users[user.id] = user
        values = {"firstname": first, "lastname": last, "domainname": email, "isdisabled": False}
        values |= {"systemuserid": user.id, "internalemailaddress": email}
        self._insert("systemuser", values, user)
        return user

    def add_app(
        self,
        client_id: str,
        client_secret: str | None,
        tenant: str | None = None,
        redirect_uris: tuple[str, ...] = (),
    ) -> None:
        """An app registration in Entra ID (confidential when it has a secret), with its reply
        (redirect) URLs."""
        self.tokens.add_client(
            client_id, client_secret, tuple(redirect_uris), tenant=tenant or self.tenant_id
        )

    def add_application_user(self, client_id: str, client_secret: str) -> User:
        """A server-to-server application user: the app's client_credentials tokens act as it."""
        self.add_app(client_id, client_secret)
        user = self.add_user("#", client_id, f"{client_id}@application")
        self.app_users[client_id] = user.id
        return user

    def insert(self, logical: str, values: Mapping[str, Any], user: User | None = None) -> str:
        """Store a record as the given user (lookups as ``attr: (target, id)``)."""
        row = self._insert(logical, dict(values), user or self.admin)
        return str(row[self.tables[logical].primary_id])

    def _insert(self, logical: str, values: dict[str, Any], user: User) -> dict[str, Any]:
        """A new row with every column (null unless given), active and owned by ``user``."""
        row = dict.fromkeys(self.tables[logical].attrs) | values
        row["statecode"] = row.get("statecode") or 0
        row["ownerid"] = row.get("ownerid") or ("systemuser", user.id)
        return self.records.insert(logical, row)

    def _computed(self, logical: str, row: dict[str, Any]) -> None:
        """What Dataverse sets on every write: the row version, and a person's full name."""
        row["versionnumber"] = next(self._versions)
        if "fullname" in self.tables[logical].attrs:
            row["fullname"] = " ".join(
                part for part in (row.get("firstname"), row.get("lastname")) if part
            )

    # ---- HTTP -----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/{tenant}/oauth2/v2.0/authorize", self.oauth.authorize, guarded=False),
            Route("POST", "/{tenant}/oauth2/v2.0/token", self.oauth.token, guarded=False),
            Route("*", API + "/{tail:.*}", self._data),
        ]

    async def _data(self, request: web.Request, token: Token) -> web.StreamResponse:
        user = token.subject
        raw_path, _, raw_query = request.raw_path.partition("?")
        tail = raw_path.removeprefix(API + "/")
        body = await request.read()
        if tail == "$batch" and request.method == "POST":
            return await self._batch(request, user, body)
        reply = self.handle(request.method, tail, raw_query, dict(request.headers), body, user)
        return _to_response(reply)

    def handle(
        self,
        method: str,
        tail: str,
        raw_query: str,
        headers: Mapping[str, str],
        body: bytes,
        user: User,
        references: Mapping[str, str] | None = None,
    ) -> Reply:
        """One Web API request (also one part of a batch); errors become Dataverse's answers."""
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            return self._route(unquote(tail), Call(method, query, lowered, body, user, references))
        except ODataError as error:
            return Reply(error.status, error.answer)

    def _route(self, tail: str, call: Call) -> Reply:
        method = call.method
        if tail == "WhoAmI" or tail == "WhoAmI()":
            return Reply(
                200,
                {
                    "@odata.context": f"{self.base_url}{API}/$metadata#Microsoft.Dynamics.CRM."
                    "WhoAmIResponse",
                    "BusinessUnitId": self.business_unit_id,
                    "UserId": call.user.id,
                    "OrganizationId": self.organization_id,
                },
            )
        if tail.startswith("EntityDefinitions"):
            if method != "GET":
                raise ODataError(403, "0x80040220", "The user may not change the schema here.")
            return self._metadata(tail, call.query)
        set_name, _, rest = tail.partition("(")
        set_name, _, bound = set_name.partition("/")
        table = next((t for t in self.tables.values() if t.entity_set == set_name), None)
        if table is None:
            raise _no_segment(set_name)
        if bound and method == "POST" and not rest:
            return self._multiple(table, bound, call.body, call.user)
        if not (bound or rest) and method in ("GET", "POST"):
            return self._list(table, call) if method == "GET" else self._create(table, call)
        if bound or not rest:
            raise _not_allowed(method)
        key, _, action = rest.partition(")")
        if not key and action.startswith("/Microsoft.Dynamics.CRM."):
            raise ODataError(400, "0x80060888", "Bad request.")
        if key == "" and tail.endswith(")"):
            raise ODataError(400, "0x80060888", "Bad Request - Error in query syntax.")
        if not GUID.match(key):
            raise syntax_error(f"Bad Request - Error in query syntax: '{key[:60]}'.")
        if action:
            raise _no_segment(action)
        if method == "GET":
            return self._get(table, key.lower(), call)
        if method == "PATCH":
            return self._update(table, key.lower(), call)
        if method == "DELETE":
            return self._delete(table, key.lower(), call.user)
        raise _not_allowed(method)

    # ---- metadata -------------------------------------------------------------------------------

    def _metadata(self, tail: str, query: dict[str, str]) -> Reply:
        head, *rest = tail.split("/")
        select = query.get("$select")
        if head == "EntityDefinitions":
            found = [t.definition() for t in self.tables.values()]
            if query.get("$filter"):
                found = [d for d in found if _metadata_match(query["$filter"], d)]
            context = f"{self.base_url}{API}/$metadata#EntityDefinitions"
            return Reply(
                200, {"@odata.context": context, "value": [_pick(d, select) for d in found]}
            )
        key = head.removeprefix("EntityDefinitions(").removesuffix(")")
        said = ((t, f"LogicalName='{t.logical}'", t.metadata_id) for t in self.tables.values())
        table = next((t for t, *keys in said if key in keys), None)
        if table is None:
            raise ODataError(404, "0x80040217", f"Could not find an entity with key value '{key}'.")
        if not rest:
            return Reply(200, _pick(table.definition(), select))
        if rest[0] == "ManyToOneRelationships":
            return Reply(200, {"value": [_pick(r, select) for r in table.relationships()]})
        if not rest[0].startswith("Attributes"):
            raise _no_segment(rest[0])
        attrs = list(table.attrs.values())
        if rest[1:]:  # a cast to one type of column (Microsoft.Dynamics.CRM.XAttributeMetadata)
            if not rest[1].endswith("AttributeMetadata"):
                raise ODataError(404, "0x8006088a", f"Resource not found for '{rest[1]}'.")
            attrs = [a for a in attrs if a.describe(table.logical)["@odata.type"][1:] == rest[1]]
        named = rest[0].removeprefix("Attributes")
        if named.startswith("(LogicalName="):
            wanted = named.removeprefix("(LogicalName=").rstrip(")").strip("'")
            match = [a for a in attrs if a.name == wanted]
            if not match:
                raise ODataError(404, "0x80040217", f"Attribute '{wanted}' not found.")
            return Reply(200, self._attribute(table, match[0], query))
        return Reply(200, {"value": [self._attribute(table, a, query) for a in attrs]})

    @staticmethod
    def _attribute(table: Table, attr: Attr, query: dict[str, str]) -> dict[str, Any]:
        described = attr.describe(table.logical)
        kept = _pick(described, query.get("$select")) | {"@odata.type": described["@odata.type"]}
        if "OptionSet" in query.get("$expand", "") and attr.options:
            kept["OptionSet"] = attr.option_set(table.logical)
        return kept

    # ---- records --------------------------------------------------------------------------------

    def _edm(self, table: Table) -> Callable[[str], str]:
        def edm(column: str) -> str:
            if column.startswith("_") and column.endswith("_value"):
                attr = table.attrs.get(column[1:-6])
                if attr is not None and attr.is_lookup:
                    return "Edm.Guid"
            attr = table.attrs.get(column)
            if attr is None or attr.is_lookup:
                raise syntax_error(
                    f"Could not find a property named '{column}' on type "
                    f"'Microsoft.Dynamics.CRM.{table.logical}'."
                )
            return attr.edm

        return edm

    def _readable(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """A stored row as its columns read: lookups as ``_x_value``."""
        out: dict[str, Any] = {}
        for name, attr in table.attrs.items():
            value = row.get(name)
            if attr.is_lookup:
                out[f"_{name}_value"] = value[1] if value else None
            else:
                out[name] = value
        return out

    def _render(
        self, table: Table, row: dict[str, Any], select: list[str] | None, annotations: str
    ) -> dict[str, Any]:
        readable = self._readable(table, row)
        names = select if select is not None else list(readable)
        if table.primary_id not in names:
            names = [*names, table.primary_id]
        out: dict[str, Any] = {"@odata.etag": f'W/"{row["versionnumber"]}"'}
        for name in names:
            out[name] = readable.get(name)
            if name.startswith("_") and name.endswith("_value") and readable.get(name):
                attr = table.attrs[name[1:-6]]
                target = row[attr.name][0]
                said = {"lookuplogicalname": target}
                said["associatednavigationproperty"] = attr.targets.get(target, attr.name)
                for annotation, value in said.items():
                    if _wants(annotations, f"Microsoft.Dynamics.CRM.{annotation}"):
                        out[f"{name}@Microsoft.Dynamics.CRM.{annotation}"] = value
        return out

    def _select(self, table: Table, query: dict[str, str]) -> list[str] | None:
        names = _listed(query.get("$select"))
        for name in names:
            self._edm(table)(name)
        return names or None

    def _rows(self, table: Table, query: dict[str, str]) -> list[dict[str, Any]]:
        edm = self._edm(table)
        readable = [self._readable(table, r) for r in self.records[table.logical].values()]
        expression = query.get("$filter")
        if expression:
            node = parse_filter(expression)
            for column in columns_of(node):
                edm(column)
            readable = [v for v in readable if evaluate(node, v, edm)]
        keys = []
        for part in _listed(query.get("$orderby")):
            column, _, direction = part.partition(" ")
            if direction.strip() not in ("", "asc", "desc"):
                raise syntax_error(f"Syntax error in $orderby at '{part}'.")
            descending = direction.strip() == "desc"
            kind = "text" if edm(column) in ("Edm.String", "Edm.Guid") else None
            keys.append(records.Sort(column, descending, kind=kind))
        keys.append(records.Sort(table.primary_id))  # Dataverse's own tie-breaker
        stored = self.records[table.logical]
        return [stored[v[table.primary_id]] for v in records.order(readable, *keys)]

    def _list(self, table: Table, call: Call) -> Reply:
        query, prefer = call.query, call.prefer
        if "$apply" in query:
            return self._aggregate(table, query)
        select = self._select(table, query)
        rows = self._rows(table, query)
        total = len(rows)
        context = f"{self.base_url}{API}/$metadata#{table.entity_set}"
        body: dict[str, Any] = {"@odata.context": context}
        if query.get("$count") == "true":
            body["@odata.count"] = min(total, COUNT_LIMIT)
            body["@Microsoft.Dynamics.CRM.totalrecordcount"] = -1
            body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = total > COUNT_LIMIT
        if query.get("$top") and "odata.maxpagesize" not in prefer:
            # with Prefer: odata.maxpagesize, $top is ignored (Microsoft's "Page results")
            page = rows[: _integer(query["$top"], "$top")]
        else:
            wanted = prefer.get("odata.maxpagesize", str(MAX_PAGE))
            size = min(_integer(wanted, "maxpagesize"), MAX_PAGE)
            token = query.get("$skiptoken")
            start = self._resume(table, rows, token) if token else 0
            page, more = records.page(rows, start, size)
            if more:
                following = start + size
                skip = (
                    f'<cookie pagenumber="{following // max(size, 1) + 1}" '
                    f'pagingcookie="{following}:{page[-1][table.primary_id]}" '
                    'istracking="False" />'
                )
                link = urlencode({**query, "$skiptoken": skip}, quote_via=quote, safe="$")
                body["@odata.nextLink"] = f"{self.base_url}{API}/{table.entity_set}?{link}"
        annotations = prefer.get("odata.include-annotations", "")
        body["value"] = [self._render(table, r, select, annotations) for r in page]
        headers_out = {"Preference-Applied": call.headers.get("prefer", "")} if prefer else {}
        return Reply(200, body, headers_out)

    @staticmethod
    def _resume(table: Table, rows: list[dict[str, Any]], token: str) -> int:
        """Where a $skiptoken's paging cookie continues: after its last record (or at its
        position when that record is gone)."""
        cookie = token.partition('pagingcookie="')[2].partition('"')[0]
        position, _, last = cookie.partition(":")
        if not position.isdigit():
            raise syntax_error("The $skiptoken is not valid.")
        for index, row in enumerate(rows):
            if row[table.primary_id] == last:
                return index + 1
        return int(position)

    def _aggregate(self, table: Table, query: dict[str, str]) -> Reply:
        """``$apply=[filter(...)/]aggregate($count as alias)``, of at most aggregate_limit rows."""
        found = _APPLY.fullmatch(query["$apply"].strip())
        if found is None:
            raise syntax_error(f"The $apply '{query['$apply'][:100]}' is not supported.")
        expression, alias = found["filter"], found["alias"].strip()
        rows = self._rows(table, {"$filter": expression} if expression else {})
        if len(rows) > self.aggregate_limit:
            raise ODataError(
                400,
                "0x8004E023",
                "AggregateQueryRecordLimit exceeded. Cannot perform this operation.",
            )
        return Reply(200, {"value": [{alias: len(rows)}]})

    def _get(self, table: Table, record_id: str, call: Call) -> Reply:
        row = self.records[table.logical].get(record_id)
        if row is None:
            raise _not_found(table.logical, record_id)
        annotations = call.prefer.get("odata.include-annotations", "")
        rendered = self._render(table, row, self._select(table, call.query), annotations)
        rendered["@odata.context"] = f"{self.base_url}{API}/$metadata#{table.entity_set}/$entity"
        return Reply(200, rendered)

    def _privilege(self, table: Table, user: User, verb: str) -> None:
        if user.read_only or (table.logical == "systemuser" and verb != "Read"):
            raise ODataError(
                403,
                "0x80040220",
                f"Principal user (Id={user.id}, type=8, roleCount=1, privilegeCount=120, "
                f"accessMode=0), is missing prv{verb}{table.logical.capitalize()} privilege "
                f"(Id={metadata_id(verb, table.logical)}) on OTC=0 for entity "
                f"'{table.logical}'. context.Caller={user.id}",
            )

    def _values(self, table: Table, call: Call, creating: bool) -> dict[str, Any]:
        try:
            payload = json.loads(call.body or b"{}")
        except ValueError:
            raise _payload_error(table.entity_set, "The request body is not valid JSON.") from None
        if not isinstance(payload, dict):
            raise _payload_error(table.entity_set, "The request body must be a JSON object.")
        return self._clean(table, payload, creating, call.references)

    def _clean(
        self,
        table: Table,
        payload: dict[str, Any],
        creating: bool,
        references: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        navigation = table.navigation()
        clean: dict[str, Any] = {}
        for key, value in payload.items():
            if key.startswith("@odata.") or key.endswith("@odata.type"):
                continue
            if key.endswith("@odata.bind"):
                nav = key.removesuffix("@odata.bind")
                if nav not in navigation:
                    raise _payload_error(
                        table.entity_set,
                        f"An undeclared property '{nav}' which only has property annotations in "
                        "the payload but no property value was found in the payload. In OData, "
                        "only declared navigation properties and declared named streams can be "
                        "represented as properties without values.",
                    )
                attr_name, target = navigation[nav]
                clean[attr_name] = self._bind(table, target, value, references)
                continue
            attr = table.attrs.get(key)
            if attr is None or attr.is_lookup:
                raise _payload_error(
                    table.entity_set,
                    f"The property '{key}' does not exist on type 'Microsoft.Dynamics.CRM."
                    f"{table.logical}'. Make sure to only use property names that are defined by "
                    "the type or mark the type as open type.",
                )
            if not (attr.create if creating else attr.update):
                continue  # Dataverse ignores values of columns not valid for the operation
            clean[key] = self._typed(table, attr, value)
        return clean

    def _bind(
        self, table: Table, target: str, value: Any, references: Mapping[str, str] | None
    ) -> tuple[str, str] | None:
        if value is None:
            return None
        text = str(value)
        if text.startswith("$") and references is not None and text in references:
            text = references[text]
        path = urlsplit(text).path if "://" in text else text
        path = path.removeprefix(API).lstrip("/")
        set_name, _, key = path.partition("(")
        key = key.rstrip(")")
        wanted = self.tables[target]
        if set_name != wanted.entity_set or not GUID.match(key):
            raise _payload_error(
                table.entity_set,
                f"The value '{text[:120]}' is not a URI of a record of '{wanted.entity_set}'.",
            )
        if key.lower() not in self.records[target]:
            raise _not_found(target, key.lower())
        return (target, key.lower())

    @staticmethod
    def _typed(table: Table, attr: Attr, value: Any) -> Any:
        if value is None:
            if attr.required == "SystemRequired":
                raise _validation(f"The '{attr.name}' attribute is required.")
            return None
        accepted = [v for v, _ in attr.options]
        length = attr.max_length if attr.value_kind == "text" else None
        problem = records.fault(value, attr.value_kind, length=length, options=accepted)
        if problem == "type" or (attr.type == "Uniqueidentifier" and not GUID.match(value)):
            raise _payload_error(
                table.entity_set,
                f"Cannot convert the literal '{str(value)[:60]}' to the expected type "
                f"'{attr.edm}'.",
            )
        if problem == "length":
            raise _validation(
                f"The length of the '{attr.name}' attribute of the '{table.logical}' entity "
                f"exceeded the maximum allowed length of '{attr.max_length}'."
            )
        if problem == "option":
            raise _validation(
                f"The value {value} of '{attr.name}' on record of type '{table.logical}' is "
                f"outside the valid range. Accepted Values: {','.join(map(str, accepted))}"
            )
        if attr.type == "Uniqueidentifier":
            return value.lower()
        if attr.type != "DateTime":
            return value
        if attr.date_only:
            return value[:10]
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _create(self, table: Table, call: Call, record_id: str | None = None) -> Reply:
        """A POST, or a PATCH of a missing ``record_id`` without If-Match (an upsert)."""
        self._privilege(table, call.user, "Create")
        values = self._values(table, call, True)
        record_id = record_id or values.get(table.primary_id) or str(uuid.uuid4())
        if record_id in self.records[table.logical]:
            raise _exists()
        values[table.primary_id] = record_id
        row = self._insert(table.logical, values, call.user)
        location = f"{self.base_url}{API}/{table.entity_set}({record_id})"
        out = {"OData-EntityId": location, "Location": location}
        if "return=representation" in call.headers.get("prefer", ""):
            rendered = self._render(table, row, self._select(table, call.query), "")
            return Reply(201, rendered, out)
        return Reply(204, None, out)

    def _update(self, table: Table, record_id: str, call: Call) -> Reply:
        row = self.records[table.logical].get(record_id)
        if_match = call.headers.get("if-match")
        if row is None:
            if if_match is not None:
                raise _not_found(table.logical, record_id)
            return self._create(table, call, record_id)  # without If-Match: an upsert
        if call.headers.get("if-none-match") == "*":
            raise _exists()
        if if_match not in (None, "*") and if_match != f'W/"{row["versionnumber"]}"':
            raise ODataError(
                412,
                "0x80060882",
                "The version of the existing record doesn't match the RowVersion property "
                "provided.",
            )
        self._privilege(table, call.user, "Write")
        self.records.change(table.logical, row, self._values(table, call, False))
        if "return=representation" in call.headers.get("prefer", ""):
            return Reply(200, self._render(table, row, self._select(table, call.query), ""))
        location = f"{self.base_url}{API}/{table.entity_set}({record_id})"
        return Reply(204, None, {"OData-EntityId": location})

    def _multiple(self, table: Table, action: str, body: bytes, user: User) -> Reply:
        """The collection-bound CreateMultiple and UpdateMultiple actions: all or nothing."""
        creating = action == "Microsoft.Dynamics.CRM.CreateMultiple"
        if not creating and action != "Microsoft.Dynamics.CRM.UpdateMultiple":
            raise _no_segment(action)
        try:
            targets = json.loads(body or b"{}").get("Targets")
        except (ValueError, AttributeError):
            targets = None
        if not isinstance(targets, list) or not targets or len(targets) > 1000:
            raise _payload_error(table.entity_set, "Targets: 1 to 1000 records are required.")
        self._privilege(table, user, "Create" if creating else "Write")
        cleaned = []
        for target in targets:
            if not isinstance(target, dict):
                raise _payload_error(table.entity_set, "Each target must be a JSON object.")
            record_id = str(target.get(table.primary_id) or "").lower()
            if not creating and record_id not in self.records[table.logical]:
                raise _not_found(table.logical, record_id)
            cleaned.append((record_id, self._clean(table, target, creating, None)))
        ids = []
        for record_id, values in cleaned:
            if creating:
                record_id = self._insert(table.logical, values, user)[table.primary_id]
            else:
                self.records.change(table.logical, self.records[table.logical][record_id], values)
            ids.append(record_id)
        if not creating:
            return Reply(204)
        context = f"{self.base_url}{API}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"
        return Reply(200, {"@odata.context": context, "Ids": ids})

    def _delete(self, table: Table, record_id: str, user: User) -> Reply:
        if record_id not in self.records[table.logical]:
            raise _not_found(table.logical, record_id)
        self._privilege(table, user, "Delete")
        del self.records[table.logical][record_id]
        return Reply(204)

    # ---- $batch -------------------------------------------------------------------------------

    async def _batch(self, request: web.Request, user: User, body: bytes) -> web.StreamResponse:
        try:
            items = parse_batch(body, request.headers.get("Content-Type", ""))
        except ODataError as error:
            return _to_response(Reply(error.status, error.answer))
        go_on = "odata.continue-on-error" in request.headers.get("Prefer", "")
        answers: list[tuple[BatchItem, list[PartReply]]] = []
        failed = False
        for item in items:
            references: dict[str, str] = {}
            saved = self.records.snapshot() if item.changeset else {}
            replies: list[PartReply] = []
            for part in item.parts:
                replies.append(self._part(part, user, references))
                if replies[-1].status >= 400:
                    break
            failed = bool(replies) and replies[-1].status >= 400
            if failed and item.changeset:  # atomic: roll back and answer the failure alone
                self.records.restore(saved)
                replies = replies[-1:]
            answers.append((item, replies))
            if failed and not go_on:
                break
        if self.batch_delay:
            await asyncio.sleep(self.batch_delay)  # done, but answered late
        boundary = f"batchresponse_{uuid.uuid4()}"
        status = answers[-1][1][-1].status if failed and not go_on else 200
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}", "OData-Version": "4.0"}
        body = render_batch(answers, boundary).encode()
        return web.Response(status=status, body=body, headers=headers)

    def _part(self, part: BatchPart, user: User, references: dict[str, str]) -> PartReply:
        url = part.url
        if url.startswith("$") and url.split("/")[0] in references:
            url = references[url.split("/")[0]] + url[len(url.split("/")[0]) :]
        path = urlsplit(url).path if "://" in url else url.partition("?")[0]
        raw_query = urlsplit(url).query if "://" in url else url.partition("?")[2]
        tail = path.removeprefix(API).lstrip("/")
        if part.method == "GET" and part.content_id is not None:
            reply = Reply(400, {"error": {"code": "0x80060891", "message": "GET in a change set"}})
        else:
            reply = self.handle(
                part.method, tail, raw_query, part.headers, part.body, user, references
            )
        if part.content_id is not None and "OData-EntityId" in reply.headers:
            references[f"${part.content_id}"] = reply.headers["OData-EntityId"]
        headers, content = reply.wire()
        return PartReply(reply.status, headers, content, part.content_id)


# ---- helpers ---------------------------------------------------------------------------------


def _to_response(reply: Reply) -> web.Response:
    headers, content = reply.wire()
    return web.Response(status=reply.status, body=content, headers=headers)


def _aad_error(status: int, error: str, description: str, code: int) -> web.Response:
    return web.json_response(
        {
            "error": error,
            "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}\r\nCorrelation ID: "
            f"{uuid.uuid4()}\r\nTimestamp: {_now()}",
            "error_codes": [code],
            "timestamp": _now(),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status=status,
    )


def _prefer(header: str) -> dict[str, str]:
    found = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            found[name.strip()] = value.strip().strip('"')
    return found


def _wants(pattern: str, annotation: str) -> bool:
    if not pattern:
        return False
    return any(
        p.strip() in ("*", annotation)
        or (p.strip().endswith("*") and annotation.startswith(p.strip()[:-1]))
        for p in pattern.split(",")
    )


def _integer(text: str, name: str) -> int:
    if not text.isdigit():
        raise syntax_error(f"The value of {name} must be a non-negative integer.")
    return int(text)


def _listed(text: str | None) -> list[str]:
    """The names of a comma-separated list (``$select``, ``$orderby``)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _pick(row: dict[str, Any], select: str | None) -> dict[str, Any]:
    names = _listed(select)
    return {n: row.get(n) for n in names if n in row or n == "MetadataId"} if names else dict(row)


def _metadata_match(expression: str, definition: dict[str, Any]) -> bool:
    """The simple ``$filter`` metadata queries take: ``Prop eq 'x'`` joined by and/or."""

    def edm(column: str) -> str:
        if column not in definition:
            raise syntax_error(f"Could not find a property named '{column}' on EntityMetadata.")
        value = definition[column]
        return "Edm.Boolean" if isinstance(value, bool) else "Edm.String"

    def exact(part: Comparison) -> bool:  # metadata names compare case-sensitively
        if part.op in COMPARISONS and part.literal.kind == "string":
            same = str(definition.get(part.column)) == str(part.literal.value)
            return same == (part.op == "eq")
        return evaluate(part, definition, edm)

    return evaluate_with(parse_filter(expression), exact)


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point MicrosoftDynamics (its organisation hosts and Entra
    ID: the descriptor's ``login_url`` and OAuth endpoints) at a simulator running at
    ``base_url`` (the tests and the demo use it)."""
    flow = "/organizations/oauth2/v2.0/"
    paths = {"authorize_url": flow + "authorize", "token_url": flow + "token"}
    return overrides("MicrosoftDynamics", base_url, paths, "login_url")


def seed_dynamics(sim: DynamicsSimulator) -> dict[str, list[str]]:
    """The demo's small business (crmsim.seed) as a Dataverse organisation: accounts with their
    contacts, leads, an opportunity per account, and a few activities and notes. Returns the
    ids made, per table."""
    made: dict[str, list[str]] = {}

    def add(logical: str, values: dict[str, Any]) -> tuple[str, str]:
        """A record; the lookup value that names it."""
        made.setdefault(logical, []).append(sim.insert(logical, values))
        return (logical, made[logical][-1])

    accounts = []
    for name, _, website, city, country in seed.ACCOUNTS:
        where = {"websiteurl": website, "address1_city": city, "address1_country": country}
        accounts.append(add("account", {"name": name, "telephone1": "+1 425 555 0100", **where}))
    contacts = []
    for first, last, title, employer in seed.CONTACTS:
        values = {"firstname": first, "lastname": last, "jobtitle": title}
        values |= {"emailaddress1": f"{first.lower()}.{last.lower()}@example.com"}
        contacts.append(add("contact", {**values, "parentcustomerid": accounts[employer]}))
    for first, last, company, source in seed.LEADS:
        values = {"firstname": first, "lastname": last, "companyname": company}
        values |= {"subject": f"Interested in a partnership ({company})"}
        values |= {"emailaddress1": f"{first.lower()}@{company.split()[0].lower()}.example"}
        add("lead", {**values, "statuscode": 1, "leadsourcecode": 8 if source == "Web" else 4})
    phases = ("1-Qualify", "2-Develop", "3-Propose")  # the sales process's stages
    for index, account in enumerate(accounts):
        deal: dict[str, Any] = {"name": f"{seed.ACCOUNTS[index][0]}: annual renewal"}
        deal |= {"estimatedvalue": 12_000.0 * (index + 1), "stepname": phases[index]}
        deal |= {"estimatedclosedate": f"2027-0{index + 3}-30", "closeprobability": 40}
        add("opportunity", {**deal, "parentaccountid": account})
    task = {"subject": "Send the price list", "prioritycode": 2, "statuscode": 2}
    task |= {"scheduledend": "2027-01-15T09:00:00Z"}
    add("task", {**task, "regardingobjectid": contacts[0]})
    call = {"subject": "Discovery call", "phonenumber": "+1 206 555 0150", "directioncode": True}
    add(
        "phonecall",
        {**call, "scheduledstart": "2027-01-10T15:00:00Z", "regardingobjectid": accounts[1]},
    )
    demo = {"subject": "On-site demo", "location": "Seattle", "regardingobjectid": accounts[0]}
    demo |= {"scheduledstart": "2027-01-20T10:00:00Z", "scheduledend": "2027-01-20T11:00:00Z"}
    add("appointment", demo)
    note = {"subject": "Met at the trade fair", "objectid": accounts[0]}
    add("annotation", {**note, "notetext": "Wants a quote for the renewal before March."})
    return made
