"""The Salesforce connector's record calls (CRUD, SOQL lists and counts, paging, error mapping),
against the simulator over HTTPS: what the unified entity API calls, in Salesforce's own names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from conftest import SalesforceSim
from crmgate.connectors.base import Access
from crmgate.connectors.catalogue import Catalogue
from crmgate.connectors.errors import (
    EntityNotFound,
    NotAllowed,
    NotValid,
    RateLimited,
    SessionExpired,
)
from crmgate.connectors.salesforce import SalesforceConnector
from crmgate.outbound import Outbound
from crmgate.query import QueryError, parse_filter, parse_sort

T = TypeVar("T")


def run(sim: SalesforceSim, work: Callable[[SalesforceConnector], Awaitable[T]]) -> T:
    async def go() -> T:
        platform = Catalogue.load(["salesforce"], sim.overrides()).get("Salesforce")
        assert platform is not None
        outbound = Outbound(ca_file=sim.ca_file, allowed_networks=["127.0.0.0/8"])
        try:
            return await work(SalesforceConnector(platform, outbound))
        finally:
            await outbound.close()

    return asyncio.run(go())


def access_for(
    sim: SalesforceSim, connector: SalesforceConnector, profile: str = "System Administrator"
) -> Access:
    user = sim.simulator.add_user(
        f"{profile.split()[0].lower()}{len(sim.simulator.users)}@acme.example",
        "pw",
        profile=profile,
    )
    token = sim.simulator.issue_session(user)
    return connector.access(
        "oAuth-external-refresh", {"instance_url": sim.base_url, "access_token": token}, {}
    )


def test_contact_life_cycle(salesforce: SalesforceSim) -> None:
    async def work(connector: SalesforceConnector) -> None:
        access = access_for(salesforce, connector)
        contact = connector.platform.entities["contact"]
        columns = contact.native_columns()
        records = connector.records
        ids = [
            await records.create(access, "Contact", {"LastName": name, "Email": f"{name}@x.ex"})
            for name in ("Ann", "Bob", "Cy")
        ]
        sort = parse_sort("last_name")
        first = await records.list_page(access, contact, columns, sort=sort, page_size=2)
        second = await records.list_page(access, contact, columns, sort=sort, page=2, page_size=2)
        assert [r["LastName"] for r in first + second] == ["Ann", "Bob", "Cy"]
        assert await records.list_page(access, contact, columns, page=3, page_size=2) == []
        assert await records.count(access, contact, parse_filter("email contains 'b'")) == 1
        only = await records.list_page(access, contact, ["Id", "LastName"], page_size=1)
        assert set(only[0]) == {"attributes", "Id", "LastName"}
        await records.update(access, "Contact", ids[1], {"Title": "CTO"})
        fetched = await records.get(access, contact, ids[1], columns)
        assert fetched["Title"] == "CTO" and fetched["Email"] == "Bob@x.ex"
        await records.delete(access, "Contact", ids[1])
        with pytest.raises(EntityNotFound):
            await records.get(access, contact, ids[1], columns)
        calls = len(salesforce.simulator.calls)
        for hostile in ("../../sobjects/User", "003' OR 1=1", "x" * 18 + "/"):
            with pytest.raises(EntityNotFound):
                await records.get(access, contact, hostile, columns)
        for object_name in ("Contact/../User", "Contact?x=1", ""):
            with pytest.raises(EntityNotFound):
                await records.create(access, object_name, {"LastName": "X"})
        assert len(salesforce.simulator.calls) == calls  # refused before any call

    run(salesforce, work)


def test_pages_beyond_the_offset_limit_walk_query_locators(salesforce: SalesforceSim) -> None:
    for index in range(2100):
        salesforce.simulator.data.insert("Contact", {"LastName": f"P{index:05d}"})

    async def work(connector: SalesforceConnector) -> list[str]:
        access = access_for(salesforce, connector)
        contact = connector.platform.entities["contact"]
        page = await connector.records.list_page(
            access,
            contact,
            ["Id", "LastName"],
            sort=parse_sort("last_name"),
            page=83,
            page_size=25,
        )
        return [r["LastName"] for r in page]

    before = sum(1 for _, path in salesforce.simulator.calls if "/query" in path)
    names = run(salesforce, work)
    assert names == [f"P{i:05d}" for i in range(2050, 2075)]
    queries = sum(1 for _, path in salesforce.simulator.calls if "/query" in path) - before
    assert queries == 2  # one query, one locator page: 2,000 records a call


def test_salesforce_errors_become_the_contract_errors(salesforce: SalesforceSim) -> None:
    async def work(connector: SalesforceConnector) -> dict[str, Any]:
        contact = connector.platform.entities["contact"]
        admin = access_for(salesforce, connector)
        reader = access_for(salesforce, connector, "Read Only")
        outcomes: dict[str, Any] = {}
        with pytest.raises(NotValid) as missing:
            await connector.records.create(admin, "Contact", {"FirstName": "No last name"})
        outcomes["missing"] = missing.value.fields
        with pytest.raises(NotValid) as unknown:
            await connector.records.create(admin, "Contact", {"ShoeSize": 44})
        outcomes["unknown"] = unknown.value.message
        with pytest.raises(NotAllowed) as refused:
            await connector.records.create(reader, "Contact", {"LastName": "X"})
        outcomes["refused"] = (refused.value.status, refused.value.code, refused.value.message)
        salesforce.simulator.data.quota.limit = salesforce.simulator.data.quota.used
        with pytest.raises(RateLimited) as limited:
            await connector.records.count(admin, contact)
        outcomes["limited"] = (limited.value.status, limited.value.retry_after)
        salesforce.simulator.data.quota.limit = 10**6
        salesforce.simulator.expire_sessions()
        with pytest.raises(SessionExpired) as expired:
            await connector.records.count(admin, contact)
        outcomes["expired"] = (expired.value.status, expired.value.code)
        return outcomes

    outcomes = run(salesforce, work)
    assert outcomes["missing"] == ("LastName",)
    assert "No such column 'ShoeSize'" in outcomes["unknown"]
    assert outcomes["refused"][:2] == (403, "NOT_ALLOWED")
    assert "INSUFFICIENT_ACCESS_OR_READONLY" in outcomes["refused"][2]
    assert outcomes["limited"] == (429, 60)
    assert outcomes["expired"] == (401, "UNAUTHORIZED")


def test_user_authorization_calls_with_the_login_session(salesforce: SalesforceSim) -> None:
    user = salesforce.simulator.add_user("bo@acme.example", "pw", security_token="T")

    async def work(connector: SalesforceConnector) -> int:
        verified = await connector.verify(
            "user", {"login": user.username, "password": "pw", "security_token": "T"}
        )
        access = connector.access("user", {}, verified.derived)
        assert "session" not in repr(access) or verified.derived["session_id"] not in repr(access)
        return await connector.records.count(access, connector.platform.entities["user"])

    assert run(salesforce, work) == 1


def test_deep_pages_read_in_order_continue_the_locator(
    salesforce: SalesforceSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(4500):
        salesforce.simulator.data.insert("Contact", {"LastName": f"Q{index:05d}"})

    def queries() -> int:
        return sum(1 for _, path in salesforce.simulator.calls if "/query" in path)

    async def work(connector: SalesforceConnector) -> list[int]:
        access = access_for(salesforce, connector)
        contact = connector.platform.entities["contact"]
        names: list[str] = []
        costs = []
        for page in range(22, 46):  # offsets 2,100 to 4,499: all past SOQL's OFFSET limit
            before = queries()
            rows = await connector.records.list_page(
                access,
                contact,
                ["Id", "LastName"],
                sort=parse_sort("last_name"),
                page=page,
                page_size=100,
            )
            costs.append(queries() - before)
            names += [r["LastName"] for r in rows]
        assert names == [f"Q{i:05d}" for i in range(2100, 4500)]
        # a locator that expired meanwhile: the walk starts again, the page is still right
        columns, order = ["Id", "LastName"], parse_sort("last_name")
        await connector.records.list_page(
            access, contact, columns, sort=order, page=22, page_size=100
        )
        salesforce.simulator.data.locators.clear()
        later = await connector.records.list_page(
            access, contact, columns, sort=order, page=41, page_size=100
        )
        assert later[0]["LastName"] == "Q04000"
        # a first jump past the limit is refused, not paid for with a walk
        monkeypatch.setattr("crmgate.connectors.salesforce.MAX_COLD_OFFSET", 3000)
        with pytest.raises(QueryError) as deep:
            await connector.records.list_page(
                access, contact, ["Id"], sort=parse_sort("-last_name"), page=40, page_size=100
            )
        assert deep.value.parameter == "page"
        return costs

    costs = run(salesforce, work)
    # the first deep page walks two batches of 2,000; the next call comes after 4,000 records
    assert costs[0] == 2 and sum(costs) == 3, costs
