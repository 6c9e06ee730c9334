"""An embedded Chroma's folder opened by several processes at once (``serve --workers N``).

Chroma makes its schema when a process first opens a new folder; two processes doing
that at once race, and one fails to start ("table collections already exists",
"database is locked"). ``serve`` makes the files first (``prepare_files``), after
which opening them at once is safe.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from datasources.index import VectorIndex, make_client, prepare_files

# Opens each folder given, in turn, at the same moment as its twin process: both
# write a ready file for the folder and wait for the other's before opening it.
OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from datasources.index import VectorIndex, make_client
    me, folders = sys.argv[1], [Path(f) for f in sys.argv[2:]]
    def ready(folder):
        (folder.parent / f"{folder.name}.ready.{me}").touch()
    for n, folder in enumerate(folders):
        ready(folder)
        while len(list(folder.parent.glob(f"{folder.name}.ready.*"))) < 2:
            time.sleep(0.001)
        try:
            index = VectorIndex(make_client(None, folder))
            index.heartbeat()
            index.close()
        except Exception:
            for later in folders[n + 1 :]:  # the twin must not wait for us
                ready(later)
            raise
    """
)
ROUNDS = 8  # unprepared, each round fails about 4 times in 10 (measured)


def _open_twice_at_once(folders: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, name, *map(str, folders)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(), p.communicate()[0]) for p in procs]


def test_prepared_files_open_in_two_processes_at_once(tmp_path: Path):
    folders = [tmp_path / f"chroma{n}" for n in range(ROUNDS)]
    for folder in folders:
        prepare_files(folder)
        assert (folder / "chroma.sqlite3").is_file()
    for done in _open_twice_at_once(folders):
        assert done.returncode == 0, done.stdout


def test_prepare_files_keeps_what_the_folder_holds(tmp_path: Path):
    folder, datasource = tmp_path / "chroma", "0f6c1f1e-0000-4000-8000-000000000000"
    prepare_files(folder)
    index = VectorIndex(make_client(None, folder))
    meta = {"entry_uuid": "e1"}
    index.add(datasource, ["c1", "c2"], [[1.0, 0.0], [0.0, 1.0]], ["one", "two"], [meta, meta])
    index.close()
    prepare_files(folder)  # a restart of serve --workers N on made files
    index = VectorIndex(make_client(None, folder))
    try:
        assert index.count(datasource, "e1") == 2
    finally:
        index.close()
