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
from crmgate.outbound import Outbound, OutboundResponse, check_url


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
class Verified:
    identity: Identity
    # What the gateway keeps besides the client's credential (e.g. a login session), sealed too.
    derived: dict[str, str] = field(default_factory=dict)


class Connector:
    name: ClassVar[str]

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        self.platform = platform
        self.outbound = outbound

    def instance_url(self, url: str) -> URL:
        """``url`` if it is an instance URL this platform may have."""
        return check_url(url.rstrip("/"), self.platform.instance_hosts)

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
