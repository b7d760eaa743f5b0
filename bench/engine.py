"""The console against the sandbox directly: N concurrent sandbox/text streams.

For each executor (inline, celery) and each N, N browsers-to-be each submit a prediction
over the feed websocket (`/ws/predictions/`, as the page does), then watch it on
`/ws/predictions/<id>/` until `done`. The same N streams are then taken straight from the
sandbox with `replicate`'s `async_stream`. Reported, console vs direct: time to first token
and to the end (p50, p99, and their ratio), streams whose assembled text is not exactly
the final output, row writes per prediction, and the runner
process's memory per prediction in flight.

    .venv/bin/python bench/engine.py [--levels 1:20,50:20,200:200] [--tokens 200]
        [--ramp 25] [--executors inline,celery] [--submit socket|form]

A level is N:MS, N streams with a token every MS milliseconds. 20 ms is a fast language
model (50 tokens/s); N=200 runs at 200 ms so the machine is not saturated: on 2 CPUs one
sandbox process keeps about 2,500 tokens/s on time (bench/sandbox_capacity.py) and the
console, the bench's browsers, PostgreSQL and Redis share the same cores. Try
`--levels 200:80` to see a saturated machine. Streams start `--ramp` per second, so a
level measures N predictions in flight together, not a thundering herd of creates;
`--ramp 0` is that herd: a burst, everyone pressing Run at the same instant (`--submit form`
does it through the model page's form, as people do).

Everything runs on this machine: the sandbox (its own daphne), the console (daphne, plus
a Celery worker for `celery`), PostgreSQL ($BENCH_DATABASE_URL, default the local server;
a scratch database `console_bench` is created and dropped; SQLite without it) and Redis
($REDIS_URL, default local db 13; without it the celery executor is skipped). Writes are
counted by triggers on the scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import replicate  # noqa: E402

from tests.sandbox_server import TEST_TOKEN, run_sandbox_server  # noqa: E402

# Rate limits would throttle a burst of creates; this spec lifts them for the run.
TOKEN = f"{TEST_TOKEN}:create_limit=0,read_limit=0"
PG_DEFAULT = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT = "redis://127.0.0.1:6379/13"
SEED = 1234
# Browsers in a run belong to this many people (round robin).
USERS = 200


# ---------------------------------------------------------------------------- websockets


class Socket:
    """A websocket whose JSON messages land in an asyncio queue (None when closed).

    Built on autobahn's asyncio flavour, imported only here: Django's daphne app pins the
    Twisted flavour, so the bench's Django work runs in a child process (see prepare).
    """

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.protocol: Any = None
        self.closed_with = ""

    def send_json(self, message: dict[str, Any]) -> None:
        self.protocol.sendMessage(json.dumps(message).encode())

    def close(self) -> None:
        self.protocol.sendClose()

    async def receive(self) -> dict[str, Any]:
        message = await self.inbox.get()
        if message is None:
            raise ConnectionError(f"websocket closed: {self.closed_with}")
        return message


async def open_socket(url: str, cookie: str) -> Socket:
    from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

    socket = Socket()

    class Protocol(WebSocketClientProtocol):
        def onOpen(self) -> None:  # autobahn's names
            socket.protocol = self
            socket.opened.set_result(None)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            socket.inbox.put_nowait(json.loads(payload))

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            socket.closed_with = f"{code} {reason or ''}".strip()
            if not socket.opened.done():
                socket.opened.set_exception(ConnectionError(f"refused: {code} {reason}"))
            socket.inbox.put_nowait(None)

    parts = urlsplit(url)
    origin = f"http://{parts.hostname}:{parts.port}"
    factory = WebSocketClientFactory(url, origin=origin, headers={"Cookie": cookie})
    factory.protocol = Protocol
    await asyncio.get_running_loop().create_connection(factory, parts.hostname, parts.port)
    await socket.opened
    return socket


# ---------------------------------------------------------------------------- streams


@dataclass
class Stream:
    prompt: str = ""
    ttft: float = 0.0
    total: float = 0.0
    text: str = ""  # as assembled from what arrived
    final: str = ""  # the final output it ended with
    error: str = ""


def prompt_for(index: int) -> str:
    return f"bench {index} {uuid.uuid4().hex[:8]}"


async def submit_by_socket(base: str, cookie: str, model_input: dict[str, Any]) -> str:
    """Submit as the history page's feed does; the new prediction's id."""
    feed = await open_socket(f"{base.replace('http://', 'ws://')}/ws/predictions/", cookie)
    feed.send_json({"type": "submit", "model": "sandbox/text", "input": model_input})
    while (reply := await feed.receive())["type"] != "submitted":
        if reply["type"] == "error":
            raise RuntimeError(reply["message"])
    feed.close()
    return reply["id"]


# Any 32 letters do as a CSRF secret when the cookie and the form field agree.
CSRF = "bench" * 6 + "ok"


async def submit_by_form(base: str, cookie: str, model_input: dict[str, Any]) -> str:
    """Submit as a person pressing Run on the model page does; the new prediction's id."""
    form = {"csrfmiddlewaretoken": CSRF, **{k: str(v) for k, v in model_input.items()}}
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"{base}/models/sandbox/text/",
            data=form,
            headers={"Cookie": f"{cookie}; csrftoken={CSRF}"},
        )
    if response.status_code != 303:
        raise RuntimeError(f"HTTP {response.status_code}")
    return response.headers["location"].rstrip("/").rsplit("/", 1)[-1]


