"""The embedded database and the secrets are private: a 0700 data directory holding the SQLite
database, its -wal and -shm files, the secret key and the master key, all 0600.

Each step runs `manage.py` in its own process on a fresh data directory, under the usual 022
umask, as `make run` would.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# While a connection is open (so the -wal and -shm files exist), the modes of every file.
REPORT = """
import json, os, stat
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
Group.objects.get_or_create(name="modes")
data = settings.DATA_DIR
names = ["", "lifeboat.sqlite3", "lifeboat.sqlite3-wal", "lifeboat.sqlite3-shm", "secret_key",
         "master.key"]
print(json.dumps({n: oct(stat.S_IMODE(os.stat(data / n).st_mode)) for n in names}))
"""
PRIVATE = {
    "": "0o700",
    "lifeboat.sqlite3": "0o600",
    "lifeboat.sqlite3-wal": "0o600",
    "lifeboat.sqlite3-shm": "0o600",
    "secret_key": "0o600",
    "master.key": "0o600",
}


def manage(data: Path, *args: str) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIFEBOAT_") and k not in ("DATABASE_URL", "SECRET_KEY")
    }
    env.update(LIFEBOAT_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="portal.settings")
    r = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        umask=0o022,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def modes(data: Path) -> dict[str, str]:
    return json.loads(manage(data, "shell", "-c", REPORT).strip().splitlines()[-1])


def test_a_fresh_data_directory_is_private(tmp_path):
    data = tmp_path / "data"
    manage(data, "migrate", "--no-input", "-v", "0")
    manage(data, "bootstrap", "--no-demo")
    assert modes(data) == PRIVATE


def test_an_older_installation_is_made_private(tmp_path):
    data = tmp_path / "data"
    manage(data, "migrate", "--no-input", "-v", "0")
    manage(data, "bootstrap", "--no-demo")
    # As an earlier version left them (or a key put back by hand): readable by everybody.
    data.chmod(0o755)
    for name in ("lifeboat.sqlite3", "secret_key", "master.key"):
        (data / name).chmod(0o644)
    manage(data, "master_key", "fingerprint")
    assert modes(data) == PRIVATE
