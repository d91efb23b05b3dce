"""Bulk writes through a CRM's JSON batch endpoint (Salesforce's sObject Collections, Zoho's
multi-record writes): one call per chunk, and each item's outcome read from the answer by the
descriptor's ``[bulk]`` paths (``BatchFormat``, connectors/catalogue.py). The answer holds one
result per item sent, in order; an answer that does not is CRM_UNAVAILABLE for the whole
chunk, whose outcome is then unknown (never a result matched to the wrong record).

HubSpot's batch endpoints answer out of order and Dynamics' ``$batch`` is multipart: theirs
stay in their connectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yarl import URL

from crmgate.connectors.answers import crm_json
from crmgate.connectors.base import Access, ItemResult, Records
from crmgate.connectors.errors import CrmUnavailable
from crmgate.connectors.jsonpath import holds, select
from crmgate.connectors.shapes import rows


async def write(
    records: Records,
    access: Access,
    method: str,
    url: URL,
    body: Any,
    ids: Sequence[str | None],
) -> list[ItemResult]:
    """One batch call for the records of ``ids`` (None for a record being created), and a
    result for each."""
    form, crm = records.platform.bulk, records.platform.name
    response = await records.send_json(access, method, url, body=body)
    try:
        answer = crm_json(response.body) if response.body else None
    except ValueError:
        answer = None
    if response.status >= 400 and not (
        response.status in form.results_on and select(answer, form.results)
    ):
        raise records.error(response)
    try:
        results = rows(answer, form.results, crm)
    except CrmUnavailable:
        results = []
    if len(results) != len(ids):
        raise CrmUnavailable(
            f"{crm} answered a batch with the wrong results; the outcome of these records "
            "is unknown, read them before sending them again"
        )
    return [item(records, result, sent) for result, sent in zip(results, ids, strict=True)]


def item(records: Records, result: Any, sent: str | None) -> ItemResult:
    """One result of a batch answer as the contract's per-item result."""
    form = records.platform.bulk
    if holds(result, form.ok):
        named = [v for v in select(result, form.id) if isinstance(v, (str, int)) and v != ""]
        return ItemResult(str(named[0]) if named else sent)
    refusal = select(result, form.error)
    return ItemResult(sent, records.refused(400, refusal[0] if refusal else None))
