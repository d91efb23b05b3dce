"""Counts every answer to an authenticated API request in its organisation's usage counters
(store/usage.py): requests, errors and refusals by crmgate's rate limits, per application.

The authentication dependency (api/auth.py) names what a request counts under
(``SUBJECT_KEY`` in the scope state: the organisation and the application it reaches) once it
knows the key; only the answer knows the status, so the counting happens here, when the answer
starts (or when no answer comes: a 500). A dictionary increment: the batch writes it later.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate.limits import STATE_KEY, Verdict

SUBJECT_KEY = "usage_subject"  # (organisation id, application key or None)


class UsageCounting:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            state: dict[str, Any] = scope.get("state", {})
            subject = state.get(SUBJECT_KEY)
            if counted or subject is None:
                return
            counted = True
            verdict = state.get(STATE_KEY)
            # a refusal by crmgate's own limits, not a CRM's 429 passed on
            limited = status == 429 and isinstance(verdict, Verdict) and not verdict.allowed
            organisation_id, application_key = subject
            scope["app"].state.services.usage.count(
                organisation_id, application_key, status, limited=limited
            )

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                count(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            count(500)  # the outer layers answer it with a 500
            raise
