"""The retry rules (providers/retries.py): as functions, and through the
OpenAI-compatible provider against the edge server (tests/openai_edge.py).

Waits go to a fake clock and sleep: tests check the waits asked for and the
requests the server saw, never how long anything took.
"""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai_edge import (
    COUNT,
    GREEDY,
    MODEL,
    EdgeServer,
    FakeTime,
    Reply,
    completion_body,
    drain,
    is_backoff,
    make_provider,
    openai_error,
)

from providers.errors import ProviderError, ProviderRateLimitedError, ProviderUnavailableError
from providers.retries import MAX_DELAY, Retries, backoff, is_retried, server_wait

NOW = 1_700_000_000.0  # a Unix time: 2023-11-14 22:13:20 UTC


# --- the rules as functions -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 -0000"}, 30.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:10 GMT"}, -10.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
    ],
)
def test_server_wait_reads_milliseconds_seconds_and_dates(
    headers: dict[str, str], expected: float | None
) -> None:
    assert server_wait(httpx.Headers(headers), NOW) == expected


@pytest.mark.parametrize(
    ("status", "headers", "retried"),
    [
        *[(s, {}, True) for s in (408, 409, 429, 500, 501, 502, 503, 504, 599)],
        *[(s, {}, False) for s in (400, 401, 403, 404, 413, 422)],
        (400, {"x-should-retry": "true"}, True),
        (503, {"x-should-retry": "false"}, False),
        (429, {"retry-after": "120"}, True),
        (429, {"retry-after": "121"}, False),
        (429, {"retry-after": "inf"}, False),
        (400, {"x-should-retry": "true", "retry-after-ms": "121000"}, False),
    ],
)
def test_is_retried_follows_the_sdk(status: int, headers: dict[str, str], retried: bool) -> None:
    assert is_retried(status, httpx.Headers(headers), NOW) is retried


@given(st.integers(min_value=0, max_value=1000), st.floats(0, 1, exclude_max=True))
def test_backoff_is_half_a_second_doubling_capped_less_a_quarter(n: int, draw: float) -> None:
    full = min(0.5 * 2.0 ** min(n, 20), MAX_DELAY)
    assert 0.75 * full <= backoff(n, lambda: draw) <= full


def test_retries_stop_when_a_wait_and_a_try_would_pass_the_deadline() -> None:
    timing = FakeTime(now=0.0)
    retries = Retries.start(3, 10.0, clock=timing.clock, sleep=timing.sleep)
    assert retries.deadline == 40.0  # four tries of 10 s
    assert retries.again(httpx.Headers({"retry-after": "15"}))  # 15 + 10 <= 40
    assert retries.next_wait(httpx.Headers({"retry-after": "15.5"})) is None  # 30.5 + 10 > 40
    assert retries.again(httpx.Headers({"retry-after": "5"}))  # 20 + 10 <= 40
    assert retries.again(None)  # backoff: at most 2 s
    assert retries.next_wait(None) is None  # all three retries taken
    assert (retries.taken, timing.waits[:2]) == (3, [15.0, 5.0])


# --- through the provider, against the edge server -----------------------------------


RETRIED = {408: ProviderError, 409: ProviderError, 429: ProviderRateLimitedError}
RETRIED |= {status: ProviderUnavailableError for status in (500, 502, 503, 504)}


@pytest.mark.parametrize("status", sorted(RETRIED))
def test_retried_statuses_get_max_retries_with_backoff(
    edge: EdgeServer, timing: FakeTime, status: int
) -> None:
    edge.replies = [Reply(status, openai_error("try later"))]
    provider = make_provider(edge.url, timing, max_retries=2)
    with pytest.raises(RETRIED[status]) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert len(edge.requests) == 3  # the first try and two retries
    assert len(timing.waits) == 2 and is_backoff(timing.waits)
    assert f"({status}) after 2 retries: try later" in info.value.message
    with pytest.raises(RETRIED[status]):  # a stream is retried the same way
        drain(provider.stream(MODEL, COUNT, GREEDY))
    assert len(edge.requests) == 6
    provider.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_statuses_are_not_retried(edge: EdgeServer, timing: FakeTime, status: int) -> None:
    edge.replies = [Reply(status, openai_error("no"))]
    provider = make_provider(edge.url, timing, max_retries=3)
    with pytest.raises(ProviderError):
        drain(provider.stream(MODEL, COUNT, GREEDY))
    assert (len(edge.requests), timing.waits) == (1, [])
    provider.close()


