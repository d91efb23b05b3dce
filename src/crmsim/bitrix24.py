"""A Bitrix24 portal: the subset of its REST API (https://apidocs.bitrix24.com) that crmgate and
Bitrix24's official Python SDK (``b24pysdk``) use.

- Calls: ``/rest/<method>`` (``.json`` optional), GET or POST, parameters in the query or a
  JSON body. OAuth tokens travel as the ``auth`` parameter; an inbound webhook's user id and
  code are path segments, ``/rest/<user>/<code>/<method>``. Refusals: 401 ``NO_AUTH_FOUND``
  (none), ``INVALID_CREDENTIALS`` (an unknown webhook), ``invalid_token``, ``expired_token``.
- OAuth: the consent page on the portal (``/oauth/authorize/``), the token server
  (oauth.bitrix.info ``/oauth/token/``, GET with the parameters in the query, as documented
  and as the SDK calls it) with the authorization code and refresh
  token grants; its answer names the portal (``client_endpoint``, ``member_id``).
- CRM objects ``contact``, ``company``, ``deal``, ``lead``: ``crm.<object>.list`` (``filter``
  with Bitrix24's key prefixes ``=``, ``!``, ``>``, ``>=``, ``<``, ``<=``, ``%``, ``=%``;
  ``order``; ``select``, where ``*`` is the standard fields, ``UF_*`` the user fields and the
  multi-fields EMAIL and PHONE are only shown when named; ``start``: 50 records a page, always,
  with ``next`` and ``total``), ``.get``, ``.add`` (the new id), ``.update``, ``.delete``
  (``true``), ``.fields``. Values come back as text. A multi-field item with an ``ID`` replaces
  (or, with an empty VALUE, deletes) that item; one without is added. Unknown ids: 400
  ``{"error": "", "error_description": "Not found"}``.
- Timeline comments (``crm.timeline.comment.*``), each on one CRM record (``ENTITY_TYPE`` lead,
  deal, contact or company, and ``ENTITY_ID``) by its ``AUTHOR_ID``: ``.list`` must name that
  record in ``filter`` (else 400, "ENTITY_TYPE is not defined or invalid.", the words of the
  timeline methods' proxy; nothing else filters) and orders by ID, CREATED and AUTHOR_ID only;
  ``.add`` answers the id (``OWNER_NOT_FOUND``, ``INVALID_ARG_VALUE`` for an empty text, ``100``
  for a missing record), ``.update`` changes COMMENT and FILES only and answers the id,
  ``.delete`` answers null; an unknown id is ``NOT_FOUND`` there, ``.get``'s "Not found.".
  FILES are sent as [name, base64] pairs and shown by their ids.
- Users: ``user.current``, ``user.get`` (``FILTER``/``filter``, ``start``), ``user.fields``.
- Limits: a leaky bucket per credential (``burst`` calls, draining 2 a second), beyond it 503
  ``QUERY_LIMIT_EXCEEDED``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from crmsim.app import Route, Simulator, UserTokens, overrides
from crmsim.guard import Answer, Guard, Verdict, query
from crmsim.oauth import AuthorizationServer, Issued
from crmsim.records import Sort, Store, compare, instant, order
from crmsim.tokens import AccessToken, TokenStore

Token = AccessToken[str]  # its subject: the user id
PAGE = 50
MAX_BATCH = 50
PARAMS = web.RequestKey("params", dict[str, Any])  # a call's parameters, query and body
COMMENTS = "timeline.comment"
OBJECTS = ("contact", "company", "deal", "lead", "activity", COMMENTS)
COMMENT_ON = ("lead", "deal", "contact", "company")  # the objects a comment may be on
COMMENT_SORTS = ("ID", "CREATED", "AUTHOR_ID")
OWNER_NAMES = {"1": "lead", "2": "deal", "3": "contact", "4": "company"}  # an owner's type
ACTIVITY_TYPES = ("1", "2", "3")  # meeting, call, task
MULTI = ("EMAIL", "PHONE")
# each object's standard fields and their types (crm.<object>.fields)
COMMON = {"ID": "integer", "COMMENTS": "string", "ASSIGNED_BY_ID": "user"}
COMMON |= {"DATE_CREATE": "datetime", "DATE_MODIFY": "datetime"}
PERSON = {"NAME": "string", "SECOND_NAME": "string", "LAST_NAME": "string", "POST": "string"}
MULTIFIELDS = {"EMAIL": "crm_multifield", "PHONE": "crm_multifield"}
FIELDS: dict[str, dict[str, str]] = {
    "contact": {**COMMON, **PERSON, "COMPANY_ID": "crm_company", **MULTIFIELDS},
    "company": {**COMMON, "TITLE": "string", "INDUSTRY": "crm_status", **MULTIFIELDS},
    "deal": {
        **COMMON,
        "TITLE": "string",
        "OPPORTUNITY": "double",
        "PROBABILITY": "integer",
        "STAGE_ID": "crm_status",
        "CLOSEDATE": "date",
        "COMPANY_ID": "crm_company",
        "CONTACT_ID": "crm_contact",
    },
    "lead": {
        **COMMON,
        **PERSON,
        "TITLE": "string",
        "COMPANY_TITLE": "string",
        "STATUS_ID": "crm_status",
        **MULTIFIELDS,
    },
    "activity": {
        "ID": "integer",
        "OWNER_ID": "integer",
        "OWNER_TYPE_ID": "integer",
        "TYPE_ID": "integer",
        "SUBJECT": "string",
        "DESCRIPTION": "string",
        "START_TIME": "datetime",
        "END_TIME": "datetime",
        "DEADLINE": "datetime",
        "COMPLETED": "char",
        "DIRECTION": "integer",
        "PRIORITY": "integer",
        "LOCATION": "string",
        "RESPONSIBLE_ID": "user",
        "CREATED": "datetime",
        "LAST_UPDATED": "datetime",
    },
    COMMENTS: {
        "ID": "integer",
        "CREATED": "datetime",
        "ENTITY_ID": "integer",
        "ENTITY_TYPE": "string",
        "AUTHOR_ID": "integer",
        "COMMENT": "string",
        "FILES": "attached_diskfile",
    },
}
READ_ONLY = ("ID", "DATE_CREATE", "DATE_MODIFY", "CREATED", "LAST_UPDATED")
REQUIRED = ("ENTITY_ID", "ENTITY_TYPE")  # a comment's (set when added, never changed)
IMMUTABLE = (*REQUIRED, "AUTHOR_ID")
KINDS = {"integer": "number", "double": "number", "date": "datetime", "datetime": "datetime"}
OPERATORS = (">=", "<=", "!=", "=%", "!%", "%", "=", "!", ">", "<")
USER_FIELDS = ("ID", "ACTIVE", "NAME", "LAST_NAME", "EMAIL", "WORK_POSITION", "DATE_REGISTER")


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _timing(started: float, spent: float) -> dict[str, Any]:
    """An answer's ``time``; a method's time limit counts ``operating`` per 10 minutes."""
    return {
        "start": started,
        "finish": started + spent,
        "duration": spent,
        "processing": spent,
        "date_start": _stamp(started),
        "date_finish": _stamp(started + spent),
        "operating_reset_at": int(started) + 600,
        "operating": spent,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def refused(status: int, error: str, description: str) -> Answer:
    return Answer(status, {"error": error, "error_description": description})


def not_found() -> Answer:
    return refused(400, "", "Not found")


def _text(value: Any) -> Any:
    """A value as Bitrix24 answers it: text (lists and null as they are)."""
    if value is None or isinstance(value, (list, dict, str)):
        return value
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


class LeakyBucket:
    """Bitrix24's limit: each call adds one to a counter that drains ``rate`` a second; past
    ``capacity`` calls are refused until it has drained below."""

    def __init__(self, capacity: int, rate: float = 2.0) -> None:
        self.capacity, self.rate = capacity, rate
        self.levels: dict[Hashable, tuple[float, float]] = {}

    def hit(self, key: Hashable) -> Verdict:
        now = time.monotonic()
        level, then = self.levels.get(key, (0.0, now))
        level = max(0.0, level - (now - then) * self.rate)
        allowed = level + 1 <= self.capacity
        self.levels[key] = (level + 1 if allowed else level, now)
        return Verdict(allowed, self.capacity, int(level), 1)


def _webhook(request: web.Request) -> str | None:
    parts = request.match_info.get("tail", "").split("/")
    return f"{parts[0]}/{parts[1]}" if len(parts) == 3 else None


def _body_auth(request: web.Request) -> str | None:
    params = request.get(PARAMS) or {}
    value = params.get("auth")
    return value if isinstance(value, str) else None


class _Guard(Guard[str]):
    def __init__(self, sim: Bitrix24Simulator) -> None:
        super().__init__(sim.tokens, [_webhook, query("auth"), _body_auth], sim.bucket, sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.Response:
        if token is not None:
            body = ("expired_token", "The access token provided has expired.")
        elif _webhook(request):
            body = ("INVALID_CREDENTIALS", "Invalid request credentials")
        elif "auth" in request.query or _body_auth(request):
            body = ("invalid_token", "The access token provided is invalid.")
        else:
            body = ("NO_AUTH_FOUND", "Wrong authorization data")
        return refused(401, *body).response()

    def limited(self, verdict: Verdict) -> web.Response:
        return refused(503, "QUERY_LIMIT_EXCEEDED", "Too many requests").response()


class _OAuth(AuthorizationServer[str]):
    """The token server: a GET with every parameter (client id and secret too) in the query,
    refresh tokens rotated; its answer names the portal."""

    refresh_rotation = "rotate"
    require_pkce = False
    scope_separator = ","

    def __init__(self, sim: Bitrix24Simulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim

    async def parameters(self, request: web.Request) -> dict[str, str]:
        return dict(request.query)

    def token_answer(self, issued: Issued[str], request: web.Request) -> dict[str, Any]:
        answer = super().token_answer(issued, request)
        portal = self.sim.base_url
        return {
            **answer,
            "expires": int(time.time() + issued.lifetime),
            "domain": "oauth.bitrix.info",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "client_endpoint": f"{portal}/rest/",
            "scope": answer.get("scope") or "crm,user",  # the application's, by commas
            "member_id": self.sim.member_id,
            "user_id": int(issued.token.subject),
            "status": "L",
        }


class Bitrix24Simulator(Simulator[str], UserTokens[str]):
    def __init__(self, burst: int = 50) -> None:
        super().__init__()
        self.member_id = secrets.token_hex(16)
        self.bucket = LeakyBucket(burst)
        self.tokens = TokenStore(
            access_format=lambda: secrets.token_hex(35),
            key_format=lambda: f"{self.admin}/{secrets.token_hex(8)}",
        )
        self.users: dict[str, dict[str, Any]] = {}
        self.admin = ""
        self.admin = self.add_user("Ada", "Admin", "ada@acme.example")
        self.user_fields: dict[str, dict[str, dict[str, Any]]] = {o: {} for o in OBJECTS}
        self.serial = 0
        self.store = Store(
            OBJECTS,
            key=lambda table: "ID",
            new_id=self._next_id,
            now=_now,
            created=("DATE_CREATE", "CREATED"),
            modified=("DATE_MODIFY", "LAST_UPDATED"),
        )
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)

    def _next_id(self, table: str) -> int:
        self.serial += 1
        return self.serial

    # ---- state --------------------------------------------------------------------------------

    def add_user(self, first: str, last: str, email: str) -> str:
        user_id = str(len(self.users) + 1)
        self.users[user_id] = {
            "ID": user_id,
            "ACTIVE": True,
            "NAME": first,
            "LAST_NAME": last,
            "EMAIL": email,
            "WORK_POSITION": "",
            "DATE_REGISTER": _now(),
        }
        return user_id

    def webhook_url(self, user: str | None = None) -> str:
        return f"{self.base_url}/rest/{self.issue_key(user)}/"

    def add_user_field(self, table: str, name: str, kind: str = "string", **more: Any) -> str:
        field = f"UF_CRM_{name.upper()}"
        self.user_fields[table][field] = {"type": kind, "listLabel": name, **more}
        return field

    def insert(self, table: str, values: dict[str, Any]) -> str:
        return str(self._add(table, dict(values))["ID"])

    # ---- HTTP ---------------------------------------------------------------------------------

    def routes(self) -> Iterable[Route]:
        return [
            Route("GET", "/oauth/authorize/", self.oauth.authorize, guarded=False),
            Route("GET", "/oauth/token/", self.oauth.token, guarded=False),
            Route("GET", "/rest/{tail:.+}", self._call),
            Route("POST", "/rest/{tail:.+}", self._call),
        ]

    def app(self) -> web.Application:
        application = super().app()

        @web.middleware
        async def parameters(request: web.Request, handler: Any) -> web.StreamResponse:
            params: dict[str, Any] = dict(request.query)
            if request.can_read_body and request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    return refused(400, "INVALID_REQUEST", "Invalid JSON").response()
                params |= body if isinstance(body, dict) else {}
            elif request.can_read_body:
                params |= {k: v for k, v in (await request.post()).items()}
            request[PARAMS] = params
            response: web.StreamResponse = await handler(request)
            return response

        application.middlewares.append(parameters)
        return application

    async def _call(self, request: web.Request, token: Token) -> web.Response:
        method = request.match_info["tail"].split("/")[-1].removesuffix(".json").lower()
        params: dict[str, Any] = request.get(PARAMS) or {}
        return web.json_response(self.run(method, params, token))

    def run(self, method: str, params: dict[str, Any], token: Token) -> dict[str, Any]:
        """One method's answer ({"result": ..., "time": ...}), or a raised Answer."""
        started = time.time()
        answer = self._method(method, params, token)
        answer["time"] = _timing(started, time.time() - started)
        return answer

    def _batch(self, params: dict[str, Any], token: Token) -> dict[str, Any]:
        """``batch``: at most 50 commands, each a method and its parameters as a query string
        (PHP's bracketed keys); each answer, error, total and next under the command's key;
        ``halt`` stops at the first error."""
        commands = params.get("cmd")
        if not isinstance(commands, dict) or len(commands) > MAX_BATCH:
            raise refused(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        parts: dict[str, dict[str, Any]] = {
            name: {}
            for name in ("result", "result_error", "result_total", "result_next", "result_time")
        }
        for key, command in commands.items():
            method, _, text = str(command).partition("?")
            started = time.time()
            try:
                answer = self._method(method.lower(), _php_query(text), token)
            except Answer as failed:
                parts["result_error"][key] = failed.body
                if str(params.get("halt", "0")).lower() not in ("0", "false", ""):
                    break
                continue
            parts["result"][key] = answer["result"]
            parts["result_time"][key] = _timing(started, time.time() - started)
            for name in ("total", "next"):
                if name in answer:
                    parts["result_" + name][key] = answer[name]
        return {"result": {name: _php_array(part) for name, part in parts.items()}}

    def _method(self, method: str, params: dict[str, Any], token: Token) -> dict[str, Any]:
        if method == "batch":
            return self._batch(params, token)
        objects = r"contact|company|deal|lead|activity|timeline\.comment"
        found = re.fullmatch(rf"crm\.({objects})\.(\w+)", method)
        if method == "user.current":
            return {"result": self._user(self.users[token.subject])}
        if method == "user.get":
            wanted = params.get("FILTER") or params.get("filter") or {}
            users = [
                self._user(u)
                for u in self.users.values()
                if all(str(u.get(k.lstrip("="))) == str(v) for k, v in dict(wanted).items())
            ]
            return _paged(users, params)
        if method == "user.fields":
            return {"result": {name: name.replace("_", " ").title() for name in USER_FIELDS}}
        if found is None:
            raise refused(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        table, action = found.groups()
        if table == COMMENTS and action in ("add", "get", "update", "delete"):
            return self._comment(action, params, token)
        if action == "fields":
            return {"result": self._fields(table)}
        if action == "list":
            return self._list(table, params)
        if action == "add":
            fields = params.get("fields")
            if not isinstance(fields, dict):
                raise refused(400, "", "Parameter 'fields' must be array.")
            return {"result": int(self._add(table, fields, token.subject)["ID"])}
        row = self.store[table].get(str(_param(params, "id")))
        if row is None:
            raise not_found()
        if action == "get":
            return {"result": self._shown(table, row, ["*", "UF_*", *MULTI])}
        if action == "update":
            fields = params.get("fields")
            if not isinstance(fields, dict):
                raise refused(400, "", "Parameter 'fields' must be array.")
            self.store.change(table, row, self._checked(table, fields, row))
            return {"result": True}
        if action == "delete":
            del self.store[table][str(row["ID"])]
            return {"result": True}
        raise refused(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _comment(self, action: str, params: dict[str, Any], token: Token) -> dict[str, Any]:
        """``crm.timeline.comment.add``, ``.get``, ``.update``, ``.delete``."""
        fields = params.get("fields")
        if action in ("add", "update") and not isinstance(fields, dict):
            raise refused(400, "", "Parameter 'fields' must be array.")
        fields = fields if isinstance(fields, dict) else {}
        if action == "add":
            return {"result": int(self._add(COMMENTS, fields, token.subject)["ID"])}
        wanted = str(_param(params, "id") or "")
        if not wanted.isdigit():
            raise refused(400, "", "ID is not defined or invalid.")
        row = self.store[COMMENTS].get(wanted)
        if row is None:
            raise refused(400, "" if action == "get" else "NOT_FOUND", "Not found.")
        if action == "get":
            return {"result": self._shown(COMMENTS, row, ["*"])}
        if action == "delete":
            del self.store[COMMENTS][wanted]
            return {"result": None}
        changes = {k: v for k, v in fields.items() if k in ("COMMENT", "FILES")}
        if "COMMENT" in changes and not str(changes["COMMENT"] or "").strip():
            raise refused(400, "INVALID_ARG_VALUE", "Empty comment.")
        self.store.change(COMMENTS, row, self._checked(COMMENTS, changes, row))
        return {"result": int(wanted)}

    def _files(self, value: Any) -> dict[str, Any]:
        """Files sent as [name, base64 content] pairs, as Bitrix24 shows them: by their ids."""
        shown: dict[str, Any] = {}
        for pair in value if isinstance(value, list) else []:
            if not isinstance(pair, list) or len(pair) != 2:
                raise refused(400, "", "Wrong value for field FILES")
            try:
                size = len(base64.b64decode(str(pair[1]), validate=True))
            except (binascii.Error, ValueError):
                raise refused(400, "", "Wrong value for field FILES") from None
            self.serial += 1
            url = f"{self.base_url}/disk/downloadFile/{self.serial}/?&ncc=1&filename={pair[0]}"
            shown[str(self.serial)] = {
                "id": self.serial,
                "date": _now(),
                "type": "file",
                "name": str(pair[0]),
                "size": size,
                "urlDownload": url,
            }
        return shown

    def _user(self, user: dict[str, Any]) -> dict[str, Any]:
        return {name: _text(user.get(name)) for name in USER_FIELDS}

    # ---- records ------------------------------------------------------------------------------

    def _fields(self, table: str) -> dict[str, Any]:
        described = {
            name: {
                "type": kind,
                "isRequired": name in REQUIRED,
                "isReadOnly": name in READ_ONLY,
                "isImmutable": name in IMMUTABLE,
                "isMultiple": name in MULTI or kind == "attached_diskfile",
                "isDynamic": False,
                "title": name.replace("_", " ").title(),
            }
            for name, kind in FIELDS[table].items()
        }
        for name, spec in self.user_fields[table].items():
            described[name] = {
                "isRequired": False,
                "isReadOnly": False,
                "isImmutable": False,
                "isMultiple": False,
                "isDynamic": True,
                "title": name,
                **spec,
            }
        return described

    def _kind(self, table: str, field: str) -> str:
        native = FIELDS[table].get(field) or self.user_fields[table].get(field, {}).get("type")
        return KINDS.get(str(native), "text")

    def _checked(
        self, table: str, fields: dict[str, Any], row: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The values as stored: unknown and read-only fields are ignored, as Bitrix24 does."""
        clean: dict[str, Any] = {}
        for name, value in fields.items():
            known = name in FIELDS[table] or name in self.user_fields[table]
            if not known or name in READ_ONLY:
                continue
            if name in MULTI:
                clean[name] = self._multi(name, value, (row or {}).get(name) or [])
                continue
            if name == "FILES":
                clean[name] = self._files(value)
                continue
            kind = self._kind(table, name)
            if value not in (None, "") and kind == "datetime" and instant(value) is None:
                raise refused(400, "", f"Wrong value for field {name}")
            if value not in (None, "") and kind == "number":
                try:
                    float(str(value))
                except ValueError:
                    raise refused(400, "", f"Wrong value for field {name}") from None
            clean[name] = value
        return clean

    def _multi(self, name: str, value: Any, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Multi-field items: one with an ID replaces that item (an empty VALUE deletes it),
        one without is added."""
        items = [dict(item) for item in held]
        for given in value if isinstance(value, list) else []:
            if not isinstance(given, dict):
                continue
            if given.get("ID"):
                items = [i for i in items if str(i["ID"]) != str(given["ID"])] + (
                    [{**given, "ID": str(given["ID"]), "TYPE_ID": name}]
                    if given.get("VALUE")
                    else []
                )
            elif given.get("VALUE"):
                self.serial += 1
                entry = {"ID": str(self.serial), "TYPE_ID": name, "VALUE": given["VALUE"]}
                items.append({**entry, "VALUE_TYPE": given.get("VALUE_TYPE") or "WORK"})
        return items

    def _add(self, table: str, fields: dict[str, Any], user: str | None = None) -> dict[str, Any]:
        values = self._checked(table, fields)
        if table == COMMENTS:  # on one CRM record, with a text
            if not all(values.get(name) for name in REQUIRED):
                raise refused(400, "100", "Required fields are not provided.")
            on = str(values["ENTITY_TYPE"]).lower()
            if on not in COMMENT_ON or str(values["ENTITY_ID"]) not in self.store[on]:
                raise refused(400, "OWNER_NOT_FOUND", "Owner element not found.")
            if not str(values.get("COMMENT") or "").strip():
                raise refused(400, "INVALID_ARG_VALUE", "Empty comment.")
            values |= {"ENTITY_TYPE": on, "FILES": values.get("FILES") or {}}
            values["AUTHOR_ID"] = values.get("AUTHOR_ID") or user or self.admin
            return self.store.insert(table, values)
        if table == "activity":  # an activity of a known type, on one CRM record
            if str(values.get("TYPE_ID")) not in ACTIVITY_TYPES:
                raise refused(400, "", "TYPE_ID is not defined or invalid.")
            owner = self.store.get(OWNER_NAMES.get(str(values.get("OWNER_TYPE_ID")), ""), {})
            if str(values.get("OWNER_ID")) not in owner:
                raise refused(400, "", "OWNER_ID is not defined or invalid.")
            values.setdefault("RESPONSIBLE_ID", user or self.admin)
            values.setdefault("COMPLETED", "N")
            return self.store.insert(table, values)
        values.setdefault("ASSIGNED_BY_ID", user or self.admin)
        if table == "deal":
            values.setdefault("STAGE_ID", "NEW")
        if table == "lead":
            values.setdefault("STATUS_ID", "NEW")
        return self.store.insert(table, values)

    def _shown(self, table: str, row: dict[str, Any], select: list[str]) -> dict[str, Any]:
        names = [n for n in FIELDS[table] if n not in MULTI] if "*" in select or not select else []
        names += list(self.user_fields[table]) if "UF_*" in select or not select else []
        names += [n for n in select if n not in ("*", "UF_*") and n not in names]
        known = {**FIELDS[table], **self.user_fields[table]}
        shown = {n: _text(row.get(n)) for n in ["ID", *names] if n in known}
        for name in MULTI:
            if name in shown:
                shown[name] = row.get(name) or []
        return shown

    def _list(self, table: str, params: dict[str, Any]) -> dict[str, Any]:
        rows = list(self.store[table].values())
        conditions = params.get("filter") or {}
        if not isinstance(conditions, dict):
            raise refused(400, "", "Parameter 'filter' must be array.")
        if table == COMMENTS:  # the record's comments; nothing else filters
            on, record = _comment_on(conditions)
            rows = [r for r in rows if (r["ENTITY_TYPE"], str(r["ENTITY_ID"])) == (on, record)]
            conditions = {}
        for key, wanted in conditions.items():
            operator = next((op for op in OPERATORS if key.startswith(op)), "")
            field = key[len(operator) :]
            if field not in FIELDS[table] and field not in self.user_fields[table]:
                continue  # Bitrix24 ignores a filter on an unknown field
            kind = self._kind(table, field)
            rows = [r for r in rows if _holds(operator or "=", r.get(field), wanted, kind)]
        keys = []
        for field, direction in dict(params.get("order") or {}).items():
            if table == COMMENTS and field not in COMMENT_SORTS:
                continue
            descending = str(direction).upper() == "DESC"
            kind = self._kind(table, field)
            keys.append(Sort(field, descending, kind=kind if kind != "text" else None))
        rows = order(rows, *keys, Sort(lambda r: int(r["ID"])))
        select = params.get("select") or []
        return _paged([self._shown(table, r, list(select)) for r in rows], params)


def _php_query(text: str) -> dict[str, Any]:
    """A query string with PHP's bracketed keys (``fields[EMAIL][0][VALUE]=x``) as nested
    objects; an object whose keys are 0, 1, ... as a list."""
    found: dict[str, Any] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        keys = [name.partition("[")[0], *re.findall(r"\[([^\]]*)\]", name)]
        place = found
        for key in keys[:-1]:
            place = place.setdefault(key or str(len(place)), {})
            if not isinstance(place, dict):
                break
        else:
            place[keys[-1] or str(len(place))] = value
    return {key: _lists(value) for key, value in found.items()}


def _php_array(part: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """A map as PHP's JSON shows it: keys 0, 1, ... in order (or none) make a list."""
    return list(part.values()) if list(part) == [str(n) for n in range(len(part))] else part


def _lists(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _lists(item) for key, item in value.items()}
    if items and all(key == str(n) for n, key in enumerate(items)):
        return list(items.values())
    return items


def _comment_on(conditions: dict[str, Any]) -> tuple[str, str]:
    """The CRM record a comment list names (its ``filter``'s ENTITY_TYPE and ENTITY_ID, as
    keys of their own: a prefixed key names nothing)."""
    on = str(conditions.get("ENTITY_TYPE") or "").lower()
    if on not in COMMENT_ON:
        raise refused(400, "", "ENTITY_TYPE is not defined or invalid.")
    record = str(conditions.get("ENTITY_ID") or "")
    if not record.isdigit() or int(record) <= 0:
        raise refused(400, "", "ENTITY_ID is not defined or invalid.")
    return on, str(int(record))


def _param(params: dict[str, Any], name: str) -> Any:
    return params.get(name, params.get(name.upper()))


def _holds(operator: str, have: Any, wanted: Any, kind: str) -> bool:
    if operator in ("%", "!%", "=%"):
        text, pattern = str(have or "").casefold(), str(wanted).casefold()
        if operator == "=%":  # the value's own % wildcards
            found = re.fullmatch(re.escape(pattern).replace("%", ".*"), text) is not None
        else:
            found = pattern in text
        return found != (operator == "!%")
    if wanted in ("", None):
        empty = have in (None, "", [])
        return empty if operator == "=" else not empty
    if have in (None, ""):
        return operator in ("!", "!=")
    order_ = compare(have, wanted, kind if kind != "text" else None)
    return {
        "=": order_ == 0,
        "!": order_ != 0,
        "!=": order_ != 0,
        ">": order_ > 0,
        ">=": order_ >= 0,
        "<": order_ < 0,
        "<=": order_ <= 0,
    }[operator]


def _paged(rows: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """50 records from ``start``; ``next`` where more follow, and ``total``."""
    try:
        start = max(0, int(params.get("start") or 0))
    except (TypeError, ValueError):
        start = 0
    answer: dict[str, Any] = {"result": rows[start : start + PAGE], "total": len(rows)}
    if start + PAGE < len(rows):
        answer["next"] = start + PAGE
    return answer


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Bitrix24 at a simulator at ``base_url`` (it plays
    the portal and the token server)."""
    return overrides("Bitrix24", base_url, {"token_url": "/oauth/token/"})


def seed_bitrix24(sim: Bitrix24Simulator) -> None:
    """A small portal: companies with their contacts, deals, leads and a comment each."""
    tier = sim.add_user_field(
        "company", "Tier", "enumeration", items=[{"ID": "1", "VALUE": "Gold"}]
    )
    for n, (company, first, last, amount) in enumerate(
        (
            ("Northwind Traders", "Nancy", "Davolio", 12_000),
            ("Contoso Pharmaceuticals", "Janet", "Leverling", 45_000),
            ("Fabrikam Farms", "Steven", "Buchanan", 8_000),
        )
    ):
        made = sim.insert("company", {"TITLE": company, tier: "Gold"})
        email = f"{first.lower()}.{last.lower()}@example.com"
        contact = sim.insert(
            "contact",
            {
                "NAME": first,
                "LAST_NAME": last,
                "COMPANY_ID": made,
                "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}],
                "PHONE": [{"VALUE": f"+1 206 555 01{n:02d}", "VALUE_TYPE": "WORK"}],
            },
        )
        deal = {"TITLE": f"{company.split()[0]} deal", "OPPORTUNITY": amount}
        sim.insert("deal", {**deal, "COMPANY_ID": made, "CONTACT_ID": contact})
        note = {"ENTITY_TYPE": "company", "ENTITY_ID": made, "COMMENT": f"Met {first} {last}"}
        sim.insert(COMMENTS, note)
        sim.insert("lead", {"TITLE": f"Lead from {company}", "NAME": first, "LAST_NAME": last})
