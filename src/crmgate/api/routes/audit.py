"""/v1/audit (a crmgate addition): the organisation's audit trail, for its admins.

Admins read their own organisation's events, newest first, filtered and paged as every list of
the contract is (``filter``, ``sort``, ``fields``, ``page``, ``page_size``). Events that belong to
no organisation (authentication failures of unknown keys, the contract-mode OAuth flow) are the
operator's, not any tenant's: they are not shown here (``crmgate audit list`` shows them).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from crmgate.api.auth import AuditReader
from crmgate.api.params import Filter, ListQuery
from crmgate.api.responses import JSONResponse
from crmgate.api.routes.users import ERRORS
from crmgate.api.schemas import Count, Timestamp
from crmgate.audit import AuditLog, Event
from crmgate.query import parse_filter

router = APIRouter(prefix="/v1/audit", tags=["crmgate"], responses=ERRORS)


class AuditEventEntity(BaseModel):
    """One security event. ``hash`` chains it to the event before it (``previous_hash``)."""

    id: int = Field(description="The event's number in the trail (1, 2, 3, ... across crmgate)")
    event: str = Field(examples=["key.rotated"])
    created_at: Timestamp
    actor: str = Field(description='The user id that acted, or "cli", "system", "anonymous"')
    client: str | None = Field(
        default=None, description="The client's address (the connection's peer)"
    )
    request_id: str | None = Field(default=None, description="The request's X-Request-ID")
    target: str | None = Field(
        default=None, description="What it concerns: a user id, an application key"
    )
    details: dict[str, Any] = Field(description="Event-specific facts; never a secret")
    previous_hash: str
    hash: str


def _audit(request: Request) -> AuditLog:
    audit: AuditLog = request.app.state.services.audit
    return audit


def _render(event: Event) -> dict[str, Any]:
    return AuditEventEntity(
        id=event.seq,
        event=event.event,
        created_at=event.created_at,
        actor=event.actor,
        client=event.client,
        request_id=event.request_id,
        target=event.target,
        details=event.details,
        previous_hash=event.previous_hash,
        hash=event.hash,
    ).model_dump(mode="json", exclude_none=True)  # what an event lacks is left out


@router.get(
    "/list",
    response_model=list[AuditEventEntity],
    operation_id="getAuditEventCollection",
    summary="The organisation's audit trail (crmgate extension)",
)
async def list_events(
    request: Request, principal: AuditReader, query: Annotated[ListQuery, Depends()]
) -> JSONResponse:
    """Security events of the caller's organisation, newest first (admins only). Filter on
    ``id``, ``event``, ``actor``, ``target``, ``client``, ``request_id`` and ``created_at``, e.g.
    ``event startswith 'key.' and created_at ge '2026-11-01T00:00:00Z'``."""
    trim = query.selector(AuditEventEntity, always="id")
    events = await _audit(request).list_page(
        principal.organisation_id,
        conditions=query.conditions,
        sort=query.sort,
        page=query.page,
        page_size=query.page_size,
    )
    return JSONResponse([trim(_render(event)) for event in events])


@router.get(
    "/count",
    response_model=Count,
    operation_id="getAuditEventCount",
    summary="How many audit events match (crmgate extension)",
)
async def count_events(request: Request, principal: AuditReader, filter: Filter = None) -> Count:
    """The number of the organisation's events that match ``filter`` (admins only)."""
    total = await _audit(request).count(principal.organisation_id, parse_filter(filter))
    return Count(total=total)
