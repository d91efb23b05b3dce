"""Pipedrive: the code its descriptor cannot say.

Which API: persons, organizations, deals and activities go through API v2 (``/api/v2/...``),
because their v1 endpoints are deprecated (out of support since August 2026) and v2 costs half
the rate-limit tokens; leads, notes, users, filters and the ``*Fields`` endpoints exist only in
v1. Each company has its own domain (the credential's ``instance_url``; OAuth's ``api_domain``).

Records are flattened for the entity maps: ids and references as text, custom fields (40-char
keys) beside the standard ones, a person's emails and phones as ``email_<label>`` and
``phone_<label>`` (the first of each label; others stay in ``native``), an organization's address
as v1's ``address``, ``address_locality``, ... and an activity's primary participant as
``person_id``. Writes rebuild Pipedrive's shapes from them.

Costs in Pipedrive calls:

- Filters: Pipedrive filters lists only through its saved "filters" (``POST /v1/filters`` with
  ``conditions``, then ``filter_id=``). crmgate makes one filter per distinct condition set
  (named ``crmgate <digest>``, visible in Pipedrive's filter list), finds it again by name
  after a restart, and keeps its id per company and token in the process: a condition set's
  first use in a process costs the object's fields (to learn field ids, then cached for 5
  minutes), one filter listing and, the very first time, one filter creation; later uses cost
  nothing more. Filter values travel as JSON values, never as query text; ``%`` and ``_`` are
  refused in ``contains``/``startswith`` (Pipedrive's LIKE would read them as wildcards).
  Conditions are ANDed (at most 16); dates compare by day. Notes have no filters: they filter
  by their relations only (query parameters); users not at all. Activities of a type (task,
  call, meeting) always use a filter on ``type``.
- Pages: v2 lists page by cursor, 500 records a call, through ``CursorWalks``: the page after
  the last one read costs at most one call (most pages none); a first jump to page *p* of size
  *s* costs ceil(p*s/500) calls, refused past 10,000 records (read in order, or filter). v2 sorts
  by ``id``, ``created_at``, ``updated_at`` (activities also by their due date), one key. Any
  other sort of persons, organizations or deals uses the deprecated v1 list (``sort=``,
  ``start``/``limit``: one call for any page); activities cannot be sorted otherwise (400).
  Leads and notes are v1 lists: one call for any page. Users: one call for all.
- Count: Pipedrive has no count endpoint: crmgate walks the list, ceil(n/500) calls.
- Bulk: Pipedrive has no batch API for these objects: one call per item, a result per item.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from yarl import URL

from crmgate.connectors import local
from crmgate.connectors.base import (
    Access,
    Connector,
    CredentialsRejected,
    CrmError,
    CrmUnavailable,
    CursorWalks,
    EntityNotFound,
    Fetch,
    FieldInfo,
    Identity,
    NotAllowed,
    NotValid,
    ObjectInfo,
    RateLimited,
    RawResponse,
    Records,
    SessionExpired,
    Verified,
    passthrough_path,
)
from crmgate.connectors.catalogue import Platform
from crmgate.model.mapping import EntityMap
from crmgate.outbound import Outbound, OutboundRefused, OutboundResponse
from crmgate.query import Condition, QueryError, SortKey
from crmgate.settings import OAuthClient

V2 = ("persons", "organizations", "deals", "activities")
V1 = ("leads", "notes")
BATCH = 500  # Pipedrive's largest page
MAX_COLD_OFFSET = 10_000
MAX_CONDITIONS = 16
FIELDS_LIFETIME = 300.0
# collection -> (filter condition object, filter type, fields endpoint, label)
OBJECTS: dict[str, tuple[str, str | None, str | None, str]] = {
    "persons": ("person", "people", "personFields", "Person"),
    "organizations": ("organization", "org", "organizationFields", "Organization"),
    "deals": ("deal", "deals", "dealFields", "Deal"),
    "activities": ("activity", "activity", "activityFields", "Activity"),
    "leads": ("lead", "leads", "leadFields", "Lead"),
    "notes": ("note", None, "noteFields", "Note"),
    "users": ("user", None, None, "User"),
}
V2_SORTS = {"id": "id", "add_time": "add_time", "update_time": "update_time"}
INTEGER_REFERENCES = frozenset(
    ("org_id", "person_id", "deal_id", "owner_id", "user_id", "stage_id", "organization_id")
)
READ_ONLY = frozenset(
    ("id", "add_time", "update_time", "first_name", "last_name", "user_id", "creator_user_id")
)
EMAIL_LABELS = ("work", "home", "other")
PHONE_LABELS = ("work", "mobile", "home", "other")
ADDRESS_PARTS = ("locality", "admin_area_level_1", "postal_code", "country")
_CUSTOM = re.compile(r"^[0-9a-f]{40}$")
_NUMERIC_ID = re.compile(r"^[0-9]{1,18}$")
_LEAD_ID = re.compile(r"^[0-9a-fA-F-]{36}$")
_KINDS = {
    "monetary": "number",
    "double": "number",
    "int": "integer",
    "date": "date",
    "boolean": "boolean",
}
_OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_USER_FIELDS = (
    FieldInfo("id", "ID", "string", "int", createable=False, updateable=False),
    FieldInfo("name", "Name", "string", "varchar", createable=False, updateable=False),
    FieldInfo("email", "Email", "string", "varchar", createable=False, updateable=False),
    FieldInfo("is_admin", "Admin", "boolean", "boolean", createable=False, updateable=False),
    FieldInfo("created", "Created", "date-time", "date", createable=False, updateable=False),
    FieldInfo("modified", "Modified", "date-time", "date", createable=False, updateable=False),
)


@dataclass(frozen=True)
class PipedriveAccess(Access):
    """An API token goes in the ``x-api-token`` header; an OAuth token as a Bearer token."""

    api_token: bool = False

    def headers(self) -> dict[str, str]:
        if self.api_token:
            return {"x-api-token": self.token}
        return {"Authorization": f"Bearer {self.token}"}


def _headers(access: Access) -> dict[str, str]:
    if isinstance(access, PipedriveAccess):
        return access.headers()
    return {"Authorization": f"Bearer {access.token}"}


class PipedriveConnector(Connector):
    name = "pipedrive"

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        self.records = PipedriveRecords(self)

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        instance = self.instance_url(credential["instance_url"])
        if authorization == "key":
            return PipedriveAccess(instance, credential["api_token"], api_token=True)
        return PipedriveAccess(instance, credential["access_token"])

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        """The credential works if Pipedrive shows its user (``/v1/users/me``)."""
        access = self.access(authorization, credential, {})
        response = await self.call(
            "GET",
            access.instance_url / "v1/users/me",
            headers={**_headers(access), "Accept": "application/json"},
        )
        if response.status in (401, 403):
            raise CredentialsRejected(f"Pipedrive refused the token ({_said(response.body)})")
        if response.status != 200:
            raise CrmUnavailable(f"Pipedrive users/me answered HTTP {response.status}")
        try:
            me = json.loads(response.body)["data"]
            identity = Identity(
                user_id=str(me["id"]),
                name=str(me.get("name") or ""),
                email=str(me.get("email") or ""),
                username=str(me.get("email") or ""),
                company_id=str(me.get("company_id") or ""),
                company_name=str(me.get("company_name") or ""),
            )
        except (ValueError, KeyError, TypeError):
            raise CrmUnavailable("Pipedrive users/me answered something unexpected") from None
        return Verified(identity)

    def token_client_auth(
        self, form: Mapping[str, str], client: OAuthClient
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Pipedrive's token endpoint authenticates the client with HTTP Basic (RFC 6749
        section 2.3.1), not in the form."""
        secret = client.client_secret.get_secret_value() if client.client_secret else ""
        pair = base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
        return dict(form), {"Authorization": f"Basic {pair}"}

    def token_fields(self, answer: Mapping[str, Any]) -> dict[str, str]:
        """The token answer's ``api_domain`` is the company's domain: the instance to call."""
        if not answer.get("api_domain"):
            return {}
        try:
            return {"instance_url": str(self.instance_url(str(answer["api_domain"])))}
        except OutboundRefused as refused:
            raise CrmUnavailable(f"Pipedrive named a refused api_domain: {refused}") from None


