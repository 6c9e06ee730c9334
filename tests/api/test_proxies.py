"""The client's address: the socket peer, or what trusted proxies forward."""

from __future__ import annotations

import pytest

from api.proxies import TrustedProxies

TRUSTED = TrustedProxies(["10.0.0.0/8", "fd00::/8", "192.168.1.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # No header, or a peer that is no proxy of ours: the peer, whatever it says.
        ("10.0.0.1", [], "10.0.0.1"),
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),
        ("203.0.113.5", ["10.0.0.2"], "203.0.113.5"),
        # From a trusted proxy: the right-most hop that is not a trusted proxy.
        ("10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.1", ["1.2.3.4, 198.51.100.7"], "198.51.100.7"),
        ("10.0.0.1", ["1.2.3.4, 198.51.100.7, 192.168.1.1"], "198.51.100.7"),
        ("10.0.0.1", ["1.2.3.4", "198.51.100.7, 10.3.3.3"], "198.51.100.7"),
        ("fd00::1", ["2001:db8::9"], "2001:db8::9"),
        ("::ffff:10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        # Every hop trusted: the farthest one. Garbage: the proxy that received it.
        ("10.0.0.1", ["10.0.0.9, 10.0.0.8"], "10.0.0.9"),
        ("10.0.0.1", ["1.2.3.4, not-an-ip"], "10.0.0.1"),
        ("10.0.0.1", ["not-an-ip, 10.0.0.7"], "10.0.0.7"),
        ("10.0.0.1", [""], "10.0.0.1"),
        # A peer that is not an address (a test client, a Unix socket) stays as it is.
        ("testclient", ["1.2.3.4"], "testclient"),
        (None, ["1.2.3.4"], None),
    ],
)
def test_proxies_client_address(peer: str | None, forwarded: list[str], client: str | None):
    assert TRUSTED.client(peer, forwarded) == client


def test_proxies_none_trusted_by_default():
    assert TrustedProxies().client("10.0.0.1", ["198.51.100.7"]) == "10.0.0.1"
