"""How a connector's calls carry an application's credential, and renew it once when the CRM
says it expired: the idea of httpx's ``Auth.auth_flow`` (inject; on "expired", renew, resend).

A scheme is data (the descriptor's ``[auth]``: a bearer token with its scheme word, a token in a
named header or query parameter, HTTP Basic with the key as user). The renewal is the token
manager's (crmgate.tokens, one renewal at a time per application), handed to the connector with
the ``Access`` of one request; nothing above the connectors catches an expired session.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator
from yarl import URL


class AuthScheme(BaseModel):
    """Where a call carries the credential's token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["bearer", "header", "basic", "query", "path"] = "bearer"
    # bearer: the Authorization scheme word (RFC 6750's Bearer; Zoho's Zoho-oauthtoken)
    scheme: str = "Bearer"
    # header: the header's name (x-api-token); query: the parameter's name (api_token); path:
    # the path prefix after which the token goes as segments of its own (a webhook whose
    # secret is in its path: /rest/ + <token> + /method)
    name: str = ""

    @model_validator(mode="after")
    def _named(self) -> AuthScheme:
        if self.kind in ("header", "query", "path") and not self.name:
            raise ValueError(f"an auth scheme of kind {self.kind} needs a name")
        return self

    def apply(self, token: str, url: URL, headers: Mapping[str, str]) -> tuple[URL, dict[str, str]]:
        """``url`` and ``headers`` with the token where this scheme puts it."""
        sent = dict(headers)
        if self.kind == "bearer":
            sent["Authorization"] = f"{self.scheme} {token}"
        elif self.kind == "header":
            sent[self.name] = token
        elif self.kind == "basic":  # RFC 7617, the key as user and no password (Close)
            sent["Authorization"] = "Basic " + base64.b64encode(f"{token}:".encode()).decode()
        elif self.kind == "path":
            path = url.raw_path
            if path.startswith(self.name):
                rest = path[len(self.name) :]
                query = f"?{url.raw_query_string}" if url.raw_query_string else ""
                path = f"{self.name}{token.strip('/')}/{rest}"
                url = URL(f"{url.origin()}{path}{query}", encoded=True)
        else:
            url = url.update_query({self.name: token})
        return url, sent

    def header_names(self) -> set[str]:
        """The request headers (lower case) that carry credentials under this scheme."""
        return {"authorization"} | ({self.name.lower()} if self.kind == "header" else set())


BEARER = AuthScheme()

# New credentials after the CRM said the session expired, or None where crmgate cannot make
# them (it raises a CrmError where the client must act, e.g. PUT a new token).
Renewal = Callable[[], Awaitable["Access | None"]]


@dataclass(eq=False)
class Access:
    """Where and with what the calls of one request authenticate. A renewal replaces the
    instance and token in place, so that the request's later calls use the new ones."""

    instance_url: URL
    token: str = field(repr=False)
    scheme: AuthScheme = BEARER
    renewal: Renewal | None = field(default=None, repr=False)
    _renewed: bool = field(default=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def bound(self, scheme: AuthScheme, renewal: Renewal | None) -> Access:
        self.scheme, self.renewal = scheme, renewal
        return self

    def apply(self, url: URL, headers: Mapping[str, str]) -> tuple[URL, dict[str, str]]:
        return self.scheme.apply(self.token, url, headers)

    async def renew(self, used: str) -> bool:
        """After an answer saying the token ``used`` expired: whether there is a new one to
        resend with. One renewal per request (a second "expired" is the CRM's last word);
        calls of the request that fail at once share it."""
        async with self._lock:
            if self.token != used:
                return True  # another call of this request renewed it meanwhile
            if self._renewed or self.renewal is None:
                return False
            self._renewed = True
            fresh = await self.renewal()
            if fresh is None:
                return False
            self.instance_url, self.token = fresh.instance_url, fresh.token
            return True

    def rebased(self, url: URL, old_instance: URL) -> URL:
        """``url`` moved from ``old_instance`` to the current instance (a refresh may name
        another, Salesforce's ``instance_url``)."""
        if old_instance == self.instance_url:
            return url
        old, new = str(old_instance).rstrip("/"), str(self.instance_url).rstrip("/")
        text = str(url)
        return URL(new + text[len(old) :], encoded=True) if text.startswith(old) else url
