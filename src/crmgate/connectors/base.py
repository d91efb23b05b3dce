"""What every connector offers, and the errors through which a CRM's answer reaches the client.

A connector is mostly data (its platform descriptor); the code here and in each connector module
is what differs between CRMs. Connectors call CRMs only through crmgate.outbound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from yarl import URL

from crmgate.connectors.catalogue import Platform
from crmgate.outbound import Outbound, OutboundRefused, OutboundResponse, check_url


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


@dataclass(frozen=True)
class Identity:
    """Who the stored credentials act as in the CRM (ApplicationEntity.me and company)."""

    user_id: str
    name: str
    email: str
    username: str
    company_id: str
    company_name: str = ""

    def as_user_entity(self) -> dict[str, Any]:
        first, _, last = self.name.partition(" ")
        return {
            "id": self.user_id,
            "username": self.username,
            "email": [{"type": "work", "address": self.email}] if self.email else [],
            "first_name": first,
            "last_name": last,
        }


@dataclass(frozen=True)
class Access:
    """Where and with what a call to the CRM authenticates."""

    instance_url: URL
    token: str = field(repr=False)


@dataclass(frozen=True)
class Verified:
    identity: Identity
    # What the gateway keeps besides the client's credential (e.g. a login session), sealed too.
    derived: dict[str, str] = field(default_factory=dict, repr=False)


class Connector:
    name: ClassVar[str]

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        self.platform = platform
        self.outbound = outbound

    def instance_url(self, url: str) -> URL:
        """The origin of ``url`` if it is an instance URL this platform may have. An instance URL
        is an address only: a path, query or fragment is refused, not kept."""
        parsed = check_url(url, self.platform.instance_hosts)
        if parsed.raw_path not in ("", "/") or parsed.raw_query_string or parsed.raw_fragment:
            raise OutboundRefused(
                "an instance URL is the CRM's address only (https://host[:port]), "
                "without path, query or fragment"
            )
        host = (parsed.raw_host or "").lower().rstrip(".")
        port = parsed.port if parsed.port != 443 else None
        return URL.build(scheme="https", host=host, port=port, encoded=True)

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        raise NotImplementedError

    async def revoke(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> None:
        """Revoke the tokens crmgate holds, where the CRM offers revocation."""

    async def call(self, method: str, url: URL, **kwargs: Any) -> OutboundResponse:
        from crmgate.outbound import OutboundFailed

        try:
            return await self.outbound.request(method, url, **kwargs)
        except OutboundFailed as failure:
            raise CrmUnavailable(f"{self.platform.name}: {failure}") from None
