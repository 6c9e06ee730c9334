"""A run's cancel event (:class:`providers.base.Cancel`): its callbacks, and the
OpenAI-compatible provider, when it is set, cutting a stream that waits on a silent
server instead of waiting out the read timeout, and ending its wait between retries
without trying again."""

from __future__ import annotations

import threading
import time

import pytest
from openai_edge import (
    COUNT,
    GREEDY,
    MODEL,
    EdgeServer,
    FakeTime,
    Reply,
    make_provider,
    openai_error,
    sse_chunk,
)
from waiting import poll_until

from providers.base import (
    Cancel,
    Completion,
    Delta,
    time_left,
    when_cancelled,
)
from providers.errors import ProviderError
from providers.retries import Retries


def test_callbacks_run_once_when_set_and_at_once_when_late():
    cancel, calls = Cancel(), []
    when_cancelled(cancel, lambda: calls.append("a"))
    forget = cancel.when_set(lambda: calls.append("forgotten"))
    forget()
    assert calls == []
    cancel.set()
    cancel.set()  # again: nothing more
    assert calls == ["a"]
    cancel.when_set(lambda: calls.append("late"))  # already set: called at once
    assert calls == ["a", "late"]


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture):
    cancel, calls = Cancel(), []

    def broken() -> None:
        raise RuntimeError("broken callback")

    cancel.when_set(broken)
    cancel.when_set(lambda: calls.append("b"))
    cancel.set()
    assert cancel.is_set() and calls == ["b"]
    assert "a cancel callback failed" in caplog.text


def test_a_plain_event_has_no_deadline_and_no_callbacks():
    plain, calls = threading.Event(), []
    when_cancelled(plain, lambda: calls.append("x"))()
    plain.set()
    assert calls == [] and time_left(plain) is None and time_left(None) is None
    assert time_left(Cancel()) is None
    assert 0 < (time_left(Cancel(time.monotonic() + 60)) or 0) <= 60
    assert time_left(Cancel(time.monotonic() - 1)) == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["ends-with-connection", "chunked"])
def test_a_cancel_while_a_stream_waits_on_a_silent_server_cuts_it(edge: EdgeServer, chunked: bool):
    # The server sends one chunk and then nothing, holding the connection open: the
    # read would wait out the provider's timeout (10 minutes) if the cancel did not cut it.
    events = [sse_chunk("one", None), sse_chunk("two", None)]
    edge.replies = [Reply(200, None, sse=events, hold=True, chunked=chunked)]
    provider = make_provider(edge.url, timeout=600)
    cancel = Cancel()
    items: list[Delta | Completion] = []

    def read() -> None:
        with provider.stream(MODEL, COUNT, GREEDY, cancel) as generation:
            for delta in generation:
                items.append(delta)
            items.append(generation.result())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    poll_until(lambda: items)  # "one" came: the reader now waits for the next chunk
    cancel.set()  # from another thread, as a run's deadline or its caller's going does
    reader.join(60)
    assert not reader.is_alive(), "the stream still waits on the silent server"
    assert items[0] == Delta("one") and len(items) == 2
    completion = items[1]
    assert isinstance(completion, Completion)
    assert (completion.text, completion.finish_reason) == ("one", "cancelled")
    assert edge.hung_up.wait(20)  # the server saw the connection go
    provider.close()


def test_a_cancel_ends_the_wait_between_retries_and_makes_no_more(edge: EdgeServer):
    # The server is busy and asks for 100 s between tries: a run whose caller left
    # stops waiting at once and tries no more; the call fails with the busy answer.
    busy = openai_error("overloaded")
    edge.replies = [Reply(503, busy, headers={"retry-after": "100"})]
    provider = make_provider(edge.url, timeout=600, max_retries=3)
    cancel = Cancel()
    failed: list[ProviderError] = []

    def call() -> None:
        try:
            with provider.stream(MODEL, COUNT, GREEDY, cancel) as generation:
                list(generation)
        except ProviderError as exc:
            failed.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    poll_until(lambda: edge.requests)  # the first try was answered: the wait begins
    cancel.set()
    caller.join(60)
    assert not caller.is_alive(), "the call still waits to try again"
    assert len(failed) == 1 and "overloaded" in failed[0].message
    assert len(edge.requests) == 1
    provider.close()


def test_no_retry_is_made_for_a_cancelled_call(timing: FakeTime):
    cancel = Cancel()
    retries = Retries.start(3, 10.0, clock=timing.clock, sleep=timing.sleep)
    retries.cancel = cancel
    assert retries.again(None) is True and timing.waits != []
    cancel.set()
    waited = list(timing.waits)
    assert retries.again(None) is False and timing.waits == waited
