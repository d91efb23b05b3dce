"""/health: for load balancers and orchestrators. No key needed; reveals nothing but up or down."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from crmgate.api.errors import ApiError, error_response
from crmgate.api.responses import JSONResponse
from crmgate.api.schemas import Error

router = APIRouter(tags=["crmgate"])
log = logging.getLogger("crmgate.health")


class Health(BaseModel):
    status: str


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Error, "description": "Service Unavailable"}},
    operation_id="getHealth",
    summary="Is the gateway up and its database reachable (crmgate extension)",
)
async def health(request: Request) -> JSONResponse:
    try:
        async with request.app.state.services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        log.warning("health check: the database is unreachable", exc_info=True)
        return error_response(
            request, ApiError(503, "SERVICE_UNAVAILABLE", "the database is unreachable")
        )
    return JSONResponse({"status": "ok"})
