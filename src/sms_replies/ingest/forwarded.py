"""The client address behind a trusted reverse proxy.

``X-Forwarded-For`` is believed only when the TCP peer is one of
``trusted_proxies``, and only its last entry (the address the proxy itself saw):
anything before it was written by the client. A direct peer keeps its own
address whatever headers it sends. aiohttp-remotes was considered: its
``XForwardedFiltered`` believes the header from any peer, and its
``XForwardedStrict`` refuses every peer that is not a proxy (health checks
included); neither is this rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from aiohttp import hdrs, web

Network = IPv4Network | IPv6Network


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str | None:
    """The address to record for a request from ``peer`` carrying ``forwarded_for``."""
    if not peer or not forwarded_for or not trusted:
        return peer
    try:
        peer_ip = ip_address(peer)
    except ValueError:  # a Unix socket peer
        return peer
    if not any(peer_ip in network for network in trusted):
        return peer
    last = forwarded_for.rsplit(",", 1)[-1].strip()
    try:
        return str(ip_address(last))
    except ValueError:
        return peer


def trusted_networks(trusted_proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ip_network(value, strict=False) for value in trusted_proxies)


def request_client(request: web.BaseRequest, trusted: tuple[Network, ...]) -> str | None:
    """The address to record for ``request`` (the audit is its one reader).

    Worked out when needed rather than by a middleware on every request: any
    middleware costs each callback coroutine frames (aiohttp adds one of its own).
    """
    headers = request.headers.getall(hdrs.X_FORWARDED_FOR, [])
    # Several headers: not one written by our proxy alone; believe none.
    forwarded = headers[0] if len(headers) == 1 else None
    return client_address(request.remote, forwarded, trusted)
