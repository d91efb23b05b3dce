"""Who the client is, by address: the TCP peer, or, behind a proxy the operator trusts, the
address that proxy says it served (``X-Forwarded-For``). Rate limits and the audit trail use it.

A header is the client's to write: it is read only when the peer is one of the operator's
proxies (``CRMGATE_TRUSTED_PROXIES``), and then from the right, skipping the trusted proxies, so
a client cannot put an address of its choosing in front.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(scope: Mapping[str, Any], trusted: Sequence[Network] = ()) -> str | None:
    """The client's address (text), or None when the server was told none."""
    peer = scope.get("client")
    address = _ip(str(peer[0])) if peer else None
    if address is None:
        return None
    if not any(address in network for network in trusted):
        return str(address)
    forwarded: list[str] = []
    for name, value in scope.get("headers") or ():
        if name.lower() == b"x-forwarded-for":
            forwarded += value.decode("latin-1").split(",")
    for hop in reversed(forwarded):
        hop_address = _ip(hop)
        if hop_address is None:
            break  # a malformed entry: what is left of it was written by the client
        if not any(hop_address in network for network in trusted):
            return str(hop_address)
    return str(address)


def throttle_bucket(address: str | None) -> str | None:
    """What failed authentications are counted by: an IPv4 address, an IPv6 /64 (one client
    holds a whole /64), nothing for an unknown client (one bucket for all would let anyone lock
    everyone out)."""
    ip = _ip(address) if address else None
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
