"""A URL entry's fetched body, kept on disk from its refresh to its ingestion.

When the refresh job (:mod:`datasources.refresh`) finds a page changed, it keeps
the body it fetched, so the ingestion queue (:mod:`datasources.queue`) embeds
exactly that body instead of fetching the page a second time: the hash the
refresh compared is the hash of what gets embedded, and a big page costs one
download, not two. The body lives where a file entry's bytes do
(``APPFORGE_HOME/files/<datasource>/<entry>``, 0600, written atomically; the
folder API processes and workers share), and the entry's ``file_path`` points
at it while it waits: a URL entry with a ``file_path`` has a stored body.

The file is one line of JSON (the final URL after redirects and the
``Content-Type``, what the extractor reads besides the bytes) and then the body
as fetched (decoded, at most ``max_entry_bytes``). Reading it checks that
limit again, so a lowered limit applies to a body stored before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from appforge.core.modes import private_dir, write_private
from datasources.errors import EntryTooLargeError
from datasources.fetch import Fetched
from datasources.tables import Entry

log = logging.getLogger(__name__)

# The header line holds a URL (the API takes 4,000 characters; a redirect may be longer).
_HEADER_BYTES = 64 * 1024


def keep(path: Path, fetched: Fetched) -> None:
    """Store ``fetched`` at ``path`` (its folder made 0700 if missing), replacing any
    body stored there before."""
    header = json.dumps({"url": fetched.url, "media_type": fetched.media_type})
    private_dir(path.parent)
    write_private(path, [header.encode("utf-8") + b"\n", fetched.body])


def read(path: Path, limit: int) -> Fetched | None:
    """The body stored at ``path``; None if there is none (removed, or unreadable: the
    page is then fetched again). :class:`EntryTooLargeError` past ``limit`` bytes."""
    try:
        with path.open("rb") as stored:
            line = stored.readline(_HEADER_BYTES)
            body = stored.read(limit + 1)
    except FileNotFoundError:
        return None
    try:
        header = json.loads(line)
        url, media = header["url"], header["media_type"]
    except (ValueError, KeyError, TypeError):
        log.warning("the stored body %s is unreadable; the page is fetched again", path)
        return None
    if len(body) > limit:
        raise EntryTooLargeError(
            f"the page is over the limit of {limit} bytes", details={"limit": limit}
        )
    return Fetched(url=str(url), body=body, media_type=media)


def discard(path: Path) -> None:
    """Remove a stored body (none there: nothing to do)."""
    path.unlink(missing_ok=True)


def discard_unless_named(factory: sessionmaker[Session], entry_uuid: str, path: Path) -> None:
    """Remove the body at ``path`` unless the entry, still there, names one: once its
    ingestion wrote it ready or failed, or it was deleted, nothing waits for it."""
    with factory() as db:
        row = db.get(Entry, entry_uuid)
        named = row is not None and row.file_path is not None
    if not named:
        discard(path)
