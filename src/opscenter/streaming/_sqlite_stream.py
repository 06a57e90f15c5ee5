"""Stream a consistent copy of a SQLite database to stdout (run as a script).

Usage: python -I _sqlite_stream.py DB_PATH [TEMP_DIR]

Uses the online backup API (consistent even while the database is written to, WAL
or not) into a private temp file, which is unlinked as soon as it is reopened for
reading, then copies it to stdout. Exit 3: the database does not exist.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile

MISSING = 3
CHUNK = 1 << 20


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: _sqlite_stream.py DB_PATH [TEMP_DIR]\n")
        return 2
    path = argv[1]
    temp_dir = argv[2] if len(argv) > 2 else None
    if not os.path.isfile(path):
        sys.stderr.write(f"source missing: {path} does not exist\n")
        return MISSING
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    fd, tmp = tempfile.mkstemp(prefix=".opscenter-sqlite-", suffix=".partial", dir=temp_dir)
    os.close(fd)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=4096)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            src.close()
        reader = os.open(tmp, os.O_RDONLY)
    finally:
        os.unlink(tmp)
    out = sys.stdout.fileno()
    try:
        while True:
            chunk = os.read(reader, CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
    finally:
        os.close(reader)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
