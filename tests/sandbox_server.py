"""Run the sandbox as a real daphne process, for tests and benchmarks.

A pytest plugin, declared in tests/conftest.py.

Fixtures: ``sandbox_url`` is the base URL to give ``replicate.Client`` (no ``/v1``), for
example ``http://127.0.0.1:41234/sandbox``; ``sandbox_token`` is the API token it accepts;
``sandbox_client(faults="", **kwargs)`` makes an official client for it. One server serves
the whole session, however many modules ask for it.

The server runs ``project.asgi:application`` from the repository with the caller's
environment, except that it is always the embedded setup: ``DEBUG=1``, a temporary
``VAR_DIR`` (fresh secrets, SQLite) and no ``DATABASE_URL`` / ``REDIS_URL``, so it never
touches shared services. The sandbox API needs no database; pass ``migrate=True`` to
``run_sandbox_server`` when the console's own pages should work on that server too.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
TEST_TOKEN = "r8_sandbox_test_0123456789abcdef"
START_TIMEOUT = 60.0


def server_env(var_dir: str, token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "PREDICTION_EXECUTOR", "ALLOWED_HOSTS"):
        env.pop(name, None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DEBUG": "1",
            "VAR_DIR": var_dir,
            "SANDBOX_ENABLED": "1",
            "SANDBOX_API_TOKENS": token,
            "LOG_LEVEL": env.get("SANDBOX_LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def _wait_until_ready(url: str, token: str, process: subprocess.Popen, log: Path) -> None:
    """Poll the account endpoint until it answers 200; fail fast if the process died."""
    headers = {"Authorization": f"Bearer {token}"}

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"sandbox server exited early:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/v1/account", headers=headers, timeout=2).status_code == 200
        return False

    try:
        wait_until(ready, within=START_TIMEOUT, what="sandbox server started")
    except AssertionError:
        raise RuntimeError(f"sandbox server did not start:\n{log.read_text()[-4000:]}") from None


@contextlib.contextmanager
def run_sandbox_server(
    token: str = TEST_TOKEN,
    extra_env: dict[str, str] | None = None,
    migrate: bool = False,
    application: str = "project.asgi:application",
) -> Iterator[str]:
    """Start daphne on a free port, yield the sandbox base URL, stop it afterwards."""
    var_dir = tempfile.mkdtemp(prefix="sandbox-test-")
    env = server_env(var_dir, token, extra_env)
    log = Path(var_dir) / "server.log"
    if migrate:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    # Bind here and hand the listening socket to daphne: no race for the port.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "--fd",
                str(listener.fileno()),
                application,
            ],
            cwd=ROOT,
            env=env,
            pass_fds=[listener.fileno()],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    url = f"http://127.0.0.1:{port}/sandbox"
    try:
        _wait_until_ready(url, token, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(var_dir, ignore_errors=True)


# One server per test session, shared by every module that imports the fixtures.
_shared: dict[str, object] = {"users": 0}


@contextlib.contextmanager
def _shared_server() -> Iterator[str]:
    if _shared["users"] == 0:
        stack = contextlib.ExitStack()
        _shared["url"] = stack.enter_context(run_sandbox_server())
        _shared["stack"] = stack
    _shared["users"] = int(_shared["users"]) + 1  # type: ignore[call-overload]
    try:
        yield str(_shared["url"])
    finally:
        _shared["users"] = int(_shared["users"]) - 1  # type: ignore[call-overload]
        if _shared["users"] == 0:
            _shared.pop("stack").close()  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """Base URL of a running sandbox, for replicate.Client(base_url=...)."""
    with _shared_server() as url:
        yield url


@pytest.fixture(scope="session")
def sandbox_token() -> str:
    """An API token the sandbox accepts (append ":<faults>" to inject faults)."""
    return TEST_TOKEN


def make_client(url: str, token: str, faults: str = "", **kwargs: Any) -> replicate.Client:
    """The official client pointed at the sandbox, polling fast; `faults` rides on the token."""
    client = replicate.Client(
        api_token=f"{token}:{faults}" if faults else token, base_url=url, **kwargs
    )
    client.poll_interval = 0.02
    return client


@pytest.fixture
def sandbox_client(sandbox_url: str, sandbox_token: str) -> Callable[..., replicate.Client]:
    """Make official clients for the sandbox: `sandbox_client(faults="stuck", headers=...)`."""

    def make(faults: str = "", **kwargs: Any) -> replicate.Client:
        return make_client(sandbox_url, sandbox_token, faults, **kwargs)

    return make
