"""The one HTTP client crmgate uses to call CRMs (aiohttp, chosen by measurement).

Every call passes one guard (docs/security.md):

- its URL: https only, on a host the platform's descriptor (or the operator's override) allows,
  the host a host name or an address (``check_url``), so a stored instance URL can never point a
  token at another host; plain http only to an exact host and port the operator lists
  (``CRMGATE_OUTBOUND_PLAIN_HTTP_HOSTS``: a self-hosted CRM on a private network, the simulators
  in tests), which must still fit the platform's hosts and pass the address check. Connectors
  check through ``Outbound.check_url`` (the operator's list with it) and ``Outbound.request``
  refuses a plain http URL to any other host again, so no code path skips the list;
- its addresses: every address the host resolves to must be public (no loopback, private,
  link-local such as 169.254.169.254, CGNAT, multicast, reserved, nor an IPv6 address carrying
  such an IPv4 one), unless it is in a network the operator allows
  (``CRMGATE_OUTBOUND_ALLOWED_NETWORKS``: a self-hosted CRM, the simulators in tests). The check
  is made by the resolver the connection uses, so the connection goes to the address that was
  checked (no DNS rebinding between check and connect); an address written in the URL is checked
  the same way;
- redirects are not followed, response bodies are capped, calls time out.

A read (GET, HEAD, OPTIONS) the CRM could not serve for now (429, 500, 502, 503, 504, or no
connection) is tried again a few times within a time budget (``Retrying``); a write never is.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import random
import re
import socket
import ssl
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL


class OutboundRefused(Exception):
    """The URL is not one crmgate may call; the message names the reason, not a secret."""


class OutboundFailed(Exception):
    """The CRM could not be reached, timed out, or answered too much."""


class _Unreachable(OutboundFailed):
    """No answer came (no connection, a reset, a timeout): a read may be tried again."""


class AddressRefused(OSError):
    """A host resolved to an address crmgate may not call (raised inside the connection, where
    aiohttp expects an OSError; ``Outbound.request`` turns it into OutboundRefused)."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger("crmgate.outbound")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Addresses Python's is_global calls global that are not the open internet's: cloud hosts'
# own services and ranges reserved for documentation or deprecated.
_DENIED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "168.63.129.16/32",  # Azure's WireServer (host agent, DNS, metadata)
        "192.0.0.0/24",  # IETF protocol assignments (Oracle Cloud's metadata at 192.0.0.192)
        "fec0::/10",  # deprecated site-local
        "3fff::/20",  # documentation (RFC 9637)
    )
)


