"""A URL entry's body kept on disk between its refresh and its ingestion (real files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasources import bodies
from datasources.errors import EntryTooLargeError
from datasources.fetch import Fetched


def test_a_kept_body_reads_back_whole_with_its_url_and_type(tmp_path: Path):
    path = tmp_path / "files" / "ds" / "entry"
    body = b"<html>\n\x00\xff binary and\nlines</html>"
    kept = Fetched(url="https://example.org/a?b=\u00e9", body=body, media_type="text/html")
    bodies.keep(path, kept)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert bodies.read(path, len(body)) == kept
    none_type = Fetched(url="https://example.org/b", body=b"", media_type=None)
    bodies.keep(path, none_type)  # replaces the one before
    assert bodies.read(path, 10) == none_type
    assert [p.name for p in path.parent.iterdir()] == ["entry"]  # no temporary file left


def test_a_body_over_the_limit_is_refused_and_a_missing_or_broken_one_is_none(tmp_path: Path):
    path = tmp_path / "entry"
    bodies.keep(path, Fetched(url="https://example.org/", body=b"x" * 11, media_type=None))
    with pytest.raises(EntryTooLargeError):
        bodies.read(path, 10)
    assert bodies.read(path, 11) is not None
    assert bodies.read(tmp_path / "none", 10) is None
    for broken in (b"no header at all", b'["a list"]\nbody', b'{"url": "u"}\nbody', b"x" * 70000):
        path.write_bytes(broken)
        assert bodies.read(path, 100_000) is None
    bodies.discard(path)
    bodies.discard(path)  # gone already: nothing to do
    assert not path.exists()
