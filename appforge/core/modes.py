"""File modes of everything appforge keeps in its home: private to the server's user.

The database holds every transcript and the key file decrypts every secret, so
nothing under ``APPFORGE_HOME`` may be readable by other users, whatever the
process umask is: files are created 0600 and folders 0700 with an explicit
mode, and :func:`tighten` brings an existing home (made by an older version,
or by a tool that used the umask) to the same modes at start-up.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, each made 0700; returns ``path``.

    Folders that already exist above ``path`` are left as they are (they may be
    shared, like a home directory); ``path`` itself is always made 0700.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True, mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask; chmod is not
    os.chmod(path, DIR_MODE)
    return path


def touch_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist; tighten it if it does.

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file, so
    creating the database file 0600 first keeps all three private.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes | Iterable[bytes], *, make_parents: bool = False) -> None:
    """Write ``data`` (bytes, or pieces of it) to ``path`` (replacing it) through a 0600
    file, atomically.

    The bytes go to a temporary file made 0600 at creation, which then replaces
    ``path``: no reader ever sees a half-written file or a wider mode. Pieces are
    written as they come (a large upload never sits in memory whole); if their
    iterator raises, the temporary file is removed and ``path`` left as it was.
    A missing folder is made (0700) only with ``make_parents``; otherwise it is an
    error naming ``path`` (a mistyped export path is not silently created).
    """
    if not path.parent.is_dir():
        if not make_parents:
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(path))
        private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        for piece in (data,) if isinstance(data, bytes) else data:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def tighten(root: Path) -> None:
    """Make ``root`` and every folder below it 0700 and every file 0600.

    Symbolic links are left alone (chmod would follow them out of the home).
    """
    if not root.exists() or root.is_symlink():
        return
    _chmod(root)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            _chmod(Path(folder) / name)


def _chmod(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:  # removed while we walked (a WAL checkpoint, a temp file)
        return
    if stat.S_ISDIR(info.st_mode):
        wanted = DIR_MODE
    elif stat.S_ISREG(info.st_mode):
        wanted = FILE_MODE
    else:
        return
    if stat.S_IMODE(info.st_mode) != wanted:
        os.chmod(path, wanted)
