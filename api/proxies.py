"""The client's address, and the reverse proxies trusted to report it.

``X-Forwarded-For`` is believed only when the socket peer is one of
``APPFORGE_TRUSTED_PROXIES`` (none by default): a header sent by anyone else
changes nothing, so a client cannot escape its rate limits or forge the
address the audit log records. From a trusted peer the chain is read right to
left, skipping trusted proxies; the first address that is not one is the client
(the left-most entries were written by the client itself and prove nothing).

``RequestContextMiddleware`` works the address out once per request
(:func:`resolve_address`) and :func:`client_address` is the one way the rest of
the API reads it: rate limits, the audit log, logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_STATE_KEY = "client_address"


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )

    def __contains__(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded: list[str]) -> str | None:
        """The client of a request from ``peer`` carrying these ``X-Forwarded-For`` values."""
        if peer is None or not self.networks:
            return peer
        nearest = _parse(peer)
        if nearest is None or nearest not in self:
            return peer
        hops = [hop.strip() for value in forwarded for hop in value.split(",")]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                # A trusted proxy passed on something that is no address: the client
                # is the last hop that can be named, the proxy that received it.
                break
            nearest = address
            if address not in self:
                break
        return str(nearest)


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_address(scope: Scope, proxies: TrustedProxies) -> str | None:
    """Work out the client's address of an ASGI request and keep it in its state."""
    client = scope.get("client")
    peer = client[0] if client else None
    forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    address = proxies.client(peer, forwarded)
    scope.setdefault("state", {})[_STATE_KEY] = address
    return address


def scope_address(scope: Scope) -> str | None:
    """The client's address of an ASGI request (for middleware, which has no Request)."""
    state = scope.get("state") or {}
    if _STATE_KEY in state:
        address: str | None = state[_STATE_KEY]
        return address
    client = scope.get("client")
    return client[0] if client else None


def client_address(request: HTTPConnection) -> str | None:
    """The address a request comes from: the socket peer, or the client a trusted
    proxy reports. Everything that needs an address uses this."""
    return scope_address(request.scope)
