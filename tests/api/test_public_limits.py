"""Limits on strangers: public runs per address and app, keys' own rates, failed keys,
and the client address behind trusted proxies (and spoofed X-Forwarded-For).

Requests come from chosen socket peers (``TestClient(client=...)``). Rejected
public runs use an invalid input (422, counted, no model run), so the tests
measure counting, not the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app_docs import CHAT_APP
from fastapi.testclient import TestClient

from api.proxies import TrustedProxies
from api.ratelimit import MemoryLimiter
from appforge.core.settings import Settings

NOBODY = {"Authorization": ""}
PROXY = ("10.1.2.3", 40000)  # inside the trusted network below
STRANGER = ("203.0.113.9", 40000)


def _public(rate: str | None = None) -> str:
    doc = CHAT_APP.replace("type: chat", "type: chat\npublic: true")
    return doc + (f"limits: {{public_rate: {rate}}}\n" if rate else "")


def _frozen(client: TestClient) -> TestClient:
    """Stop the limiter's clock: buckets refill only when a test says, so counts and
    Retry-After are exact however slow the machine."""
    limiter = client.app.state.api.limiter  # type: ignore[attr-defined]
    assert isinstance(limiter, MemoryLimiter)
    limiter.clock = lambda: 0.0
    return client


def _peer(client: TestClient, peer: tuple[str, int]) -> TestClient:
    """Another client of the same running app, from another socket address."""
    other = TestClient(client.app, client=peer)
    other.headers.update(client.headers)
    return other


def _try_run(client: TestClient, uuid: str, **headers: str) -> Any:
    return client.post(f"/api/apps/{uuid}/run", json={"input": {}}, headers={**NOBODY, **headers})


def test_public_rate_per_address_and_per_app(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Any
):
    client = _frozen(make_client(make_settings(), client=STRANGER))
    app = create(client, _public('"2/hour"'))
    other_app = create(client, _public())
    seen = [_try_run(client, app["uuid"]) for _ in range(3)]
    assert [r.status_code for r in seen] == [422, 422, 429]
    limited = seen[-1]
    assert limited.json()["error"]["code"] == "RATE_LIMITED"
    assert limited.headers["retry-after"] == "1800"  # one run back every half hour
    assert limited.headers["x-ratelimit-limit"] == "2"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert seen[1].headers["x-ratelimit-remaining"] == "0"  # the tightest bucket is shown
    # Nothing was stored for the refused run (nor for the invalid ones).
    assert client.get(f"/api/apps/{app['uuid']}/runs").json() == []
    # Another app: its own bucket, at the server's default (30/minute).
    other = _try_run(client, other_app["uuid"])
    assert (other.status_code, other.headers["x-ratelimit-limit"]) == (422, "30")
    # Another address: its own bucket.
    assert _try_run(_peer(client, ("198.51.100.1", 1)), app["uuid"]).status_code == 422
    # Callers with a token are not counted as the public.
    assert client.post(f"/api/apps/{app['uuid']}/run", json={"input": {}}).status_code == 422


def test_public_rate_server_default(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Any
):
    client = _frozen(
        make_client(make_settings(rate_limit={"public_rate": "1/day"}), client=STRANGER)
    )
    app = create(client, _public())
    assert _try_run(client, app["uuid"]).status_code == 422
    r = _try_run(client, app["uuid"])
    assert (r.status_code, r.headers["retry-after"]) == (429, "86400")


def test_public_rate_is_validated_in_yaml(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = _frozen(make_client(make_settings()))
    r = client.post(
        "/api/apps", content=_public('"lots"'), headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 422
    assert "limits.public_rate" in r.text
    assert client.get("/api/apps").json() == []
    ok = client.post(
        "/api/apps", content=_public('"5/minute"'), headers={"Content-Type": "application/yaml"}
    )
    assert ok.status_code == 201, ok.text


def test_spoofed_forwarded_for_is_limited_as_the_real_address(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Any
):
    settings = make_settings(trusted_proxies=["10.0.0.0/8"])
    client = _frozen(make_client(settings, client=STRANGER))
    app = create(client, _public('"2/hour"'))
    # From an untrusted peer, a new X-Forwarded-For each time changes nothing.
    codes = [
        _try_run(client, app["uuid"], **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code
        for n in range(3)
    ]
    assert codes == [422, 422, 429]
    # Through the trusted proxy each forwarded client has its own bucket ...
    proxy = _peer(client, PROXY)
    for n in range(2):
        assert (
            _try_run(proxy, app["uuid"], **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code == 422
        )
    third = _try_run(proxy, app["uuid"], **{"X-Forwarded-For": "192.0.2.0"})
    assert third.status_code == 422
    assert _try_run(proxy, app["uuid"], **{"X-Forwarded-For": "192.0.2.0"}).status_code == 429
    # ... and a client cannot spoof through it either: the right-most untrusted hop counts.
    spoof = _try_run(proxy, app["uuid"], **{"X-Forwarded-For": "1.2.3.4, 192.0.2.0"})
    assert spoof.status_code == 429


def test_forwarded_address_reaches_the_audit_log(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = _frozen(make_client(make_settings(trusted_proxies=["10.0.0.0/8"]), client=PROXY))
    forwarded = {"X-Forwarded-For": "198.51.100.20, 10.9.9.9"}
    assert (
        client.post("/api/tokens", json={"name": "via-proxy"}, headers=forwarded).status_code == 201
    )
    stranger = _peer(client, STRANGER)
    spoofed = {"X-Forwarded-For": "198.51.100.99"}
    assert stranger.post("/api/tokens", json={"name": "direct"}, headers=spoofed).status_code == 201
    events = client.get("/api/audit", params={"action": "token.created"}).json()
    by_name = {e["details"].get("name"): e["actor_address"] for e in events}
    assert by_name == {"via-proxy": "198.51.100.20", "direct": STRANGER[0]}


def test_token_rate_limit_overrides_the_default(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = _frozen(
        make_client(make_settings(rate_limit={"requests": 1, "window_seconds": 3600, "burst": 3}))
    )
    slow = client.post("/api/tokens", json={"name": "slow", "rate_limit": "1/hour"}).json()
    fast = client.post("/api/tokens", json={"name": "fast", "rate_limit": "10/minute"}).json()
    as_slow = {"Authorization": f"Token {slow['token']}"}
    as_fast = {"Authorization": f"Token {fast['token']}"}
    first = client.get("/api/apps", headers=as_slow)
    assert (first.status_code, first.headers["x-ratelimit-limit"]) == (200, "1")
    second = client.get("/api/apps", headers=as_slow)
    assert (second.status_code, second.headers["retry-after"]) == (429, "3600")
    # Above the server's burst of 3: this key's own rate is higher.
    codes = [client.get("/api/apps", headers=as_fast).status_code for _ in range(6)]
    assert codes == [200] * 6


def test_failed_authentication_is_limited_per_address(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Any
):
    client = _frozen(
        make_client(make_settings(rate_limit={"auth_failures": "3/hour"}), client=STRANGER)
    )
    app = create(client, _public())
    good = client.headers["Authorization"]
    codes = [
        client.get("/api/apps", headers={**NOBODY, "X-API-Key": f"af_guess_{n}"}).status_code
        for n in range(3)
    ]
    assert codes == [401, 401, 401]
    refused = client.get("/api/apps", headers={**NOBODY, "X-API-Key": "af_guess_4"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert refused.headers["retry-after"] == "1200"
    # Refused before the key is looked at: a good key from this address waits too ...
    assert client.get("/api/apps", headers={"Authorization": good}).status_code == 429
    assert client.get("/api/apps", headers={"Authorization": "Bogus x"}).status_code == 429
    # ... but callers without a key are not affected, nor other addresses.
    assert client.get(f"/api/apps/{app['uuid']}/page", headers=NOBODY).status_code == 200
    elsewhere = _peer(client, ("198.51.100.2", 1))
    assert elsewhere.get("/api/apps").status_code == 200
    guess = elsewhere.get("/api/apps", headers={**NOBODY, "X-API-Key": "af_guess_5"})
    assert guess.status_code == 401


def test_public_rate_and_app_origins_cover_the_openai_endpoint(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Any
):
    client = _frozen(make_client(make_settings(), client=STRANGER))
    doc = _public('"1/hour"') + 'origins: ["https://shop.example"]\n'
    app = create(client, doc)
    body = {"model": app["uuid"], "messages": [{"role": "user", "content": "hi"}]}
    shop = {**NOBODY, "Origin": "https://shop.example"}
    first = client.post("/v1/chat/completions", json=body, headers=shop)
    assert first.status_code == 200, first.text
    assert first.headers["access-control-allow-origin"] == "https://shop.example"
    second = client.post("/v1/chat/completions", json=body, headers=shop)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert second.headers["retry-after"] == "3600"
    assert second.headers["access-control-allow-origin"] == "https://shop.example"
    elsewhere = client.post(
        "/v1/chat/completions", json=body, headers={**NOBODY, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in elsewhere.headers
    # One run was made: the refused one stored nothing.
    assert len(client.get(f"/api/apps/{app['uuid']}/runs").json()) == 1


def test_an_ipv6_client_is_limited_by_its_network_not_by_each_address(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Any
):
    """One home or server is given a whole IPv6 /64 and can take a new address for every
    request: limits by address counted each one apart, so a client escaped its public
    rate (and its failed sign-ins, runs at once and connections held) by changing the
    last bits. An IPv6 client is counted by its /64 (APPFORGE_CLIENT_IPV6_PREFIX)."""
    client = _frozen(make_client(make_settings(), client=("2001:db8:1:2::9", 40000)))
    app = create(client, _public('"2/hour"'))
    codes = [
        _try_run(_peer(client, (f"2001:db8:1:2:{n:x}::1", 1)), app["uuid"]).status_code
        for n in range(1, 4)
    ]
    assert codes == [422, 422, 429]
    # Another /64 is another client; an IPv4 client is its address, however written.
    assert _try_run(_peer(client, ("2001:db8:1:3::1", 1)), app["uuid"]).status_code == 422
    for peer in ("203.0.113.7", "::ffff:203.0.113.7", "203.0.113.7"):
        codes.append(_try_run(_peer(client, (peer, 1)), app["uuid"]).status_code)
    assert codes[3:] == [422, 422, 429]

    each = _frozen(make_client(make_settings(client_ipv6_prefix=128), client=PROXY))
    app = create(each, _public('"1/hour"'))
    for n in range(1, 4):  # with 128 bits, each address on its own
        assert _try_run(_peer(each, (f"2001:db8:1:2::{n}", 1)), app["uuid"]).status_code == 422


def test_the_key_of_a_client_address() -> None:
    proxies = TrustedProxies()
    assert proxies.key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert proxies.key("::ffff:192.0.2.1") == "192.0.2.1"
    assert proxies.key("192.0.2.1") == "192.0.2.1"
    assert proxies.key("testclient") == "testclient"  # no address: as it is
    assert proxies.key(None) == "unknown"
    assert TrustedProxies(ipv6_prefix=48).key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert TrustedProxies(ipv6_prefix=128).key("2001:db8::1") == "2001:db8::1"