def address_allowed(address: str, allowed: Iterable[Network] = ()) -> bool:
    """Whether crmgate may connect to ``address``: one of the operator's networks, or a public
    address. An IPv4-mapped IPv6 address is its IPv4 address; one that embeds an IPv4 address
    (6to4, Teredo) must be public on both counts."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0]
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64:
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # DNS64: the IPv4 address it carries
    if any(ip in network for network in allowed):
        return True
    if any(ip in network for network in _DENIED):
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip.teredo is not None:
            candidates.append(ip.teredo[1])
    return all(c.is_global and not c.is_multicast and not c.is_reserved for c in candidates)


class GuardedResolver(AbstractResolver):
    """The system's resolver, keeping only answers whose every address is allowed: a host with
    one private address among public ones is refused whole (an attacker's DNS may mix them)."""

    def __init__(self, allowed: Iterable[Network] = ()) -> None:
        self._inner = DefaultResolver()
        self._allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        refused = [a["host"] for a in answers if not address_allowed(a["host"], self._allowed)]
        if refused:
            raise AddressRefused(f"{host} resolves to an address crmgate may not call")
        return answers

    async def close(self) -> None:
        await self._inner.close()


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


def _host_error(host: str) -> str | None:
    """Why ``host`` (lower case, no trailing dot, an IPv6 address without brackets) is not a
    host name or an address in its usual notation; None if it is one."""
    if not host:
        return "no host"
    if not _HOST.match(host) and not _is_ip(host):
        # a host is a DNS name (letters, digits, hyphens; dots between labels) or an address:
        # nothing else may ride along (a space would add words to an OAuth scope built from it)
        return "a host that is not a host name"
    last = host.rsplit(".", 1)[-1]
    if not _is_ip(host) and (last.isdigit() or last.startswith("0x")):
        # no top-level domain is a number: 2130706433, 0x7f.1 or 127.1 are addresses in
        # another notation, which resolvers read differently; only the usual one is taken
        return "an address not written in dotted decimal (127.0.0.1) or as IPv6"
    return None


def _same_host(host: str) -> str:
    """``host`` as the plain-http list holds it: lower case, no trailing dot, an address in its
    one compressed form (``[0:0::1]`` is ``::1``)."""
    host = host.lower().rstrip(".").strip("[]")
    return ipaddress.ip_address(host).compressed if _is_ip(host) else host


PlainHttpHost = tuple[str, int]


def plain_http_host(entry: str) -> PlainHttpHost:
    """One entry of ``CRMGATE_OUTBOUND_PLAIN_HTTP_HOSTS`` as (host, port): an exact host name or
    address with an optional ``:port`` (80 without one), an IPv6 address in brackets. Anything
    else is a ValueError that names the entry and what is wrong with it."""
    if "://" in entry or "/" in entry:
        raise ValueError(f"{entry!r}: a host or host:port, not a URL or a path")
    if "*" in entry:
        raise ValueError(f"{entry!r}: an exact host; plain http is allowed host by host, no *")
    match = re.fullmatch(r"(?:\[([^\]]*)\]|([^:\[\]@]+))(?::([0-9]{1,5}))?", entry)
    if match is None:
        raise ValueError(f"{entry!r}: a host or host:port (an IPv6 address in brackets)")
    bracketed, name, port_text = match.groups()
    if bracketed is not None and not _is_ip(bracketed):
        raise ValueError(f"{entry!r}: only an IPv6 address goes in brackets")
    host = (bracketed or name).lower().rstrip(".")
    problem = _host_error(host)
    if problem:
        raise ValueError(f"{entry!r}: {problem}")
    port = int(port_text) if port_text else 80
    if not 0 < port < 65536:
        raise ValueError(f"{entry!r}: a port from 1 to 65535")
    return _same_host(host), port


def check_url(
    url: str, host_patterns: Iterable[str], plain_http: Collection[PlainHttpHost] = ()
) -> URL:
    """The parsed URL, if it is https (or http to a host and port in ``plain_http``, the
    operator's list) on a host matching one of ``host_patterns``.

    A pattern is a host name with optional leading ``*.`` labels (``*.my.salesforce.com``) and an
    optional ``:port``; without a port only the scheme's own (443, or 80 for http) matches.
    """
    try:
        parsed = URL(url)
        host = (parsed.raw_host or "").lower().rstrip(".")
        port = parsed.port
    except (ValueError, TypeError, UnicodeError):
        raise OutboundRefused("not a URL") from None
    if parsed.scheme not in ("https", "http"):
        raise OutboundRefused("only https URLs are allowed")
    if parsed.raw_user or parsed.raw_password:
        raise OutboundRefused("URLs with credentials in them are not allowed")
    problem = _host_error(host)
    if problem == "no host":
        raise OutboundRefused("the URL has no host")
    if problem:
        raise OutboundRefused(f"the URL has {problem}")
    if port is None or not 0 < port < 65536:
        raise OutboundRefused("the URL has no valid port")
    if parsed.scheme == "http" and (_same_host(host), port) not in plain_http:
        raise OutboundRefused(
            f"plain http to {host}:{port} is not allowed: https only, but for the hosts "
            "an operator lists in CRMGATE_OUTBOUND_PLAIN_HTTP_HOSTS"
        )
    default_port = 443 if parsed.scheme == "https" else 80
    for pattern in host_patterns:
        if pattern.startswith("["):  # an IPv6 address, [fd00::5]:8443
            pattern_host, _, pattern_port = pattern[1:].partition("]")
            pattern_port = pattern_port.removeprefix(":")
        else:
            pattern_host, _, pattern_port = pattern.lower().partition(":")
        if pattern_port and not pattern_port.isdigit():
            continue  # no port: a pattern that matches nothing
        if (int(pattern_port) if pattern_port else default_port) != port:
            continue
        if pattern_host.startswith("*."):
            suffix = pattern_host[1:]
            if host.endswith(suffix) and len(host) > len(suffix):
                return parsed
        elif _same_host(host) == _same_host(pattern_host):
            return parsed
    raise OutboundRefused(f"the host {host} is not one this platform allows")


# RFC 9110 section 9.2.1: the safe methods, which change nothing at the CRM. A write that got
# no answer, or a 5xx, may have been done all the same: trying it again could do it twice.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# 429 (RFC 6585) and the 5xx that say "not now": an error inside the CRM (500, often a deadlock
# or a node being replaced), a bad or absent upstream (502, 504), an overload (503). Not 501
# (the method is not implemented), 505 (the HTTP version), 507/508/511 nor an unknown 5xx: the
# same request would get the same answer.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the answer asks to wait (RFC 9110 section 10.2.3: ``Retry-After`` as
    delay-seconds or as an HTTP-date), none if it does not say; a moment past is 0."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP-date is GMT; "-0000" parses as naive
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class Retrying:
    """How a read is tried again: at most ``retries`` more times, none starting later than
    ``budget`` seconds after the first began. Between tries the CRM's ``Retry-After`` when it
    gives one, else "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): a
    random wait from 0 to ``base`` * 2^n, so many gateways that met the same outage do not come
    back in step. A ``Retry-After`` beyond the budget is not waited for: the answer goes back as
    it is, and the error ladder gives the client 429 with that Retry-After."""

    retries: int = 2
    budget: float = 5.0
    base: float = 0.5

    def backoff(self, attempt: int) -> float:
        return random.uniform(0.0, self.base * 2**attempt)  # noqa: S311 (a wait, not a secret)


