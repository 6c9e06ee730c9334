"""A run's cancel event (:class:`providers.base.Cancel`): its callbacks, and the
OpenAI-compatible provider, when it is set, cutting a stream that waits on a silent
server instead of waiting out the read timeout (mid-stream, and before the first
byte), and ending its wait between retries without trying again."""

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


def test_a_cancel_while_a_call_waits_for_its_first_byte_cuts_it(edge: EdgeServer):
    # The server reads the request and answers nothing: the call would wait out the
    # provider's timeout (10 minutes), and its retries, if the cancel did not cut it.
    edge.replies = [Reply(200, None, sse=[sse_chunk("one", None)], mute=True)]
    provider = make_provider(edge.url, timeout=600, max_retries=3)
    cancel = Cancel()
    items: list[Delta | Completion] = []

    def read() -> None:
        with provider.stream(MODEL, COUNT, GREEDY, cancel) as generation:
            items.extend(generation)
            items.append(generation.result())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    poll_until(lambda: edge.requests)  # the request is in: the call waits for the answer
    cancel.set()
    reader.join(60)
    assert not reader.is_alive(), "the call still waits for the server's first byte"
    assert len(items) == 1, items  # no text, and no error: the call was cancelled
    completion = items[0]
    assert isinstance(completion, Completion)
    assert (completion.text, completion.finish_reason) == ("", "cancelled")
    assert edge.hung_up.wait(20)  # the server saw the connection go
    assert len(edge.requests) == 1  # and no retry was made
    provider.close()


def test_a_call_not_cancelled_still_gets_its_answer_and_reuses_its_connection(
    edge: EdgeServer,
):
    """The cuttable connections are ordinary ones while nothing cancels them."""
    edge.replies = [Reply(200, None, sse=[sse_chunk("one", None), sse_chunk(" two", "stop")])]
    provider = make_provider(edge.url)
    for _ in range(3):
        with provider.stream(MODEL, COUNT, GREEDY, Cancel()) as generation:
            assert "".join(d.text for d in generation) == "one two"
    assert len({request["_client_port"] for request in edge.requests}) == 1
    provider.close()


def test_a_cancel_ends_the_wait_between_retries_and_makes_no_more(edge: EdgeServer):
    # The server is busy and asks for 100 s between tries: a run whose caller left
    # stops waiting at once and tries no more. The call ends cancelled, as one cut
    # while it waits for the first byte does: the run was stopped, it did not fail.
    busy = openai_error("overloaded")
    edge.replies = [Reply(503, busy, headers={"retry-after": "100"})]
    provider = make_provider(edge.url, timeout=600, max_retries=3)
    cancel = Cancel()
    ended: list[Completion] = []

    def call() -> None:
        with provider.stream(MODEL, COUNT, GREEDY, cancel) as generation:
            assert list(generation) == []
            ended.append(generation.result())

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    poll_until(lambda: edge.requests)  # the first try was answered: the wait begins
    cancel.set()
    caller.join(60)
    assert not caller.is_alive(), "the call still waits to try again"
    assert [c.finish_reason for c in ended] == ["cancelled"]
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
