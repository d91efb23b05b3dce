"""How a connector reads a CRM's list a batch at a time: a paginator chosen in the descriptor
(``[paging]``, per object under ``[paging.objects.<name>]``), and the contract's page numbers
over it (``CursorWalks``).

The kinds (meltano/sdk's paginator family): ``cursor`` (a token at a JSON path, sent back as a
query parameter: Pipedrive's ``next_cursor``, HubSpot's ``after``, Zoho's ``page_token``),
``next_link`` (a URL at a JSON path that must stay on the instance, under the first call's path:
Dynamics' ``@odata.nextLink``, Salesforce's ``nextRecordsUrl``), ``offset`` (Close's
``_skip``), ``page`` (a page number), ``link_header`` (RFC 8288 ``Link: <...>; rel="next"``),
``search`` (the cursor in a POSTed body: HubSpot's search API) and ``whole`` (the list read to
its end, at most ``cap`` records: users and owners, filtered in memory by connectors/local.py).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import Any, Protocol

from yarl import URL

from crmgate.connectors.answers import crm_json
from crmgate.connectors.auth import Access
from crmgate.connectors.catalogue import Paging, Platform
from crmgate.connectors.errors import CrmError, CrmUnavailable, NotValid
from crmgate.connectors.jsonpath import select
from crmgate.outbound import OutboundResponse
from crmgate.query import QueryError


class Caller(Protocol):
    """What a pager calls through: a connector's records (connectors/base.py)."""

    platform: Platform

    async def send_json(
        self,
        access: Access,
        method: str,
        url: URL,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> OutboundResponse: ...

    def error(self, response: OutboundResponse) -> CrmError: ...


Row = dict[str, Any]
Fetch = Callable[[str | None], Awaitable[tuple[list[Row], str | None]]]


_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)


def _first(answer: Any, paths: tuple[str, ...]) -> Any:
    for path in paths:
        found = [value for value in select(answer, path) if value not in (None, "")]
        if found:
            return found[0]
    return None


