"""Settings, driven by the environment.

Embedded default: SQLite and the vault stores under LIFEBOAT_DATA_DIR (./var), a secret key
generated once into that directory. LIFEBOAT_ENV=production refuses to start without an
explicit SECRET_KEY and ALLOWED_HOSTS.

The data directory is 0700 and the database, the secret key and the master key in it are 0600:
a copy of the database holds live session keys, and the keys open sessions and vaults.
"""

import os
import secrets
import warnings
from pathlib import Path
from typing import NotRequired, TypedDict

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.client_address import parse_networks
from portal.private import DB_FILE_MODE, make_private

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LIFEBOAT_DATA_DIR", BASE_DIR / "var")).resolve()

DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
make_private(DATA_DIR, 0o700)

PRODUCTION = os.environ.get("LIFEBOAT_ENV", "").lower() == "production"


def _env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _embedded_secret_key() -> str:
    # Generated once and kept beside the database, so sessions survive restarts.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    make_private(path, 0o600)
    return path.read_text().strip()


if PRODUCTION:
    missing = [n for n in ("SECRET_KEY", "ALLOWED_HOSTS") if not os.environ.get(n)]
    if missing:
        raise ImproperlyConfigured(
            f"LIFEBOAT_ENV=production needs {' and '.join(missing)} in the environment."
        )
    SECRET_KEY = os.environ["SECRET_KEY"]
    DEBUG = False
else:
    SECRET_KEY = os.environ.get("SECRET_KEY") or _embedded_secret_key()
    DEBUG = _env_bool("DEBUG")

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get(
        "ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver"
    ).split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

# Cookies: never readable from scripts (pages send the CSRF token in the markup, htmx in
# hx-headers), never sent on cross-site subrequests; sessions end after a working day.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", str(12 * 3600)))
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

if PRODUCTION:
    # `LIFEBOAT_ENV=production manage.py check --deploy` is clean with these defaults
    # (tests/security/test_deploy_check.py). Behind a TLS-terminating proxy that sets
    # X-Forwarded-Proto; SECURE_SSL_REDIRECT=false when the proxy redirects itself.
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", True)
    # Load balancers ask /healthz over plain HTTP, straight at the application server.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before WhiteNoise and staticfiles: its `runserver` wraps theirs (portal/server.py).
    "portal",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_q",
    # Second factor: authenticator-app (TOTP) and recovery-code devices (security.second_factor).
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "inventory",
    "vaults",
    "policies",
    "jobs",
    "security",
    "identity",
]

# The lockout backend refuses a locked username+address before any password is checked.
# The directory backend signs people in through the LDAP realms site admins configure
# (identity.backends); OpenID Connect sign-ins log in through it too.
AUTHENTICATION_BACKENDS = ["security.lockout.LockoutBackend", "identity.backends.DirectoryBackend"]

# Second factor (django-otp). Wrong codes are counted by the login lockout
# (security.lockout), the one owner of "too many failures"; django-otp's own per-device
# back-off would refuse a right code after a wrong one without saying why.
OTP_TOTP_ISSUER = "Lifeboat"
OTP_TOTP_THROTTLE_FACTOR = 0
OTP_STATIC_THROTTLE_FACTOR = 0

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "portal.middleware.RefuseNul",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A user who must have a second factor and has none may only enrol (or log out).
    "security.middleware.SecondFactorEnrolment",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.middleware.ErrorPages",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Connections are closed after each request and task unless LIFEBOAT_CONN_MAX_AGE says how
