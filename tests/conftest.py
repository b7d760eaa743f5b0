"""Shared fixtures.

Tests about Redis, PostgreSQL or the browser use the real thing. They skip when it is not
there, unless REQUIRE_SERVICES=1 (as in CI), which turns a missing service into a failure.
"""

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings

# Every plugin, declared once: the sandbox server (`sandbox_url`, `sandbox_token`), console
# processes, the engine's fixtures (`sandbox_model`, `inline_runs`) and a hostile upstream.
pytest_plugins = [
    "tests.sandbox_server",
    "tests.console_server",
    "tests.engine_fixtures",
    "tests.hostile_upstream",
]

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"


def need_service(name: str, available: bool, why: str) -> None:
    """Skip (or, under REQUIRE_SERVICES=1, fail) a test whose service is missing."""
    if available:
        return
    message = f"{name} is not available: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REQUIRE_SERVICES=1)")
    pytest.skip(message)


def port_open(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def static_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Pages name static files by their hashed names, as in production: collect them once
    (into STATIC_ROOT, which console processes started by tests share)."""
    call_command("collectstatic", "--no-input", verbosity=0)
    yield


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """Django's advice for test suites: a fast hasher (every cast member has a password).
    Processes that tests start keep the real hashers."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session")
def redis_url() -> str:
    """REDIS_URL, else a local Redis on the default port (database 14, kept for tests)."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    need_service("Redis", port_open(url, 6379), f"nothing answers at {url}")
    return url


# The cast, the only users tests make (a superuser is pytest-django's `admin_user`). Alice
# and Bob must not see each other's work, Carol is shared nothing, Sam is staff. Member and
# stranger play the same parts in engine tests, whose runners and consumers read the
# database from other threads, so their rows are committed (`transactional_db`). Each can
# log in with the password "pw-<username>-123".
def cast(username: str, **fields: bool) -> User:
    return User.objects.create_user(username, password=f"pw-{username}-123", **fields)


@pytest.fixture
def alice(db: None) -> User:
    return cast("alice")


@pytest.fixture
def bob(db: None) -> User:
    return cast("bob")


@pytest.fixture
def carol(db: None) -> User:
    return cast("carol")


@pytest.fixture
def staff(db: None) -> User:
    return cast("sam", is_staff=True)


@pytest.fixture
def member(transactional_db: None) -> User:
    return cast("member")


@pytest.fixture
def stranger(transactional_db: None) -> User:
    return cast("stranger")
