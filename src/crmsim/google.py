"""A Google account: the subset of the People API v1, the Calendar API v3 and the Tasks API v1
that crmgate and Google's official client (``google-api-python-client``) use, as
developers.google.com documents them. One simulator plays every host (people.googleapis.com,
www.googleapis.com, tasks.googleapis.com, accounts.google.com, oauth2.googleapis.com).

- Auth: OAuth access tokens as ``Authorization: Bearer``; else 401 ``UNAUTHENTICATED``. OAuth 2
  (``/o/oauth2/v2/auth``, ``/token``, ``/revoke``): the authorization code grant with PKCE, a
  refresh token only with ``access_type=offline``; a refresh answers no new refresh token (they
  are not rotated). The token answer's ``scope`` names what was granted (email and profile as
  ``userinfo.*``), with ``include_granted_scopes=true`` all the user granted the client so far;
  a token without a scope of the API it calls is 403 PERMISSION_DENIED
  (ACCESS_TOKEN_SCOPE_INSUFFICIENT). ``/oauth2/v3/userinfo``: the signed-in user (OpenID
  Connect), with ``hd``, the Workspace domain.
- People: ``people/me/connections`` (``personFields`` required; ``pageSize`` at most 1000,
  ``pageToken``, ``sortOrder``, ``requestSyncToken``/``syncToken``: a sync token expires after 7
  days, 410 EXPIRED_SYNC_TOKEN), ``people/{id}``, ``people:createContact``,
  ``people:batchCreateContacts`` (at most 200, all or none), ``people:batchDeleteContacts`` (at
  most 500; an unknown one refuses the request), ``people/{id}:updateContact``
  (``updatePersonFields``; the person's ``etag`` must be the current one: 400
  FAILED_PRECONDITION), ``people/{id}:deleteContact``,
  ``people:searchContacts`` (a prefix match of names, emails, phones and organizations; at
  most 30 results, no paging), ``people:listDirectoryPeople`` (the domain's users),
  ``otherContacts`` (read only) and ``contactGroups`` (the system groups, read). Empty lists
  are left out of answers, as Google does.
- Calendar: ``calendars/{primary|<email>}/events`` (``maxResults`` at most 2500, ``pageToken``,
  ``orderBy=updated|startTime`` (startTime with ``singleEvents``), ``updatedMin``, ``q``); an
  event needs ``start`` and ``end``; a deleted event stays, ``cancelled``: ``get`` shows it, a
  second delete is 410 ``deleted``, lists leave it out.
- Tasks: ``users/@me/lists``, ``lists/{@default|<id>}/tasks`` (``maxResults`` at most 100,
  ``pageToken``, ``dueMin``/``dueMax``, ``completedMin``/``completedMax``, ``updatedMin``); a
  task's ``due`` keeps its date only.
- Errors: ``{"error": {"code", "message", "status", "errors": [{"domain", "reason",
  "message"}]}}``. Rate limits: ``per_minute`` calls per token, then 429 RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crmsim.app import Route, Simulator, UserTokens, cursor, uncursor, whole
from crmsim.guard import Answer, Guard, RateWindow, Verdict, bearer, json_object
from crmsim.oauth import AuthorizationServer, Issued, Pending
from crmsim.records import Sort, Store, instant, order, test
from crmsim.tokens import AccessToken, Client, TokenStore

Token = AccessToken[str]  # its subject: the user's People id
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    410: "GONE",
    429: "RESOURCE_EXHAUSTED",
}
PERSON_FIELDS = {
    "names",
    "emailAddresses",
    "phoneNumbers",
    "organizations",
    "biographies",
    "metadata",
    "birthdays",
    "addresses",
    "userDefined",
}
SORT_ORDERS = {
    "LAST_MODIFIED_ASCENDING": (Sort("_updated"),),
    "LAST_MODIFIED_DESCENDING": (Sort("_updated", descending=True),),
    "FIRST_NAME_ASCENDING": (Sort(lambda r: _name(r, "givenName")),),
    "LAST_NAME_ASCENDING": (Sort(lambda r: _name(r, "familyName")),),
}
SYNC_LIFETIME = 7 * 24 * 3600  # a People sync token's
DEFAULT_LIST = "MDEyOTk2NzY1NTk0NTY5"  # the id of the user's default task list (@default)
BASE32HEX = "0123456789abcdefghijklmnopqrstuv"  # the characters of a Calendar event id
AUTH = "https://www.googleapis.com/auth/"
SCOPES = (
    "openid",
    "email",
    "profile",
    *(
        AUTH + s
        for s in (
            "contacts",
            "contacts.other.readonly",
            "directory.readonly",
            "calendar.events",
            "tasks",
        )
    ),
)
# Google's names for the OpenID Connect scopes in what it grants (a token answer's `scope`).
ALIASES = {"email": AUTH + "userinfo.email", "profile": AUTH + "userinfo.profile"}
PEOPLE = "people.googleapis.com"
# The service and the scopes a path takes (any one of them), the first prefix that matches;
# else 403 PERMISSION_DENIED ("insufficient authentication scopes": incremental authorization
# asks more).
SCOPED = (
    ("/oauth2/v3/userinfo", "", ("openid", "email", "profile", *ALIASES.values())),
    ("/v1/people:listDirectoryPeople", PEOPLE, (AUTH + "directory.readonly",)),
    ("/v1/otherContacts", PEOPLE, (AUTH + "contacts.other.readonly",)),
    ("/v1/", PEOPLE, (AUTH + "contacts", AUTH + "contacts.readonly")),
    ("/calendar/", "calendar-json.googleapis.com", (AUTH + "calendar.events", AUTH + "calendar")),
    ("/tasks/", "tasks.googleapis.com", (AUTH + "tasks",)),
)


def refused(status: int, message: str, reason: str | None = None, status_name: str = "") -> Answer:
    """Google's error answer: the People API's names a status, the Calendar and Tasks APIs'
    (given a ``reason``) list their errors, each with its reason."""
    error: dict[str, Any] = {"code": status, "message": message}
    if reason is None:
        error["status"] = status_name or STATUS.get(status, "UNKNOWN")
    else:
        error["errors"] = [{"message": message, "domain": "global", "reason": reason}]
    return Answer(status, {"error": error})


def insufficient(service: str, accepted: tuple[str, ...]) -> Answer:
    """Google's 403 for a token without a scope of the API: PERMISSION_DENIED with the reason
    ACCESS_TOKEN_SCOPE_INSUFFICIENT (Calendar and Tasks also list insufficientPermissions), and
    RFC 6750's challenge naming the scopes that would do."""
    info = {"service": service} if service else {}
    error: dict[str, Any] = {
        "code": 403,
        "message": "Request had insufficient authentication scopes.",
        "status": "PERMISSION_DENIED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": info,
            }
        ],
    }
    if service not in ("", PEOPLE):
        reason = {"message": "Insufficient Permission", "domain": "global"}
        error["errors"] = [{**reason, "reason": "insufficientPermissions"}]
    challenge = 'Bearer realm="https://accounts.google.com/", error="insufficient_scope", '
    headers = {"WWW-Authenticate": challenge + f'scope="{" ".join(accepted)}"'}
    return Answer(403, {"error": error}, headers)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _name(row: dict[str, Any], part: str) -> str:
    names = row.get("names") or [{}]
    return str(names[0].get(part) or "")