# long to keep them: the application server keeps them (portal/gunicorn_conf.py), since a new
# connection per request costs a connect (PostgreSQL) or makes processes take turns at the
# write lock to checkpoint and drop the WAL each time the last one closes (SQLite).
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'lifeboat.sqlite3'}",
        conn_max_age=int(os.environ.get("LIFEBOAT_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite would create the database 0644; created 0600 beforehand, its -wal and -shm files
    # take the same mode. An existing database is tightened on connection (portal.private).
    if not os.environ.get("DATABASE_URL"):
        os.close(os.open(DATA_DIR / "lifeboat.sqlite3", os.O_WRONLY | os.O_CREAT, DB_FILE_MODE))
    # WAL lets the web server read while the worker writes; the busy timeout makes a writer
    # wait for the other instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Tests and `runserver` without collectstatic still find files in STATICFILES_DIRS.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only, bounded in depth, integers and text every database holds (portal.api.parsers).
    "DEFAULT_PARSER_CLASSES": ["portal.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "portal.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lifeboat API",
    "DESCRIPTION": "Vaults, policies, protected VMs, recovery points and jobs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc served from our static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "AlertStatusEnum": "security.models.AlertStatus",
        "ApprovalStatusEnum": "security.models.ApprovalStatus",
        "JobStatusEnum": "jobs.models.Status",
    },
}

# django-q2 only delivers jobs; our Job rows are the truth. `retry` is how long a cluster may
# hold a message it took without acknowledging it; then any cluster takes it again. It is far
# below `timeout` (a backup may run for hours) on purpose: running a message twice is harmless
# (a job is claimed once; the second delivery finds it taken), while a long `retry` strands
# every message a killed cluster had taken, its queued jobs included, for that long. Failed
# deliveries are not retried by django-q2: the reaper re-sends lost messages (jobs.runner).
warnings.filterwarnings("ignore", message="Retry and timeout are misconfigured")
Q_CLUSTER = {
    "name": "lifeboat",
    "orm": "default",
    "workers": int(os.environ.get("LIFEBOAT_WORKERS", "2")),
    "timeout": 6 * 3600,
    "retry": int(os.environ.get("LIFEBOAT_QUEUE_RETRY_SECONDS", "300")),
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 1,
    "label": "Task queue",
    # Each host's worker is a cluster of its own (`manage.py worker --host NAME` sets
    # Q_CLUSTER_NAME=host-NAME, see jobs.routing); django-q2 reads this key when that
    # variable is set, and they all share the settings above.
    "ALT_CLUSTERS": {},
}

# Alert e-mail. Embedded default: printed on the console; production sets an SMTP backend.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "lifeboat@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL


class LifeboatSettings(TypedDict):
    """The project's own settings; the optional ones have a default where they are read."""

    MUA_APPROVAL_HOURS: float
    LOGIN_FAILURE_LIMIT: int
    LOGIN_FAILURE_WINDOW_MINUTES: int
    LOGIN_LOCKOUT_MINUTES: int
    LOGIN_ADDRESS_FAILURE_LIMIT: int
    TRUSTED_PROXIES: list[str]
    VAULT_STORE_ROOT: Path
    MASTER_KEY_FILE: Path
    DEMO_ROOT: Path
    DRILL_SCRATCH_ROOT: Path
    REDELIVER_AFTER_MINUTES: float
    REDELIVERIES: int
    THROTTLE_MIBPS: float
    FILE_RECOVERY_HOURS: NotRequired[float]
    GC_GRACE_SECONDS: NotRequired[float]
    GC_WAIT_SECONDS: NotRequired[float]
    TRANSFERS_PER_VAULT: NotRequired[int]
    FAIL_TRANSFERS: NotRequired[bool]
    DIRECTORY_RECHECK_MINUTES: NotRequired[float]
    DIRECTORY_TOKEN_HOURS: NotRequired[float]
    METRICS_TOKEN: str
    METRICS_ALLOW: list[str]
    BACKUP_GRACE_MINUTES: float
    HEALTH_QUEUE_AGE_SECONDS: NotRequired[float]
    HEALTH_STORE_TIMEOUT_SECONDS: NotRequired[float]


LIFEBOAT: LifeboatSettings = {
    # How long an MUA approval request stays pending before it expires.
    "MUA_APPROVAL_HOURS": float(os.environ.get("LIFEBOAT_MUA_APPROVAL_HOURS", "24")),
    # Login lockout: this many failures within the window lock username+address for a while.
    "LOGIN_FAILURE_LIMIT": int(os.environ.get("LIFEBOAT_LOGIN_FAILURE_LIMIT", "5")),
    "LOGIN_FAILURE_WINDOW_MINUTES": int(os.environ.get("LIFEBOAT_LOGIN_WINDOW_MINUTES", "15")),
    "LOGIN_LOCKOUT_MINUTES": int(os.environ.get("LIFEBOAT_LOGIN_LOCKOUT_MINUTES", "15")),
    # ... and this many failures from one address, whatever the usernames, lock the address.
    "LOGIN_ADDRESS_FAILURE_LIMIT": int(
        os.environ.get("LIFEBOAT_LOGIN_ADDRESS_FAILURE_LIMIT", "20")
    ),
    # Reverse proxies whose X-Forwarded-For is believed (addresses or networks). None by
    # default: any client can write that header. Checked here so a typo stops the start.
    "TRUSTED_PROXIES": [
        str(n)
        for n in parse_networks(tuple(os.environ.get("LIFEBOAT_TRUSTED_PROXIES", "").split(",")))
    ],
    # Where vault stores live unless a vault names its own location.
    "VAULT_STORE_ROOT": Path(os.environ.get("LIFEBOAT_VAULT_STORE_ROOT", DATA_DIR / "vaults")),
    "MASTER_KEY_FILE": Path(os.environ.get("LIFEBOAT_MASTER_KEY_FILE", DATA_DIR / "master.key")),
    "DEMO_ROOT": Path(os.environ.get("LIFEBOAT_DEMO_ROOT", DATA_DIR / "demo")),
    # Where restore drills restore to (a folder per drill job, removed when it ends and by
    # reconcile after a killed worker). Needs room for the largest RP a drill restores.
    "DRILL_SCRATCH_ROOT": Path(
        os.environ.get("LIFEBOAT_DRILL_SCRATCH_ROOT", DATA_DIR / "drill-scratch")
    ),
    # A queued job whose task-queue message is gone this long gets a new one, so many times,
    # then fails as `not_delivered` (the reaper, jobs.runner.redeliver).
    "REDELIVER_AFTER_MINUTES": float(os.environ.get("LIFEBOAT_REDELIVER_AFTER_MINUTES", "5")),
    "REDELIVERIES": 3,
    # /metrics: Prometheus presents this token (Authorization: Bearer ...) or scrapes from an
    # address in the allow-list (addresses or networks); site administrators may read it too.
    "METRICS_TOKEN": os.environ.get("LIFEBOAT_METRICS_TOKEN", ""),
    "METRICS_ALLOW": [
        str(n)
        for n in parse_networks(
            tuple(os.environ.get("LIFEBOAT_METRICS_ALLOW", "").split(",")), "LIFEBOAT_METRICS_ALLOW"
        )
    ],
    # An item is overdue when its policy's latest slot is this long past and no backup
    # succeeded since (the metric `lifeboat_item_backup_allowed_seconds`).
    "BACKUP_GRACE_MINUTES": float(os.environ.get("LIFEBOAT_BACKUP_GRACE_MINUTES", "120")),
    # Caps backup, transfer and drill reads (MiB/s; 0 = unlimited), e.g. to watch progress in tests.
    "THROTTLE_MIBPS": float(os.environ.get("LIFEBOAT_THROTTLE_MIBPS", "0")),
    # API tokens of directory users (identity.freshness): an LDAP user's is checked against
    # the directory again when the last check is older than this; an OpenID user's, which
    # cannot be checked without the user, works this long after the user's last sign-in.
    "DIRECTORY_RECHECK_MINUTES": float(os.environ.get("LIFEBOAT_DIRECTORY_RECHECK_MINUTES", "5")),
    "DIRECTORY_TOKEN_HOURS": float(os.environ.get("LIFEBOAT_DIRECTORY_TOKEN_HOURS", "12")),
}

# One line per event (portal.logs), to standard error: the journal under systemd.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {
            "()": "portal.logs.JsonLines"
            if os.environ.get("LIFEBOAT_LOG_FORMAT", "").lower() == "json"
            else "portal.logs.OneLine"
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