class Outbound:
    def __init__(
        self,
        *,
        ca_file: str | None = None,
        timeout: float = 30.0,
        max_response_bytes: int = 16 * 1024 * 1024,
        allowed_networks: Iterable[str] = (),
        plain_http_hosts: Iterable[str] = (),
        retrying: Retrying | None = None,
    ) -> None:
        # The system's authorities, plus the operator's extra ones (a private CA, the demo's).
        self._ssl = ssl.create_default_context()
        if ca_file:
            self._ssl.load_verify_locations(cafile=ca_file)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._max = max_response_bytes
        self._allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed_networks
        )
        self._plain_http = frozenset(plain_http_host(entry) for entry in plain_http_hosts)
        self._session: aiohttp.ClientSession | None = None
        self._retrying = retrying or Retrying()

    def check_url(self, url: str, host_patterns: Iterable[str]) -> URL:
        """``check_url`` with the operator's plain-http hosts: how connectors check a URL."""
        return check_url(url, host_patterns, self._plain_http)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    limit=256, ssl=self._ssl, resolver=GuardedResolver(self._allowed)
                ),
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
        once: bool = False,
    ) -> OutboundResponse:
        """One call, the guard checked on every try; a read the CRM could not serve for now
        is tried again (``Retrying``). ``once``: a call that changes something although its
        method is safe (a token request by GET, which spends a code or a refresh token) is
        never sent twice."""
        try:
            if once or method.upper() not in SAFE_METHODS:
                return await self._once(method, url, headers, data)
            return await self._read(method, url, headers, data)
        except _Unreachable as error:
            raise OutboundFailed(str(error)) from None  # callers see one kind of failure

    async def _read(
        self, method: str, url: URL, headers: Mapping[str, str] | None, data: Any
    ) -> OutboundResponse:
        policy = self._retrying
        started = time.monotonic()
        for attempt in range(policy.retries + 1):
            failure: _Unreachable | None = None
            answer: OutboundResponse | None = None
            try:
                answer = await self._once(method, url, headers, data)
            except _Unreachable as error:
                failure = error
            if answer is not None and answer.status not in RETRY_STATUSES:
                return answer
            left = policy.budget - (time.monotonic() - started)
            asked = retry_after(answer.headers) if answer is not None else None
            wait = asked if asked is not None else min(policy.backoff(attempt), max(left, 0.0))
            if attempt == policy.retries or wait > left or left <= 0:
                if failure is not None:
                    raise failure
                assert answer is not None
                return answer
            # the host, not the URL: a path or query may carry a record's data or a token
            log.info(
                "%s to %s: %s; try %d of %d in %.2f s",
                method.upper(),
                url.host,
                f"HTTP {answer.status}" if answer is not None else str(failure),
                attempt + 2,
                policy.retries + 1,
                wait,
            )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # the last try returns or raises above

    async def _once(
        self, method: str, url: URL, headers: Mapping[str, str] | None, data: Any
    ) -> OutboundResponse:
        host = (url.raw_host or "").strip("[]")
        if url.scheme != "https" and (
            url.scheme != "http" or (_same_host(host), url.port) not in self._plain_http
        ):
            # checked again where every call passes: a URL that skipped check_url, or was built
            # from one that passed it under other settings, still goes nowhere in clear text
            raise OutboundRefused(f"only https URLs are allowed (not {url.scheme} to {host})")
        if _is_ip(host) and not address_allowed(host, self._allowed):
            # an address written in the URL is never resolved: checked here
            raise OutboundRefused(f"{host} is an address crmgate may not call")
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
        except (aiohttp.ClientSSLError, aiohttp.InvalidURL) as error:
            # a certificate or a URL that will not do: the same on the next try
            raise OutboundFailed(f"the CRM could not be reached: {type(error).__name__}") from None
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, AddressRefused):
                raise OutboundRefused(str(error.os_error)) from None
            raise _Unreachable(f"the CRM could not be reached: {type(error).__name__}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _Unreachable(f"the CRM could not be reached: {type(error).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
