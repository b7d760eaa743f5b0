"""Settings for the Replicate team console: one file, configured by the environment.

With no variables at all the console runs embedded: SQLite and secrets under ``var/``,
in-memory channel layer, inline executor and the built-in sandbox standing in for
Replicate. Production is the same code with variables set (see README and
docs/deploy.md). Any malformed value stops start-up with a message naming the variable.

Two switches, independent of each other:

- ``EMBEDDED`` (default on): secrets are generated into ``var/`` when not given, the
  sandbox is on, local host names are allowed. ``EMBEDDED=0`` is production: every
  secret must be set, the sandbox is off, HTTPS and secure cookies are enforced.
- ``DEBUG`` (default off): Django's technical pages and autoreload, for ``make dev`` only.
  Off, every error is the console's own page and nothing leaks a traceback.
"""

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from limits import parse_many

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of 1/0, true/false, on/off, yes/no; got {raw!r}"
    )


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, schemes: set[str]) -> str:
    """An optional absolute URL; a value that is not one stops start-up."""
    raw = env_str(name)
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.netloc:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name} must be an absolute URL ({allowed}); got {raw!r}")
    return raw.rstrip("/")


def private_var_dir() -> None:
    """var/ holds the SQLite database, its WAL, secrets and archived media: only the
    console's own user may enter it (files inside keep the umask's mode; the directory
    is what keeps other local users out)."""
    VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    # One made by an older console has the umask's mode; tighten it only when it is
    # surely ours (it holds our secrets), never a directory VAR_DIR merely points into.
    if VAR_DIR.stat().st_mode & 0o077 and (VAR_DIR / "secrets.json").exists():
        VAR_DIR.chmod(0o700)


def local_secrets() -> dict[str, str]:
    """Secrets for embedded mode, generated once into var/ so restarts keep sessions and tokens."""
    path = VAR_DIR / "secrets.json"
    if path.exists():
        private_var_dir()
        return json.loads(path.read_text())
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "SANDBOX_API_TOKENS": "r8_sandbox_" + secrets.token_hex(16),
    }
    private_var_dir()
    # Write privately, then link into place: if two processes start at once, the first
    # link wins and both read the same secrets.
    draft = path.with_name(f".secrets.{os.getpid()}.tmp")
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(values, f, indent=2)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return json.loads(path.read_text())


# Django's technical pages: only for a developer at their own machine (`make dev`).
DEBUG = env_bool("DEBUG", False)
# Embedded mode fills in missing secrets from var/; production (EMBEDDED=0) must set them.
EMBEDDED = env_bool("EMBEDDED", True)
_local = local_secrets() if EMBEDDED else {}


def required_secret(name: str) -> str:
    value = env_str(name) or _local.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when EMBEDDED=0 (production)")
    return value


