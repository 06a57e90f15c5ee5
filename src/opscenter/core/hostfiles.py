"""Which files of this host jobs may read and write as the server's OS user.

A path is absolute and free of `..`; it is judged where it really leads (symlinks
resolved), so a link cannot carry a backup into the installation's keys or metadata
database, nor a restore out of the roots an admin allowed. Those two are never read or
written by a job, whatever the caller's role.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from opscenter.config import Settings
from opscenter.core.errors import InvalidInput

_SQLITE_URL = "sqlite+aiosqlite:///"


def check_shape(path: str, what: str = "path") -> None:
    """Absolute and without `..`: the same string means the same place on every host."""
    if not path.startswith("/") or ".." in PurePosixPath(path).parts:
        raise InvalidInput(f"The {what} must be an absolute path without '..': {path}")


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))  # resolves every symlink, even of missing paths


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


class HostFiles:
    def __init__(self, settings: Settings) -> None:
        protected = [_real(settings.keys_dir)]
        url = settings.effective_database_url
        if url.startswith(_SQLITE_URL):
            db = _real(url.removeprefix(_SQLITE_URL).split("?", 1)[0])
            protected += [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
        self.protected = tuple(protected)
        self.restores_area = _real(settings.data_dir / "restores")
        self.restore_roots = (*(_real(r) for r in settings.restore_roots), self.restores_area)

    def check_readable(self, path: str) -> None:
        """A path a backup may read: never the keys or the metadata database, nor a
        directory holding them."""
        check_shape(path)
        real = _real(path)
        if any(_overlaps(real, p) for p in self.protected):
            raise InvalidInput(
                f"{path} holds or is part of this installation's keys or metadata database; "
                "these are never backed up as files (choose the directories beside them)"
            )

    def check_restore_target(self, path: str) -> None:
        """A file or directory a restore may create on this host: inside a restore root."""
        check_shape(path, "restore target")
        real = _real(path)
        if not any(root in real.parents for root in self.restore_roots):
            roots = ", ".join(str(r) for r in self.restore_roots)
            raise InvalidInput(
                f"Files are restored on this host only inside {roots} (an admin adds "
                "roots with OPSCENTER_RESTORE_ROOTS)"
            )
        if any(_overlaps(real, p) for p in self.protected):
            raise InvalidInput(f"{path} would overwrite this installation's keys or database")
