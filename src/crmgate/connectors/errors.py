"""The contract's errors a connector raises (``CrmError`` and its family), and the error ladder,
once for every CRM, that makes them: a CRM's error answer read with its descriptor's
``[errors]`` section (where the message, code, fields and retry-after are) and turned into the
contract's error (the CRM's own codes by the descriptor's table, then the HTTP status).

What no table can say (Zoho's "invalid id" being a 404, HubSpot's daily 429) is a
connector's ``Records.refine_error`` hook over the ``Refusal`` read here.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crmgate.connectors.answers import crm_json
from crmgate.connectors.jsonpath import select

if TYPE_CHECKING:
    from crmgate.connectors.catalogue import ErrorFormat

# ---- the contract's errors, as a connector raises them ------------------------------------


class CrmError(Exception):
    """The CRM refused or failed; ``code`` is the contract's error code, ``message`` the CRM's
    reason in words safe to show the client (never a credential)."""

    status = 502
    code = "CRM_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CredentialsRejected(CrmError):
    status = 401
    code = "UNAUTHORIZED"


class GrantRevoked(CredentialsRejected):
    """The CRM refused the refresh token or the login for good (invalid_grant, a changed
    password): the application must be authorized again."""


class ApiNotEnabled(CrmError):
    """The CRM account exists but its edition or settings give no API access."""

    status = 403
    code = "API_NOT_ENABLED"


class SessionExpired(CredentialsRejected):
    """The CRM no longer accepts the access token or session (a refresh may help)."""


class NotAllowed(CrmError):
    """The CRM user's own permissions forbid the operation."""

    status = 403
    code = "NOT_ALLOWED"


class EntityNotFound(CrmError):
    status = 404
    code = "ENTITY_NOT_FOUND"


class NotValid(CrmError):
    """The CRM refused the record's content; ``fields`` are the unified or native names."""

    status = 422
    code = "NOT_VALID"

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class RateLimited(CrmError):
    """The CRM's own request limit is exhausted; ``retry_after`` in seconds."""

    status = 429
    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CrmUnavailable(CrmError):
    status = 502
    code = "CRM_UNAVAILABLE"


class NotSupported(CrmError):
    """The platform (or crmgate's connector for it) does not offer the operation."""

    status = 403
    code = "NOT_SUPPORTED"


# ---- the ladder ---------------------------------------------------------------------------

MESSAGE_LIMIT = 500
# A retry-after past this is the CRM's daily quota at worst; a longer one is a wrong clock.
RETRY_LIMIT = 86_400


# The HTTP status of an answer whose code the descriptor's table does not name.
_BY_STATUS: dict[int, str] = {
    401: "UNAUTHORIZED",
    403: "NOT_ALLOWED",
    404: "ENTITY_NOT_FOUND",
    429: "RATE_LIMITED",
    400: "NOT_VALID",
    409: "NOT_VALID",
    412: "NOT_VALID",  # a stale If-Match: the record changed meanwhile
    422: "NOT_VALID",
}


@dataclass(frozen=True)
class Refusal:
    """What one error answer (or one failed item of a batch) says, read with the descriptor."""

    status: int  # the HTTP status of the answer, or the one a failed batch item stands for
    code: str  # the CRM's own code ("" when it gives none)
    message: str  # the CRM's reason in its words ("" when it gives none)
    fields: tuple[str, ...]  # those the paths found (the message's are read after the hook)
    retry_after: int | None  # seconds, from a header; None when no header says
    entry: Mapping[str, Any]  # the error object the paths were read in ({} when none)
    contract: str | None  # the contract's code, by the descriptor's table (None: by status)


def answer_of(body: bytes) -> Any:
    """An error answer's JSON, or None when it is empty or not JSON."""
    try:
        return crm_json(body) if body else None
    except ValueError:
        return None


