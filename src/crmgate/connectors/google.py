"""Google (contract type GSuite): the code its descriptor (platforms/GSuite.toml) cannot say.

Three APIs on three hosts: contacts are the People API's (people.googleapis.com/v1), meetings
and events the primary calendar's (www.googleapis.com/calendar/v3), tasks the default task
list's (tasks.googleapis.com/tasks/v1); users the Workspace directory (People's
listDirectoryPeople), read whole and filtered in crmgate. Where the instance is not Google's
(an operator's override: the simulator), it serves every API itself.

Records are flattened for the entity maps: a person's first name, organization and biography,
its emailAddresses and phoneNumbers as email_<type>/phone_<type>, its id the resource name
after ``people/``; an event's start and end as moments (``all_day``: dates). Costs in calls:

- Contacts list with pageToken, 1000 a call, sorted as the People API can: by last or first
  name ascending, by updated_at either way. It has no server-side filter: crmgate serves
  ``id eq`` (one read) and ``eq``/``startswith`` on names, emails and phones through
  ``searchContacts`` (a prefix search of at most 30 results, checked exactly here); any other
  filter is 403 NOT_SUPPORTED rather than a read of the whole address book. A count is one
  call (``totalItems``). An update reads the contact first (Google requires its etag).
- Events filter by ``updated_at ge`` and ``subject eq`` (Calendar's free-text search ``q``,
  which finds words anywhere in an event: its results read whole and checked exactly here) and
  sort by updated_at or started_at ascending; tasks filter by due, completed and updated
  ranges (the Tasks API has no title filter: 403), in the list's own order. Counting them walks
  the list (2500 and 100 a call).
- Bulk: contacts are made (200 a call) and deleted (500) through People's batch endpoints; an
  update needs the contact's etag, read first: one at a time, as events and tasks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from yarl import URL

from crmgate.connectors import base, batch, dialect, lists, local, shapes
from crmgate.connectors.base import Access, Connector, ItemResult, Records
from crmgate.connectors.errors import EntityNotFound, NotSupported, NotValid
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import ObjectInfo
from crmgate.query import Condition, QueryError, SortKey

GOOGLE = "www.googleapis.com"  # the descriptor's api_url: Google's own hosts per API below
HOSTS = {"people": "people.googleapis.com", "calendar": GOOGLE, "tasks": "tasks.googleapis.com"}
API_ROOTS = (("people", "/v1/"), ("tasks", "/tasks/"))  # a path's API (else Calendar's)
ROOTS = {
    "people": "/v1/people",
    "events": "/calendar/v3/calendars/primary/events",
    "tasks": "/tasks/v1/lists/@default/tasks",
    "otherContacts": "/v1/otherContacts",
    "contactGroups": "/v1/contactGroups",
}
READS = {  # what a list must name of its records' fields
    "otherContacts": {"readMask": "names,emailAddresses,phoneNumbers,metadata"},
    "contactGroups": {"groupFields": "name,groupType,memberCount,metadata"},
}
IDS = {  # a record id's form: People's c<number>, Calendar's base32hex, Tasks' opaque text
    "people": re.compile(r"^c\d{1,30}$"),
    "directory": re.compile(r"^\d{1,30}$"),
    "events": re.compile(r"^[a-v0-9]{5,1024}$"),
    "tasks": re.compile(r"^[A-Za-z0-9_-]{1,128}$"),
}
PERSON_FIELDS = "names,emailAddresses,phoneNumbers,organizations,biographies,metadata"
NAMES = {"given_name": "givenName", "family_name": "familyName", "middle_name": "middleName"}
ORGANIZATION = {"title": "title", "department": "department"}
SEARCHED = ("given_name", "family_name")  # besides email_* and phone_*: searchContacts'
SEARCH_MAX = 30  # searchContacts' results, without paging
PEOPLE_SORTS = {  # (column, descending) -> sortOrder
    ("family_name", False): "LAST_NAME_ASCENDING",
    ("given_name", False): "FIRST_NAME_ASCENDING",
    ("updated", False): "LAST_MODIFIED_ASCENDING",
    ("updated", True): "LAST_MODIFIED_DESCENDING",
}
# The lists' own parameters: (column, operator) -> parameter; the sorts they take (ascending)
RANGES = {
    "events": {("updated", "ge"): "updatedMin", ("summary", "eq"): "q"},
    "tasks": {
        ("due", "ge"): "dueMin",
        ("due", "lt"): "dueMax",
        ("completed", "ge"): "completedMin",
        ("completed", "le"): "completedMax",
        ("updated", "ge"): "updatedMin",
    },
}
SORTS = {
    "events": {
        "updated": {"orderBy": "updated"},
        "start": {"orderBy": "startTime", "singleEvents": "true"},
    }
}
TITLES = {"events": "summary", "tasks": "title"}  # Calendar's q finds a title's words
MOST = 10_000  # records a list is walked to (a page's offset, a count)


def _contact_id(record_id: str) -> bool:
    return bool(IDS["people"].match(record_id))


class GoogleRecords(Records):
    connector: GoogleConnector

    # ---- the native rows ------------------------------------------------------------------------

    def row(self, name: str, record: Any) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise EntityNotFound(f"Google answered no {name} record")
        if name in ("people", "directory", "otherContacts"):
            return self._person(name, record)
        if name == "contactGroups":
            keys = {"name": "formattedName", "group_type": "groupType", "members": "memberCount"}
            row: dict[str, Any] = {column: record.get(key) for column, key in keys.items()}
            row["id"] = str(record.get("resourceName", "")).split("/", 1)[-1]
            return shapes.kept(row | {"updated": (record.get("metadata") or {}).get("updateTime")})
        if name == "events":
            start, end = record.get("start") or {}, record.get("end") or {}
            row = {k: record.get(k) for k in ("id", "summary", "description", "location")}
            row |= {k: record.get(k) for k in ("status", "created", "updated")}
            row["start"] = start.get("dateTime") or start.get("date")
            row["end"] = end.get("dateTime") or end.get("date")
            row["all_day"] = "date" in start and "dateTime" not in start
            return shapes.kept(row)
        task = ("id", "title", "notes", "status", "due", "completed", "updated")
        return shapes.kept({k: record.get(k) for k in task})

    def _person(self, name: str, record: Mapping[str, Any]) -> dict[str, Any]:
        names, organization = shapes.first(record, "names"), shapes.first(record, "organizations")
        row: dict[str, Any] = {"id": str(record.get("resourceName", "")).split("/", 1)[-1]}
        row |= {column: names.get(key) for column, key in NAMES.items()}
        row |= {column: organization.get(key) for column, key in ORGANIZATION.items()}
        sources = (record.get("metadata") or {}).get("sources") or [{}]
        row["updated"] = sources[0].get("updateTime")
        if name == "directory":
            row["email"] = shapes.first(record, "emailAddresses").get("value")
        else:
            row["biography"] = shapes.first(record, "biographies").get("value")
            row["etag"] = record.get("etag")
            row |= lists.read(
                self.platform.lists,
                {k: record[k] for k in ("emailAddresses", "phoneNumbers") if k in record},
            )
        return shapes.kept(row)

    def _person_body(self, values: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
        """Flat columns as a Person: a part given is sent with the rest of its entry kept."""
        body = lists.write(
            self.platform.lists,
            {k: v for k, v in values.items() if lists.of_column(self.platform.lists, k)},
        )
        for key, parts in (("names", NAMES), ("organizations", ORGANIZATION)):
            if any(column in values for column in parts):
                entry = {parts[c]: current.get(c) for c in parts} | {
                    parts[c]: v for c, v in values.items() if c in parts
                }
                body[key] = [shapes.kept(entry)]
        if "biography" in values:
            bio = values["biography"]
            body["biographies"] = [{"value": bio, "contentType": "TEXT_PLAIN"}] if bio else []
        return body

    def _event_body(self, values: Mapping[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in values.items() if k not in ("start", "end", "all_day", "id")}
        for moment in ("start", "end"):
            if values.get(moment):
                text = str(values[moment])
                whole_day = values.get("all_day") or len(text) == 10
                body[moment] = {"date": text[:10]} if whole_day else {"dateTime": text}
        return body

    # ---- where things are ----------------------------------------------------------------------

    def _api(self, name: str) -> str:
        entry = self.platform.objects.get(name)
        if entry is None:
            raise EntityNotFound(f"Google has no object {name[:64]!r}")
        return entry.api

    def _url(
        self, access: Access, name: str, suffix: str = "", query: Mapping[str, str] | None = None
    ) -> URL:
        api = self._api(name)  # an object Google does not have is not found
        url = self.connector.url(access, api, ROOTS.get(name, "/v1/people") + suffix)
        return url.update_query(query) if query else url

    def _record_url(self, access: Access, name: str, record_id: str, action: str = "") -> URL:
        if name not in IDS or not IDS[name].match(record_id):
            raise EntityNotFound(f"Google has no {name[:40]} {record_id[:40]!r}")
        if name in ("people", "directory"):
            url = self.connector.url(access, "people", f"/v1/people/{record_id}{action}")
            return url.with_query(personFields=PERSON_FIELDS) if not action else url
        return self._url(access, name, f"/{record_id}")

    def _pager(self, name: str) -> Pager:
        return Pager(self, self.platform.paging.of(name), lambda record: self.row(name, record))

    # ---- the catalogue -------------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [entry.info(name, "id") for name, entry in self.platform.objects.items()]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        self._api(name)
        return self.platform.objects[name].info(name, "id")

    # ---- reading -------------------------------------------------------------------------------

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        url = self.connector.url(access, "people", "/v1/people:listDirectoryPeople").with_query(
            readMask="names,emailAddresses,organizations,metadata",
            sources="DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE",
        )
        return await self._pager("directory").whole(access, url, what="users")

    async def _searched(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition]
    ) -> list[dict[str, Any]]:
        """The contacts meeting ``conditions``, found by id or by Google's prefix search (the
        only filters the People API serves); checked exactly here."""
        served = None
        for condition in conditions:
            column = entity.filter_column("filter", condition.field)
            if condition.op not in ("eq", "startswith") or not isinstance(condition.value, str):
                continue
            if column == "id" and condition.op == "eq":
                served = condition
                break
            if column in SEARCHED or column.startswith(("email_", "phone_")):
                served = served or condition
        if served is None:
            raise NotSupported(
                "Google's People API has no filter: crmgate serves id eq, and eq or startswith on "
                "first_name, last_name, email and phone (its prefix search)"
            )
        text = str(served.value)
        if entity.filter_column("filter", served.field) == "id":
            try:
                found = [await self.get(access, entity, text, ())]
            except EntityNotFound:
                found = []
        else:
            url = self.connector.url(access, "people", "/v1/people:searchContacts")
            url = url.with_query(query=text, readMask=PERSON_FIELDS, pageSize=str(SEARCH_MAX))
            answer = await self.json_call(access, "GET", url) or {}
            results = answer.get("results") or []
            if len(results) >= SEARCH_MAX:
                raise NotValid(
                    f"Google's contact search finds at most {SEARCH_MAX}: more match, narrow it"
                )
            found = [self.row("people", r.get("person")) for r in results]
        return local.select(found, entity, conditions)

    def _people_order(self, entity: EntityMap, sort: Sequence[SortKey]) -> str:
        if not sort:
            return "LAST_MODIFIED_ASCENDING"
        column = entity.filter_column("sort", sort[0].field)
        found = PEOPLE_SORTS.get((column, sort[0].descending))
        if len(sort) > 1 or found is None:
            raise QueryError(
                "sort", "Google sorts contacts by last_name or first_name ascending, or updated_at"
            )
        return found

    def _query(
        self, entity: EntityMap, conditions: Sequence[Condition], sort: Sequence[SortKey]
    ) -> dict[str, str]:
        name = entity.object
        for condition in conditions:
            column = entity.filter_column("filter", condition.field)
            if column == TITLES.get(name) and (column, condition.op) not in RANGES[name]:
                raise NotSupported(
                    f"Google finds {entity.entity} records by title with eq only (Calendar's "
                    "search); the Tasks API has no title filter"
                )
        query = dialect.list_parameters(entity, conditions, RANGES.get(name, {}), "Google")
        return query | dialect.list_order(entity, sort, SORTS.get(name, {}), "Google")

    def _list_url(
        self,
        access: Access,
        entity: EntityMap,
        conditions: Sequence[Condition],
        sort: Sequence[SortKey],
    ) -> URL:
        if entity.object == "people":
            query = {"personFields": PERSON_FIELDS, "sortOrder": self._people_order(entity, sort)}
            return self._url(access, "people", "/me/connections", query)
        query = READS.get(entity.object, {}) | self._query(entity, conditions, sort)
        return self._url(access, entity.object, "", query)

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
        name = entity.object
        if name == "directory":
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        if name == "people" and conditions:
            self._people_order(entity, sort)  # a sort it could not do is refused all the same
            rows = local.select(await self._searched(access, entity, conditions), entity, (), sort)
            return local.page_of(rows, page, page_size)
        url = self._list_url(access, entity, conditions, sort)
        if "q" in url.query:
            rows = await self._searched_events(access, entity, url, conditions)
            return local.page_of(rows, page, page_size)
        fetch = self._pager(name).fetch(access, url)
        offset = (page - 1) * page_size
        return await self.walks.page(
            base.CursorWalks.key(access, str(url)), offset, page_size, fetch, MOST
        )

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        name = entity.object
        if name == "directory":
            return len(local.select(await self._users(access), entity, conditions))
        if name == "people" and conditions:
            return len(await self._searched(access, entity, conditions))
        if name == "people":
            url = self._url(
                access, "people", "/me/connections", {"personFields": "metadata", "pageSize": "1"}
            )
            answer = await self.json_call(access, "GET", url) or {}
            return int(answer.get("totalItems") or 0)
        url = self._list_url(access, entity, conditions, ())
        if "q" in url.query:
            return len(await self._searched_events(access, entity, url, conditions))
        return await self._pager(name).count(access, url, MOST, f"{entity.entity} records")

    async def _searched_events(
        self, access: Access, entity: EntityMap, url: URL, conditions: Sequence[Condition]
    ) -> list[dict[str, Any]]:
        """Calendar's free-text search finds the words anywhere (a description, an attendee):
        its results, read whole, checked exactly."""
        found = await self._pager("events").whole(access, url, what=f"{entity.entity} records")
        return local.select(found, entity, conditions)

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        return await self._read(access, entity.object, record_id)

    async def _read(self, access: Access, name: str, record_id: str) -> dict[str, Any]:
        answer = await self.json_call(access, "GET", self._record_url(access, name, record_id))
        if name == "events" and isinstance(answer, dict) and answer.get("status") == "cancelled":
            raise EntityNotFound(f"Google has no event {record_id!r}: it was deleted")
        return self.row(name, answer)

    # ---- writing -------------------------------------------------------------------------------

    def _writable(self, name: str) -> None:
        if name not in IDS or name == "directory":
            raise NotSupported(f"Google does not write {name[:40]} records")

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        self._writable(name)
        if name == "people":
            url = self._url(access, "people", ":createContact", {"personFields": PERSON_FIELDS})
            made = await self.json_call(access, "POST", url, body=self._person_body(values, {}))
        else:
            body = self._event_body(values) if name == "events" else dict(values)
            made = await self.json_call(access, "POST", self._url(access, name), body=body)
        return str(self.row(name, made)["id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        self._writable(name)
        if name == "people":
            current = await self._read(access, name, record_id)
            listed = {k: v for k, v in current.items() if lists.of_column(self.platform.lists, k)}
            body = self._person_body({**listed, **values}, current)
            url = self._record_url(access, name, record_id, ":updateContact")
            url = url.with_query(
                updatePersonFields=",".join(sorted(body)), personFields=PERSON_FIELDS
            )
            await self.json_call(access, "PATCH", url, body={**body, "etag": current.get("etag")})
            return
        if name == "events":
            await self._read(access, name, record_id)  # a deleted event is not changed
        body = self._event_body(values) if name == "events" else dict(values)
        await self.json_call(access, "PATCH", self._record_url(access, name, record_id), body=body)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        self._writable(name)
        action = ":deleteContact" if name == "people" else ""
        await self.json_call(access, "DELETE", self._record_url(access, name, record_id, action))

    # ---- bulk: People's batch endpoints (an update needs each contact's etag: one at a time) -

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        if name != "people":
            return await super().bulk_create(access, name, items)
        url = self.connector.url(access, "people", "/v1/people:batchCreateContacts")

        def body(chunk: list[Mapping[str, Any]]) -> dict[str, Any]:
            people = [{"contactPerson": self._person_body(values, {})} for values in chunk]
            return {"contacts": people, "readMask": "metadata"}

        made = await batch.create(self, access, "POST", url, items, body)
        return [replace(r, id=r.id.removeprefix("people/")) if r.id else r for r in made]

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        """A chunk holding an unknown contact fails whole, as Google refuses it whole."""
        if name != "people":
            return await super().bulk_delete(access, name, ids)
        url = self.connector.url(access, "people", "/v1/people:batchDeleteContacts")

        async def send(chunk: list[str]) -> list[ItemResult]:
            names = [f"people/{record_id}" for record_id in chunk]
            await self.json_call(access, "POST", url, body={"resourceNames": names})
            return [ItemResult(record_id) for record_id in chunk]

        return await base.chunked_by_id(list(ids), 500, send, str, _contact_id, "contact")

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` on the API it names: ``v1/...`` People's, ``calendar/v3/...`` Calendar's,
        ``tasks/v1/...`` Tasks', anything else on www.googleapis.com (``oauth2/v3/userinfo``)."""
        url = base.passthrough_on(access, path)
        api = next((a for a, root in API_ROOTS if url.raw_path.startswith(root)), "calendar")
        return url.with_host(HOSTS[api]) if access.instance_url.host == GOOGLE else url


class GoogleConnector(Connector):
    name = "google"
    records: GoogleRecords
    records_type = GoogleRecords

    def url(self, access: Access, api: str, path: str) -> URL:
        """``path`` on the host serving ``api`` (Google's; an override's own instance)."""
        instance = access.instance_url
        if instance.host == GOOGLE:
            instance = instance.with_host(HOSTS[api])
        return URL(str(instance).rstrip("/") + path, encoded=True)
