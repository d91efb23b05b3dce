"""Bulk writes through a CRM's JSON batch endpoint (Salesforce's sObject Collections, Zoho's
multi-record writes, HubSpot's batch endpoints): one call per chunk, and each item's outcome
read from the answer by the descriptor's ``[bulk]`` paths (``BatchFormat``,
connectors/catalogue.py). The answer holds one result per item sent, in order; an answer that
does not is CRM_UNAVAILABLE for the whole chunk, whose outcome is then unknown (never a result
matched to the wrong record). Where results come in any order (``[bulk] key``), each names its
item, failed items may be listed apart (``errors``), and an item the answer does not name is
CRM_UNAVAILABLE on its own.

Dynamics' ``$batch`` is multipart: its stays in its connector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from yarl import URL

from crmgate.connectors.answers import crm_json
from crmgate.connectors.base import Access, ItemResult, Records, chunked, chunked_by_id
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
    keys: Sequence[str] | None = None,
) -> list[ItemResult]:
    """One batch call for the records of ``ids`` (None for a record being created), and a
    result for each; ``keys``: what each item is named by in an answer in any order (a trace
    the item was sent with; its id where not given)."""
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
    if form.key:
        return matched(records, answer, results, ids, keys or [str(i) for i in ids])
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


def matched(
    records: Records,
    answer: Any,
    results: list[dict[str, Any]],
    ids: Sequence[str | None],
    keys: Sequence[str],
) -> list[ItemResult]:
    """Results in any order, each naming its item at ``[bulk] key``, and failures listed apart
    (``errors``, naming theirs at ``error_keys``) as the contract's per-item results."""
    form, crm = records.platform.bulk, records.platform.name
    found: dict[str, Any] = {}
    for result in results:
        named = [v for path in form.key for v in select(result, path) if isinstance(v, (str, int))]
        if named:
            found.setdefault(str(named[0]), result)
    failed = {
        str(key): error
        for error in (select(answer, form.errors) if form.errors else ())
        for key in select(error, form.error_keys)
    }
    unknown = f"{crm} did not say what became of this record; read it before sending it again"

    def outcome(sent: str | None, key: str) -> ItemResult:
        if key in found:
            return item(records, found[key], sent)
        if key in failed:
            return ItemResult(sent, records.refused(400, failed[key]))
        return ItemResult(sent, CrmUnavailable(unknown))  # never guessed

    return [outcome(sent, key) for sent, key in zip(ids, keys, strict=True)]


# ---- records made, changed and deleted through one batch endpoint, [bulk] size a call ------

Values = Mapping[str, Any]


async def create(
    records: Records,
    access: Access,
    method: str,
    url: URL,
    items: Sequence[Values],
    body: Callable[[list[Values]], Any],
) -> list[ItemResult]:
    """``items`` made, ``body(chunk)`` the body of each call (``chunked``)."""

    async def send(chunk: list[Values]) -> list[ItemResult]:
        return await write(records, access, method, url, body(chunk), [None] * len(chunk))

    return await chunked(list(items), records.platform.bulk.size, send, lambda item: None)


async def update(
    records: Records,
    access: Access,
    method: str,
    url: URL,
    items: Sequence[tuple[str, Values]],
    body: Callable[[list[tuple[str, Values]]], Any],
    well_formed: Callable[[str], bool],
    name: str,
) -> list[ItemResult]:
    """``items`` (id, values) changed, ``body(chunk)`` the body of each call; an item whose id
    is malformed is never sent (``chunked_by_id``)."""

    async def send(chunk: list[tuple[str, Values]]) -> list[ItemResult]:
        ids = [record_id for record_id, _ in chunk]
        return await write(records, access, method, url, body(chunk), ids)

    size = records.platform.bulk.size
    return await chunked_by_id(list(items), size, send, lambda item: item[0], well_formed, name)


async def delete(
    records: Records,
    access: Access,
    url: Callable[[list[str]], URL],
    ids: Sequence[str],
    well_formed: Callable[[str], bool],
    name: str,
) -> list[ItemResult]:
    """The records of ``ids`` deleted, ``url(chunk)`` the DELETE of each call (ids in its
    query); a malformed id is never sent."""

    async def send(chunk: list[str]) -> list[ItemResult]:
        return await write(records, access, "DELETE", url(chunk), None, chunk)

    size = records.platform.bulk.size
    return await chunked_by_id(list(ids), size, send, lambda item: item, well_formed, name)
