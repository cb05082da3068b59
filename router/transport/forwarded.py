"""The client's address behind a reverse proxy: `X-Forwarded-For`, believed only from trusted proxies.

Any client can send the header, so it counts only when the TCP peer is one of the listener's
`trusted_proxies`; then the client is the right-most address in it that is not a trusted proxy (each
proxy appends the address it saw, so entries left of that may be made up by the client). The throttle,
logs and the session's `peer` use that address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HOPS = 16  # entries of the header looked at, from the right: bounded work for any header


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse `trusted_proxies` (addresses or CIDR networks); raises ValueError for a bad one."""
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def client_address(peer_host: str, header: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The forwarded client address, or None when the header does not count (then use the TCP peer)."""
    peer = _ip(peer_host)
    if not header or peer is None or not _trusted(peer, trusted):
        return None
    address = None
    for entry in reversed(header.rsplit(",", MAX_HOPS)[-MAX_HOPS:]):
        ip = _ip(entry)
        if ip is None:
            break  # not an address: nothing left of it can be trusted either
        address = str(ip)
        if not _trusted(ip, trusted):
            break
    return address


def ip_address(text: str) -> Address | None:
    """An address as the router compares it with networks (an IPv4-mapped IPv6 one as IPv4); None if not one."""
    return _ip(text)


def _trusted(ip: Address, trusted: tuple[Network, ...]) -> bool:
    return any(ip in net for net in trusted)


def _ip(text: str) -> Address | None:
    text = text.strip()
    if len(text) > 64:
        return None
    if text.startswith("["):  # [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:a.b.c.d is the IPv4 address
    return mapped if mapped is not None else ip
