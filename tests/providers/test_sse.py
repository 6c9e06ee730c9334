"""Reading Server-Sent Events (providers/sse.py): the same events however the bytes
arrive, whatever the line endings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from providers.sse import event_data

# Data lines hold no line breaks; anything else goes (JSON, [DONE], spaces, colons).
_DATA = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30
).map(str.encode)


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(
    st.lists(st.lists(_DATA, min_size=1, max_size=3), max_size=6),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_events_are_the_same_however_the_stream_is_cut(
    events: list[list[bytes]], end: bytes, cuts: list[int]
) -> None:
    stream = b""
    for lines in events:
        stream += b": keep-alive" + end + b"event: message" + end
        stream += b"".join(b"data: " + line + end for line in lines) + end
    expected = [b"\n".join(lines) for lines in events if lines != [b""]]
    assert list(event_data(_pieces(stream, cuts))) == expected


def test_data_without_space_and_unended_last_event() -> None:
    stream = [b"data:{}\n\n", b"id: 1\nretry: 10\n\n", b"data: [DONE]"]
    assert list(event_data(stream)) == [b"{}", b"[DONE]"]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    stream = [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]
    assert list(event_data(stream)) == [b"a\nb"]
