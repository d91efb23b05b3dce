"""The ASGI application: FastAPI for the routes, wrapped in crmgate's request-context layer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from crmgate.api import docs, errors, openapi
from crmgate.api.bounds import JsonBounds
from crmgate.api.counting import UsageCounting
from crmgate.api.middleware import RequestContextMiddleware
from crmgate.api.responses import JSONResponse
from crmgate.api.routes import applications, audit, entities, health, oauth, platforms, users
from crmgate.api.routes import keys as restricted_keys
from crmgate.api.text import TextRule
from crmgate.api.versions import ApiVersions
from crmgate.limits import RateLimitHeaders
from crmgate.portal import install as install_portal
from crmgate.portal.headers import PortalHeaders
from crmgate.runtime import Services
from crmgate.settings import Settings

OPENAPI_URL = "/v1/openapi.json"
log = logging.getLogger("crmgate")


def create_fastapi(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Services.open(settings) as services:
            app.state.services = services
            flusher = asyncio.create_task(services.usage.run(settings.usage_flush_interval))
            try:
                yield
            finally:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher

    app = FastAPI(
        lifespan=lifespan,
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # No trailing-slash redirects: they are built from the Host header, and clients resend
        # the key headers to wherever a redirect points.
        redirect_slashes=False,
        default_response_class=JSONResponse,  # UTF-8 whatever the text (api/responses.py)
    )
    app.include_router(users.router)
    app.include_router(platforms.router)
    app.include_router(entities.router)
    app.include_router(oauth.router)
    app.include_router(applications.router)
    app.include_router(health.router)
    app.include_router(audit.router)
    app.include_router(restricted_keys.router)
    if settings.portal_enabled:
        install_portal(app)
    errors.install(app)
    docs.install(app, OPENAPI_URL)
    app.add_middleware(RateLimitHeaders)  # the RateLimit-* fields of counted answers
    app.add_middleware(UsageCounting)  # the organisations' usage counters (the portal's charts)
    if settings.cors_origins:  # none by default: browsers get no cross-origin access
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API2CRM-USER-KEY", "X-API2CRM-APPLICATION-KEY", "Content-Type"],
            expose_headers=[
                "Retry-After",
                "X-Request-ID",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
            ],
            allow_credentials=False,
            max_age=600,
        )

    def custom_openapi() -> dict[str, Any]:
        return openapi.build(app)

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    fastapi = create_fastapi(settings)
    # outermost first: request context (id, body size, access log), the version table, JSON
    # bounds, the text rule (api/versions.py, api/bounds.py, api/text.py), then the framework
    bounded = JsonBounds(
        TextRule(PortalHeaders(fastapi)), settings.max_json_depth, settings.max_json_items
    )
    docs_url = f"{settings.resolved_public_url}/docs"
    versioned = ApiVersions(bounded, settings.api_versions, docs_url)
    return RequestContextMiddleware(
        versioned,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
    )