def _said(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return "refused"
    if isinstance(answer, dict):
        return str(answer.get("error") or "refused")[:300]
    return "refused"


# ---- native records <-> the entity maps' flat columns ---------------------------------------


def _time(value: Any) -> Any:
    """v1's ``2024-01-31 10:00:00`` (UTC) as ISO 8601; v2's RFC 3339 as it is."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", value):
        return value.replace(" ", "T") + "Z"
    return value


def _reference(value: Any) -> str | None:
    if isinstance(value, dict):  # v1 expands references: {"value": 12, "name": ...}
        value = value.get("value", value.get("id"))
    return None if value in (None, "", 0) else str(value)


def flatten(collection: str, record: Any) -> dict[str, Any]:
    """One Pipedrive record (v1 or v2 shape) as the flat columns the entity maps name."""
    if not isinstance(record, dict) or "id" not in record:
        raise CrmUnavailable("Pipedrive answered a record of an unexpected shape")
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("custom_fields", "emails", "phones", "participants"):
            continue
        if collection == "persons" and key in ("email", "phone"):  # v1's lists
            continue
        flat[key] = value
    flat["id"] = str(record["id"])
    custom = record.get("custom_fields")
    if isinstance(custom, dict):
        flat.update(custom)
    for key in ("add_time", "update_time", "created", "modified"):
        if key in flat:
            flat[key] = _time(flat[key])
    if collection in ("deals", "activities") and "owner_id" not in record:
        flat["owner_id"] = record.get("user_id")  # v1 names the owner user_id
    for key in INTEGER_REFERENCES | {"lead_id"}:
        if key in flat:
            flat[key] = _reference(flat[key])
    if collection == "persons":
        emails = record.get("emails", record.get("email"))
        phones = record.get("phones", record.get("phone"))
        flat.update(_labelled("email", emails, EMAIL_LABELS))
        flat.update(_labelled("phone", phones, PHONE_LABELS))
    if collection == "organizations":
        address = record.get("address")
        if isinstance(address, dict):  # v2: one object
            flat["address"] = address.get("value")
            for part in ADDRESS_PARTS:
                flat[f"address_{part}"] = address.get(part)
    if collection == "activities":
        if "participants" in record:
            participants = record.get("participants") or []
            flat["person_id"] = next(
                (
                    _reference(p.get("person_id"))
                    for p in participants
                    if isinstance(p, dict) and p.get("primary")
                ),
                None,
            )
        location = record.get("location")
        if isinstance(location, dict):
            flat["location"] = location.get("value")
    if collection == "users":
        flat["is_admin"] = bool(record.get("is_admin"))
    return flat


def _labelled(kind: str, items: Any, labels: tuple[str, ...]) -> dict[str, Any]:
    flat: dict[str, Any] = {f"{kind}_{label}": None for label in labels}
    if not isinstance(items, list):
        return flat
    ordered = sorted(
        (i for i in items if isinstance(i, dict) and i.get("value")),
        key=lambda i: not i.get("primary"),
    )
    for item in ordered:
        label = str(item.get("label") or "work")
        column = f"{kind}_{label if label in labels else 'other'}"
        if flat.get(column) is None:
            flat[column] = item["value"]
    return flat


def _integer(column: str, value: Any) -> Any:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str) and _NUMERIC_ID.match(value):
        return int(value)
    raise NotValid(f"{column}: Pipedrive ids are whole numbers", (column,))


def native_body(collection: str, values: Mapping[str, Any], v2: bool) -> dict[str, Any]:
    """The flat columns of a write as Pipedrive's body (v2, or v1 for leads and notes)."""
    body: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    emails: list[tuple[str, Any]] = []
    phones: list[tuple[str, Any]] = []
    address: dict[str, Any] = {}
    for column, value in values.items():
        if collection == "persons" and column.startswith("email_"):
            emails.append((column.removeprefix("email_"), value))
        elif collection == "persons" and column.startswith("phone_"):
            phones.append((column.removeprefix("phone_"), value))
        elif collection == "organizations" and (
            column == "address" or column.startswith("address_")
        ):
            address[column.removeprefix("address").removeprefix("_") or "value"] = value
        elif collection == "activities" and column == "person_id":
            person = _integer(column, value)
            body["participants"] = [{"person_id": person, "primary": True}] if person else []
        elif collection == "activities" and column == "location":
            body["location"] = {"value": value} if value else None
        elif column in INTEGER_REFERENCES:
            body[column] = _integer(column, value)
        elif column == "lead_id" and value is not None and not _LEAD_ID.match(str(value)):
            raise NotValid("lead_id: not a Pipedrive lead id", (column,))
        elif _CUSTOM.match(column) and v2:
            custom[column] = value
        else:
            body[column] = value
    for name, items in (("emails", emails), ("phones", phones)):
        if items:
            present = [(label, v) for label, v in items if v not in (None, "")]
            body[name if v2 else name[:-1]] = [
                {"value": v, "label": label, "primary": n == 0}
                for n, (label, v) in enumerate(present)
            ]
    if address:
        parts = {k: v for k, v in address.items() if v not in (None, "")}
        body["address"] = parts or None
        if parts and "value" not in parts:
            parts["value"] = ", ".join(str(v) for v in parts.values())
    if custom:
        body["custom_fields"] = custom
    return body


# ---- filters -----------------------------------------------------------------------------------


def _filter_value(kind: str, value: Any, name: str) -> str:
    if kind in ("date", "date-time"):
        if not isinstance(value, str):
            raise QueryError("filter", f"{name} needs an ISO 8601 date in quotes")
        try:
            if "T" in value:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if (moment.hour, moment.minute, moment.second) != (0, 0, 0):
                    raise QueryError(
                        "filter", f"{name}: Pipedrive's filters compare dates by day (no time)"
                    )
                return moment.date().isoformat()
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise QueryError("filter", f"{name} needs an ISO 8601 date") from None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise QueryError("filter", f"{name} takes true or false")
        return "1" if value else "0"
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QueryError("filter", f"{name} takes a number")
        return repr(value)
    if not isinstance(value, str):
        raise QueryError("filter", f"{name} takes a text value in quotes")
    return value


class PipedriveRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.walks = CursorWalks()
        # (instance, token digest, collection) -> (fetched at, field key -> Pipedrive field)
        self._fields: OrderedDict[tuple[str, ...], tuple[float, dict[str, dict[str, Any]]]] = (
            OrderedDict()
        )
        # (instance, token digest, filter name) -> filter id
        self._filter_ids: OrderedDict[tuple[str, ...], int] = OrderedDict()

    # ---- calls --------------------------------------------------------------------------------

    async def call_json(
        self, access: Access, method: str, url: URL, body: Any = None
    ) -> dict[str, Any]:
        """One authenticated call; Pipedrive's ``{"success": true, "data": ...}`` envelope."""
        sent = {**_headers(access), "Accept": "application/json"}
        data = None
        if body is not None:
            sent["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        response = await self.connector.call(method, url, headers=sent, data=data)
        if response.status >= 400:
            raise self.error(response)
        try:
            answer = json.loads(response.body)
        except ValueError:
            raise CrmUnavailable("Pipedrive answered something that is not JSON") from None
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise CrmUnavailable("Pipedrive answered an unexpected envelope")
        return answer

    def error(self, response: OutboundResponse) -> CrmError:
        try:
            answer = json.loads(response.body)
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        said = str(answer.get("error") or answer.get("message") or f"HTTP {response.status}")
        message = f"Pipedrive: {said[:500]}"
        status = response.status
        if status == 401:
            return SessionExpired(message)
        if status == 429:
            for header in ("Retry-After", "x-ratelimit-reset"):
                value = response.headers.get(header, "")
                if value.isdigit():
                    return RateLimited(message, retry_after=max(1, int(value)))
            return RateLimited(message, retry_after=2)
        if status == 403:
            return NotAllowed(message)
        if status == 404:
            return EntityNotFound(message)
        if status in (400, 409, 422):
            fields: list[str] = []
            if said.startswith("Validation failed:"):
                for problem in said.removeprefix("Validation failed:").split(";"):
                    name = problem.strip().partition(":")[0].strip()
                    if re.fullmatch(r"[A-Za-z0-9_.]+", name):
                        fields.append(name)
            return NotValid(message, tuple(fields))
        return CrmUnavailable(message)

    def _url(self, access: Access, collection: str, record_id: str | None = None) -> URL:
        if collection not in OBJECTS:
            raise EntityNotFound(f"Pipedrive has no object {collection[:64]!r}")
        base = access.instance_url / ("api/v2" if collection in V2 else "v1") / collection
        if record_id is None:
            return base
        valid = _LEAD_ID if collection == "leads" else _NUMERIC_ID
        if not valid.match(record_id):
            raise EntityNotFound(f"{OBJECTS[collection][3]} {record_id[:40]!r} not found")
        return base / record_id

    # ---- the catalogue ------------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [
            ObjectInfo(
                name,
                spec[3],
                f"{spec[3]}s",
                createable=name != "users",
                updateable=name != "users",
                deletable=name != "users",
                id_field="id",
            )
            for name, spec in OBJECTS.items()
        ]

    async def _field_map(
        self, access: Access, collection: str, fresh: bool = False
    ) -> dict[str, dict[str, Any]]:
        key = CursorWalks.key(access, collection)
        kept = self._fields.get(key)
        if kept is not None and not fresh and time.monotonic() - kept[0] < FIELDS_LIFETIME:
            return kept[1]
        path = OBJECTS[collection][2]
        assert path is not None
        found: dict[str, dict[str, Any]] = {}
        start: int | None = 0
        while start is not None:
            url = (access.instance_url / "v1" / path).with_query(start=start, limit=BATCH)
            answer = await self.call_json(access, "GET", url)
            for spec in answer.get("data") or ():
                if isinstance(spec, dict) and isinstance(spec.get("key"), str):
                    found[spec["key"]] = spec
            start = _next_start(answer)
        self._fields[key] = (time.monotonic(), found)
        while len(self._fields) > 256:
            self._fields.popitem(last=False)
        return found

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        if name not in OBJECTS:
            raise EntityNotFound(f"Pipedrive has no object {name[:64]!r}")
        label = OBJECTS[name][3]
        if name == "users":
            return ObjectInfo(
                name, label, "Users", False, True, False, False, False, _USER_FIELDS, "id"
            )
        specs = await self._field_map(access, name, fresh=True)
        fields: list[FieldInfo] = []
        for key, spec in specs.items():
            fields += _field_infos(name, key, spec)
        return ObjectInfo(
            name, label, f"{label}s", False, True, True, True, True, tuple(fields), "id"
        )

    # ---- filters -----------------------------------------------------------------------------

    def _condition(
        self, entity: EntityMap, condition: Condition, specs: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any]:
        column = entity.filter_column("filter", condition.field)
        key = column
        if entity.object == "persons" and column.startswith(("email_", "phone_")):
            key = column.partition("_")[0]
        if entity.object == "organizations" and column.startswith("address"):
            key = "address"
        spec = specs.get(key)
        if spec is None or not isinstance(spec.get("id"), (int, str)):
            raise QueryError(
                "filter", f"Pipedrive cannot filter {entity.entity} by {condition.field}"
            )
        kind = entity.kind(condition.field)
        line: dict[str, Any] = {
            "object": OBJECTS[entity.object][0],
            "field_id": str(spec["id"]),
            "extra_value": None,
        }
        if condition.value is None and condition.op in ("eq", "ne"):
            return {
                **line,
                "operator": "IS NULL" if condition.op == "eq" else "IS NOT NULL",
                "value": None,
            }
        if condition.op in ("contains", "startswith"):
            if kind != "string" or not isinstance(condition.value, str):
                raise QueryError("filter", f"{condition.op} works on text fields only")
            if any(c in condition.value for c in "%_\\$"):
                raise QueryError(
                    "filter",
                    f"Pipedrive's {condition.op} cannot match %, _, \\ or $ (they are wildcards)",
                )
            operator = "LIKE '%$%'" if condition.op == "contains" else "LIKE '$%'"
            return {**line, "operator": operator, "value": condition.value}
        if condition.field == "id" or condition.field.startswith("relation."):
            if not isinstance(condition.value, str) or not (
                _NUMERIC_ID.match(condition.value) or _LEAD_ID.match(condition.value)
            ):
                raise QueryError("filter", f"{condition.field} takes a Pipedrive id in quotes")
            return {**line, "operator": _OPERATORS[condition.op], "value": condition.value}
        value = _filter_value(kind, condition.value, condition.field)
        if kind in ("date", "date-time"):
            line["extra_value"] = "exact_date"
        return {**line, "operator": _OPERATORS[condition.op], "value": value}

    async def filter_id(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition]
    ) -> int | None:
        """The id of a Pipedrive filter for ``conditions`` and the map's match (None: none
        needed), made once and reused (see the module's docstring)."""
        if not conditions and not entity.match:
            return None
        kind = OBJECTS[entity.object][1]
        if kind is None:
            raise QueryError("filter", f"Pipedrive cannot filter {entity.entity} records")
        specs = await self._field_map(access, entity.object)
        lines = [
            {
                "object": OBJECTS[entity.object][0],
                "field_id": str((specs.get(column) or {}).get("id")),
                "operator": "=",
                "value": str(value),
                "extra_value": None,
            }
            for column, value in entity.match.items()
        ]
        lines += [self._condition(entity, c, specs) for c in conditions]
        if len(lines) > MAX_CONDITIONS:
            raise QueryError("filter", f"Pipedrive takes at most {MAX_CONDITIONS} conditions")
        tree = {"glue": "and", "conditions": [{"glue": "and", "conditions": lines}]}
        text = json.dumps(tree, sort_keys=True)
        name = "crmgate " + hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()[:20]
        key = CursorWalks.key(access, name)
        known = self._filter_ids.get(key)
        if known is not None:
            return known
        url = access.instance_url / "v1/filters"
        listed = await self.call_json(access, "GET", url.with_query(type=kind))
        found = next(
            (
                f.get("id")
                for f in listed.get("data") or ()
                if isinstance(f, dict) and f.get("name") == name
            ),
            None,
        )
        if not isinstance(found, int):
            made = await self.call_json(
                access, "POST", url, body={"name": name, "conditions": tree, "type": kind}
            )
            found = (made.get("data") or {}).get("id")
            if not isinstance(found, int):
                raise CrmUnavailable("Pipedrive answered a filter without its id")
        self._filter_ids[key] = found
        while len(self._filter_ids) > 1024:
            self._filter_ids.popitem(last=False)
        return found

    def forget_filter(self, filter_id: int | None) -> None:
        """A filter Pipedrive no longer has (someone deleted it): made again next time."""
        for key, known in list(self._filter_ids.items()):
            if known == filter_id:
                del self._filter_ids[key]

    def _note_query(self, entity: EntityMap, conditions: Sequence[Condition]) -> dict[str, str]:
        """Notes filter by their relations only: Pipedrive's query parameters."""
        query: dict[str, str] = {}
        for condition in conditions:
            column = entity.filter_column("filter", condition.field)
            value = condition.value
            if (
                not condition.field.startswith("relation.")
                or condition.op != "eq"
                or not isinstance(value, str)
                or not (_NUMERIC_ID.match(value) or _LEAD_ID.match(value))
                or column in query
            ):
                raise QueryError(
                    "filter", "Pipedrive filters notes only by relation.<entity> eq '<id>'"
                )
            query[column] = value
        return query

    # ---- reading ------------------------------------------------------------------------------

    def _v2_sort(self, entity: EntityMap, sort: Sequence[SortKey]) -> tuple[str, str] | None:
        """v2's sort_by and sort_direction for ``sort``, if v2 can sort so."""
        if not sort:
            return "id", "asc"
        if len(sort) > 1:
            return None
        column = entity.filter_column("sort", sort[0].field)
        allowed = dict(V2_SORTS)
        if entity.object == "activities":
            allowed["due_date"] = "due_date"
        if column not in allowed:
            return None
        return allowed[column], "desc" if sort[0].descending else "asc"

    def _v1_sort(self, entity: EntityMap, sort: Sequence[SortKey]) -> str:
        parts = []
        for key in sort:
            column = entity.filter_column("sort", key.field)
            if column.startswith(("email_", "phone_", "address_")) or column == "participants":
                raise QueryError("sort", f"Pipedrive cannot sort by {key.field}")
            parts.append(f"{column} {'DESC' if key.descending else 'ASC'}")
        return ", ".join(parts)

    async def list_page(
        self,
        access: Access,
        entity: EntityMap,
        columns: Sequence[str],
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
    ) -> list[dict[str, Any]]:
        collection = entity.object
        offset = (page - 1) * page_size
        if collection == "users":  # one call for all; filtered, sorted and paged here
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        if collection == "notes":
            query = {**self._note_query(entity, conditions), "sort": self._v1_sort(entity, sort)}
            return await self._v1_page(access, collection, query, offset, page_size)
        filter_id = await self.filter_id(access, entity, conditions)
        try:
            return await self._page(access, entity, sort, filter_id, offset, page_size)
        except EntityNotFound:
            if filter_id is None:
                raise
            self.forget_filter(filter_id)
            filter_id = await self.filter_id(access, entity, conditions)
            return await self._page(access, entity, sort, filter_id, offset, page_size)

    async def _page(
        self,
        access: Access,
        entity: EntityMap,
        sort: Sequence[SortKey],
        filter_id: int | None,
        offset: int,
        size: int,
    ) -> list[dict[str, Any]]:
        collection = entity.object
        query = {"filter_id": str(filter_id)} if filter_id is not None else {}
        if collection in V2:
            ordered = self._v2_sort(entity, sort)
            if ordered is not None:
                query.update(sort_by=ordered[0], sort_direction=ordered[1])
                key = CursorWalks.key(access, collection, json.dumps(query, sort_keys=True))
                fetch = self._v2_fetch(access, collection, query)
                return await self.walks.page(key, offset, size, fetch, MAX_COLD_OFFSET)
            if collection == "activities":
                raise QueryError(
                    "sort", "Pipedrive sorts activities by id, created_at, updated_at or due date"
                )
        query["sort"] = self._v1_sort(entity, sort)
        return await self._v1_page(access, collection, query, offset, size)

    async def _v1_page(
        self, access: Access, collection: str, query: Mapping[str, str], offset: int, size: int
    ) -> list[dict[str, Any]]:
        """One v1 page (``start``/``limit``): deprecated for the v2 objects, kept for sorts v2
        does not offer."""
        sent = {k: v for k, v in query.items() if v}
        url = (access.instance_url / "v1" / collection).with_query(
            {**sent, "start": str(offset), "limit": str(size)}
        )
        answer = await self.call_json(access, "GET", url)
        return [flatten(collection, r) for r in answer.get("data") or ()]

    def _v2_fetch(self, access: Access, collection: str, query: Mapping[str, str]) -> Fetch:
        async def fetch(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
            sent = {**query, "limit": str(BATCH), **({"cursor": cursor} if cursor else {})}
            answer = await self.call_json(
                access, "GET", self._url(access, collection).with_query(sent)
            )
            rows = answer.get("data") or []
            if not isinstance(rows, list):
                raise CrmUnavailable("Pipedrive answered an unexpected list")
            following = (answer.get("additional_data") or {}).get("next_cursor")
            return [flatten(collection, r) for r in rows], str(following) if following else None

        return fetch

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        answer = await self.call_json(access, "GET", access.instance_url / "v1/users")
        return [flatten("users", u) for u in answer.get("data") or ()]

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        """Pipedrive has no count: the list walked, 500 records a call."""
        collection = entity.object
        if collection == "users":
            return len(local.select(await self._users(access), entity, conditions))
        total = 0
        if collection in V2:
            filter_id = await self.filter_id(access, entity, conditions)
            query = {"filter_id": str(filter_id)} if filter_id is not None else {}
            fetch = self._v2_fetch(access, collection, query)
            cursor: str | None = None
            while True:
                rows, cursor = await fetch(cursor)
                total += len(rows)
                if cursor is None:
                    return total
        if collection == "notes":
            query = self._note_query(entity, conditions)
        else:
            filter_id = await self.filter_id(access, entity, conditions)
            query = {"filter_id": str(filter_id)} if filter_id is not None else {}
        start: int | None = 0
        while start is not None:
            url = (access.instance_url / "v1" / collection).with_query(
                {**query, "start": str(start), "limit": str(BATCH)}
            )
            answer = await self.call_json(access, "GET", url)
            total += len(answer.get("data") or ())
            start = _next_start(answer)
        return total

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        collection = entity.object
        if collection == "users":
            if not _NUMERIC_ID.match(record_id):
                raise EntityNotFound(f"User {record_id[:40]!r} not found")
            url = access.instance_url / "v1/users" / record_id
        else:
            url = self._url(access, collection, record_id)
        answer = await self.call_json(access, "GET", url)
        return flatten(collection, answer.get("data"))

    # ---- writing ------------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        body = native_body(name, values, v2=name in V2)
        answer = await self.call_json(access, "POST", self._url(access, name), body=body)
        return str(flatten(name, answer.get("data"))["id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        method = "PATCH" if name in V2 or name == "leads" else "PUT"
        body = native_body(name, values, v2=name in V2)
        await self.call_json(access, method, self._url(access, name, record_id), body=body)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self.call_json(access, "DELETE", self._url(access, name, record_id))

    # ---- passthrough --------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the company's domain (``api/v2/persons?limit=5``,
        ``v1/leads``)."""
        raw_path, raw_query = passthrough_path(path)
        origin = str(access.instance_url).rstrip("/")
        full = raw_path if raw_path.startswith("/") else f"/{raw_path}"
        return URL(origin + full + (f"?{raw_query}" if raw_query else ""), encoded=True)

    async def passthrough(
        self,
        access: Access,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> RawResponse:
        url = self.passthrough_url(access, path)
        sent = {name: value for name, value in headers if name.lower() != "x-api-token"}
        sent.update(_headers(access))
        response = await self.connector.call(method, url, headers=sent, data=body)
        if response.status == 401:
            raise self.error(response)
        return RawResponse(response.status, list(response.headers.items()), response.body)


def _next_start(answer: Mapping[str, Any]) -> int | None:
    pagination = (answer.get("additional_data") or {}).get("pagination") or {}
    if pagination.get("more_items_in_collection") and isinstance(pagination.get("next_start"), int):
        return int(pagination["next_start"])
    return None


def _field_infos(collection: str, key: str, spec: Mapping[str, Any]) -> list[FieldInfo]:
    """One Pipedrive field as the connector's flat columns (a person's email is email_work,
    email_home, ...)."""
    field_type = str(spec.get("field_type") or "varchar")
    custom = bool(spec.get("edit_flag"))
    label = str(spec.get("name") or key)
    writable = custom or key not in READ_ONLY
    kind = _KINDS.get(field_type, "string")
    if key in ("add_time", "update_time"):
        kind = "date-time"
    if key == "id":
        kind = "string"
    options = tuple(
        str(o.get("id") if custom else o.get("label"))
        for o in spec.get("options") or ()
        if isinstance(o, dict)
    )

    def info(name: str, text: str, kind: str = kind) -> FieldInfo:
        return FieldInfo(
            name=name,
            label=text,
            kind=kind,
            native_type=field_type,
            required=spec.get("mandatory_flag") is True,
            createable=writable,
            updateable=writable,
            sortable=not name.startswith(("email_", "phone_", "address_")),
            custom=custom,
            enum=options,
        )

    if collection == "persons" and key in ("email", "phone"):
        labels = EMAIL_LABELS if key == "email" else PHONE_LABELS
        return [info(f"{key}_{x}", f"{label} ({x})", "string") for x in labels]
    if collection == "organizations" and key == "address":
        return [info("address", label, "string")] + [
            info(f"address_{part}", f"{label} ({part.replace('_', ' ')})", "string")
            for part in ADDRESS_PARTS
        ]
    if collection == "activities" and key == "location":
        return [info(key, label, "string")]
    return [info(key, label)]
