"""Server-made session ids are always ids the server accepts back."""

from __future__ import annotations

from runs.records import SESSION_ID
from runs.session_ids import new_session_id


def test_session_ids_made_by_the_server_are_valid_and_unguessable():
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    # token_urlsafe would start about 60 of these with '_' or '-', refused when sent back.
    assert all(SESSION_ID.match(i) for i in ids)
    assert {len(i) for i in ids} == {32}  # 62 symbols: 190 bits


def test_session_ids_use_every_symbol_in_every_position():
    ids = [new_session_id() for _ in range(4000)]
    # A base-62 encoding that padded short numbers would repeat one symbol up front, and a
    # draw smaller than the id space would leave the last positions short of symbols.
    for position in (0, 15, 31):
        assert len({i[position] for i in ids}) == 62
