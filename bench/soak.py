"""`make soak`: the production shape under load and faults, measured.

    .venv/bin/python bench/soak.py [--streams 200] [--watchers 500] [--tokens 300]
                                   [--soak-minutes 30] [--soak-streams 20] [--no-faults]

What runs, all on this machine: 2 web processes (`manage.py serve`, one shared port, as
`make up` runs them), 2 Celery workers (threads pool), beat, the sandbox in its own
process, a private redis-server (so it can be killed without touching anyone else's) and
a database of its own on the PostgreSQL at SOAK_DATABASE_URL's server.

1. **Faults.** `--streams` predictions are submitted through the form at once, followed
   by `--watchers` websocket watchers (a browser's logic: snapshot, in-order events, a
   resync on a gap, reconnect when the socket drops). Mid-load: kill -9 one web process
   (its supervisor restarts it), then one worker, then Redis for 5 s. Reported: how many
   predictions ended terminal, with exactly the model's text (row and every watcher), how
   many upstream creates each had, and the watchers' reconnect times.
2. **Soak.** `--soak-minutes` of steady load (`--soak-streams` predictions running at any
   time, each watched), sampling every process's resident memory: it must stay flat.

Not part of `make test`: minutes long, and it owns the machine's CPUs while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 7
TERMINAL = {"succeeded", "failed", "canceled"}
LEASE_SECONDS = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class Proc:
    """A child process with its log; restartable with the same command (a supervisor)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log = logs / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(check: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {within:.0f} s")
        time.sleep(0.2)


# ---------------------------------------------------------------------------- the setup


class Deployment:
    def __init__(self, database_url: str) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="console-soak-"))
        self.redis_port = free_port()
        self.port = free_port()
        self.sandbox_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis_url,
            "PREDICTION_EXECUTOR": "celery",
            "VAR_DIR": str(self.logs / "var"),
            "PREDICTION_LEASE_SECONDS": str(LEASE_SECONDS),
            "SUBMIT_RATE_LIMIT": "100000/minute",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.procs: dict[str, Proc] = {}

    def start(self) -> None:
        self.start_redis()
        manage = [sys.executable, "manage.py"]
        for step in (
            ["migrate", "--no-input", "-v", "0"],
            ["collectstatic", "--no-input", "-v", "0"],
        ):
            subprocess.run(manage + step, cwd=ROOT, env=self.env, check=True)
        sandbox_url = f"http://127.0.0.1:{self.sandbox_port}/sandbox"
        subprocess.run(
            [*manage, "setup_console", "--sandbox-url", sandbox_url],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        serve = [*manage, "serve", "--port"]
        self.add("sandbox", [*serve, str(self.sandbox_port)])
        for n in (1, 2):
            self.add(f"web{n}", [*serve, str(self.port)])
        for n in (1, 2):
            self.add(f"worker{n}", self.worker_args(n))
        beat = ["-m", "celery", "-A", "project", "beat", "--loglevel", "WARNING"]
        beat += ["--schedule", str(self.logs / "beat-schedule")]
        self.add("beat", [sys.executable, *beat])
        wait_until(lambda: httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200, "console")

    def worker_args(self, n: int) -> list[str]:
        args = [sys.executable, "-m", "celery", "-A", "project", "worker", "-n", f"soak{n}@%h"]
        return args + ["--pool", "threads", "--concurrency", "150", "--loglevel", "WARNING"]

    def add(self, name: str, args: list[str]) -> None:
        self.procs[name] = Proc(name, args, self.env, self.logs)

    def start_redis(self) -> None:
        args = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.logs)]
        self.procs["redis"] = Proc("redis", args, self.env, self.logs)
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.redis_port), 1), "redis")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


