"""Behind a reverse proxy: who the client really is, and a health endpoint for the balancer.

Rules: ``X-Forwarded-For`` (or, when it is absent, ``Forwarded``'s ``for=``) is believed only
when the peer is a trusted proxy. Its hops are read from the right -- each proxy appends the
address it saw -- skipping trusted proxies; the first untrusted hop is the client (everything to
its left was written by that client and proves nothing). A hop that is not an IP address
(``unknown``, ``_hidden``, garbage) ends the walk at the last address that was one, so the log
never carries text a client made up. When every hop is trusted, the leftmost is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from .handler import Handler
from .headers import Headers
from .request import Request
from .response import Response

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    """An address from a hop: ``192.0.2.1``, ``192.0.2.1:4711``, ``[2001:db8::1]:4711``,
    ``2001:db8::1``; ``None`` for anything else."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 on a dual-stack socket
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` field, left to right."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, found = pair.strip().partition("=")
            if name.lower() == "for":
                hops.append(found)
    return hops


def forwarded_hops(headers: Headers) -> list[str]:
    """The client addresses the proxies reported, left (first) to right (nearest)."""
    forwarded_for = headers.get_all("x-forwarded-for")
    if forwarded_for:
        return [hop for value in forwarded_for for hop in value.split(",")]
    return [hop for value in headers.get_all("forwarded") for hop in _forwarded_for(value)]


def client_address(peer: str, headers: Headers, networks: Sequence[Network]) -> str:
    """The client's address: ``peer`` itself unless it is a trusted proxy (module docstring)."""
    address = _address(peer)
    if address is None or not _trusted(address, networks):
        return peer
    for hop in reversed(forwarded_hops(headers)):
        found = _address(hop)
        if found is None:
            break
        address = found
        if not _trusted(address, networks):
            break
    return str(address)


class Health(Handler):
    """A cheap ``200 ok`` for load balancer health checks; never cached, never logged."""

    def get(self, request: Request) -> Response:
        return Response(
            200,
            [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
            b"ok\n",
        )