SECRET_KEY = required_secret("SECRET_KEY")
if not EMBEDDED and (len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured("SECRET_KEY must be a long random value (50+ characters)")

# The first key encrypts; every key decrypts, so rotating is "prepend a new key".
TOKEN_ENCRYPTION_KEYS = [
    key.strip() for key in required_secret("TOKEN_ENCRYPTION_KEYS").split(",") if key.strip()
]
for _key in TOKEN_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            "TOKEN_ENCRYPTION_KEYS must be comma-separated Fernet keys (32 url-safe base64 bytes)"
        ) from None

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if EMBEDDED else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when EMBEDDED=0 (production)")
if "*" in ALLOWED_HOSTS and not DEBUG:
    # The websocket origin check relies on ALLOWED_HOSTS: a wildcard would accept any site.
    raise ImproperlyConfigured("ALLOWED_HOSTS must not contain '*' when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    _parts = urlsplit(_origin)
    if _parts.scheme not in {"http", "https"} or not _parts.netloc:
        raise ImproperlyConfigured(
            f"CSRF_TRUSTED_ORIGINS entries must look like https://example.com; got {_origin!r}"
        )

PREDICTION_EXECUTOR = env_str("PREDICTION_EXECUTOR", "inline")
if PREDICTION_EXECUTOR not in {"inline", "celery"}:
    raise ImproperlyConfigured(
        f"PREDICTION_EXECUTOR must be 'inline' or 'celery'; got {PREDICTION_EXECUTOR!r}"
    )

# Where Replicate can reach us for webhooks; empty means poll/stream only.
PUBLIC_URL = env_url("PUBLIC_URL", {"http", "https"})
REPLICATE_WEBHOOK_SECRET = env_str("REPLICATE_WEBHOOK_SECRET")
if REPLICATE_WEBHOOK_SECRET and not REPLICATE_WEBHOOK_SECRET.startswith("whsec_"):
    raise ImproperlyConfigured("REPLICATE_WEBHOOK_SECRET must start with 'whsec_'")

# Off by default in production: the sandbox is a demo and test double, not a service.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", EMBEDDED)
SANDBOX_API_TOKENS = env_list("SANDBOX_API_TOKENS")
if not SANDBOX_API_TOKENS and _local.get("SANDBOX_API_TOKENS"):
    SANDBOX_API_TOKENS = [_local["SANDBOX_API_TOKENS"]]

# A real Replicate token for `make run` to register instead of the sandbox's.
REPLICATE_API_TOKEN = env_str("REPLICATE_API_TOKEN")
REPLICATE_API_BASE_URL = env_url("REPLICATE_API_BASE_URL", {"http", "https"}) or (
    "https://api.replicate.com"
)

REDIS_URL = env_url("REDIS_URL", {"redis", "rediss", "unix"})
if PREDICTION_EXECUTOR == "celery" and not REDIS_URL:
    raise ImproperlyConfigured("PREDICTION_EXECUTOR=celery needs REDIS_URL (the Celery broker)")

INSTALLED_APPS = [
    "daphne",  # first, so runserver is the ASGI server
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "template_partials",
    "predictions",
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files with compressed, cache-busted names, so one daphne serves everything
    # (project/static.py: WhiteNoise without a thread hop per request).
    "project.static.StaticFilesMiddleware",
    # Addresses no database can store get a 400 (predictions/untrusted.py).
    "predictions.untrusted.address_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The user is read in a database thread, so async views hold no connection; an
    # exhausted database answers 503 (predictions/database.py).
    "predictions.database.UserMiddleware",
    # Every page needs a login except those marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: answers a locked-out login with its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

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


# WAL + IMMEDIATE let the web process and its prediction tasks write without
# "database is locked" surprises. `make test` uses DELETE: its many console processes on
# one SQLite file (a shape only tests have; several processes means PostgreSQL) broke a
# WAL connection now and then ("disk I/O error", "database disk image is malformed").
SQLITE_JOURNAL_MODE = env_str("SQLITE_JOURNAL_MODE", "WAL")
if SQLITE_JOURNAL_MODE not in ("WAL", "DELETE"):
    raise ImproperlyConfigured(
        f"SQLITE_JOURNAL_MODE must be WAL or DELETE, not {SQLITE_JOURNAL_MODE!r}"
    )
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": f"PRAGMA journal_mode={SQLITE_JOURNAL_MODE}; PRAGMA synchronous=NORMAL;",
}


def database_config() -> dict:
    raw = env_str("DATABASE_URL")
    if not raw:
        private_var_dir()
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        }
    scheme = urlsplit(raw).scheme
    if scheme not in environ.Env.DB_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL has an unknown scheme {scheme!r}; use postgres://… or sqlite:///…"
        )
    try:
        config = environ.Env.db_url_config(raw)
    except (KeyError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"DATABASE_URL is not a database URL I understand: {exc}"
        ) from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = SQLITE_OPTIONS
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Django's psycopg 3 pool. Connections go back to it after each unit of work
        # (predictions/database.py), so its size need not grow with the number of users;
        # when the database is exhausted a request waits `timeout` s, then gets a 503.
        config["CONN_MAX_AGE"] = 0
        config.setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": 20, "timeout": 5}
    return config


DATABASES = {"default": database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def redis_channel_layer(url: str) -> dict:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # Gaps from dropped messages heal via the replay log; capacity keeps them rare.
        "CONFIG": {
            "hosts": [
                {
                    "address": url,
                    # redis-py's default pool of 100 raises under a burst of browsers.
                    "max_connections": 1000,
                    # Above channels_redis's 5 s blocking read: redis-py's default of 5 s
                    # raced it and killed idle websockets with 1011.
                    "socket_timeout": 30,
                }
            ],
            "capacity": 1500,
            "expiry": 30,
        },
    }


if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Channels' own in-memory layer rescans every channel on each send; ours does not.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "predictions.channel_layer.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1500},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
# Archived files are never served from MEDIA_URL: the console serves each one itself,
# after checking who may see it (/predictions/<id>/files/<n>/).
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
# `make dev` (DEBUG) serves static/ as it is; otherwise collectstatic (make run/up does it)
# writes hashed, compressed copies to STATIC_ROOT, which browsers cache for a year.


def storage_config(raw: str) -> dict:
    """Where archived output files go: STORAGE_URL, or MEDIA_ROOT on local disk.

    ``s3://bucket/prefix?region=eu-west-1&endpoint_url=https://…`` stores them in S3 (or
    any S3-compatible service) through django-storages; credentials come the usual boto3
    way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance role). ``file:///srv/media``
    is a local directory.
    """
    if not raw:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    parts = urlsplit(raw)
    query = dict(parse_qsl(parts.query))
    if parts.scheme == "file" and parts.path:
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": parts.path},
        }
    if parts.scheme == "s3" and parts.netloc:
        unknown = set(query) - {"region", "endpoint_url"}
        if unknown:
            raise ImproperlyConfigured(
                f"STORAGE_URL: unknown option(s) {', '.join(sorted(unknown))}; "
                "use region and endpoint_url"
            )
        options = {
            "bucket_name": parts.netloc,
            "location": parts.path.strip("/"),
            # Files are private: the console reads them and serves them after its checks.
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        }
        if query.get("region"):
            options["region_name"] = query["region"]
        if query.get("endpoint_url"):
            options["endpoint_url"] = query["endpoint_url"]
        return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}
    raise ImproperlyConfigured(
        f"STORAGE_URL must look like s3://bucket/prefix or file:///path; got {raw!r}"
    )


