"""Memory and time of ``appforge backup`` and ``appforge restore`` against the size of
the home's files.

Makes homes (SQLite, in a temp dir) holding ``--sizes`` MB of stored files (random
bytes, in 50 MB files as uploads would be), runs ``appforge backup`` on each and
``appforge restore`` of that backup into a new home with the same key, and prints
each command's peak RSS (from ``wait4``, the command's own process) and wall time,
beside an empty home's. The backup is written as it is read and a restore reads it as
it is parsed, so both peaks stay flat as the home grows: a restore's is set by the
largest stored file (its base64 text is parsed whole). Before, both held the whole
document: about 4x (backup) and 2.6x (restore) the size of the files.

    python -P bench/backup.py                    # 0, 100 and 300 MB
    python -P bench/backup.py --sizes 0,1000     # a bigger home

``-P`` keeps ``bench/`` off the front of ``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
FILE_MB = 50


@dataclass
class Measure:
    peak_mb: float
    seconds: float


def _run(argv: list[str], home: Path) -> Measure:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPFORGE_")}
    env["APPFORGE_HOME"] = str(home)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:]}")
    return Measure(usage.ru_maxrss / 1024, seconds)  # ru_maxrss is in KiB on Linux


def _home_with(root: Path, size_mb: int) -> Path:
    home = root / f"home-{size_mb}"
    files = home / "files" / "bench"
    files.mkdir(parents=True)
    left = size_mb
    n = 0
    while left > 0:
        chunk = min(FILE_MB, left)
        (files / f"f{n}.bin").write_bytes(os.urandom(chunk * MB))
        left -= chunk
        n += 1
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0,100,300", help="MB of files, comma-separated")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "appforge")
    rows: list[tuple[int, Measure, Measure, int]] = []
    with tempfile.TemporaryDirectory(prefix="appforge-backup-bench-") as tmp:
        root = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            home = _home_with(root, size)
            _run([exe, "token", "list"], home)  # made: database, key
            path = root / f"backup-{size}.json"
            backup = _run([exe, "backup", "--json-path", str(path)], home)
            target = root / f"restored-{size}"
            target.mkdir(mode=0o700)
            shutil.copy(home / "secret.key", target / "secret.key")
            restore = _run([exe, "restore", "--json-path", str(path), "--yes"], target)
            rows.append((size, backup, restore, path.stat().st_size))
            shutil.rmtree(home)
            shutil.rmtree(target)
            path.unlink()
    base_b, base_r = rows[0][1].peak_mb, rows[0][2].peak_mb
    print("appforge backup/restore: peak RSS and time by the size of the home's files")
    print(f"  {'files MB':>9}{'file MB':>9}{'backup MB':>11}{'+MB':>7}{'s':>7}"
          f"{'restore MB':>12}{'+MB':>7}{'s':>7}{'+restore/files':>16}")  # fmt: skip
    for size, backup, restore, written in rows:
        grow_b, grow_r = backup.peak_mb - base_b, restore.peak_mb - base_r
        ratio = f"{grow_r / size:.2f}x" if size else "-"
        print(
            f"  {size:>9}{written / MB:>9.0f}{backup.peak_mb:>11.0f}{grow_b:>7.0f}"
            f"{backup.seconds:>7.2f}{restore.peak_mb:>12.0f}{grow_r:>7.0f}"
            f"{restore.seconds:>7.2f}{ratio:>16}"
        )
    print("  +MB: peak RSS above the first row's (an interpreter with appforge loaded)")


if __name__ == "__main__":
    main()
