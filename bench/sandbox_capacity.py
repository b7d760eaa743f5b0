"""How many concurrent sandbox/text streams one sandbox process keeps on time.

Starts one sandbox (daphne) process. For each level N, client worker processes open N
``client.async_stream("sandbox/text", ...)`` streams at 50 tokens/s each
(``token_delay_ms=20``) with the official client. Streams start at ``--ramp`` per second
(opening a stream costs two requests, and one process serves a few hundred requests a
second), and every stream lasts until all N have run side by side for ``--hold`` seconds.

Each token's lateness is its arrival time minus when it was due; a stream's schedule is
anchored on its most punctual token (arrival - index x 20 ms, minimised), so lateness is
the delay *added* while streaming. The wait for the first token is reported as TTFT, and
"hold max" is the worst lateness while all N streams were open at once (none opening or
closing). The answer: the largest N at which no token at all was more than 100 ms late.

    .venv/bin/python bench/sandbox_capacity.py [--levels 50,100,200,400,800,1600]
        [--ramp 50] [--hold 3] [--workers 1] [--application project.asgi:application]

Clients and server share the machine, so the clients' CPU is part of the result; the
table shows both, and the figure is a lower bound for the server.
"""

import argparse
import asyncio
import math
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import replicate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sandbox_server import TEST_TOKEN, run_sandbox_server  # noqa: E402

DELAY = 0.020  # 50 tokens per second
LATE = 0.100  # the bar: no token later than this
# Rate limits would throttle the creates; this spec lifts them for the run.
TOKEN = f"{TEST_TOKEN}:create_limit=0,read_limit=0"


@dataclass
class StreamResult:
    tokens: int
    ttft: float  # from the create call to the first token
    lateness: list[float]
    arrivals: list[float]  # wall-clock times, comparable across client processes
    error: str = ""


@dataclass
class WorkerResult:
    streams: list[StreamResult]
    cpu_seconds: float


async def one_stream(client: replicate.Client, index: int, tokens: int) -> StreamResult:
    model_input = {
        "prompt": f"capacity {index}",
        "max_tokens": tokens,
        "token_delay_ms": int(DELAY * 1000),
        "seed": index,
    }
    started = time.time()
    arrivals = []
    try:
        async for event in await client.async_stream("sandbox/text", input=model_input):
            if event.event.value == "output":
                arrivals.append(time.time())
    except Exception as exc:  # a failed stream counts against the level, not the run
        return StreamResult(len(arrivals), 0.0, [], [], f"{type(exc).__name__}: {exc}")
    if not arrivals:
        return StreamResult(0, 0.0, [], [], "no tokens")
    anchor = min(arrival - i * DELAY for i, arrival in enumerate(arrivals))
    lateness = [arrival - (anchor + i * DELAY) for i, arrival in enumerate(arrivals)]
    return StreamResult(len(arrivals), arrivals[0] - started, lateness, arrivals)


async def run_streams(
    url: str, indexes: list[int], tokens: int, start_at: float, ramp: float
) -> list[StreamResult]:
    # No 100-connection cap: every open stream holds a connection.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    client = replicate.Client(
        api_token=TOKEN,
        base_url=url,
        transport=httpx.AsyncHTTPTransport(limits=limits),
        timeout=httpx.Timeout(60.0),
    )

    async def delayed(index: int) -> StreamResult:
        await asyncio.sleep(max(0.0, start_at + index / ramp - time.time()))
        return await one_stream(client, index, tokens)

    return await asyncio.gather(*(delayed(index) for index in indexes))


