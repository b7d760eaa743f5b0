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

# Real servers for tests: the sandbox (`sandbox_url`, `sandbox_token`) and console processes.
pytest_plugins = ["tests.sandbox_server", "tests.console_server"]

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


@pytest.fixture(scope="session")
def redis_url() -> str:
    """REDIS_URL, else a local Redis on the default port (database 14, kept for tests)."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    need_service("Redis", port_open(url, 6379), f"nothing answers at {url}")
    return url


# Users for view tests: two members who must not see each other's work, and a staff member.
@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("sam", is_staff=True)
