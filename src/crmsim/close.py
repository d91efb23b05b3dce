"""A Close organization: the subset of Close's REST API v1 (https://api.close.com/api/v1/) that
crmgate and Close's official Python client (``closeio``) use, as developer.close.com documents it.

- Auth: an API key as the HTTP Basic user with an empty password (``curl -u key:``), or an
  OAuth access token (``Authorization: Bearer``); else 401 ``{"error": ...}``. ``auth`` records
  how each call authenticated. OAuth 2 (``/oauth2/authorize/``, ``/oauth2/token/``): the
  authorization code grant (PKCE when asked) and the refresh token grant, the refresh token
  rotated, access tokens valid an hour.
- Objects (URLs end with a slash): ``lead``, ``contact``, ``opportunity``, ``task`` and the
  activities ``activity/note``, ``activity/call``, ``activity/meeting`` (meetings come from
  calendar sync: no POST). ``GET`` lists page with ``_skip``/``_limit`` (at most 200) and answer
  ``{"data": [...], "has_more": ...}``; each takes its documented filters (``lead_id``,
  ``user_id``, ``contact_id``, ``assigned_to``, ``status_id``, ``date_created__gte``...) and
  opportunities and tasks ``_order_by``; ``_fields`` narrows what is shown. A contact made
  without ``lead_id`` makes its own lead. Opportunity values are cents.
- Custom fields (``/custom_field/<lead|contact|opportunity>/``): a record shows each as
  ``custom.<id>`` and takes it so in writes.
- The advanced filtering API (``POST /data/search/``): leads and contacts, the ``and``/``or``/
  ``not``/``object_type``/``field_condition`` queries with ``text`` (exact_value, phrase,
  beginning_of_words), ``term``, ``number_range``, ``moment_range``, ``exists`` and ``boolean``
  conditions (``negate``), ``sort``, ``_fields``, ``_limit`` (at most 200), a ``cursor`` and
  ``include_counts``.
- Users: ``/me/`` (with the organization), ``/user/``, ``/user/<id>/``.
- Errors: ``{"error": ...}``; validation 400 ``{"errors": [], "field-errors": {...}}``.
- Rate limits: ``burst`` calls per key per 15-second window; every answer carries
  ``RateLimit: limit=, remaining=, reset=``; beyond, 429 ``{"error": {"rate_reset": ...,
  "message": ..., "rate_limit": ..., "rate_window": ...}}``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crmsim.app import UserTokens
from crmsim.faults import Faults
from crmsim.guard import Guard, RateWindow, Refusal, Verdict, basic_user, bearer, json_object
from crmsim.oauth import AuthorizationServer, Issued
from crmsim.records import Cursors, Sort, Store, compare, instant, order, page
from crmsim.tokens import AccessToken, RefreshToken, TokenStore

Token = AccessToken[str]  # its subject: the user id
Route = Callable[[web.Request, Token], Awaitable[web.StreamResponse]]
PREFIXES = {
    "lead": "lead",
    "contact": "cont",
    "opportunity": "oppo",
    "task": "task",
    "activity/note": "acti",
    "activity/call": "acti",
    "activity/meeting": "acti",
}
TABLES = tuple(PREFIXES)
CUSTOMIZABLE = ("lead", "contact", "opportunity")
PEOPLE = "lead_id contact_id user_id"
FILTERS = {
    "contact": ("lead_id",),
    "opportunity": ("lead_id", "contact_id", "user_id", "status_id", "status_type"),
    "task": ("lead_id", "assigned_to", "is_complete"),
    **{f"activity/{kind}": tuple(PEOPLE.split()) for kind in ("note", "call", "meeting")},
}
ORDER_BY = {
    "opportunity": ("date_created", "date_updated", "value", "confidence", "date_won"),
    "task": ("date", "date_created"),
}
# the writable fields of each object; their JSON kinds are text unless KINDS says
WRITABLE = {
    "lead": "name description url status_id",
    "contact": "lead_id name title emails phones urls",
    "opportunity": f"{PEOPLE} status_id note value value_period confidence date_won",
    "task": "lead_id assigned_to text date is_complete",
    "activity/note": f"{PEOPLE} note",
    "activity/call": f"{PEOPLE} note direction status duration phone",
    "activity/meeting": f"{PEOPLE} title location status starts_at ends_at",
}
KINDS = {
    **dict.fromkeys(("emails", "phones", "urls"), "list"),
    **dict.fromkeys(("value", "confidence", "duration"), "integer"),
    **dict.fromkeys(("date", "starts_at", "ends_at"), "datetime"),
    "date_won": "date",
    "is_complete": "boolean",
}
REQUIRED = {t: ("lead_id",) for t in ("opportunity", "task", "activity/note", "activity/call")}
REFERENCES = {"lead_id": "lead", "contact_id": "contact"}
STATUSES = {  # opportunity statuses: id -> (label, type)
    "stat_active": ("Active", "active"),
    "stat_won": ("Won", "won"),
    "stat_lost": ("Lost", "lost"),
}
LEAD_STATUS = ("stat_potential", "Potential")
ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MAX_LIMIT = 200
WINDOW = 15  # seconds of a rate window
_CUSTOM_KINDS = {"number": "number", "date": "date", "datetime": "datetime"}


class Refused(Refusal):
    def __init__(self, status: int, error: Any = None, **field_errors: str) -> None:
        super().__init__(str(error or field_errors))
        self.status, self.error, self.field_errors = status, error, field_errors

    def response(self) -> web.Response:
        if self.field_errors:
            body: dict[str, Any] = {"errors": [], "field-errors": self.field_errors}
        else:
            body = {"error": self.error}
        return web.json_response(body, status=self.status)


def _token(length: int = 43) -> str:
    """The alphanumeric tail of a Close id (lead_IIDHIStmFDynNi8NW12NyvNAkUp9hKz4ysvBRCBDLFC)."""
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _not_found(table: str) -> Refused:
    label = table.removeprefix("activity/").capitalize()
    return Refused(404, f"Empty query: {label} matching query does not exist.")


class _Guard(Guard[str]):
    """API keys (HTTP Basic user) and OAuth tokens (Bearer); ``burst`` calls per key per
    15-second window, answered with Close's 429 body."""

    def __init__(self, sim: CloseSimulator) -> None:
        window = RateWindow(lambda: sim.burst, WINDOW)
        super().__init__(sim.tokens, [basic_user(), bearer()], window, sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.Response:
        return web.json_response({"error": "Unauthorized"}, status=401)

    def limited(self, verdict: Verdict) -> web.Response:
        error = {
            "rate_reset": float(verdict.retry_after),
            "message": f"API call count exceeded for this {WINDOW} second window",
            "rate_limit": verdict.limit,
            "rate_window": WINDOW,
            "rate_limit_type": "key",
        }
        return web.json_response({"error": error}, status=429)

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        reset = verdict.retry_after
        return {"RateLimit": f"limit={verdict.limit}, remaining={verdict.remaining}, reset={reset}"}


class _OAuth(AuthorizationServer[str]):
    """Close's OAuth: the client in the form, refresh tokens rotated, the user who consents
    the organization's admin (at once)."""

    refresh_rotation = "rotate"

    def __init__(self, sim: CloseSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim

    def token_answer(self, issued: Issued[str], request: web.Request) -> dict[str, Any]:
        answer = super().token_answer(issued, request)
        return {**answer, "user_id": issued.token.subject, "organization_id": self.sim.org_id}


class CloseSimulator(UserTokens[str]):
    def __init__(self, organization: str = "Acme Sales (sim)", burst: int = 600) -> None:
        self.org_id = "orga_" + _token()
        self.organization = organization
        self.burst = burst
        self.base_url = ""
        self.users: dict[str, dict[str, Any]] = {}
        self.custom_fields: dict[str, list[dict[str, Any]]] = {t: [] for t in CUSTOMIZABLE}
        self.tokens: TokenStore[str] = TokenStore(
            access_format=lambda: "oa2_" + secrets.token_urlsafe(30),
            key_format=lambda: "api_" + secrets.token_urlsafe(22),
        )
        self.store = Store(
            TABLES,
            key=lambda table: "id",
            new_id=lambda table: f"{PREFIXES[table]}_{_token()}",
            now=_now,
            created=("date_created",),
            modified=("date_updated",),
            derive=self._derive,
        )
        self.faults = Faults()  # scripted misbehaviour of the next API calls (crmsim.faults)
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        self.cursors: Cursors[tuple[str, int]] = Cursors(lifetime=600)
        self.calls: deque[tuple[str, str]] = deque(maxlen=100_000)
        self.auth: deque[tuple[str, str, str]] = deque(maxlen=100_000)  # method, path, how
        self.admin = self.add_user("Ada", "Admin", "ada@acme.example")

    # ---- state ------------------------------------------------------------------------------

    def add_user(self, first: str, last: str, email: str) -> str:
        user_id = "user_" + _token()
        now = _now()
        self.users[user_id] = {
            "id": user_id,
            "first_name": first,
            "last_name": last,
            "email": email,
            "image": None,
            "date_created": now,
            "date_updated": now,
            "organizations": [self.org_id],
        }
        return user_id

    add_api_key = UserTokens.issue_key

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    @property
    def refresh_tokens(self) -> dict[str, RefreshToken[str]]:
        return self.tokens.refresh

    def add_custom_field(self, table: str, name: str, kind: str = "text", **extra: Any) -> str:
        field_id = "cf_" + _token()
        spec = {"id": field_id, "name": name, "type": kind, "description": "", **extra}
        self.custom_fields[table].append(spec)
        return f"custom.{field_id}"

    def insert(self, table: str, values: dict[str, Any], user_id: str | None = None) -> str:
        """A record made through the same checks as the API's."""
        return str(self._create(table, dict(values), user_id or self.admin)["id"])

    # ---- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.calls.append((request.method, request.path))
            self.auth.append((request.method, request.path, _mechanism(request)))
            if not self.base_url:
                self.base_url = f"{request.scheme}://{request.host}"
            response: web.StreamResponse = await handler(request)
            return response

        application = web.Application(middlewares=[record])
        application.router.add_get("/oauth2/authorize/", self.oauth.authorize)
        application.router.add_post("/oauth2/token/", self.oauth.token)
        routes: list[tuple[str, str, Route]] = [
            ("GET", "/api/v1/me/", self._me),
            ("GET", "/api/v1/user/", self._users),
            ("GET", "/api/v1/user/{id}/", self._user),
            ("POST", "/api/v1/data/search/", self._search),
            ("GET", r"/api/v1/custom_field/{table:lead|contact|opportunity}/", self._fields),
        ]
        for table in TABLES:
            base = f"/api/v1/{table}/"
            routes += [
                ("GET", base, self._list(table)),
                ("GET", base + "{id}/", self._get(table)),
                ("PUT", base + "{id}/", self._update(table)),
                ("DELETE", base + "{id}/", self._delete(table)),
            ]
            if table != "activity/meeting":
                routes.append(("POST", base, self._create_route(table)))
        for method, path, handler in routes:
            application.router.add_route(method, path, self.guard(handler))
        return application

    # ---- users ------------------------------------------------------------------------------

    async def _me(self, request: web.Request, token: Token) -> web.Response:
        me = dict(self.users[token.subject])
        me["organizations"] = [{"id": self.org_id, "name": self.organization}]
        return web.json_response(me)

    async def _users(self, request: web.Request, token: Token) -> web.Response:
        return _listed(request, list(self.users.values()))

    async def _user(self, request: web.Request, token: Token) -> web.Response:
        user = self.users.get(request.match_info["id"])
        if user is None:
            raise _not_found("user")
        return web.json_response(user)

    async def _fields(self, request: web.Request, token: Token) -> web.Response:
        return _listed(request, self.custom_fields[request.match_info["table"]])

    # ---- records ----------------------------------------------------------------------------

    def _derive(self, table: str, row: dict[str, Any]) -> None:
        row["organization_id"] = self.org_id
        if table == "lead":
            row.setdefault("status_id", LEAD_STATUS[0])
            row["status_label"] = LEAD_STATUS[1]
            row["display_name"] = row.get("name") or ""
        if table == "contact":
            row["display_name"] = row.get("name") or ""
        if table == "opportunity":
            row["status_id"] = row.get("status_id") or "stat_active"
            row["status_label"], row["status_type"] = STATUSES[row["status_id"]]
            value = row.get("value") or 0
            row["value_formatted"] = f"${value / 100:,.2f}"
        if table == "task":
            row.setdefault("_type", "lead")
            row.setdefault("is_complete", False)
        if table.startswith("activity/"):
            row["_type"] = table.removeprefix("activity/").capitalize()

    def _check(self, table: str, values: dict[str, Any], creating: bool) -> dict[str, Any]:
        """The values as stored, or Close's 400 with ``field-errors``."""
        problems: dict[str, str] = {}
        writable = WRITABLE[table].split()
        customs = {f"custom.{f['id']}": f for f in self.custom_fields.get(table, ())}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            kind = KINDS.get(key, "text") if key in writable else None
            if key in customs:
                kind = _CUSTOM_KINDS.get(customs[key]["type"], "text")
            if kind is None:
                if key.startswith("custom."):
                    problems[key] = "Unknown custom field."
                continue  # read-only and unknown fields are ignored
            if value is None or value == "":
                clean[key] = None
                continue
            problem = _bad(kind, value)
            if problem is None and key in REFERENCES and value not in self.store[REFERENCES[key]]:
                problem = "Object does not exist."
            if problem is None and key == "status_id" and table == "opportunity":
                problem = None if value in STATUSES else "Invalid status."
            if problem is None and key == "confidence" and not 0 <= value <= 100:
                problem = "Ensure this value is between 0 and 100."
            if problem is None and key in ("user_id", "assigned_to") and value not in self.users:
                problem = "Object does not exist."
            if problem:
                problems[key] = problem
            else:
                clean[key] = value
        if creating:
            for key in REQUIRED.get(table, ()):
                if not clean.get(key):
                    problems.setdefault(key, "This field is required.")
        if problems:
            raise Refused(400, **problems)
        return clean

    def _create(self, table: str, values: dict[str, Any], user_id: str) -> dict[str, Any]:
        clean = self._check(table, values, creating=True)
        if table == "contact" and not clean.get("lead_id"):  # its own lead, named after it
            lead = self._create("lead", {"name": clean.get("name") or ""}, user_id)
            clean["lead_id"] = lead["id"]
        row = {**clean, "created_by": user_id, "updated_by": user_id}
        if table in ("opportunity",) or table.startswith("activity/"):
            row.setdefault("user_id", user_id)
        if table == "task":
            row.setdefault("assigned_to", user_id)
        if table == "activity/call":
            row.setdefault("direction", "outbound")
            row.setdefault("status", "completed")
        return self.store.insert(table, row)

    def _row(self, table: str, record_id: str) -> dict[str, Any]:
        row = self.store[table].get(record_id)
        if row is None:
            raise _not_found(table)
        return row

    def _shown(self, table: str, row: dict[str, Any], nested: bool = False) -> dict[str, Any]:
        shown = {k: v for k, v in row.items() if not k.startswith("custom.")}
        customs = self.custom_fields.get(table, ())
        shown["custom"] = {f["name"]: row.get(f"custom.{f['id']}") for f in customs}
        shown.update({f"custom.{f['id']}": row.get(f"custom.{f['id']}") for f in customs})
        if nested and table == "lead":
            for child, key in (("contact", "contacts"), ("opportunity", "opportunities")):
                rows = [r for r in self.store[child].values() if r.get("lead_id") == row["id"]]
                shown[key] = [self._shown(child, r) for r in rows]
        return shown

    def _list(self, table: str) -> Route:
        async def handler(request: web.Request, token: Token) -> web.Response:
            rows = list(self.store[table].values())
            for key in FILTERS.get(table, ()):
                if key in request.query:
                    rows = [
                        r for r in rows if str(r.get(key)).lower() == request.query[key].lower()
                    ]
            for op in ("gt", "gte", "lt", "lte"):
                bound = request.query.get(f"date_created__{op}")
                if bound is not None and instant(bound) is None:
                    raise Refused(400, **{f"date_created__{op}": "Invalid date."})
                if bound is not None:
                    test = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
                    rows = [r for r in rows if _holds(test, r["date_created"], bound)]
            ordering = request.query.get("_order_by", "")
            column = ordering.removeprefix("-")
            if ordering and column not in ORDER_BY.get(table, ()):
                raise Refused(400, **{"_order_by": f"Cannot order by {column}."})
            by = Sort(column or "date_created", descending=ordering.startswith("-") or not column)
            rows = order(rows, by, Sort("id"))
            return _listed(request, [self._shown(table, r) for r in rows])

        return handler

    def _get(self, table: str) -> Route:
        async def handler(request: web.Request, token: Token) -> web.Response:
            row = self._row(table, request.match_info["id"])
            return web.json_response(_fields(request, self._shown(table, row, nested=True)))

        return handler

    def _create_route(self, table: str) -> Route:
        async def handler(request: web.Request, token: Token) -> web.Response:
            values = await json_object(request, lambda m: Refused(400, m))
            row = self._create(table, values, token.subject)
            return web.json_response(self._shown(table, row, nested=True))

        return handler

    def _update(self, table: str) -> Route:
        async def handler(request: web.Request, token: Token) -> web.Response:
            row = self._row(table, request.match_info["id"])
            values = await json_object(request, lambda m: Refused(400, m))
            changes = self._check(table, values, creating=False)
            for key in REQUIRED.get(table, ()):
                if key in changes and not changes[key]:
                    raise Refused(400, **{key: "This field is required."})
            self.store.change(table, row, {**changes, "updated_by": token.subject})
            return web.json_response(self._shown(table, row, nested=True))

        return handler

    def _delete(self, table: str) -> Route:
        async def handler(request: web.Request, token: Token) -> web.Response:
            row = self._row(table, request.match_info["id"])
            del self.store[table][row["id"]]
            if table == "lead":  # a lead takes its contacts, opportunities and activities along
                for child in TABLES[1:]:
                    for gone in [
                        i for i, r in self.store[child].items() if r.get("lead_id") == row["id"]
                    ]:
                        del self.store[child][gone]
            return web.json_response({})

        return handler

    # ---- the advanced filtering API -----------------------------------------------------------

    async def _search(self, request: web.Request, token: Token) -> web.Response:
        body = await json_object(request, lambda m: Refused(400, m))
        limit = body.get("_limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
            raise Refused(400, _limit=f"Input should be less than or equal to {MAX_LIMIT}")
        query = body.get("query")
        if not isinstance(query, dict):
            raise Refused(400, query="This field is required.")
        kinds = _object_types(query) or {"lead"}
        if not kinds <= {"lead", "contact"}:
            raise Refused(400, query=f"Unsupported object type {sorted(kinds)[0]}.")
        found = [
            (table, row)
            for table in ("lead", "contact")
            for row in self.store[table].values()
            if self._matches(query, table, row)
        ]
        keys = [self._sort_key(entry) for entry in body.get("sort") or ()]
        found = order(found, *keys, Sort(lambda item: item[1]["date_created"]), Sort(_id))
        start = 0
        cursor = body.get("cursor")
        signature = json.dumps([query, body.get("sort")], sort_keys=True)
        if cursor:
            held = self.cursors.get(str(cursor))
            if held is None or held[0] != signature:
                raise Refused(400, cursor="Invalid or expired cursor.")
            start = held[1]
        chosen, more = page(found, start, limit)
        wanted = body.get("_fields") or {}
        data = []
        for table, row in chosen:
            shown = {**self._shown(table, row), "__object_type": table}
            names = wanted.get(table) if isinstance(wanted, dict) else None
            keep = set(names) if isinstance(names, list) else {"id"}
            data.append({k: v for k, v in shown.items() if k in keep | {"__object_type"}})
        answer: dict[str, Any] = {
            "data": data,
            "cursor": self.cursors.issue((signature, start + limit)) if more else None,
        }
        if body.get("include_counts"):
            answer["count"] = {"total": len(found)}
        return web.json_response(answer)

    def _sort_key(self, entry: Any) -> Sort:
        if not isinstance(entry, dict) or not isinstance(entry.get("field"), dict):
            raise Refused(400, sort="Invalid sort.")
        column = _field_name(entry["field"])
        return Sort(lambda item: _value(item[1], column), entry.get("direction") == "desc")

    def _matches(self, query: dict[str, Any], table: str, row: dict[str, Any]) -> bool:
        kind = query.get("type")
        if kind == "and":
            return all(self._matches(q, table, row) for q in query.get("queries") or ())
        if kind == "or":
            return any(self._matches(q, table, row) for q in query.get("queries") or ())
        if kind == "not":
            return not self._matches(query.get("query") or {}, table, row)
        if kind == "object_type":
            return bool(query.get("object_type") == table)
        if kind != "field_condition" or not isinstance(query.get("field"), dict):
            raise Refused(400, query=f"Unknown query type {kind!r}.")
        field = query["field"]
        if field.get("type") == "regular_field" and field.get("object_type") != table:
            return False
        held = _condition(query.get("condition"), _value(row, _field_name(field)))
        return held != bool(query.get("negate"))


def _object_types(query: Any) -> set[str]:
    if not isinstance(query, dict):
        return set()
    if query.get("type") == "object_type":
        return {str(query.get("object_type"))}
    parts = list(query.get("queries") or ()) + ([query["query"]] if "query" in query else [])
    return set().union(*(_object_types(part) for part in parts)) if parts else set()


def _field_name(field: dict[str, Any]) -> str:
    if field.get("type") == "custom_field":
        return f"custom.{field.get('custom_field_id')}"
    if field.get("type") != "regular_field" or not isinstance(field.get("field_name"), str):
        raise Refused(400, field="Invalid field.")
    return str(field["field_name"])


def _value(row: dict[str, Any], column: str) -> Any:
    """A row's value of a searched field; a list (emails, phones) as its values' text."""
    value = row.get(column)
    if isinstance(value, list):
        return " ".join(str(v.get("email") or v.get("phone") or v.get("url") or "") for v in value)
    return value


def _condition(condition: Any, value: Any) -> bool:
    if not isinstance(condition, dict):
        raise Refused(400, condition="This field is required.")
    kind = condition.get("type")
    if kind == "exists":
        return value not in (None, "", [])
    if value is None:
        return False
    if kind == "text":
        wanted, have = str(condition.get("value", "")).casefold(), str(value).casefold()
        mode = condition.get("mode", "full_words")
        if mode == "exact_value":
            return have == wanted
        if mode == "phrase":
            return wanted in have
        if mode == "beginning_of_words":
            return re.search(r"(?:^|\W)" + re.escape(wanted), have) is not None
        return all(re.search(rf"\b{re.escape(w)}\b", have) for w in wanted.split())
    if kind == "term":
        return str(value) in {str(v) for v in condition.get("values") or ()}
    if kind == "boolean":
        return value is condition.get("value")
    if kind == "number_range":
        tests = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        return all(_holds(tests[k], value, condition[k], "number") for k in tests if k in condition)
    if kind == "moment_range":
        bounds = (("on_or_after", ">="), ("before", "<"))
        for key, test in bounds:
            moment = condition.get(key)
            if isinstance(moment, dict) and not _holds(test, value, moment.get("value")):
                return False
        return True
    raise Refused(400, condition=f"Unknown condition type {kind!r}.")


def _holds(test: str, have: Any, wanted: Any, kind: str = "datetime") -> bool:
    order_ = compare(have, wanted, kind)
    return {">": order_ > 0, ">=": order_ >= 0, "<": order_ < 0, "<=": order_ <= 0}[test]


def _id(item: tuple[str, dict[str, Any]]) -> str:
    return str(item[1]["id"])


def _bad(kind: str, value: Any) -> str | None:
    if kind == "text" and not isinstance(value, str):
        return "Value must be of basestring type."
    if kind in ("integer", "number") and (
        isinstance(value, bool) or not isinstance(value, int if kind == "integer" else (int, float))
    ):
        return "A valid integer is required." if kind == "integer" else "A number is required."
    if kind == "boolean" and not isinstance(value, bool):
        return "Must be a valid boolean."
    if kind in ("date", "datetime") and instant(value) is None:
        return f"Invalid {kind}."
    if kind == "list" and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
        return "Must be a list of objects."
    return None


def _fields(request: web.Request, shown: dict[str, Any]) -> dict[str, Any]:
    """``_fields=a,b``: only those (and the id)."""
    wanted = request.query.get("_fields")
    if not wanted:
        return shown
    keep = {name.strip() for name in wanted.split(",")} | {"id"}
    return {k: v for k, v in shown.items() if k in keep}


def _listed(request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
    try:
        skip = int(request.query.get("_skip", "0"))
        limit = int(request.query.get("_limit", "100"))
    except ValueError:
        raise Refused(400, _skip="A valid integer is required.") from None
    if limit > MAX_LIMIT or limit < 0 or skip < 0:
        raise Refused(400, _limit=f"Input should be less than or equal to {MAX_LIMIT}")
    chosen, more = page(rows, skip, limit)
    data = [_fields(request, row) for row in chosen]
    return web.json_response({"data": data, "has_more": more, "total_results": len(rows)})


def _mechanism(request: web.Request) -> str:
    scheme = request.headers.get("Authorization", "").partition(" ")[0]
    return scheme.lower() or "none"


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Close at a simulator running at ``base_url`` (it
    plays both api.close.com and app.close.com's OAuth pages)."""
    host = base_url.removeprefix("https://")
    oauth = {
        "authorize_url": f"{base_url}/oauth2/authorize/",
        "token_url": f"{base_url}/oauth2/token/",
    }
    return {"CloseIO": {"api_url": base_url, "instance_hosts": [host], "oauth": oauth}}


def seed_close(sim: CloseSimulator) -> None:
    """A small, believable Close organization: leads (companies) with their contacts,
    opportunities, tasks and activities."""
    tier = sim.add_custom_field("lead", "Tier", "choices", choices=["Gold", "Silver"])
    sim.add_custom_field("contact", "Shoe size", "number")
    for n, (company, person, title, value) in enumerate(
        (
            ("Northwind Traders", "Nancy Davolio", "Sales Representative", 1_200_000),
            ("Contoso Pharmaceuticals", "Janet Leverling", "Head of Research", 4_500_000),
            ("Fabrikam Farms", "Steven Buchanan", "Farm Manager", 800_000),
        )
    ):
        url = f"https://{company.split()[0].lower()}.example"
        lead = sim.insert("lead", {"name": company, "url": url, tier: "Gold" if n else "Silver"})
        email = person.lower().replace(" ", ".") + "@example.com"
        contact = sim.insert(
            "contact",
            {
                "lead_id": lead,
                "name": person,
                "title": title,
                "emails": [{"type": "office", "email": email}],
                "phones": [{"type": "office", "phone": f"+1 206 555 01{n:02d}"}],
            },
        )
        deal = {"value": value, "confidence": 50, "note": f"{company.split()[0]} deal"}
        linked = {"lead_id": lead, "contact_id": contact}
        sim.insert("opportunity", {**linked, **deal, "date_won": f"2027-0{n + 3}-15"})
        sim.insert("task", {"lead_id": lead, "text": f"Follow up with {person}"})
        sim.insert("activity/note", {"lead_id": lead, "note": f"{person} prefers email."})
        sim.insert("activity/call", {**linked, "note": "Intro call"})
        sim.store.insert(  # from calendar sync: the API makes none
            "activity/meeting",
            {
                **linked,
                "user_id": sim.admin,
                "title": "Kick-off",
                "starts_at": "2027-02-01T10:00:00+00:00",
                "ends_at": "2027-02-01T11:00:00+00:00",
                "location": "Video call",
                "status": "upcoming",
                "created_by": sim.admin,
            },
        )
