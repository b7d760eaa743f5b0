"""Settings are parsed strictly: a bad value stops start-up with a message naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "EMBEDDED": "0",
    "SECRET_KEY": "x" * 20 + "-production-secret-" + "y" * 30,
    "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "console.example.com",
}
CONFIG_VARIABLES = [
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "DEBUG",
    "EMBEDDED",
    "ALLOWED_HOSTS",
    "STORAGE_URL",
    "LOG_FORMAT",
    "METRICS_TOKEN",
    "MAX_REQUEST_BYTES",
    "CSRF_TRUSTED_ORIGINS",
    "TOKEN_ENCRYPTION_KEYS",
    "PREDICTION_EXECUTOR",
    "PUBLIC_URL",
    "REPLICATE_WEBHOOK_SECRET",
    "SANDBOX_ENABLED",
    "SANDBOX_API_TOKENS",
    "MEDIA_ROOT",
    "REPLICATE_API_TOKEN",
    "SUBMIT_RATE_LIMIT",
    "LOGIN_FAILURE_LIMIT",
    "LOGIN_LOCKOUT_MINUTES",
]

pytestmark = pytest.mark.processes  # each test starts manage.py with an environment of its own


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh process with only the given configuration variables."""
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    clean.update(env, VAR_DIR=str(tmp_path / "var"))
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_mode_needs_no_variables_and_keeps_its_generated_secrets(tmp_path: Path) -> None:
    first = manage(tmp_path, "check")
    assert first.returncode == 0, first.stderr
    secrets_file = tmp_path / "var" / "secrets.json"
    generated = secrets_file.read_text()

    second = manage(tmp_path, "check")

    assert second.returncode == 0, second.stderr
    assert secrets_file.read_text() == generated
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"


def test_embedded_mode_keeps_var_private(tmp_path: Path) -> None:
    result = manage(tmp_path, "migrate", "--no-input")

    assert result.returncode == 0, result.stderr
    var = tmp_path / "var"
    # The database, its WAL and archived media live in var/: no other local user may enter.
    assert (var / "db.sqlite3").exists()
    assert oct(var.stat().st_mode & 0o777) == "0o700"


def test_a_var_made_by_an_older_console_is_made_private(tmp_path: Path) -> None:
    assert manage(tmp_path, "check").returncode == 0
    var = tmp_path / "var"
    var.chmod(0o755)

    assert manage(tmp_path, "check").returncode == 0

    assert oct(var.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("EMBEDDED", "perhaps"),
        ("STORAGE_URL", "ftp://files.example.com/"),
        ("STORAGE_URL", "s3://bucket/prefix?acl=public-read"),
        ("LOG_FORMAT", "xml"),
        ("MAX_REQUEST_BYTES", "lots"),
        ("SANDBOX_ENABLED", "sure"),
        ("PREDICTION_EXECUTOR", "threads"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("REDIS_URL", "http://localhost:6379"),
        ("PUBLIC_URL", "console.example.com"),
        ("TOKEN_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("CSRF_TRUSTED_ORIGINS", "console.example.com"),
        ("REPLICATE_WEBHOOK_SECRET", "secret-without-prefix"),
        ("SUBMIT_RATE_LIMIT", "lots"),
        ("LOGIN_FAILURE_LIMIT", "five"),
        ("LOGIN_LOCKOUT_MINUTES", "-1"),
        ("SQLITE_JOURNAL_MODE", "OFF"),
        ("API_RATE_LIMIT", "many"),
        ("WEBHOOK_ALLOW_PRIVATE_HOSTS", "yes please"),
    ],
)
def test_a_malformed_value_stops_start_up_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = manage(tmp_path, "check", **{variable: value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("variable", ["SECRET_KEY", "TOKEN_ENCRYPTION_KEYS", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without_a_secret(tmp_path: Path, variable: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != variable}

    result = manage(tmp_path, "check", **env)

    assert result.returncode != 0
    assert variable in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "var" / "secrets.json").exists()


def test_celery_executor_without_redis_is_refused(tmp_path: Path) -> None:
    result = manage(tmp_path, "check", PREDICTION_EXECUTOR="celery")

    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr.strip().splitlines()[-1]


def test_check_deploy_is_clean_with_production_variables(tmp_path: Path) -> None:
    result = manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        **PRODUCTION,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/console",
        REDIS_URL="redis://127.0.0.1:6379/0",
        PREDICTION_EXECUTOR="celery",
        PUBLIC_URL="https://console.example.com",
        CSRF_TRUSTED_ORIGINS="https://console.example.com",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_postgres_url_uses_psycopg_pool_without_persistent_connections(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings; d = settings.DATABASES['default'];"
        "print(d['ENGINE'], d['CONN_MAX_AGE'], bool(d['OPTIONS']['pool']), d['NAME'])"
    )
    result = manage(
        tmp_path,
        "shell",
        "-v",
        "0",
        "-c",
        code,
        DATABASE_URL="postgres://u@db.example:5432/console",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "0", "True", "console"]


def test_the_sandbox_is_off_in_production_unless_asked_for(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.SANDBOX_ENABLED)"

    default = manage(tmp_path, "shell", "-v", "0", "-c", code, **PRODUCTION)
    asked = manage(tmp_path, "shell", "-v", "0", "-c", code, **PRODUCTION, SANDBOX_ENABLED="1")

    assert (default.stdout.strip(), asked.stdout.strip()) == ("False", "True")


def setting_values(tmp_path: Path, *names: str, **env: str) -> list[str]:
    code = "from django.conf import settings; " + "; ".join(
        f"print(repr(settings.{name}))" for name in names
    )
    result = manage(tmp_path, "shell", "-v", "0", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_the_default_is_embedded_without_debug(tmp_path: Path) -> None:
    # What `make run` gets: no technical pages, yet nothing to configure.
    values = setting_values(tmp_path, "DEBUG", "EMBEDDED", "SANDBOX_ENABLED")

    assert values == ["False", "True", "True"]
    assert (tmp_path / "var" / "secrets.json").exists()


def test_debug_and_embedded_are_separate_switches(tmp_path: Path) -> None:
    debug_embedded = setting_values(tmp_path, "DEBUG", "EMBEDDED", DEBUG="1")
    debug_production = setting_values(tmp_path, "DEBUG", "EMBEDDED", **PRODUCTION, DEBUG="1")

    assert debug_embedded == ["True", "True"]
    assert debug_production == ["True", "False"]


def test_storage_url_puts_archived_files_in_s3(tmp_path: Path) -> None:
    (storages,) = setting_values(
        tmp_path,
        "STORAGES['default']",
        STORAGE_URL="s3://console-files/archive?region=eu-west-1&endpoint_url=https://s3.example.com",
    )

    assert "'BACKEND': 'storages.backends.s3.S3Storage'" in storages
    assert "'bucket_name': 'console-files'" in storages
    assert "'location': 'archive'" in storages
    assert "'region_name': 'eu-west-1'" in storages
    assert "'default_acl': 'private'" in storages
