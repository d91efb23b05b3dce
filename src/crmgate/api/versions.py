"""The API version table (OWASP API9:2023, improper inventory management): ``/v1`` is current;
an operator marks a version deprecated or retired in ``CRMGATE_API_VERSIONS``.

A deprecated version still answers, and every answer says so: ``Deprecation`` (RFC 9745, a
structured-field date ``@<epoch seconds>``), ``Sunset`` (RFC 8594, an HTTP-date) and ``Link`` to
the migration notes (``rel="deprecation"``, RFC 9745 section 3). Each call is logged at warning
with its route and organisation, and each user key's calls also count against the version's own,
stricter limit (429 beyond it). A retired version answers ``410 GONE`` to every path under it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import format_datetime
from typing import Any

from limits import RateLimitItem
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate.api.errors import error_body
from crmgate.limits import Verdict, parse_limits
from crmgate.settings import ApiVersion

USER_KEY_HEADER = b"x-api2crm-user-key"
log = logging.getLogger("crmgate.versions")


@dataclass(frozen=True, slots=True)
class Version:
    """A version that is not current, with the header fields of its answers."""

    name: str
    retired: bool
    limits: tuple[RateLimitItem, ...]
    headers: tuple[tuple[bytes, bytes], ...]
    sunset: str | None  # the date, for messages
    link: str

    @classmethod
    def of(cls, name: str, setting: ApiVersion, docs_url: str) -> Version:
        link = setting.link or docs_url
        headers = []
        if setting.deprecated is not None:
            headers.append((b"deprecation", f"@{int(setting.deprecated.timestamp())}".encode()))
        if setting.sunset is not None:
            sunset = format_datetime(setting.sunset.astimezone(UTC), usegmt=True)
            headers.append((b"sunset", sunset.encode()))
        headers.append((b"link", f'<{link}>; rel="deprecation"; type="text/html"'.encode()))
        return cls(
            name=name,
            retired=setting.status == "retired",
            limits=parse_limits(setting.limits or ""),
            headers=tuple(headers),
            sunset=setting.sunset.date().isoformat() if setting.sunset else None,
            link=link,
        )


class ApiVersions:
    """Marks, limits and logs the calls of deprecated versions; answers 410 for retired ones.
    Current versions pass through untouched."""

    def __init__(
        self, app: ASGIApp, services_of: Any, table: Mapping[str, ApiVersion], docs_url: str
    ) -> None:
        self.app = app
        self.services_of = services_of  # the FastAPI app, whose state holds the Services
        self.versions = {
            name: Version.of(name, setting, docs_url)
            for name, setting in table.items()
            if setting.status != "current"
        }
        self.current = sorted(n for n, s in table.items() if s.status == "current")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        version = self._version(scope)
        if version is None:
            await self.app(scope, receive, send)
            return
        if version.retired:
            await self._refuse(scope, send, version, 410, "GONE", self._retired(version))
            return
        user_key = _header(scope, USER_KEY_HEADER)
        limits = self.services_of.state.services.limits if version.limits and user_key else None
        if limits is not None and user_key is not None:
            refused = await limits.version_throttled(version.name, version.limits, user_key)
            if refused is not None:
                await self._throttled(scope, send, version, refused)
                return
        status = 0

        async def send_marked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *version.headers]
            await send(message)

        try:
            await self.app(scope, receive, send_marked)
        finally:
            principal = _deprecated_call(scope, version, status)
            if limits is not None and user_key is not None and principal and status != 429:
                # counted once the key has authenticated: made-up keys open no counters
                await limits.version_called(version.name, version.limits, user_key)

    def _version(self, scope: Scope) -> Version | None:
        if scope["type"] != "http" or not self.versions:
            return None
        path: str = scope.get("path", "")
        return self.versions.get(path.split("/", 2)[1]) if path.startswith("/") else None

    def _retired(self, version: Version) -> str:
        when = f" on {version.sunset}" if version.sunset else ""
        instead = f"; use /{self.current[-1]}" if self.current else ""
        return f"API {version.name} was retired{when}{instead} (see {version.link})"

    async def _throttled(
        self, scope: Scope, send: Send, version: Version, verdict: Verdict
    ) -> None:
        services = self.services_of.state.services
        await services.audit.record("limit.exceeded", details={"limit": verdict.refusal()})
        extra = [(k.lower().encode(), v.encode()) for k, v in verdict.headers(time.time()).items()]
        message = (
            f"{verdict.refusal()} is exceeded; retry in {verdict.retry_after(time.time())} "
            f"seconds, or move to a current version (see {version.link})"
        )
        _deprecated_call(scope, version, 429)
        await self._refuse(scope, send, version, 429, "RATE_LIMITED", message, extra)

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        version: Version,
        status: int,
        code: str,
        message: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = json.dumps(error_body(status, code, message, request_id)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *version.headers,
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _deprecated_call(scope: Scope, version: Version, status: int) -> Any:
    """Logs one call of a deprecated version (route template, never the path with its ids);
    returns the caller's principal, if the call authenticated."""
    state = scope.get("state", {})
    principal = state.get("principal")
    route = getattr(scope.get("route"), "path", None) or "-"
    log.warning(
        "deprecated API %s called: %s %s %d org=%s key=%s rid=%s",
        version.name,
        scope.get("method", "-"),
        route,
        status,
        getattr(principal, "organisation_id", "-"),
        getattr(principal, "key_hint", "-"),
        state.get("request_id", "-"),
    )
    return principal
