"""Bulk through a CRM's JSON batch endpoint (connectors/batch.py), against a small server over
real HTTP on loopback answering as Salesforce's sObject Collections and Zoho's multi-record
writes do (and HubSpot's batch endpoints, in any order, each result named by its key): each
item's outcome read by the descriptor's ``[bulk]`` paths; an answer with the wrong number of
results is one error for the chunk, never a result given to the wrong record."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from crmgate.connectors import batch
from crmgate.connectors.auth import Access
from crmgate.connectors.base import Connector, ItemResult
from crmgate.connectors.catalogue import load_descriptors
from crmgate.connectors.errors import CrmUnavailable, EntityNotFound, NotValid, SessionExpired
from crmgate.outbound import Outbound


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def send(crm: str, status: int, answer: Any, ids: list[str | None]) -> list[ItemResult]:
    """One batch call of ``crm``'s connector to a server answering ``status`` and ``answer``."""
    port = _free_port()
    seen: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response(answer, status=status)

    async def go() -> list[ItemResult]:
        app = web.Application()
        app.router.add_post("/batch", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        platform = next(p for p in load_descriptors() if p.type == crm)
        outbound = Outbound(
            allowed_networks=["127.0.0.0/8"], plain_http_hosts=[f"127.0.0.1:{port}"]
        )
        try:
            records = Connector(platform, outbound).records
            base = URL(f"http://127.0.0.1:{port}")
            return await batch.write(
                records, Access(base, "t"), "POST", base / "batch", {"records": ids}, ids
            )
        finally:
            await outbound.close()
            await runner.cleanup()

    results = asyncio.run(go())
    assert seen == [{"records": ids}]
    return results


def test_salesforce_collections_report_each_record_in_order() -> None:
    answer = [
        {"id": "003000000000001AAA", "success": True, "errors": []},
        {"id": None, "success": False, "errors": [{
            "statusCode": "REQUIRED_FIELD_MISSING", "message": "LastName", "fields": ["LastName"]
        }]},
        {"id": None, "success": False,
         "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "gone"}]},
    ]  # fmt: skip
    made, refused, gone = send("Salesforce", 200, answer, [None, None, "003000000000003AAA"])
    assert made == ItemResult("003000000000001AAA")
    assert isinstance(refused.error, NotValid) and refused.error.fields == ("LastName",)
    assert gone.id == "003000000000003AAA" and isinstance(gone.error, EntityNotFound)


def test_zoho_reports_each_record_even_when_all_failed() -> None:
    failed = {
        "code": "MANDATORY_NOT_FOUND",
        "status": "error",
        "message": "required field not found",
        "details": {"api_name": "Last_Name"},
    }
    (result,) = send("ZohoCRM", 400, {"data": [failed]}, [None])
    assert isinstance(result.error, NotValid) and "Last_Name" in result.error.fields
    ok = {"code": "SUCCESS", "status": "success", "details": {"id": "5725767000000001"}}
    assert send("ZohoCRM", 201, {"data": [ok]}, [None]) == [ItemResult("5725767000000001")]


def test_results_in_any_order_are_matched_to_their_records_by_key() -> None:
    answer = {
        "status": "COMPLETE",
        "results": [{"id": "2", "properties": {}}],
        "errors": [{
            "status": "error", "category": "OBJECT_NOT_FOUND", "message": "gone",
            "context": {"ids": ["3"]},
        }],
    }  # fmt: skip
    found, gone, unsaid = send("HubSpot", 207, answer, ["2", "3", "1"])
    assert found == ItemResult("2")
    assert gone.id == "3" and isinstance(gone.error, EntityNotFound)
    assert unsaid.id == "1" and isinstance(unsaid.error, CrmUnavailable)


def test_a_whole_call_refused_is_the_calls_error() -> None:
    with pytest.raises(SessionExpired):
        send("ZohoCRM", 401, {"code": "INVALID_OAUTHTOKEN", "message": "expired"}, ["1"])


@pytest.mark.parametrize("answer", [[], [{"success": True}] * 3, {"records": "x"}])
def test_results_that_do_not_match_the_records_sent_are_one_error(answer: Any) -> None:
    with pytest.raises(CrmUnavailable, match="outcome of these records is unknown"):
        send("Salesforce", 200, answer, [None, None])
