"""Who is asking, when there is no valid API key to tell: the client's network.

The client address is ``REMOTE_ADDR`` unless ``RATELIMIT_TIERS_TRUSTED_PROXIES``
says how many proxies in front of the app append to ``X-Forwarded-For``; only
the entry the outermost trusted proxy wrote is believed, so clients cannot
pick their own bucket by forging the header. IPv6 clients are grouped by /64,
the block a single host or site usually gets.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.views.decorators.debug import sensitive_variables

from ratelimit_tiers.conf import conf

IPV6_PREFIX = 64
UNKNOWN = "unknown"


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` or ``[::1]:80``; ``None`` if it is not one."""
    value = value.strip()
    if value.startswith("["):
        value, bracket, _port = value[1:].partition("]")
        if not bracket:
            return None
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@sensitive_variables("meta")  # Every header, the API key's too.
def client_ip(request: Any) -> str:
    """The client's address as text, or ``"unknown"``."""
    meta = request.META
    address = parse_ip(str(meta.get("REMOTE_ADDR") or ""))
    proxies = conf.TRUSTED_PROXIES
    if proxies > 0:
        hops = [h for h in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if h.strip()]
        # Each trusted proxy appends the address it was connected from, so the
        # proxies-th entry from the right is the client; whatever is left of it
        # came from the client and proves nothing. A shorter header means the
        # request did not come through all the proxies: keep REMOTE_ADDR.
        if len(hops) >= proxies:
            address = parse_ip(hops[-proxies])
    return UNKNOWN if address is None else str(address)


def client_network(request: Any) -> str:
    """The bucket a client's requests share: its IPv4 address or its IPv6 /64."""
    address = parse_ip(client_ip(request))
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return UNKNOWN if address is None else str(address)
