"""The one HTTP client crmgate uses to call CRMs (aiohttp, chosen by measurement).

Every call checks its URL first: https only, and a host the platform's descriptor (or the
operator's override) allows, so a stored instance URL can never point a token at another host.
Redirects are not followed, and response bodies are capped. (The full outbound guard of the
security issue, with address checks against private ranges, builds on ``check_url``.)
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL


class OutboundRefused(Exception):
    """The URL is not one crmgate may call; the message names the reason, not a secret."""


class OutboundFailed(Exception):
    """The CRM could not be reached, timed out, or answered too much."""


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"OutboundResponse(status={self.status}, {len(self.body)} bytes)"


_HOST = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def check_url(url: str, host_patterns: Iterable[str]) -> URL:
    """The parsed URL, if it is https on a host matching one of ``host_patterns``.

    A pattern is a host name with optional leading ``*.`` labels (``*.my.salesforce.com``) and an
    optional ``:port``; without a port only 443 matches.
    """
    try:
        parsed = URL(url)
        host = (parsed.raw_host or "").lower().rstrip(".")
        port = parsed.port
    except (ValueError, TypeError, UnicodeError):
        raise OutboundRefused("not a URL") from None
    if parsed.scheme != "https":
        raise OutboundRefused("only https URLs are allowed")
    if parsed.raw_user or parsed.raw_password:
        raise OutboundRefused("URLs with credentials in them are not allowed")
    if not host:
        raise OutboundRefused("the URL has no host")
    if not _HOST.match(host) and not _is_ip(host):
        # a host is a DNS name (letters, digits, hyphens; dots between labels) or an address:
        # nothing else may ride along (a space would add words to an OAuth scope built from it)
        raise OutboundRefused("the URL's host is not a host name")
    if port is None or not 0 < port < 65536:
        raise OutboundRefused("the URL has no valid port")
    for pattern in host_patterns:
        pattern_host, _, pattern_port = pattern.lower().partition(":")
        if (int(pattern_port) if pattern_port else 443) != port:
            continue
        if pattern_host.startswith("*."):
            suffix = pattern_host[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return parsed
        elif host == pattern_host:
            return parsed
    raise OutboundRefused(f"the host {host} is not one this platform allows")


class Outbound:
    def __init__(
        self,
        *,
        ca_file: str | None = None,
        timeout: float = 30.0,
        max_response_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        # The system's authorities, plus the operator's extra ones (a private CA, the demo's).
        self._ssl = ssl.create_default_context()
        if ca_file:
            self._ssl.load_verify_locations(cafile=ca_file)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._max = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=256, ssl=self._ssl),
                trust_env=False,
                auto_decompress=True,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
    ) -> OutboundResponse:
        try:
            async with self._client().request(
                method, url, headers=headers, data=data, allow_redirects=False
            ) as response:
                # StreamReader.read(n) returns what is buffered, not n bytes: read to the end,
                # counting, and stop as soon as the answer is larger than allowed.
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > self._max:
                        raise OutboundFailed(f"the CRM answered more than {self._max} bytes")
                    chunks.append(chunk)
                # every header line kept (Set-Cookie, Link, ... may come more than once)
                headers = CIMultiDictProxy(CIMultiDict(response.headers))
                return OutboundResponse(response.status, headers, b"".join(chunks))
        except (aiohttp.ClientError, TimeoutError) as error:
            raise OutboundFailed(f"the CRM could not be reached: {type(error).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
