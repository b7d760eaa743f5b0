"""Console processes for tests that kill them: a daphne server (inline executor) and Celery
workers, sharing the test database with the test process.

A plugin, declared in tests/conftest.py.
Tests using them need ``@pytest.mark.django_db(transaction=True)`` so what they write is
committed where the subprocesses can see it. Every process is stopped when its test ends,
before the database is flushed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from celery import Celery
from django.db import connection

from tests.sandbox_server import ROOT
from tests.waiting import wait_until

START_TIMEOUT = 60.0
# Short, so a killed runner's prediction is resumed within seconds.
LEASE_SECONDS = 2


def test_database_url() -> str:
    """DATABASE_URL for the database this test session runs on (pytest-django's copy)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"].endswith("postgresql"):
        auth = quote(db["USER"] or "", safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = db.get("HOST") or "127.0.0.1"
        return f"postgres://{auth}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"
    raise RuntimeError(f"no subprocess support for {db['ENGINE']}")


def console_env(**extra: str) -> dict[str, str]:
    """The environment of a console process: this session's database unless `extra` names
    another DATABASE_URL."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.console_settings",
            "DATABASE_URL": extra.get("DATABASE_URL") or test_database_url(),
            "DEBUG": "1",
            "PREDICTION_LEASE_SECONDS": str(LEASE_SECONDS),
            "LOG_LEVEL": os.environ.get("CONSOLE_LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Process:
    """A started subprocess with its log; kill() is SIGKILL, stop() is a polite SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], **popen: Any) -> None:
        self.log = Path(tempfile.mkstemp(prefix="console-test-", suffix=".log")[1])
        with self.log.open("wb") as log_file:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, **popen
            )

    def output(self) -> str:
        """The end of the log (CONSOLE_LOG_TAIL characters, default 6000)."""
        tail = int(os.environ.get("CONSOLE_LOG_TAIL", "6000"))
        return self.log.read_text(errors="replace")[-tail:]

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        def ready_or_dead() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{what} exited early:\n{self.output()}")
            return ready()

        try:
            wait_until(ready_or_dead, within=START_TIMEOUT, what=f"{what} started")
        except AssertionError:
            raise RuntimeError(f"{what} did not start:\n{self.output()}") from None

    def log_text(self) -> str:
        """The whole log."""
        return self.log.read_text(errors="replace")

    def stop_keeping_log(self) -> None:
        """Stop the process (SIGTERM) but keep its log to read; stop() later removes it."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if os.environ.get("KEEP_CONSOLE_LOG"):
            print(self.output())
        self.log.unlink(missing_ok=True)


class ConsoleServer(Process):
    """daphne serving the console (inline executor) on a port of its own."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1024)
        args = [sys.executable, "-m", "daphne", "--fd", str(listener.fileno())]
        super().__init__([*args, "project.asgi:application"], env, pass_fds=[listener.fileno()])
        listener.close()

        def answers() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{self.url}/accounts/login/", timeout=2).status_code == 200
            return False

        self.wait_until(answers, "console server")


class Worker(Process):
    """A Celery worker (threads pool), on the test's own queue."""

    def __init__(self, env: dict[str, str], concurrency: int = 50) -> None:
        name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        args = [sys.executable, "-m", "celery", "-A", "project", "worker", "-n", name]
        args += ["--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO"]
        args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        super().__init__(args, env)
        self.wait_until(lambda: " ready." in self.log.read_text(errors="replace"), "worker")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def console_servers() -> Iterator[Callable[..., ConsoleServer]]:
    """`console_servers(port=None, webhooks=False, **env)` starts a console daphne (on `port`,
    say the one a killed server had); `webhooks` sets PUBLIC_URL to its own address. The
    executor is inline unless `env` says otherwise. All are stopped when the test ends."""
    started: list[ConsoleServer] = []

    def start(port: int | None = None, webhooks: bool = False, **env: str) -> ConsoleServer:
        port = port or free_port()
        if webhooks:
            env["PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        server = ConsoleServer(port, console_env(**{"PREDICTION_EXECUTOR": "inline", **env}))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class Workers:
    """Celery workers for one test, plus a client to queue tasks for them."""

    def __init__(self, redis_url: str) -> None:
        self.queue = f"test-{uuid.uuid4().hex[:8]}"
        self.env = console_env(
            PREDICTION_EXECUTOR="celery", REDIS_URL=redis_url, CELERY_TASK_DEFAULT_QUEUE=self.queue
        )
        self.app = Celery("console-tests", broker=redis_url)
        self.started: list[Worker] = []

    def start(self, concurrency: int = 50) -> Worker:
        worker = Worker(self.env, concurrency)
        self.started.append(worker)
        return worker

    def send(self, task: str, *args: str) -> None:
        self.app.send_task(task, args=list(args), queue=self.queue)

    def close(self) -> None:
        for worker in self.started:
            worker.stop()
        with contextlib.suppress(Exception), self.app.connection_for_write() as conn:
            conn.default_channel.queue_purge(self.queue)
        self.app.close()


@pytest.fixture
def celery_workers(redis_url: str) -> Iterator[Workers]:
    workers = Workers(redis_url)
    yield workers
    workers.close()
