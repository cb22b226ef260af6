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
from aiohttp.typedefs import Handler, Middleware

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


def forwarded_middleware(trusted_proxies: Iterable[str]) -> Middleware:
    trusted = tuple(ip_network(value, strict=False) for value in trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        # Several headers: not one written by our proxy alone; believe none.
        forwarded = headers[0] if len(headers) == 1 else None
        remote = client_address(request.remote, forwarded, trusted)
        if remote is not None and remote != request.remote:
            request = request.clone(remote=remote)
        return await handler(request)

    return middleware
