"""The paginator family (connectors/paging.py), each kind against a small list server over real
HTTP on loopback: the records of every batch in order, the calls each costs, the read-whole cap,
and next links that would take the credential elsewhere."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from crmgate.connectors.auth import Access
from crmgate.connectors.base import Connector
from crmgate.connectors.catalogue import Paging, load_descriptors
from crmgate.connectors.errors import CrmUnavailable, NotValid
from crmgate.connectors.paging import CursorWalks, Fetch, Pager, merged
from crmgate.outbound import Outbound

RECORDS = [{"id": str(n)} for n in range(1, 8)]  # seven records, batches of three


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ListServer:
    """One list, served the ways CRMs page; ``calls`` counts what a walk cost."""

    def __init__(self) -> None:
        self.calls = 0
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.elsewhere: str | None = None  # a next link a hostile answer would give

    def _slice(self, start: int, size: int) -> list[dict[str, str]]:
        return RECORDS[start : start + size]

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        assert request.headers.get("Authorization") == "Bearer t"
        kind = request.match_info["kind"]
        query = request.query
        size = int(query.get("limit", "3"))
        if kind == "cursor":
            start = int(query.get("cursor", "0"))
            following = start + size if start + size < len(RECORDS) else None
            return web.json_response(
                {"data": self._slice(start, size), "meta": {"next": following}}
            )
        if kind == "offset":
            start = int(query.get("_skip", "0"))
            more = start + size < len(RECORDS)
            return web.json_response({"data": self._slice(start, size), "has_more": more})
        if kind == "page":
            start = (int(query.get("page", "1")) - 1) * size
            return web.json_response({"users": self._slice(start, size)})
        if kind == "search":
            body = await request.json()
            start = int(body.get("after", "0"))
            after = str(start + 3) if start + 3 < len(RECORDS) else None
            return web.json_response(
                {"results": self._slice(start, 3), "paging": {"next": {"after": after}}}
            )
        start = int(query.get("at", "0"))
        if start + 3 < len(RECORDS):
            link = self.elsewhere or f"/v1/{kind}?at={start + 3}"
        else:
            link = None
        if kind == "link":
            headers = {"Link": f'<{self.base}{link}>; rel="next"'} if link else {}
            return web.json_response(self._slice(start, 3), headers=headers)
        return web.json_response({"value": self._slice(start, 3), "@odata.nextLink": link})


@pytest.fixture
def server() -> ListServer:
    return ListServer()


async def _serving(server: ListServer) -> AsyncIterator[Connector]:
    app = web.Application()
    app.router.add_route("*", "/v1/{kind}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    platform = next(p for p in load_descriptors() if p.type == "HubSpot")
    outbound = Outbound(
        allowed_networks=["127.0.0.0/8"], plain_http_hosts=[f"127.0.0.1:{server.port}"]
    )
    try:
        yield Connector(platform, outbound)
    finally:
        await outbound.close()
        await runner.cleanup()


def walk(server: ListServer, paging: Paging, path: str, **fetch: Any) -> list[str]:
    async def go() -> list[str]:
        async for connector in _serving(server):
            pager = Pager(connector.records, paging)
            access = Access(URL(server.base), "t")
            rows = await pager.whole(access, URL(server.base + path), **fetch)
            return [row["id"] for row in rows]
        raise AssertionError("not served")

    return asyncio.run(go())


EVERY = [str(n) for n in range(1, 8)]


@pytest.mark.parametrize(
    ("paging", "path", "fetch"),
    [
        (Paging(records="data", next="meta.next", param="cursor", size_param="limit", batch=3),
         "/v1/cursor", {}),
        (Paging(kind="offset", records="data", more="has_more", param="_skip",
                size_param="limit", batch=3), "/v1/offset", {}),
        (Paging(kind="page", records="users", param="page", size_param="limit", batch=3),
         "/v1/page", {}),
        (Paging(kind="search", records="results", next="paging.next.after", param="after"),
         "/v1/search", {"body": {"filter": "x"}}),
        (Paging(kind="next_link", records="value", next="['@odata.nextLink']"), "/v1/odata", {}),
        (Paging(kind="link_header"), "/v1/link", {}),
    ],
    ids=["cursor", "offset", "page", "search", "next_link", "link_header"],
)  # fmt: skip
def test_each_kind_reads_every_record_once_in_order(
    server: ListServer, paging: Paging, path: str, fetch: dict[str, Any]
) -> None:
    assert walk(server, paging, path, **fetch) == EVERY
    assert server.calls == 3  # a short batch is the last: no call to learn so


def test_reading_whole_stops_past_its_cap(server: ListServer) -> None:
    paging = Paging(kind="offset", records="data", more="has_more", param="_skip",
                    size_param="limit", batch=3, cap=5)  # fmt: skip
    with pytest.raises(NotValid, match="more than 5"):
        walk(server, paging, "/v1/offset")
    assert server.calls == 2  # not a call more than it took to know


@pytest.mark.parametrize(
    "elsewhere",
    [
        "//evil.example/v1/odata?at=3",
        "/v2/other?at=3",
        "/v1/odata-x?at=3",
        "/v1/odata#x",
        "/v1/odata/../other",
        "/v1/odata/%2e%2e/other",
    ],
)
def test_a_next_link_off_the_instance_or_path_is_refused(
    server: ListServer, elsewhere: str
) -> None:
    server.elsewhere = elsewhere
    paging = Paging(kind="next_link", records="value", next="['@odata.nextLink']")
    with pytest.raises(CrmUnavailable, match="next page link to elsewhere"):
        walk(server, paging, "/v1/odata")
    assert server.calls == 1  # the credential never followed it


def test_records_that_are_not_objects_are_one_clear_error(server: ListServer) -> None:
    paging = Paging(kind="cursor", records="meta", next="meta.next")
    with pytest.raises(CrmUnavailable, match="unexpected list"):
        walk(server, paging, "/v1/cursor")


def test_pages_over_a_cursor_continue_the_walk(server: ListServer) -> None:
    paging = Paging(records="data", next="meta.next", param="cursor", size_param="limit", batch=3)

    async def go() -> list[list[str]]:
        async for connector in _serving(server):
            access = Access(URL(server.base), "t")
            fetch = Pager(connector.records, paging).fetch(access, URL(server.base + "/v1/cursor"))
            walks, key = CursorWalks(), ("list",)
            return [
                [row["id"] for row in await walks.page(key, offset, 2, fetch, 100)]
                for offset in (0, 2, 4, 6)
            ]
        raise AssertionError("not served")

    assert asyncio.run(go()) == [["1", "2"], ["3", "4"], ["5", "6"], ["7"]]
    assert server.calls == 3  # one call per batch of three, in order


def test_merged_lists_are_one_list_in_their_order_each_batch_read_once() -> None:
    lists = [[1, 4, 5, 9], [2, 3], [], [6, 7, 8]]  # each sorted; batches of two
    reads: list[tuple[int, str | None]] = []

    def listed(n: int, descending: bool) -> Fetch:
        values = sorted(lists[n], reverse=descending)

        async def fetch(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            reads.append((n, token))
            start = int(token or 0)
            rows = [{"id": str(v)} for v in values[start : start + 2]]
            return rows, str(start + 2) if start + 2 < len(values) else None

        return fetch

    async def pages(descending: bool) -> list[list[str]]:
        fetches = [listed(n, descending) for n in range(len(lists))]
        walk = merged(fetches, lambda row: int(row["id"]), descending)
        walks, key = CursorWalks(), ("notes", str(descending))
        return [
            [row["id"] for row in await walks.page(key, offset, 3, walk, 100)]
            for offset in (0, 3, 6, 9)
        ]

    assert asyncio.run(pages(False)) == [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"], []]
    assert sorted(reads, key=str) == sorted(set(reads), key=str) and len(reads) == 6
    reads.clear()
    assert asyncio.run(pages(True)) == [["9", "8", "7"], ["6", "5", "4"], ["3", "2", "1"], []]
    assert len(reads) == 6  # two batches of the first and last lists, one of the others
    one = listed(0, False)
    assert merged([one], lambda row: row["id"]) is one  # one list is itself


def test_descriptor_paging_names_valid_paths() -> None:
    with pytest.raises(ValueError):
        Paging(records="a[")
    assert json.dumps(Paging(next="a.b").model_dump()["next"]) == '["a.b"]'