def worker(args: tuple[str, list[int], int, float, float]) -> WorkerResult:
    """One client process: its share of the streams on its own event loop."""
    url, indexes, tokens, start_at, ramp = args
    streams = asyncio.run(run_streams(url, indexes, tokens, start_at, ramp))
    return WorkerResult(streams, time.process_time())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid() -> int | None:
    """The daphne child of this process (found through /proc: no psutil here)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"daphne" in cmdline:
            return int(entry.name)
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_level(url: str, n: int, args: argparse.Namespace, pid: int | None) -> dict:
    tokens = math.ceil((n / args.ramp + args.hold) / DELAY)
    start_at = time.time() + 0.5
    shares = [list(range(n))[w :: args.workers] for w in range(args.workers)]
    jobs = [(url, share, tokens, start_at, args.ramp) for share in shares if share]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    wall_before = time.monotonic()
    # Fresh client processes per level, so their CPU time is this level's alone.
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        outcomes = pool.map(worker, jobs)
    wall = time.monotonic() - wall_before
    results = [stream for outcome in outcomes for stream in outcome.streams]
    failed = [r for r in results if r.error or r.tokens != tokens]
    lateness = [late for r in results for late in r.lateness]
    # The hold: all N streams open at once, none still opening or closing.
    hold_from = max((r.arrivals[0] for r in results if r.arrivals), default=0.0)
    hold_to = min((r.arrivals[-1] for r in results if r.arrivals), default=0.0)
    held = [
        late
        for r in results
        for late, at in zip(r.lateness, r.arrivals, strict=True)
        if hold_from <= at <= hold_to
    ]
    ttfts = [r.ttft for r in results if not r.error]
    nan = float("nan")
    return {
        "n": n,
        "tokens": tokens,
        "ok": len(results) - len(failed),
        "errors": sorted({r.error for r in failed if r.error})[:2],
        "ttft_p50": statistics.median(ttfts) if ttfts else nan,
        "ttft_max": max(ttfts, default=nan),
        "late_p50": percentile(lateness, 0.5) if lateness else nan,
        "late_p99": percentile(lateness, 0.99) if lateness else nan,
        "late_max": max(lateness, default=nan),
        "hold_max": max(held, default=nan),
        "server_cpu": (cpu_seconds(pid) - cpu_before) / wall if pid else nan,
        "client_cpu": sum(outcome.cpu_seconds for outcome in outcomes) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,100,200,400,800,1600")
    parser.add_argument("--ramp", type=float, default=50.0, help="new streams per second")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds all N run together")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument(
        "--application",
        default="project.asgi:application",
        help="the ASGI app daphne serves",
    )
    args = parser.parse_args()

    print(
        f"{os.cpu_count()} CPUs, {args.workers} client process(es); streams at 50 tokens/s, "
        f"opened {args.ramp:g}/s, all N together for {args.hold:g} s\n"
    )
    header = (
        f"{'streams':>7} {'ok':>5} {'tok/str':>7} {'TTFT p50':>9} {'TTFT max':>9} "
        f"{'late p50':>9} {'late p99':>9} {'late max':>9} {'hold max':>9} {'server':>7} "
        f"{'clients':>7}  verdict"
    )
    print(header)
    print("-" * len(header))
    best = 0
    with run_sandbox_server(application=args.application) as url:
        pid = server_pid()
        run_level(url, 10, args, pid)  # warm-up: first requests pay for imports and caches
        for n in [int(level) for level in args.levels.split(",")]:
            row = run_level(url, n, args, pid)
            on_time = row["ok"] == n and row["late_max"] <= LATE
            verdict = "on time" if on_time else "LATE" if row["ok"] == n else "FAILED"
            print(
                f"{n:>7} {row['ok']:>5} {row['tokens']:>7} "
                f"{row['ttft_p50'] * 1000:>7.0f}ms {row['ttft_max'] * 1000:>7.0f}ms "
                f"{row['late_p50'] * 1000:>7.1f}ms {row['late_p99'] * 1000:>7.1f}ms "
                f"{row['late_max'] * 1000:>7.1f}ms {row['hold_max'] * 1000:>7.1f}ms "
                f"{row['server_cpu']:>7.0%} "
                f"{row['client_cpu']:>7.0%}  {verdict}",
                flush=True,
            )
            if row["errors"]:
                print(f"{'':>7} errors: {row['errors']}")
            if not on_time:
                break
            best = n
            time.sleep(1)  # let the server settle between levels
    print(
        f"\nLargest N with no token later than {LATE * 1000:.0f} ms: {best or 'none'}"
        f" ({best * 50} tokens/s through one sandbox process)"
    )


if __name__ == "__main__":
    main()