def test_backoff_doubles_from_half_a_second_up_to_eight(edge: EdgeServer, timing: FakeTime) -> None:
    edge.replies = [Reply(502, openai_error("bad gateway"))]
    provider = make_provider(edge.url, timing, max_retries=7)
    with pytest.raises(ProviderUnavailableError):
        provider.complete(MODEL, COUNT, GREEDY)
    assert len(edge.requests) == 8
    assert len(timing.waits) == 7 and is_backoff(timing.waits)
    assert timing.waits[-1] >= 6.0  # capped: 8 s less at most 25 %
    provider.close()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "300", "retry-after": "9"}, 0.3),  # milliseconds win
        ({"retry-after": "120"}, 120.0),  # the longest wait honoured
        ({"retry-after": "0"}, None),  # not a usable wait: backoff
        ({"retry-after": "-3"}, None),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after_is_honoured_up_to_two_minutes(
    edge: EdgeServer, timing: FakeTime, headers: dict[str, str], expected: float | None
) -> None:
    edge.replies = [
        Reply(429, openai_error("slow down"), headers),
        Reply(200, completion_body("hi")),
    ]
    # Two retries allowed: a deadline of 3 × (5 + 60) s leaves room for a 120 s wait.
    provider = make_provider(edge.url, timing, max_retries=2)
    assert provider.complete(MODEL, COUNT, GREEDY).text == "hi"
    assert len(edge.requests) == 2
    if expected is None:
        assert len(timing.waits) == 1 and is_backoff(timing.waits)
    else:
        assert timing.waits == [expected]
    provider.close()


def test_retry_after_as_http_date(edge: EdgeServer, timing: FakeTime) -> None:
    in_30_s = formatdate(time.time() + 30, usegmt=True)
    edge.replies = [
        Reply(503, openai_error("later"), {"Retry-After": in_30_s}),
        Reply(200, completion_body("hi")),
    ]
    provider = make_provider(edge.url, timing, max_retries=1)
    assert provider.complete(MODEL, COUNT, GREEDY).text == "hi"
    assert len(timing.waits) == 1 and 25 < timing.waits[0] <= 30  # whole seconds in the date
    provider.close()


@pytest.mark.parametrize("wait", ["121", "3600", "inf"])
def test_retry_after_over_two_minutes_fails_at_once(
    edge: EdgeServer, timing: FakeTime, wait: str
) -> None:
    edge.replies = [Reply(429, openai_error("come back tomorrow"), {"retry-after": wait})]
    provider = make_provider(edge.url, timing, max_retries=2)
    with pytest.raises(ProviderRateLimitedError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert (len(edge.requests), timing.waits) == (1, [])
    assert info.value.details["retry_after"] == wait
    provider.close()


@pytest.mark.parametrize(
    ("status", "should_retry", "requests"),
    [(400, "true", 3), (404, "true", 3), (503, "false", 1), (429, "false", 1), (503, "maybe", 3)],
)
def test_x_should_retry_header_overrides_the_status(
    edge: EdgeServer, timing: FakeTime, status: int, should_retry: str, requests: int
) -> None:
    edge.replies = [Reply(status, openai_error("said so"), {"x-should-retry": should_retry})]
    provider = make_provider(edge.url, timing, max_retries=2)
    with pytest.raises(ProviderError):
        drain(provider.stream(MODEL, COUNT, GREEDY))
    assert len(edge.requests) == requests
    provider.close()


def test_deadline_stops_retries_that_would_overrun_it(edge: EdgeServer, timing: FakeTime) -> None:
    # One try may take 1 + 1 s; 5 retries give a deadline of 6 tries = 12 s. Waits of
    # 3 s fit three times (a retry starting at 9 s ends by 11 s), a fourth would not.
    edge.replies = [Reply(429, openai_error("busy"), {"retry-after": "3"})]
    provider = make_provider(edge.url, timing, timeout=1, connect_timeout=1, max_retries=5)
    with pytest.raises(ProviderRateLimitedError) as info:
        provider.complete(MODEL, COUNT, GREEDY)
    assert timing.waits == [3.0, 3.0, 3.0]
    assert len(edge.requests) == 4
    assert "after 3 retries" in info.value.message
    provider.close()