SUBMITS = {"socket": submit_by_socket, "form": submit_by_form}


async def console_stream(
    base: str,
    cookie: str,
    index: int,
    tokens: int,
    delay: int,
    start: float = 0.0,
    submit: str = "socket",
) -> Stream:
    stream = Stream(prompt=prompt_for(index))
    await asyncio.sleep(start)
    ws_base = base.replace("http://", "ws://")
    started = time.perf_counter()
    stage = "submitting"
    try:
        model_input = {
            "prompt": stream.prompt,
            "seed": SEED,
            "max_tokens": tokens,
            "token_delay_ms": delay,
        }
        prediction_id = await SUBMITS[submit](base, cookie, model_input)
        stage = "watching"
        watch = await open_socket(f"{ws_base}/ws/predictions/{prediction_id}/", cookie)
        seq = -1
        while True:
            message = await watch.receive()
            if message["type"] == "snapshot":
                seq, stream.text = message["seq"], message["prediction"]["text_output"]
            elif message["seq"] != seq + 1:
                raise RuntimeError(f"gap: {seq} then {message['seq']}")
            else:
                seq = message["seq"]
                if message["type"] == "output":
                    stream.text += message["text"]
                elif message["type"] == "done":
                    stream.final = message["prediction"]["text_output"]
                    stream.total = time.perf_counter() - started
                    break
            if stream.text and not stream.ttft:
                stream.ttft = time.perf_counter() - started
        watch.close()
    except Exception as exc:  # a failed stream is a result, not a crash of the bench
        stream.error = f"{stage}: {type(exc).__name__}: {exc}"
    return stream


async def direct_stream(
    client: replicate.Client, index: int, tokens: int, delay: int, start: float = 0.0
) -> Stream:
    stream = Stream(prompt=prompt_for(index))
    await asyncio.sleep(start)
    started = time.perf_counter()
    model_input = {
        "prompt": stream.prompt,
        "seed": SEED,
        "max_tokens": tokens,
        "token_delay_ms": delay,
    }
    try:
        async for event in await client.async_stream("sandbox/text", input=model_input):
            if event.event.value == "output":
                stream.text += str(event)
                if not stream.ttft:
                    stream.ttft = time.perf_counter() - started
            elif event.event.value == "done":
                break
        stream.total = time.perf_counter() - started
        stream.final = stream.text
    except Exception as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    return stream


def wrong(streams: list[Stream], tokens: int) -> int:
    """Streams whose assembled text is not their final output, or not the model's
    (deterministic) answer."""
    from sandbox.demo_models import text_tokens

    return sum(
        1
        for s in streams
        if s.error or s.text != s.final or s.final != "".join(text_tokens(s.prompt, SEED, tokens))
    )


# ---------------------------------------------------------------------------- measuring


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples a process's resident memory in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kb(self.pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


COUNT_WRITES = {
    "postgresql": [
        "CREATE SEQUENCE bench_writes",
        "CREATE FUNCTION bench_count_write() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM nextval('bench_writes'); RETURN NULL; END $$",
        *(
            f"CREATE TRIGGER bench_count AFTER INSERT OR UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION bench_count_write()"
            for table in ("predictions_prediction", "predictions_outputfile")
        ),
    ],
    "sqlite": [
        "CREATE TABLE bench_writes (n INTEGER NOT NULL)",
        "INSERT INTO bench_writes VALUES (0)",
        *(
            f"CREATE TRIGGER bench_{table}_{op} AFTER {op} ON {table} "
            "BEGIN UPDATE bench_writes SET n = n + 1; END"
            for table in ("predictions_prediction", "predictions_outputfile")
            for op in ("INSERT", "UPDATE")
        ),
    ],
}


def count_writes() -> None:
    """Triggers that count every row inserted or updated in the predictions tables."""
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in COUNT_WRITES[connection.vendor]:
            cursor.execute(statement)