class Pager:
    """The batches of one list, read with ``records``' authenticated calls. ``row`` turns a
    CRM record into the connector's flat native record. A malformed answer (no list where the
    records should be, a next link to elsewhere) is CRM_UNAVAILABLE, never a crash."""

    def __init__(
        self,
        records: Caller,
        paging: Paging,
        row: Callable[[Any], Row] = lambda record: record,
        amend: Callable[[list[Any]], Awaitable[list[Row]]] | None = None,
    ) -> None:
        self.records = records
        self.paging = paging
        self.row = row
        self.amend = amend  # a batch's further reading (Zoho: fields past 50, a call per 50)
        self.crm = records.platform.name

    def fetch(
        self,
        access: Access,
        url: URL,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fetch:
        """A ``Fetch`` for ``CursorWalks``: the first batch for None, else the batch after
        the token the previous one gave."""
        paging = self.paging
        first = url

        async def fetch(token: str | None) -> tuple[list[Row], str | None]:
            call_url, sent = first, dict(body) if body is not None else None
            size = {paging.size_param: str(paging.batch)} if paging.size_param else {}
            if paging.kind == "search":
                sent = {**(sent or {}), **({paging.param: token} if token else {})}
                if paging.size_param:
                    sent[paging.size_param] = paging.batch
            elif paging.kind in ("next_link", "link_header") and token is not None:
                call_url = self.within(access, first, token)
            else:
                start = {"offset": "0", "page": str(paging.first_page)}.get(paging.kind)
                position = token if token is not None else start
                call_url = first.update_query(
                    {**size, **({paging.param: position} if position and paging.param else {})}
                )
            method = "POST" if paging.kind == "search" else "GET"
            response = await self.records.send_json(
                access, method, call_url, body=sent, headers=headers
            )
            if response.status >= 400:
                raise self.records.error(response)
            try:
                answer = crm_json(response.body) if response.body else None
            except ValueError:
                raise CrmUnavailable(f"{self.crm} answered something that is not JSON") from None
            found = select(answer, paging.records)
            if found in ([], [None]):
                batch: list[Any] = []  # an empty list said with no body, null or no key
            elif len(found) == 1 and isinstance(found[0], list):
                batch = found[0]
                if not all(isinstance(record, dict) for record in batch):
                    raise CrmUnavailable(f"{self.crm} answered a list of unexpected records")
            else:
                raise CrmUnavailable(f"{self.crm} answered an unexpected list")
            following = self._following(access, first, answer, response.headers, token, len(batch))
            rows = await self.amend(batch) if self.amend else [self.row(r) for r in batch]
            return rows, following

        return fetch

    def _following(
        self,
        access: Access,
        first: URL,
        answer: Any,
        headers: Mapping[str, str],
        token: str | None,
        got: int,
    ) -> str | None:
        paging = self.paging
        if paging.more and _first(answer, paging.more) is not True:
            return None
        if paging.kind in ("cursor", "search", "next_link"):
            following = _first(answer, paging.next)
            if following is None:
                return None
            if paging.kind == "next_link":
                self.within(access, first, str(following))
            return str(following)
        if paging.kind == "link_header":
            found = _LINK_NEXT.search(headers.get("Link", ""))
            return str(self.within(access, first, found.group(1))) if found else None
        if not paging.more and got < paging.batch:
            return None  # a short batch is the last
        if paging.kind == "offset":
            return str(int(token or 0) + got)
        return str(int(token or paging.first_page) + 1)

    def within(self, access: Access, first: URL, link: str) -> URL:
        """A next link, only if it stays on this instance under the first call's path (no
        forged redirection of the credential to another host or resource)."""
        base = first.raw_path.rstrip("/")
        try:
            url = access.instance_url.join(URL(link, encoded=True))
            segments = url.raw_path.lower().split("/")
            if (
                url.origin() == access.instance_url.origin()
                and not (url.raw_user or url.raw_password or url.raw_fragment)
                and (url.raw_path == base or url.raw_path.startswith(base + "/"))
                and not any(s in (".", "..") or "%2e" in s or "%2f" in s for s in segments)
            ):
                return url
        except ValueError:
            pass
        raise CrmUnavailable(f"{self.crm} answered a next page link to elsewhere")

    async def whole(
        self,
        access: Access,
        url: URL,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        what: str = "records",
    ) -> list[Row]:
        """Every record of the list, at most ``cap`` (past it, NOT_VALID: too many to read
        whole here)."""
        rows: list[Row] = []
        async for batch, _ in self.batches(access, url, body=body, headers=headers):
            rows += batch
            if len(rows) > self.paging.cap:
                raise NotValid(f"{self.crm} has more than {self.paging.cap:,} {what}: too many")
        return rows

    async def count(self, access: Access, url: URL, cap: int, what: str = "records") -> int:
        """How many records the list has, counted by reading it (for a CRM without a count),
        at most ``cap``: past it, a filter's 400 (narrow the count) rather than walk on."""
        total = 0
        async for batch, more in self.batches(access, url):
            total += len(batch)
            if more and total >= cap:
                raise QueryError(
                    "filter",
                    f"{self.crm} has no count: crmgate counts {what} by reading the list, at "
                    f"most {cap:,} records; narrow it with a filter (e.g. created_at ge '...')",
                )
        return total

    async def batches(
        self,
        access: Access,
        url: URL,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[tuple[list[Row], bool]]:
        """The list's batches in order, one call each, each with whether more follow (a caller
        that stops there costs no more calls)."""
        fetch = self.fetch(access, url, body=body, headers=headers)
        following: str | None = None
        while True:
            rows, following = await fetch(following)
            yield rows, following is not None
            if following is None:
                return


# ---- the contract's page numbers over a CRM's batches ---------------------------------------


@dataclass
class Cursor:
    """Where a walk over a CRM's cursor paging stopped: the records from offset ``start`` that
    were fetched and not served yet, and the CRM's token for the next batch (None: the end)."""

    start: int
    batch: list[Row]
    next: str | None


class CursorWalks:
    """The contract's page numbers over a CRM's cursors (Salesforce query locators, HubSpot
    ``after``). Where each walk stopped is kept, per query and credentials, in this process, for
    ``lifetime`` seconds: the next page continues it (one CRM call per batch, most pages none).
    A page behind the walk, too far ahead of it (``max_ahead`` records), or with no walk near,
    starts again from the first batch, a cost proportional to the offset, refused past
    ``max_cold_offset``. A cursor the CRM has expired is walked again; a failed call leaves the
    walk as it was. Two clients reading the same query at once share (and may move) one walk:
    each still gets correct pages, at the cost of more calls."""

    def __init__(self, max_walks: int = 64, lifetime: float = 60.0) -> None:
        self._walks: OrderedDict[tuple[str, ...], tuple[float, Cursor]] = OrderedDict()
        self._max = max_walks
        self._lifetime = lifetime

    @staticmethod
    def key(access: Access, *query: str) -> tuple[str, ...]:
        digest = hashlib.sha256(access.token.encode()).hexdigest()[:32]
        return (str(access.instance_url), digest, *query)

    def _near(self, key: tuple[str, ...], offset: int, max_ahead: int | None) -> Cursor | None:
        kept = self._walks.get(key)
        if kept is None or time.monotonic() - kept[0] > self._lifetime:
            return None
        cursor = kept[1]
        if cursor.start > offset or (max_ahead is not None and offset - cursor.start > max_ahead):
            return None
        return cursor

    def continues(self, key: tuple[str, ...], offset: int, max_ahead: int | None = None) -> bool:
        """Whether a kept walk can serve ``offset`` without starting again."""
        return self._near(key, offset, max_ahead) is not None

    def forget(self, key: tuple[str, ...]) -> None:
        """Drop the walk of ``key``: its next page starts afresh (a first page is never served
        from memory: a list that ended within it would otherwise hide new records)."""
        self._walks.pop(key, None)

    async def page(
        self,
        key: tuple[str, ...],
        offset: int,
        size: int,
        fetch: Fetch,
        max_cold_offset: int,
        max_ahead: int | None = None,
    ) -> list[Row]:
        # A first page is always read afresh: a walk that ended (an empty or short list) would
        # otherwise hide the records made since.
        cursor = self._near(key, offset, max_ahead) if offset > 0 else None
        if cursor is not None:
            try:
                return self._keep(key, *await self._walk(cursor, offset, size, fetch))
            except NotValid:
                pass  # the CRM expired its cursor: walk again from the start
        if offset > max_cold_offset:
            raise QueryError(
                "page",
                f"records past {max_cold_offset:,} are read page by page in order, "
                "or narrowed with a filter (e.g. created_at ge '...')",
            )
        rows, following = await fetch(None)
        return self._keep(key, *await self._walk(Cursor(0, rows, following), offset, size, fetch))

    @staticmethod
    async def _walk(
        cursor: Cursor, offset: int, size: int, fetch: Fetch
    ) -> tuple[list[Row], Cursor, int]:
        """The page at ``offset``; the kept cursor is not changed (a failure leaves it)."""
        rows: list[Row] = []
        position = offset
        while len(rows) < size:
            end = cursor.start + len(cursor.batch)
            if position < end:
                taken = cursor.batch[
                    position - cursor.start : position - cursor.start + size - len(rows)
                ]
                rows += taken
                position += len(taken)
                continue
            if cursor.next is None:
                break
            batch, following = await fetch(cursor.next)
            cursor = Cursor(end, batch, following)
        return rows, cursor, position

    def _keep(
        self, key: tuple[str, ...], rows: list[Row], cursor: Cursor, position: int
    ) -> list[Row]:
        """Keep the walk for the next page: only the records not served yet, and the token
        (at the end too, for its lifetime: the page after the last is empty, for free)."""
        start = max(cursor.start, position)
        kept = Cursor(start, cursor.batch[max(0, position - cursor.start) :], cursor.next)
        self._walks[key] = (time.monotonic(), kept)
        self._walks.move_to_end(key)
        while len(self._walks) > self._max:
            self._walks.popitem(last=False)
        return rows


def merged(fetches: Sequence[Fetch], key: Callable[[Row], Any], descending: bool = False) -> Fetch:
    """Several lists of one kind of record, each sorted by ``key``, as one ``Fetch`` in that
    order (Kommo keeps its notes in a list per parent type). The first call reads a batch of
    each list; a later one reads the next batch of the lists it served to their last record
    read (as a rule one) and serves what no record still unread can precede. The token holds
    each list's own token and its records read but not served yet, as JSON: CursorWalks keeps
    it in memory, no client sees it. A failed call changes no token given. One list is itself."""
    if len(fetches) == 1:
        return fetches[0]

    async def fetch(token: str | None) -> tuple[list[Row], str | None]:
        lists = json.loads(token) if token else [[[], None, True] for _ in fetches]
        state: list[tuple[list[Row], str | None, bool]] = []
        for (held, following, more), one in zip(lists, fetches, strict=True):
            while not held and more:  # more: a batch to read (the first, or after following)
                held, following = await one(following)
                more = following is not None
            state.append((held, following, more))
        bounds = [key(held[-1]) for held, _, more in state if more]
        bound = (max if descending else min)(bounds) if bounds else None

        def served(row: Row) -> bool:
            return bound is None or (key(row) >= bound if descending else key(row) <= bound)

        parts = [list(takewhile(served, held)) for held, _, _ in state]
        rows = list(heapq.merge(*parts, key=key, reverse=descending))
        left = [[h[len(p) :], f, m] for (h, f, m), p in zip(state, parts, strict=True)]
        return rows, json.dumps(left) if any(h or m for h, _, m in left) else None

    return fetch
