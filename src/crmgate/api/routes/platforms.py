"""/v1/platform: the CRM platforms crmgate can connect, from the platform catalogue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from crmgate.api.auth import PlatformReader
from crmgate.api.errors import ApiError
from crmgate.api.params import Fields, Page, PageSize, Sort, field_selector
from crmgate.api.responses import contract_response
from crmgate.api.routes.users import ERRORS
from crmgate.api.schemas import PlatformEntity
from crmgate.query import QueryError, parse_sort

router = APIRouter(prefix="/v1/platform", tags=["platform"], responses=ERRORS)


@router.get(
    "/list",
    response_model=list[PlatformEntity],
    operation_id="getPlatformCollection",
    summary="GET for platform",
)
async def list_platforms(
    request: Request,
    principal: PlatformReader,
    page_size: PageSize = 25,
    page: Page = 1,
    fields: Fields = None,
    sort: Sort = None,
) -> Response:
    """The platforms crmgate can connect now: each with its authorization types and the
    credential fields each type needs."""
    entities = [
        PlatformEntity.of(p) for p in request.app.state.services.applications.catalogue.listed()
    ]
    entities.sort(key=lambda entity: entity.type)
    for key in reversed(parse_sort(sort)):
        if key.field not in ("type", "name"):
            raise QueryError("sort", f"unknown field {key.field!r}; known: name, type")
        entities.sort(key=lambda entity: getattr(entity, key.field), reverse=key.descending)
    trim = field_selector(PlatformEntity, fields, always="type")
    window = entities[(page - 1) * page_size : page * page_size]
    return contract_response(
        "getPlatformCollection", [trim(entity.model_dump(mode="json")) for entity in window]
    )


@router.get(
    "/{type}",
    response_model=PlatformEntity,
    operation_id="getPlatformEntity",
    summary="GET for platform",
)
async def get_platform(
    request: Request,
    principal: PlatformReader,
    type: Annotated[str, Path(description="Platform type, e.g. Salesforce")],
    fields: Fields = None,
) -> Response:
    """One platform: its authorization types and credential fields."""
    platform = request.app.state.services.applications.catalogue.get(type)
    if platform is None:
        raise ApiError(404, "ENTITY_NOT_FOUND", "no such platform, or not available yet")
    trim = field_selector(PlatformEntity, fields, always="type")
    return contract_response(
        "getPlatformEntity", trim(PlatformEntity.of(platform).model_dump(mode="json"))
    )