def row_writes(database_url: str) -> int:
    if database_url.startswith("sqlite:"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            return int(db.execute("SELECT n FROM bench_writes").fetchone()[0])
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as db:
        row = db.execute("SELECT last_value - 1 + is_called::int FROM bench_writes").fetchone()
        return int(row[0])


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


@dataclass
class Result:
    executor: str
    n: int
    delay: int
    console: list[Stream]
    writes: float
    kb_per_prediction: float | None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- setup


def reachable(url: str, port: int) -> bool:
    parts = urlsplit(url)
    with (
        contextlib.suppress(OSError),
        socket.create_connection((parts.hostname, parts.port or port), timeout=1),
    ):
        return True
    return False


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """DATABASE_URL of a fresh, migrated database for the run (dropped afterwards)."""
    base = os.environ.get("BENCH_DATABASE_URL", PG_DEFAULT)
    if reachable(base, 5432):
        import psycopg

        admin = base.rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute("DROP DATABASE IF EXISTS console_bench")
            db.execute("CREATE DATABASE console_bench")
        try:
            yield base.rsplit("/", 1)[0] + "/console_bench"
        finally:
            with psycopg.connect(admin, autocommit=True) as db:
                db.execute("DROP DATABASE IF EXISTS console_bench WITH (FORCE)")
    else:
        yield f"sqlite:///{os.environ['VAR_DIR']}/bench.sqlite3"


def prepare(sandbox_url: str) -> list[str]:
    """In a child process (Django there, autobahn's asyncio flavour here: they cannot
    share a process): migrate and seed the scratch database; the members' cookies."""
    done = subprocess.run(
        [sys.executable, __file__, "--prepare", sandbox_url],
        env=os.environ,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"preparing the database failed:\n{done.stderr[-3000:]}")
    return [line for line in done.stdout.splitlines() if line.startswith("sessionid=")]


def seed(sandbox_url: str) -> None:
    """Migrate, count writes, add the sandbox token, sandbox/text and USERS members; print
    their session cookies."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from predictions import upstream
    from predictions.models import ApiToken, CatalogModel
    from sandbox.demo_models import MODELS

    call_command("migrate", verbosity=0)
    count_writes()
    token = ApiToken(label="bench", base_url=sandbox_url, is_default=True)
    token.set_token(TOKEN)
    token.save()
    demo = MODELS["sandbox/text"]
    input_schema, output_schema = upstream.split_openapi_schema(demo.latest_version.openapi_schema)
    CatalogModel.objects.create(
        owner="sandbox",
        name="text",
        input_schema=input_schema,
        output_schema=output_schema,
        token=token,
    )
    # One person per browser: 200 predictions in flight are a team's, not one user's 200
    # tabs (a user's feed group would fan every status out to all of them).
    for index in range(USERS):
        user = User.objects.create_user(f"bench{index}")  # no password: no slow hashing
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        print(f"sessionid={session.session_key}")


# ---------------------------------------------------------------------------- running


async def gather_streams(coroutines: list[Any]) -> list[Stream]:
    return list(await asyncio.gather(*coroutines))


def run_console(
    executor: str,
    levels: list[tuple[int, int]],
    args: argparse.Namespace,
    cookies: list[str],
    redis_url: str,
) -> list[Result]:
    from tests.console_server import ConsoleServer, Worker, console_env, free_port

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    database_url = os.environ["DATABASE_URL"]
    env = console_env(
        DATABASE_URL=database_url,
        PREDICTION_EXECUTOR="inline" if executor == "inline" else "celery",
        PREDICTION_LEASE_SECONDS="30",
        LOG_LEVEL="WARNING",
        CELERY_TASK_DEFAULT_QUEUE=queue,
    )
    if executor != "inline":
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)  # embedded: the in-memory channel layer
    results = []
    server = ConsoleServer(free_port(), env)
    worker = None
    if executor == "celery":
        worker = Worker(env, concurrency=max(n for n, _ in levels) + 50)
    runner_pid = (worker or server).popen.pid
    try:
        # Warm up imports, clients and connection pools before measuring anything.
        asyncio.run(gather_streams([console_stream(server.url, cookies[0], -1, 5, 0)]))
        for n, delay in levels:
            baseline, before = rss_kb(runner_pid), row_writes(database_url)
            with PeakMemory(runner_pid) as memory:
                streams = asyncio.run(
                    gather_streams(
                        [
                            console_stream(
                                server.url,
                                cookies[i % len(cookies)],
                                i,
                                args.tokens,
                                delay,
                                i / args.ramp if args.ramp else 0.0,
                                args.submit,
                            )
                            for i in range(n)
                        ]
                    )
                )
            writes = (row_writes(database_url) - before) / n
            growth = (memory.peak - baseline) / n if n >= 10 else None
            results.append(Result(executor, n, delay, streams, writes, growth))
    finally:
        for process in filter(None, (worker, server)):
            process.stop()
    return results


def run_direct(
    sandbox_url: str, levels: list[tuple[int, int]], args: argparse.Namespace
) -> dict[tuple[int, int], list[Stream]]:
    async def level(n: int, delay: int) -> list[Stream]:
        # A pool as large as the run, so the client is not the bottleneck.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=n + 10))
        client = replicate.Client(api_token=TOKEN, base_url=sandbox_url, transport=transport)
        return await gather_streams(
            [
                direct_stream(client, i, args.tokens, delay, i / args.ramp if args.ramp else 0.0)
                for i in range(n)
            ]
        )

    asyncio.run(level(1, 0))  # warm-up
    return {(n, delay): asyncio.run(level(n, delay)) for n, delay in levels}


def report(
    results: list[Result], direct: dict[tuple[int, int], list[Stream]], args: argparse.Namespace
) -> None:
    header = (
        f"{'executor':<10} {'N':>4} {'tok/s':>6} │ {'TTFT p50 ms':>18} {'p99':>13} │ "
        f"{'done p50 s':>17} {'ratio':>6} {'p99':>13} │ {'wrong':>5} {'errors':>6} "
        f"{'writes':>6} {'KB/pred':>7}"
    )
    print("\n" + header)
    print(" " * 23 + "console / direct")
    print("─" * len(header))
    for result in results:
        ok = [s for s in result.console if not s.error]
        base = [s for s in direct[(result.n, result.delay)] if not s.error]
        if not ok or not base:
            print(f"{result.executor:<10} {result.n:>4} │ all streams failed")
            continue
        c_ttft, d_ttft = [s.ttft * 1000 for s in ok], [s.ttft * 1000 for s in base]
        c_done, d_done = [s.total for s in ok], [s.total for s in base]
        ratio = statistics.median(c_done) / statistics.median(d_done)
        bad = wrong(result.console, args.tokens)
        errors = sum(1 for s in result.console if s.error)
        writes = f"{result.writes:.1f}"
        kb = f"{result.kb_per_prediction:.0f}" if result.kb_per_prediction is not None else "—"
        print(
            f"{result.executor:<10} {result.n:>4} {result.n * 1000 // result.delay:>6} │ "
            f"{pct(c_ttft, 0.5):>8.0f} / {pct(d_ttft, 0.5):<7.0f} "
            f"{pct(c_ttft, 0.99):>5.0f} / {pct(d_ttft, 0.99):<5.0f} │ "
            f"{pct(c_done, 0.5):>7.2f} / {pct(d_done, 0.5):<7.2f} {ratio:>6.3f} "
            f"{pct(c_done, 0.99):>5.2f} / {pct(d_done, 0.99):<5.2f} │ "
            f"{bad:>5} {errors:>6} {writes:>6} {kb:>7}"
        )
        for stream in result.console:
            if stream.error:
                print(f"    error: {stream.error}")
                break
    print(
        "\ntok/s: tokens per second, all streams together. "
        "TTFT and done: from the submit (console) or the create call (direct). wrong: "
        "streams whose assembled text differs from the final output. writes: rows written "
        "per prediction (its insert included). KB/pred: the runner process's resident "
        "memory growth per prediction in flight."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1:20,50:20,200:200", help="N:MS,N:MS,...")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--executors", default="inline,celery")
    parser.add_argument(
        "--ramp", type=float, default=25.0, help="new streams per second (0: all at once)"
    )
    parser.add_argument(
        "--submit", choices=sorted(SUBMITS), default="socket", help="feed websocket or web form"
    )
    parser.add_argument("--prepare", metavar="SANDBOX_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        seed(args.prepare)
        return
    levels = []
    for level in args.levels.split(","):
        n, _, delay = level.partition(":")
        levels.append((int(n), int(delay or 20)))
    executors = args.executors.split(",")
    redis_url = os.environ.get("REDIS_URL", REDIS_DEFAULT)
    if not reachable(redis_url, 6379):
        print(f"No Redis at {redis_url}: skipping the celery executors.")
        executors = [e for e in executors if not e.startswith("celery")]

    var_dir = tempfile.mkdtemp(prefix="bench-engine-")
    os.environ.update(
        {"VAR_DIR": var_dir, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "project.settings"}
    )
    os.environ.pop("REDIS_URL", None)
    try:
        with run_sandbox_server() as sandbox_url, scratch_database() as database_url:
            os.environ["DATABASE_URL"] = database_url
            cookies = prepare(sandbox_url)
            pace = f"{args.ramp:g} new streams per second" if args.ramp else "all at once"
            print(
                f"{args.tokens} tokens per stream, {pace}, submitted by {args.submit}; "
                f"database {database_url.split(':')[0]}; sandbox {sandbox_url}"
            )
            results: list[Result] = []
            for executor in executors:
                results += run_console(executor, levels, args, cookies, redis_url)
            direct = run_direct(sandbox_url, levels, args)
            report(results, direct, args)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
