"""The API version table (OWASP API9:2023, improper inventory management): ``/v1`` is current;
an operator marks a version deprecated or retired in ``CRMGATE_API_VERSIONS``.

A deprecated version still answers, and every answer says so: ``Deprecation`` (RFC 9745, a
structured-field date ``@<epoch seconds>``), ``Sunset`` (RFC 8594, an HTTP-date) and ``Link`` to
the migration notes (``rel="deprecation"``, RFC 9745 section 3). Each call is logged at warning
with its route and organisation. A retired version answers ``410 GONE`` to every path under it.

A deprecated version's own, stricter ``limits`` count each user key's calls of it, at admission:
this middleware leaves the version's limit in the request's scope state, and the authentication
step (api/auth.py) counts the call in it in the same step as the key's and the application's
limits (``RateLimits.hit_request``), so parallel calls of one key admit exactly the limit, in one
process's memory or across processes in Redis. What counts is every call admitted there,
whatever it answers afterwards (a 404, a restricted key's 403, a CRM's error): the old version
served it. What does not: a call whose key is wrong or missing (made-up keys open no counters;
the failed-authentication throttle counts those per address), and a call refused by a rate limit
(429) that was full when the call looked. The one gap (limits.py, "Admission"): a call that
passed the look and then lost a window's last place to a parallel call has counted once in the
windows it took a place in before, those with no more places left at the look (the version's
first when as few). So while the version's limit is the nearest its end, as in a burst on it,
the calls it refuses spend nothing of the key's or the application's limits, and a refused call
spends a place of the version's only if it lost a race for the key's or the application's last
place while the version had no more places left than that window.
A refusal by the version's own limit tells the client to move to a current version (the Link).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import format_datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate.api.errors import send_error
from crmgate.limits import VersionLimit, parse_limits
from crmgate.settings import ApiVersion

STATE_KEY = "api_version_limit"  # where a call's version limit waits for the authentication
log = logging.getLogger("crmgate.versions")


def version_limit(scope: Scope) -> VersionLimit | None:
    """The own limit of the deprecated version a request calls, for the authentication step to
    count with the key's limits; None on a current version, or a deprecated one without limit."""
    limit = scope.get("state", {}).get(STATE_KEY)
    return limit if isinstance(limit, VersionLimit) else None


@dataclass(frozen=True, slots=True)
class Version:
    """A version that is not current, with the header fields of its answers."""

    name: str
    retired: bool
    limit: VersionLimit | None
    headers: tuple[tuple[bytes, bytes], ...]
    sunset: str | None  # the date, for messages
    link: str

    @classmethod
    def of(cls, name: str, setting: ApiVersion, docs_url: str) -> Version:
        link = setting.link or docs_url
        items = parse_limits(setting.limits or "")
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
            limit=VersionLimit(name, items, link) if items else None,
            headers=tuple(headers),
            sunset=setting.sunset.date().isoformat() if setting.sunset else None,
            link=link,
        )


class ApiVersions:
    """Marks, logs and hands the limit of deprecated versions' calls to the authentication step;
    answers 410 for retired ones. Current versions pass through untouched."""

    def __init__(self, app: ASGIApp, table: Mapping[str, ApiVersion], docs_url: str) -> None:
        self.app = app
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
        if version.limit is not None:
            scope.setdefault("state", {})[STATE_KEY] = version.limit
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
            _deprecated_call(scope, version, status)

    def _version(self, scope: Scope) -> Version | None:
        if scope["type"] != "http" or not self.versions:
            return None
        path: str = scope.get("path", "")
        return self.versions.get(path.split("/", 2)[1]) if path.startswith("/") else None

    def _retired(self, version: Version) -> str:
        when = f" on {version.sunset}" if version.sunset else ""
        instead = f"; use /{self.current[-1]}" if self.current else ""
        return f"API {version.name} was retired{when}{instead} (see {version.link})"

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        version: Version,
        status: int,
        code: str,
        message: str,
    ) -> None:
        await send_error(scope, send, status, code, message, version.headers)


def _deprecated_call(scope: Scope, version: Version, status: int) -> None:
    """Logs one call of a deprecated version (route template, never the path with its ids)."""
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
