"""Shared fixtures. Tests about Redis/PostgreSQL skip when the service is not configured,
unless REQUIRE_SERVICES=1 (as in CI), which turns a missing service into a failure."""

import os

import pytest

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def need_service(name: str, available: bool, why: str) -> None:
    """Skip (or, under REQUIRE_SERVICES=1, fail) a test whose service is missing."""
    if available:
        return
    message = f"{name} is not available: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    need_service("Redis", bool(url), "set REDIS_URL")
    return url
