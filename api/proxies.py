"""The client's address, and the reverse proxies trusted to report it.

``X-Forwarded-For`` is believed only when the socket peer is one of
``APPFORGE_TRUSTED_PROXIES`` (none by default): a header sent by anyone else
changes nothing, so a client cannot escape its rate limits or forge the
address the audit log records. From a trusted peer the chain is read right to
left, skipping trusted proxies; the first address that is not one is the client
(the left-most entries were written by the client itself and prove nothing).

``RequestContextMiddleware`` works the address out once per request
(:func:`resolve_address`) and :func:`client_address` is the one way the rest of
the API reads it: the audit log, logs. Limits by address (rate limits, failed
sign-ins, anonymous runs at once, connections held) count a client by
:func:`client_key` instead: an IPv4 address itself, but an IPv6 address's
network (``APPFORGE_CLIENT_IPV6_PREFIX``, a /64 by default), since one home or
server is given a whole /64 and could take a new address for every request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_STATE_KEY = "client_address"
_KEY_STATE_KEY = "client_key"


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` is believed."""

    def __init__(self, cidrs: Iterable[str] = (), ipv6_prefix: int = 64) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )
        self.ipv6_prefix = ipv6_prefix

    def key(self, address: str | None) -> str:
        """Who limits by address count ``address`` as: an IPv4 address itself, an IPv6
        address its network of ``ipv6_prefix`` bits (``2001:db8:1:2::/64``)."""
        parsed = _parse(address) if address else None
        if parsed is None:
            return address or "unknown"
        if isinstance(parsed, ipaddress.IPv6Address) and self.ipv6_prefix < 128:
            return str(ipaddress.ip_network(f"{parsed}/{self.ipv6_prefix}", strict=False))
        return str(parsed)

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
    state = scope.setdefault("state", {})
    state[_STATE_KEY], state[_KEY_STATE_KEY] = address, proxies.key(address)
    return address


def scope_address(scope: Scope) -> str | None:
    """The client's address of an ASGI request (for middleware, which has no Request)."""
    state = scope.get("state") or {}
    if _STATE_KEY in state:
        address: str | None = state[_STATE_KEY]
        return address
    client = scope.get("client")
    return client[0] if client else None


def scope_client_key(scope: Scope) -> str:
    """Who limits by address count an ASGI request's client as (see :meth:`TrustedProxies.key`)."""
    state = scope.get("state") or {}
    key: str | None = state.get(_KEY_STATE_KEY)
    return key if key is not None else TrustedProxies().key(scope_address(scope))


def client_key(request: HTTPConnection) -> str:
    """Who limits by address count the request's client as: its rate-limit buckets, its
    failed sign-ins, its runs at once."""
    return scope_client_key(request.scope)


def client_address(request: HTTPConnection) -> str | None:
    """The address a request comes from: the socket peer, or the client a trusted
    proxy reports. Everything that needs an address uses this."""
    return scope_address(request.scope)
