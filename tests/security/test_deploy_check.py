"""`LIFEBOAT_ENV=production manage.py check --deploy` has nothing to say."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_check_deploy_is_clean_in_production(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))},
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "LIFEBOAT_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "lifeboat.example.test",
        "LIFEBOAT_DATA_DIR": str(tmp_path),
    }
    r = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "System check identified no issues" in r.stdout, r.stdout + r.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {
        **os.environ,
        "LIFEBOAT_ENV": "production",
        "ALLOWED_HOSTS": "lifeboat.example.test",
        "LIFEBOAT_DATA_DIR": str(tmp_path),
    }
    env.pop("SECRET_KEY", None)
    r = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode != 0 and "SECRET_KEY" in r.stderr