def _listed(key: str, rows: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    """A list answer: Google leaves an empty list out."""
    return {**({key: rows} if rows else {}), **{k: v for k, v in more.items() if v is not None}}


class _Guard(Guard[str]):
    def __init__(self, sim: GoogleSimulator) -> None:
        window = RateWindow(lambda: sim.per_minute, 60)
        super().__init__(sim.tokens, [bearer()], window, sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.StreamResponse:
        message = (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential."
        )
        response = refused(401, message).response()
        response.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
        return response

    def limited(self, verdict: Verdict) -> web.StreamResponse:
        message = "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'"
        return refused(429, message).response()


class _OAuth(AuthorizationServer[str]):
    """Google's authorization server: a refresh token only for access_type=offline, kept
    (the refresh answer names none); the scopes a user granted a client add up, and a code
    asked with include_granted_scopes=true is for all of them (incremental authorization)."""

    refresh_rotation = "omit"
    revocation_authenticates = False  # /revoke takes the token alone

    def __init__(self, sim: GoogleSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.granted: dict[tuple[str, str], tuple[str, ...]] = {}  # (client, user) -> scopes

    def requested_scopes(self, params: Any, client: Client) -> tuple[str, ...]:
        asked = super().requested_scopes(params, client)
        return tuple(dict.fromkeys(ALIASES.get(scope, scope) for scope in asked))

    def approve(self, pending: Pending, subject: str) -> web.StreamResponse:
        key = (pending.client.client_id, subject)
        every = tuple(dict.fromkeys((*self.granted.get(key, ()), *pending.scopes)))
        self.granted[key] = every
        if pending.params.get("include_granted_scopes") == "true":
            pending = replace(pending, scopes=every)
        return super().approve(pending, subject)

    def offline(self, params: Any) -> bool:
        return bool(params.get("access_type") == "offline")

    def token_answer(self, issued: Issued[str], request: web.Request) -> dict[str, Any]:
        return {**super().token_answer(issued, request), "expires_in": 3599}


class GoogleSimulator(Simulator[str], UserTokens[str]):
    def __init__(self, domain: str = "acme.example", per_minute: int = 600) -> None:
        super().__init__()
        self.domain = domain
        self.per_minute = per_minute
        self.scopes = tuple(SCOPES)
        self.tokens: TokenStore[str] = TokenStore(
            access_format=lambda: "ya29." + secrets.token_urlsafe(40),
            refresh_format=lambda subject: "1//" + secrets.token_urlsafe(40),
        )
        self.store = Store(
            ("people", "events", "tasks"),
            key=lambda table: "id",
            new_id=self._new_id,
            now=_now,
            created=("_created",),
            modified=("_updated",),
            derive=self._derive,
        )
        self.users: dict[str, dict[str, Any]] = {}  # the domain's directory
        self.deleted: dict[str, str] = {}  # contact id -> when deleted (for sync tokens)
        self.authorizations: list[dict[str, str]] = []  # the authorize pages' parameters
        self.searches: list[str] = []  # each events list's q ("" for none)
        self.other: list[dict[str, Any]] = []  # "other contacts": people written to
        self.admin_since = _now()
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        self.admin = self.add_user("Ada", "Admin", f"ada@{domain}")

    # ---- state --------------------------------------------------------------------------------

    def add_user(self, given: str, family: str, email: str) -> str:
        user_id = str(100_000_000_000_000_000_000 + len(self.users) * 7919 + 17)
        source = {"type": "DOMAIN_PROFILE", "id": user_id, "updateTime": _now()}
        self.users[user_id] = {
            "resourceName": f"people/{user_id}",
            "etag": "%" + secrets.token_urlsafe(12),
            "metadata": {"sources": [source]},
            "names": [
                {"givenName": given, "familyName": family, "displayName": f"{given} {family}"}
            ],
            "emailAddresses": [{"value": email, "type": "work"}],
        }
        return user_id

    def add_other_contact(self, name: str, email: str) -> str:
        resource = f"otherContacts/c{secrets.randbelow(10**19) + 10**18}"
        self.other.append(
            {
                "resourceName": resource,
                "etag": "%" + secrets.token_urlsafe(12),
                "names": [{"displayName": name, "givenName": name}],
                "emailAddresses": [{"value": email, "type": "other"}],
            }
        )
        return resource

    def insert(self, table: str, values: dict[str, Any]) -> str:
        """A record made as the API makes it (a Person, an event, a task)."""
        return str(self.store.insert(table, self._checked(table, dict(values)))["id"])

    def _new_id(self, table: str) -> str:
        if table == "people":
            return "c" + str(secrets.randbelow(10**19) + 10**18)
        if table == "events":
            return "".join(secrets.choice(BASE32HEX) for _ in range(26))
        return secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")

    def _derive(self, table: str, row: dict[str, Any]) -> None:
        row["etag"] = ("%" if table == "people" else '"') + secrets.token_urlsafe(12)
        if table == "people":
            row["resourceName"] = f"people/{row['id']}"
            source = {"type": "CONTACT", "id": row["id"][1:], "etag": row["etag"]}
            row["metadata"] = {"sources": [{**source, "updateTime": row["_updated"]}]}
            for name in row.get("names") or ():
                given, family = name.get("givenName", ""), name.get("familyName", "")
                name["displayName"] = f"{given} {family}".strip()
        elif table == "events":
            row.update(kind="calendar#event", created=row["_created"], updated=row["_updated"])
            row.setdefault("status", "confirmed")
            row["iCalUID"] = f"{row['id']}@google.com"
            row["organizer"] = row["creator"] = {
                "email": self.users[self.admin]["emailAddresses"][0]["value"],
                "self": True,
            }
        else:
            row.update(kind="tasks#task", updated=row["_updated"])
            row.setdefault("status", "needsAction")
            row.setdefault("position", f"{len(self.store['tasks']):020d}")  # kept when moved
            if row["status"] == "completed":
                row.setdefault("completed", row["_updated"])
            else:
                row.pop("completed", None)

    def _checked(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        """A write's values as stored, or Google's 400."""
        values = {k: v for k, v in values.items() if not k.startswith("_") and k != "id"}
        if table == "events":
            for end in ("start", "end"):
                moment = values.get(end)
                if not isinstance(moment, dict) or not (
                    moment.get("dateTime") or moment.get("date")
                ):
                    raise refused(400, f"Missing {end} time.", "required")
                if moment.get("dateTime") and instant(moment["dateTime"]) is None:
                    raise refused(400, "Invalid value for: Invalid format", "invalid")
        if table == "tasks" and isinstance(values.get("due"), str):
            values["due"] = values["due"][:10] + "T00:00:00.000Z"  # the date only
        if table == "tasks" and values.get("status") not in (None, "needsAction", "completed"):
            raise refused(400, "Invalid value for: status", "invalid")
        if table == "people":
            unknown = set(values) - PERSON_FIELDS - {"etag", "resourceName"}
            if unknown:
                name = sorted(unknown)[0]
                raise refused(400, f'Invalid JSON payload received. Unknown name "{name}"')
            for key, value in values.items():
                if key in PERSON_FIELDS and not isinstance(value, (list, dict)):
                    raise refused(400, f"Invalid value at 'person.{key}'")
        return values

    def seen(self, request: web.Request) -> None:
        if request.path == "/o/oauth2/v2/auth":
            self.authorizations.append(dict(request.query))
        elif request.path.endswith("/events") and request.method == "GET":
            self.searches.append(request.query.get("q", ""))

    # ---- HTTP -----------------------------------------------------------------------------------

    def routes(self) -> Iterable[Route]:
        return [self._scoped(route) for route in self._routes()]

    def _scoped(self, route: Route) -> Route:
        """A guarded route that first checks its token holds a scope of the path's API."""
        service, needed = next(
            ((service, scopes) for root, service, scopes in SCOPED if route.path.startswith(root)),
            ("", ()),
        )
        if not route.guarded or not needed:
            return route
        handler = route.handler

        async def scoped(request: web.Request, token: Token) -> web.StreamResponse:
            if not any(scope in token.scopes for scope in needed):
                raise insufficient(service, needed)
            return await handler(request, token)

        return route._replace(handler=scoped)

    def _routes(self) -> list[Route]:
        person = "/v1/people/{id:[^/:]+}"
        events = "/calendar/v3/calendars/{calendar}/events"
        tasks = "/tasks/v1/lists/{list}/tasks"
        return [
            Route("GET", "/o/oauth2/v2/auth", self.oauth.authorize, guarded=False),
            Route("POST", "/token", self.oauth.token, guarded=False),
            Route("POST", "/revoke", self.oauth.revoke, guarded=False),
            Route("GET", "/oauth2/v3/userinfo", self._userinfo),
            Route("GET", "/v1/people/me/connections", self._connections),
            Route("GET", "/v1/people:searchContacts", self._search),
            Route("GET", "/v1/people:listDirectoryPeople", self._directory),
            Route("GET", "/v1/otherContacts", self._other_contacts),
            Route("GET", "/v1/contactGroups", self._groups),
            Route("POST", "/v1/people:createContact", self._create_contact),
            Route("POST", "/v1/people:batchCreateContacts", self._batch_create),
            Route("POST", "/v1/people:batchDeleteContacts", self._batch_delete),
            Route("GET", person, self._person),
            Route("PATCH", person + ":updateContact", self._update_contact),
            Route("DELETE", person + ":deleteContact", self._delete_contact),
            Route("GET", events, self._list_events),
            Route("POST", events, self._create("events")),
            Route("GET", events + "/{id}", self._get("events")),
            Route("PATCH", events + "/{id}", self._patch("events")),
            Route("DELETE", events + "/{id}", self._delete_event),
            Route("GET", "/tasks/v1/users/@me/lists", self._task_lists),
            Route("GET", tasks, self._list_tasks),
            Route("POST", tasks, self._create("tasks")),
            Route("GET", tasks + "/{id}", self._get("tasks")),
            Route("PATCH", tasks + "/{id}", self._patch("tasks")),
            Route("DELETE", tasks + "/{id}", self._delete_task),
        ]

    async def _userinfo(self, request: web.Request, token: Token) -> web.Response:
        user = self.users[token.subject]
        name = user["names"][0]
        return web.json_response(
            {
                "sub": token.subject,
                "name": name["displayName"],
                "given_name": name["givenName"],
                "family_name": name["familyName"],
                "email": user["emailAddresses"][0]["value"],
                "email_verified": True,
                "hd": self.domain,
            }
        )

    # ---- People -------------------------------------------------------------------------------

    def _shown(self, row: dict[str, Any], mask: set[str]) -> dict[str, Any]:
        """A Person with the fields of its mask (resourceName and etag always)."""
        shown = {k: v for k, v in row.items() if k in mask or k in ("resourceName", "etag")}
        return {k: v for k, v in shown.items() if v not in ([], None)}

    def _mask(self, request: web.Request, name: str = "personFields") -> set[str]:
        given = request.query.get(name) or request.query.get("readMask", "")
        mask = {part.strip() for part in given.split(",") if part.strip()}
        if not mask:
            raise refused(400, f"{name} mask is required. Please specify one or more valid paths.")
        unknown = mask - PERSON_FIELDS
        if unknown:
            raise refused(400, f'Invalid {name} mask path: "{sorted(unknown)[0]}".')
        return mask

    def _contact(self, request: web.Request) -> dict[str, Any]:
        record_id = request.match_info["id"]
        if not record_id.startswith("c") or not record_id[1:].isdigit():
            raise refused(400, "Resource name is not a valid identifier.")
        row = self.store["people"].get(record_id)
        if row is None:
            raise refused(404, "Requested entity was not found.")
        return row

    async def _connections(self, request: web.Request, token: Token) -> web.Response:
        mask, query = self._mask(request), request.query
        size = whole(query.get("pageSize"), 100)
        if size is None or not 1 <= size <= 1000:
            raise refused(400, "Page size must be between 1 and 1000.")
        rows = list(self.store["people"].values())
        since = self._since(query.get("syncToken"))
        if since is not None:  # the changes since: deleted ones as their ids only
            changed = [r for r in rows if r["_updated"] >= since]
            gone = [
                {"resourceName": f"people/{i}", "metadata": {"deleted": True}}
                for i, when in self.deleted.items()
                if when > since
            ]
            return web.json_response(
                _listed(
                    "connections",
                    [self._shown(r, mask) for r in changed] + gone,
                    nextSyncToken=cursor({"at": _now(), "issued": time.time()}),
                )
            )
        ordering = query.get("sortOrder", "LAST_MODIFIED_ASCENDING")
        if ordering not in SORT_ORDERS:
            raise refused(400, f"Invalid value at 'sort_order' ({ordering})")
        rows = order(rows, *SORT_ORDERS[ordering], Sort("_created"), Sort("id"))
        start = self._page_token(query.get("pageToken"), ordering)
        chosen = rows[start : start + size]
        following = cursor([ordering, start + size]) if start + size < len(rows) else None
        sync = None
        if query.get("requestSyncToken") == "true" and following is None:
            sync = cursor({"at": _now(), "issued": time.time()})
        answer = _listed(
            "connections",
            [self._shown(r, mask) for r in chosen],
            nextPageToken=following,
            nextSyncToken=sync,
            totalPeople=len(rows),
            totalItems=len(rows),
        )
        return web.json_response(answer)

    def _page_token(self, token: str | None, ordering: str) -> int:
        if not token:
            return 0
        held = uncursor(token)
        if not (isinstance(held, list) and len(held) == 2 and held[0] == ordering):
            raise refused(400, "Page token is not valid for this request.")
        return int(held[1])

    def _since(self, token: str | None) -> str | None:
        if token is None:
            return None
        held = uncursor(token)
        if not isinstance(held, dict) or not isinstance(held.get("at"), str):
            raise refused(400, "Sync token is invalid.")
        if time.time() - float(held.get("issued", 0)) > SYNC_LIFETIME:
            raise refused(
                410,
                "Sync token is expired. Clear local cache and retry call without the sync token.",
                None,
                "EXPIRED_SYNC_TOKEN",
            )
        return str(held["at"])

    async def _search(self, request: web.Request, token: Token) -> web.Response:
        mask, query = self._mask(request, "readMask"), request.query
        size = whole(query.get("pageSize"), 10)
        if size is None or size > 30:
            raise refused(400, "Page size must be between 0 and 30.")
        words = query.get("query", "").casefold().split()

        def searched(row: dict[str, Any]) -> list[str]:
            texts = [
                n.get(k, "")
                for n in row.get("names") or ()
                for k in ("givenName", "familyName", "displayName")
            ]
            texts += [
                i.get("value", "")
                for k in ("emailAddresses", "phoneNumbers")
                for i in row.get(k) or ()
            ]
            texts += [o.get("name", "") for o in row.get("organizations") or ()]
            return [w for text in texts for w in str(text).casefold().split()]

        def matches(row: dict[str, Any]) -> bool:  # each word the prefix of one of the row's
            have = searched(row)
            return bool(words) and all(any(h.startswith(w) for h in have) for w in words)

        found = [r for r in order(self.store["people"].values(), Sort("_created")) if matches(r)]
        results = [{"person": self._shown(r, mask)} for r in found[: size or 10]]
        return web.json_response(_listed("results", results))

    async def _directory(self, request: web.Request, token: Token) -> web.Response:
        mask, query = self._mask(request, "readMask"), request.query
        if "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE" not in query.getall("sources", []):
            raise refused(400, "Directory sources must be specified.")
        return self._people_page(request, "people", list(self.users.values()), mask)

    async def _other_contacts(self, request: web.Request, token: Token) -> web.Response:
        """The people the user wrote to (read only: "other contacts")."""
        mask = self._mask(request, "readMask") & {
            "names",
            "emailAddresses",
            "phoneNumbers",
            "metadata",
        }
        return self._people_page(request, "otherContacts", self.other, mask)

    async def _groups(self, request: web.Request, token: Token) -> web.Response:
        members = len(self.store["people"])
        groups = [
            {
                "resourceName": f"contactGroups/{name}",
                "etag": "%EgMBAgM=",
                "name": name,
                "formattedName": label,
                "groupType": "SYSTEM_CONTACT_GROUP",
                "memberCount": count,
                "metadata": {"updateTime": self.admin_since},
            }
            for name, label, count in (
                ("myContacts", "My Contacts", members),
                ("starred", "Starred", 0),
            )
        ]
        return self._people_page(request, "contactGroups", groups, None, totalItems=len(groups))

    def _people_page(
        self,
        request: web.Request,
        key: str,
        rows: list[dict[str, Any]],
        mask: set[str] | None,
        **more: Any,
    ) -> web.Response:
        """One page of a People list read with pageSize/pageToken (at most 1000 a page)."""
        size = whole(request.query.get("pageSize"), 100)
        if size is None or not 1 <= size <= 1000:
            raise refused(400, "Page size must be between 1 and 1000.")
        start = self._page_token(request.query.get("pageToken"), key)
        chosen = [r if mask is None else self._shown(r, mask) for r in rows[start : start + size]]
        following = cursor([key, start + size]) if start + size < len(rows) else None
        return web.json_response(_listed(key, chosen, nextPageToken=following, **more))

    async def _person(self, request: web.Request, token: Token) -> web.Response:
        mask, record_id = self._mask(request), request.match_info["id"]
        if record_id == "me" or record_id in self.users:
            return web.json_response(
                self._shown(self.users[token.subject if record_id == "me" else record_id], mask)
            )
        return web.json_response(self._shown(self._contact(request), mask))

    async def _create_contact(self, request: web.Request, token: Token) -> web.Response:
        mask = self._mask(request) if "personFields" in request.query else {"names"}
        values = await json_object(request, lambda m: refused(400, m))
        row = self.store.insert("people", self._checked("people", values))
        return web.json_response(self._shown(row, mask))

    async def _batch_create(self, request: web.Request, token: Token) -> web.Response:
        """All or none: a contact refused refuses the request (Google's)."""
        body = await json_object(request, lambda m: refused(400, m))
        contacts, mask = (
            body.get("contacts"),
            {"resourceName", *str(body.get("readMask", "")).split(",")},
        )
        if not isinstance(contacts, list) or not 1 <= len(contacts) <= 200:
            raise refused(400, "contacts: between 1 and 200 contacts are required.")
        people = [c.get("contactPerson") if isinstance(c, dict) else None for c in contacts]
        checked = [self._checked("people", p) for p in people if isinstance(p, dict)]
        if len(checked) != len(people):
            raise refused(400, "contacts[].contactPerson is required.")
        made = [self.store.insert("people", values) for values in checked]
        shown = [
            {"httpStatusCode": 200, "person": self._shown(r, mask & PERSON_FIELDS)} for r in made
        ]
        return web.json_response({"createdPeople": shown})

    async def _batch_delete(self, request: web.Request, token: Token) -> web.Response:
        body = await json_object(request, lambda m: refused(400, m))
        names = body.get("resourceNames")
        if not isinstance(names, list) or not 1 <= len(names) <= 500:
            raise refused(400, "resourceNames: between 1 and 500 resource names are required.")
        ids = [str(name).removeprefix("people/") for name in names]
        if any(record_id not in self.store["people"] for record_id in ids):
            raise refused(404, "Requested entity was not found.")
        for record_id in ids:
            del self.store["people"][record_id]
            self.deleted[record_id] = _now()
        return web.json_response({})

    async def _update_contact(self, request: web.Request, token: Token) -> web.Response:
        row = self._contact(request)
        fields = self._mask(request, "updatePersonFields")
        mask = self._mask(request) if "personFields" in request.query else fields
        values = await json_object(request, lambda m: refused(400, m))
        if values.get("etag") != row["etag"]:
            message = (
                "Request person.etag is different than the current person.etag. Clear "
                "local cache and get the latest person."
            )
            raise refused(400, message, None, "FAILED_PRECONDITION")
        changes = self._checked("people", {k: values.get(k, []) for k in fields})
        return web.json_response(self._shown(self.store.change("people", row, changes), mask))

    async def _delete_contact(self, request: web.Request, token: Token) -> web.Response:
        row = self._contact(request)
        del self.store["people"][row["id"]]
        self.deleted[row["id"]] = _now()
        return web.json_response({})

    # ---- Calendar and Tasks -------------------------------------------------------------------

    def _row(self, table: str, request: web.Request) -> dict[str, Any]:
        self._container(table, request)
        row = self.store[table].get(request.match_info["id"])
        if row is None:
            raise refused(404, "Not Found", "notFound")
        return row

    def _container(self, table: str, request: web.Request) -> None:
        """The calendar or task list named: the user's own only."""
        if table == "events":
            email = self.users[self.admin]["emailAddresses"][0]["value"]
            if request.match_info["calendar"] not in ("primary", email):
                raise refused(404, "Not Found", "notFound")
        elif request.match_info["list"] not in ("@default", DEFAULT_LIST):
            raise refused(404, "Task list not found.", "notFound")

    def _out(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    def _create(self, table: str) -> Any:
        async def handler(request: web.Request, token: Token) -> web.Response:
            self._container(table, request)
            values = await json_object(request, lambda m: refused(400, m, "parseError"))
            row = self.store.insert(table, self._checked(table, values))
            return web.json_response(self._out(row))

        return handler

    def _get(self, table: str) -> Any:
        async def handler(request: web.Request, token: Token) -> web.Response:
            return web.json_response(self._out(self._row(table, request)))

        return handler

    def _patch(self, table: str) -> Any:
        async def handler(request: web.Request, token: Token) -> web.Response:
            row = self._row(table, request)
            values = await json_object(request, lambda m: refused(400, m, "parseError"))
            merged = self._checked(table, {**self._out(row), **values})
            return web.json_response(self._out(self.store.change(table, row, merged)))

        return handler

    async def _delete_event(self, request: web.Request, token: Token) -> web.Response:
        row = self._row("events", request)
        if row["status"] == "cancelled":
            raise refused(410, "Resource has been deleted", "deleted")
        self.store.change("events", row, {"status": "cancelled"})
        return web.Response(status=204)

    async def _delete_task(self, request: web.Request, token: Token) -> web.Response:
        row = self._row("tasks", request)
        del self.store["tasks"][row["id"]]
        return web.Response(status=204)

    def _paged(
        self, request: web.Request, rows: list[dict[str, Any]], most: int, default: int, kind: str
    ) -> web.Response:
        size = whole(request.query.get("maxResults"), default)
        if size is None or not 1 <= size <= most:
            raise refused(400, "Invalid value for: maxResults", "invalid")
        start = 0
        if request.query.get("pageToken"):
            held = uncursor(request.query["pageToken"])
            if not (isinstance(held, list) and held[:1] == [kind]):
                raise refused(400, "Invalid page token", "invalid")
            start = int(held[1])
        following = cursor([kind, start + size]) if start + size < len(rows) else None
        answer = _listed(
            "items", [self._out(r) for r in rows[start : start + size]], nextPageToken=following
        )
        return web.json_response({"kind": f"{kind}s", "etag": '"p33s"', **answer})

    def _bounded(
        self, request: web.Request, rows: list[dict[str, Any]], bounds: dict[str, tuple[str, str]]
    ) -> list[dict[str, Any]]:
        for name, (column, op) in bounds.items():
            bound = request.query.get(name)
            if bound is None:
                continue
            if instant(bound) is None:
                raise refused(400, f"Invalid value for: {name}", "invalid")
            rows = [r for r in rows if test(op, r.get(column), bound, "datetime")]
        return rows

    async def _list_events(self, request: web.Request, token: Token) -> web.Response:
        self._container("events", request)
        query = request.query
        rows = [
            r
            for r in self.store["events"].values()
            if r["status"] != "cancelled" or query.get("showDeleted") == "true"
        ]
        rows = self._bounded(request, rows, {"updatedMin": ("updated", ">=")})
        words = query.get("q", "").casefold().split()
        if words:
            rows = [
                r
                for r in rows
                if all(
                    w
                    in " ".join(
                        str(r.get(k, "")) for k in ("summary", "description", "location")
                    ).casefold()
                    for w in words
                )
            ]
        by = query.get("orderBy")
        if by == "startTime" and query.get("singleEvents") != "true":
            raise refused(
                400, "The requested ordering is not available for the particular query.", "invalid"
            )
        if by not in (None, "startTime", "updated"):
            raise refused(400, "Invalid value for: orderBy", "invalid")
        key = {
            "startTime": Sort(lambda r: r["start"].get("dateTime") or r["start"].get("date")),
            "updated": Sort("_updated"),
        }.get(by or "", Sort("_created"))
        return self._paged(request, order(rows, key, Sort("id")), 2500, 250, "calendar#event")

    async def _task_lists(self, request: web.Request, token: Token) -> web.Response:
        default = {
            "kind": "tasks#taskList",
            "id": DEFAULT_LIST,
            "title": "My Tasks",
            "updated": _now(),
        }
        return web.json_response({"kind": "tasks#taskLists", "items": [default]})

    async def _list_tasks(self, request: web.Request, token: Token) -> web.Response:
        self._container("tasks", request)
        bounds = {
            "dueMin": ("due", ">="),
            "dueMax": ("due", "<"),
            "completedMin": ("completed", ">="),
            "completedMax": ("completed", "<="),
            "updatedMin": ("updated", ">="),
        }
        rows = self._bounded(request, list(self.store["tasks"].values()), bounds)
        if request.query.get("showCompleted") == "false":
            rows = [r for r in rows if r["status"] != "completed"]
        return self._paged(request, order(rows, Sort("position")), 100, 20, "tasks#task")


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Google at a simulator at ``base_url``: it plays
    every API host and the authorization server."""
    oauth = {
        "authorize_url": f"{base_url}/o/oauth2/v2/auth",
        "token_url": f"{base_url}/token",
        "revoke_url": f"{base_url}/revoke",
    }
    host = base_url.removeprefix("https://")
    return {"GSuite": {"api_url": base_url, "instance_hosts": [host], "oauth": oauth}}


def seed_google(sim: GoogleSimulator) -> None:
    """A small, believable Google account: contacts, meetings on the calendar, tasks."""
    sim.add_user("Grace", "Hopper", f"grace@{sim.domain}")
    for given, family, email, title in (
        ("Nancy", "Davolio", "nancy.davolio@northwind.example", "Sales Representative"),
        ("Janet", "Leverling", "janet@contoso.example", "Head of Research"),
        ("Steven", "Buchanan", "steven@fabrikam.example", "Farm Manager"),
    ):
        sim.insert(
            "people",
            {
                "names": [{"givenName": given, "familyName": family}],
                "emailAddresses": [{"value": email, "type": "work"}],
                "organizations": [{"title": title}],
            },
        )
    for day, summary in ((14, "Quarterly review"), (16, "Contract signing")):
        start, end = f"2027-01-{day}T10:00:00Z", f"2027-01-{day}T11:00:00Z"
        sim.insert(
            "events", {"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}}
        )
    sim.insert("tasks", {"title": "Send the proposal", "due": "2027-01-15T00:00:00Z"})