def read(
    errors: ErrorFormat, status: int, answer: Any, headers: Mapping[str, str] | None = None
) -> Refusal:
    """What an error ``answer`` (parsed JSON; None if it was not) says, by the descriptor's
    paths; ``headers`` (any case) for the retry-after."""
    entry = next(
        (
            found
            for path in errors.entry
            for found in select(answer, path)
            if isinstance(found, dict)
        ),
        {},
    )
    code = _first_text(entry, errors.code)
    message = _first_text(entry, errors.message)
    within = (re.search(p, message, re.DOTALL) for p in errors.message_within)
    message = next((m.group(1).strip() for m in within if m), message)
    named = [str(f) for path in errors.fields for f in select(entry, path) if _scalar(f)]
    reasons = {
        str(field): reason
        for path in errors.field_reasons
        for found in select(entry, path)
        if isinstance(found, dict)
        for field, reason in found.items()
    }
    named += reasons
    message = message or "; ".join(f"{field}: {reason}" for field, reason in reasons.items())
    waits = [v for p in errors.retry_after_in for v in select(entry, p) if _seconds(v)]
    retry_after = _retry_after(headers or {}, errors.retry_after)
    if retry_after is None and waits:
        wait = waits[0]  # seconds, or (as in a header) a moment in epoch seconds or milliseconds
        if wait > 1_000_000_000_000:
            wait = wait / 1000 - time.time()
        elif wait > 1_000_000_000:
            wait -= time.time()
        retry_after = max(1, min(math.ceil(wait), RETRY_LIMIT))
    return Refusal(
        status=status,
        code=code,
        message=message,
        fields=tuple(dict.fromkeys(f for f in named if f)),
        retry_after=retry_after,
        entry=entry,
        contract=errors.codes.get(code) if code else None,
    )


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def contract_error(name: str, errors: ErrorFormat, refusal: Refusal) -> CrmError:
    """``refusal`` as the contract's error: the descriptor's table (or a hook) decides, else the
    HTTP status; the message names the CRM, its reason, its code (or the status) and the fields
    it refused that its reason does not name."""
    said = refusal.message or f"HTTP {refusal.status}"
    message = f"{name}: {said[:MESSAGE_LIMIT]} ({refusal.code or refusal.status})"
    found = (m.group(1) for p in errors.fields_in_message for m in re.finditer(p, said))
    fields = tuple(dict.fromkeys((*refusal.fields, *found)))
    unnamed = [field for field in fields if field not in said]
    if unnamed:
        message += f", field{'s' if len(unnamed) > 1 else ''} {', '.join(unnamed)}"
    contract = refusal.contract or _BY_STATUS.get(refusal.status, "CRM_UNAVAILABLE")
    if contract == "UNAUTHORIZED":
        return SessionExpired(message)
    if contract == "NOT_ALLOWED":
        return NotAllowed(message)
    if contract == "API_NOT_ENABLED":
        return ApiNotEnabled(message)
    if contract == "ENTITY_NOT_FOUND":
        return EntityNotFound(message)
    if contract == "RATE_LIMITED":
        retry = (
            refusal.retry_after if refusal.retry_after is not None else errors.retry_after_default
        )
        return RateLimited(message, retry_after=retry)
    if contract == "NOT_VALID":
        return NotValid(message, fields)
    return CrmUnavailable(message)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _first_text(entry: Mapping[str, Any], paths: tuple[str, ...]) -> str:
    for path in paths:
        for found in select(entry, path):
            if _scalar(found) and str(found):
                return str(found)
    return ""


def _retry_after(headers: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    """Seconds to wait, from the first header of ``names`` that says: seconds, or a moment in
    epoch seconds or milliseconds (Zoho's X-RATELIMIT-RESET), kept within a day."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in names:
        value = lowered.get(name.lower(), "").strip()
        if not value.isdigit():
            continue
        seconds = int(value)
        if len(value) > 10:
            seconds = seconds // 1000 - int(time.time())
        elif seconds > 1_000_000_000:
            seconds -= int(time.time())
        return max(1, min(seconds, RETRY_LIMIT))
    return None