def prepare_database(database_url: str) -> None:
    """Create the soak's own database (dropped and made afresh each run)."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(deployment: Deployment) -> None:
    for key in ("DATABASE_URL", "REDIS_URL", "VAR_DIR", "PREDICTION_EXECUTOR"):
        os.environ[key] = deployment.env[key]
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    import django

    django.setup()


def member_cookie() -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from predictions.models import ApiToken

    # No rate limits upstream: the console's behaviour is measured, not Replicate's.
    token = ApiToken.objects.get(is_default=True)
    token.set_token(token.get_token().split(":")[0] + ":create_limit=0,read_limit=0")
    token.save()
    user, _ = User.objects.get_or_create(username="soak")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


# ---------------------------------------------------------------------------- load


@dataclass
class Watch:
    # Per watcher that ended: the text assembled from the live deltas, and the text the
    # page shows at the end (the `done` event's, or a terminal snapshot's).
    texts: list[str] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    # (when the socket was lost, how long until the next snapshot), monotonic seconds.
    reconnects: list[tuple[float, float]] = field(default_factory=list)


async def submit(client: httpx.AsyncClient, csrf: str, prompt: str, tokens: int) -> str:
    data = {"csrfmiddlewaretoken": csrf, "prompt": prompt, "seed": str(SEED)}
    data |= {"max_tokens": str(tokens), "token_delay_ms": "100"}
    for _ in range(60):  # a web process being killed: try again, like a person would
        with contextlib.suppress(httpx.TransportError):
            answer = await client.post("/models/sandbox/text/", data=data)
            if answer.status_code == 303:
                return answer.headers["location"].rstrip("/").rsplit("/", 1)[-1]
        await asyncio.sleep(0.5)
    raise RuntimeError(f"could not submit {prompt}")


async def watch(url: str, cookie: str, pk: str, record: Watch, within: float) -> None:
    """A browser's live page: snapshot, events in order, resync on a gap, reconnect."""
    ws_url = url.replace("http", "ws") + f"/ws/predictions/{pk}/"
    lost_at: float | None = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(
                ws_url, origin=url, additional_headers={"Cookie": cookie}, open_timeout=10
            ) as ws:
                text, seq = "", -1
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "snapshot":
                        text, seq = message["prediction"]["text_output"], message["seq"]
                        if lost_at is not None:
                            record.reconnects.append((lost_at, time.monotonic() - lost_at))
                            lost_at = None
                        if message["prediction"]["status"] in TERMINAL:
                            record.texts.append(text)
                            record.finals.append(text)
                            return
                    elif message["type"] == "done":
                        record.texts.append(text)
                        record.finals.append(message["prediction"]["text_output"])
                        return
                    elif message.get("seq", 0) == seq + 1:
                        seq = message["seq"]
                        if message["type"] == "output":
                            text += message.get("text", "")
                    elif message.get("seq", 0) > seq:
                        await ws.send(json.dumps({"type": "resync", "after": seq}))
        except (TimeoutError, OSError, websockets.WebSocketException):
            pass
        if lost_at is None:
            lost_at = time.monotonic()
        await asyncio.sleep(0.5)  # the page's own back-off before reconnecting


async def faults(deployment: Deployment, report: list[str], start: float, span: float) -> None:
    """kill -9 a web process, a worker, then Redis for 5 s, at 15 %, 40 % and 65 % of the
    time a prediction streams (`span`): each one mid-load."""

    def note(what: str) -> None:
        report.append(f"  {time.monotonic() - start:5.1f} s  {what}")

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + fraction * span - time.monotonic()))

    procs = deployment.procs
    await at(0.15)
    procs["web1"].kill()
    note("kill -9 web1")
    await asyncio.sleep(2)
    procs["web1"].start()
    note("web1 restarted")
    await at(0.40)
    procs["worker1"].kill()
    note("kill -9 worker1")
    await asyncio.sleep(2)
    procs["worker1"].start()
    note("worker1 restarted")
    await at(0.65)
    procs["redis"].kill()
    note("kill -9 redis")
    await asyncio.sleep(5)
    procs["redis"].start()
    note("redis restarted (empty: queue, replay logs and channel groups are gone)")


