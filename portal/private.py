"""Files only the service user may read: the data directory (0700) and, in it, the database
with its -wal and -shm files, the secret key and the master key (0600).

A copy of the database holds live session keys, and the keys open sessions and vaults. Kept
free of Django imports: the settings module uses it.
"""

import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotation only: this module imports no Django (see above)
    from django.db.backends.base.base import BaseDatabaseWrapper

DB_FILE_MODE = 0o600
# SQLite's companions of a database in WAL mode; it creates them with the database's mode.
SQLITE_COMPANIONS = ("-wal", "-shm")

_checked: set[str] = set()


def make_private(path: Path, mode: int) -> None:
    """Take group and other permissions away from a file or directory (an older installation
    created it readable by all)."""
    if stat.S_IMODE(path.stat().st_mode) & ~mode:
        path.chmod(mode)


def private_sqlite_files(sender: object, connection: "BaseDatabaseWrapper", **kwargs: Any) -> None:
    """On a process's first connection to a SQLite file: make it and its companions 0600.

    Once the database is 0600, SQLite gives every later -wal and -shm file that mode too.
    """
    name = str(connection.settings_dict["NAME"])
    if connection.vendor != "sqlite" or name in _checked:
        return
    db = Path(name)
    if not db.is_file():  # an in-memory database
        return
    for path in (db, *(Path(name + suffix) for suffix in SQLITE_COMPANIONS)):
        try:
            make_private(path, DB_FILE_MODE)
        except FileNotFoundError:  # no companion yet, or removed at a checkpoint
            pass
    _checked.add(name)