STORAGE_URL = env_str("STORAGE_URL")
STORAGES = {
    "default": storage_config(STORAGE_URL),
    "staticfiles": {"BACKEND": "project.static.StaticStorage"},
}


def env_number(name: str, default: float) -> float:
    raw = env_str(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}") from None
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive; got {raw!r}")
    return value


def env_rates(name: str, default: str) -> str:
    """Rates as the `limits` library reads them: "60/minute", or several: "10/second;300/hour"."""
    raw = env_str(name) or default
    try:
        parse_many(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be rates such as 60/minute or 10/second;300/hour; got {raw!r}"
        ) from None
    return raw


# Predictions one user may start (the form and the websocket together): predictions/throttles.py.
SUBMIT_RATE_LIMIT = env_rates("SUBMIT_RATE_LIMIT", "60/minute")
# The gateway (/api/v1/), per API key, as Replicate limits: creating predictions, and every
# other call. Creates also count against SUBMIT_RATE_LIMIT, the member's own.
API_CREATE_RATE_LIMIT = env_rates("API_CREATE_RATE_LIMIT", "600/minute")
API_RATE_LIMIT = env_rates("API_RATE_LIMIT", "3000/minute")
# Webhooks the gateway delivers go to public hosts only (no requests into your network on
# a caller's say-so); a console and its receivers on one machine need this on.
WEBHOOK_ALLOW_PRIVATE_HOSTS = env_bool("WEBHOOK_ALLOW_PRIVATE_HOSTS", False)
# Redis, so limits hold across processes; memory in the embedded mode's one process.
RATE_LIMIT_STORAGE_URL = (
    "redis+" + REDIS_URL if REDIS_URL.startswith("unix:") else REDIS_URL
) or "memory://"

# Login lock-out (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused for LOGIN_LOCKOUT_MINUTES (each further try
# restarts the wait). Per pair, so no one can lock a colleague out from their own machine;
# behind a proxy that hides addresses it amounts to per username. An admin unlocks with
# `manage.py axes_reset_username NAME` (or axes_reset for everyone).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(env_number("LOGIN_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=env_number("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_CALLABLE = "predictions.throttles.login_username"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# A runner renews its claim on a prediction every lease/6 s; a prediction whose claim is
# older than this is taken over (by the reconciler, or by a restarted server).
PREDICTION_LEASE_SECONDS = env_number("PREDICTION_LEASE_SECONDS", 30)
# Output files larger than this are not archived: the output keeps the upstream URL.
PREDICTION_MAX_FILE_BYTES = int(env_number("PREDICTION_MAX_FILE_BYTES", 100 * 1024 * 1024))
# The gateway's files API (/api/v1/files): the largest upload (Replicate's limit), and how
# long an upload lives (Replicate keeps them a day).
API_FILE_MAX_BYTES = int(env_number("API_FILE_MAX_BYTES", 100 * 1024 * 1024))
API_FILE_TTL_HOURS = env_number("API_FILE_TTL_HOURS", 24)

# Celery: configured from here by project/celery.py (namespace CELERY_).
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# No Celery time limits: the threads pool cannot enforce them (a thread cannot be killed),
# and a prediction waits on I/O anyway. The limit is each catalogue model's deadline, which
# the runner enforces itself: it cancels upstream and fails the row with a sentence.
# Above the longest deadline, or Redis redelivers a still-running task to a second worker
# (which the runner's claim would turn into a no-op, but only after a wasted claim).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * 60 * 60}
# Workers log through LOGGING below (JSON when LOG_FORMAT=json), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "reconcile-predictions": {"task": "predictions.reconcile_predictions", "schedule": 15.0}
}

if not EMBEDDED:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# A request body (form fields, JSON) above this gets the 413 page, never a traceback; file
# uploads count separately (FILE_UPLOAD_MAX_MEMORY_SIZE spills them to disk).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(env_number("MAX_REQUEST_BYTES", 10 * 1024 * 1024))
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

# /metrics: open to staff, or to a scraper sending "Authorization: Bearer METRICS_TOKEN".
METRICS_TOKEN = env_str("METRICS_TOKEN")
# prometheus_client's multiprocess mode: every process (web, worker) writes its numbers to
# files here and /metrics sums them, so any web process answers for all. It must be set
# before prometheus_client is imported; `make run`/`make up` empty it at start.
METRICS_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR") or VAR_DIR / "metrics")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
METRICS_DIR.mkdir(parents=True, exist_ok=True)
# How often /readyz really asks the default token's upstream (its answer is cached).
READYZ_UPSTREAM_CACHE_SECONDS = 30

LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json'; got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line a runner logs names its prediction and upstream id (predictions/logcontext.py).
    "filters": {"prediction": {"()": "predictions.logcontext.PredictionContext"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["prediction"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        # Failures and lock-outs are warnings; its INFO lines repeat them per attempt.
        "axes": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # runserver prints its own access log; don't print every line twice.
        "django.channels.server": {"propagate": False},
    },
}