def upstream_creates(sandbox_url: str, token: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    url: str | None = f"{sandbox_url}/v1/predictions"
    while url:
        page = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        for prediction in page["results"]:
            prompt = prediction["input"].get("prompt", "")
            counts[prompt] = counts.get(prompt, 0) + 1
        url = page.get("next")
    return counts


async def fault_run(deployment: Deployment, args: argparse.Namespace) -> list[str]:
    from asgiref.sync import sync_to_async
    from django.conf import settings

    from predictions.models import Prediction
    from sandbox.demo_models import text_tokens

    cookie = await sync_to_async(member_cookie)()
    run = uuid.uuid4().hex[:6]
    prompts = [f"soak {run} {i}" for i in range(args.streams)]
    report = [
        f"Fault run: {args.streams} streams x {args.tokens} tokens at 10/s, "
        f"{args.watchers} watchers; 2 web + 2 workers, PostgreSQL, Redis"
    ]
    limits = httpx.Limits(max_connections=args.streams)
    async with httpx.AsyncClient(
        base_url=deployment.url, headers={"Cookie": cookie}, limits=limits, timeout=60
    ) as client:
        csrf = (await client.get("/models/sandbox/text/")).cookies["csrftoken"]
        client.headers["Cookie"] = f"{cookie}; csrftoken={csrf}"
        start = time.monotonic()
        events: list[str] = []
        chaos = (
            None
            if args.no_faults
            else asyncio.create_task(faults(deployment, events, start, args.tokens / 10))
        )
        ids = await asyncio.gather(*(submit(client, csrf, p, args.tokens) for p in prompts))
    submitted = time.monotonic() - start
    records = {pk: Watch() for pk in ids}
    within = args.tokens / 10 + 120
    watchers = [
        watch(deployment.url, cookie, ids[i % len(ids)], records[ids[i % len(ids)]], within)
        for i in range(args.watchers)
    ]
    # A watcher that never reaches `done` (a deaf socket) is counted, not waited for.
    await asyncio.gather(*(asyncio.wait_for(w, within) for w in watchers), return_exceptions=True)
    if chaos is not None:
        await chaos
    elapsed = time.monotonic() - start

    def rows() -> list[Prediction]:
        return list(Prediction.objects.filter(pk__in=ids))

    final_rows = {str(p.pk): p for p in await sync_to_async(rows)()}
    token = settings.SANDBOX_API_TOKENS[0]
    sandbox_url = f"http://127.0.0.1:{deployment.sandbox_port}/sandbox"
    creates = await asyncio.to_thread(upstream_creates, sandbox_url, token)
    expected = {p: "".join(text_tokens(p, SEED, args.tokens)) for p in prompts}

    terminal = exact = one_create = watched_exact = streamed_exact = watchers_total = 0
    for pk, prompt in zip(ids, prompts, strict=True):
        row = final_rows[pk]
        terminal += row.status in Prediction.TERMINAL_STATUSES
        record = records[pk]
        watchers_total += len(record.texts)
        watched_exact += sum(final == expected[prompt] for final in record.finals)
        streamed_exact += sum(text == expected[prompt] for text in record.texts)
        exact += row.status == "succeeded" and row.text_output == expected[prompt]
        one_create += creates.get(prompt, 0) == 1
    redis_killed = start + 0.65 * args.tokens / 10
    reconnects = [r for record in records.values() for r in record.reconnects]
    n = len(ids)
    report += [f"  submitted in {submitted:.1f} s, all done in {elapsed:.1f} s", *events]
    report += [
        f"  terminal:            {terminal}/{n} ({100 * terminal / n:.1f} %)",
        f"  exact text (row):    {exact}/{n} ({100 * exact / n:.1f} %)",
        f"  exact text (page):   {watched_exact}/{args.watchers} watchers "
        f"({100 * watched_exact / args.watchers:.1f} %), {watchers_total} reached the end"
        f" within {within:.0f} s",
        f"  exact from deltas:   {streamed_exact}/{args.watchers} (the live deltas alone,"
        " before the final event corrects them)",
        f"  1 upstream create:   {one_create}/{n}"
        f" (max {max(creates.get(p, 0) for p in prompts)} for one prediction)",
    ]
    for label, group in (
        ("web kill", [d for lost, d in reconnects if lost < redis_killed]),
        ("redis down", [d for lost, d in reconnects if lost >= redis_killed]),
    ):
        if group:
            ordered = sorted(group)
            report.append(
                f"  reconnect ({label}): {len(ordered)}, median {statistics.median(ordered):.2f}"
                f" s, p95 {ordered[int(0.95 * (len(ordered) - 1))]:.2f} s,"
                f" max {ordered[-1]:.2f} s"
            )
    return report


async def soak_run(deployment: Deployment, args: argparse.Namespace) -> list[str]:
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(member_cookie)()
    names = [n for n in deployment.procs if n != "redis"]
    samples: dict[str, list[float]] = {n: [] for n in names}
    done = 0
    stop_at = time.monotonic() + args.soak_minutes * 60

    async with httpx.AsyncClient(
        base_url=deployment.url, headers={"Cookie": cookie}, timeout=60
    ) as client:
        csrf = (await client.get("/models/sandbox/text/")).cookies["csrftoken"]
        client.headers["Cookie"] = f"{cookie}; csrftoken={csrf}"

        async def one_after_another() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                pk = await submit(client, csrf, f"steady {uuid.uuid4().hex[:8]}", 100)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch(deployment.url, cookie, pk, Watch(), 120), 120)
                done += 1

        async def sample() -> None:
            while time.monotonic() < stop_at:
                for name in names:
                    samples[name].append(rss_mb(deployment.procs[name].pid))
                await asyncio.sleep(10)

        await asyncio.gather(sample(), *(one_after_another() for _ in range(args.soak_streams)))

    report = [
        f"Soak: {args.soak_minutes:g} min, {args.soak_streams} streams at a time, "
        f"{done} predictions; resident memory (MB) per process:",
        "  process   first   after 1/4   last   max",
    ]
    for name, values in samples.items():
        if values:
            quarter = values[len(values) // 4]
            report.append(
                f"  {name:8} {values[0]:6.0f} {quarter:9.0f} {values[-1]:8.0f} {max(values):6.0f}"
            )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=300, help="per prediction, at 10/s")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--soak-minutes", type=float, default=0)
    parser.add_argument("--soak-streams", type=int, default=20)
    args = parser.parse_args()
    database_url = os.environ.get(
        "SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/console_soak"
    )
    prepare_database(database_url)
    deployment = Deployment(database_url)
    print(f"logs: {deployment.logs}", flush=True)
    try:
        deployment.start()
        django_setup(deployment)
        report = asyncio.run(fault_run(deployment, args)) if args.streams else []
        if args.soak_minutes:
            report += asyncio.run(soak_run(deployment, args))
    finally:
        deployment.stop()
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
