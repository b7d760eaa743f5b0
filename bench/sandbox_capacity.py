"""How many concurrent sandbox/text streams one sandbox process keeps on time.

Starts one sandbox (daphne) process, then for each N in the levels runs N concurrent
``client.async_stream("sandbox/text", ...)`` streams at 50 tokens/s (``token_delay_ms=20``)
with the official client, from client worker processes, and measures every token's
lateness: its arrival time minus when it was due. The schedule of a stream is anchored on
its most punctual token (arrival - index x 20 ms, minimised), so the figure is delay
*added* while streaming; the wait for the first token is reported separately (TTFT).

The answer: the largest N at which no token was more than 100 ms late.

    .venv/bin/python bench/sandbox_capacity.py [--levels 50,100,200,400,800]
        [--tokens 100] [--workers 1]

Clients and server share the machine, so on a small one the clients' own CPU use is part
of the result: the figure is a lower bound for the server.
"""

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import httpx
import replicate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sandbox_server import TEST_TOKEN, run_sandbox_server  # noqa: E402

DELAY = 0.020  # 50 tokens per second
LATE = 0.100  # the bar: no token later than this
# Rate limits would throttle the burst of creates; this spec lifts them for the run.
TOKEN = f"{TEST_TOKEN}:create_limit=0,read_limit=0"


@dataclass
class StreamResult:
    tokens: int
    ttft: float  # create call to first token
    lateness: list[float]
    error: str = ""


async def one_stream(client: replicate.Client, index: int, tokens: int) -> StreamResult:
    model_input = {
        "prompt": f"capacity {index}",
        "max_tokens": tokens,
        "token_delay_ms": int(DELAY * 1000),
        "seed": index,
    }
    started = time.monotonic()
    arrivals = []
    try:
        async for event in await client.async_stream("sandbox/text", input=model_input):
            if event.event.value == "output":
                arrivals.append(time.monotonic())
    except Exception as exc:  # a failed stream counts against the level, not the run
        return StreamResult(len(arrivals), 0.0, [], f"{type(exc).__name__}: {exc}")
    if not arrivals:
        return StreamResult(0, 0.0, [], "no tokens")
    anchor = min(arrival - i * DELAY for i, arrival in enumerate(arrivals))
    lateness = [arrival - (anchor + i * DELAY) for i, arrival in enumerate(arrivals)]
    return StreamResult(len(arrivals), arrivals[0] - started, lateness)


async def run_streams(url: str, count: int, tokens: int, start_at: float) -> list[StreamResult]:
    # One pool without the default 100-connection cap: every stream holds a connection.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    client = replicate.Client(
        api_token=TOKEN,
        base_url=url,
        transport=httpx.AsyncHTTPTransport(limits=limits),
        timeout=httpx.Timeout(60.0),
    )
    await asyncio.sleep(max(0.0, start_at - time.time()))
    return await asyncio.gather(*(one_stream(client, i, tokens) for i in range(count)))


def worker(args: tuple[str, int, int, float]) -> list[StreamResult]:
    """One client process: its share of the streams on its own event loop."""
    url, count, tokens, start_at = args
    return asyncio.run(run_streams(url, count, tokens, start_at))


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


def run_level(pool: Pool, url: str, n: int, tokens: int, workers: int, pid: int | None) -> dict:
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    start_at = time.time() + 0.5
    cpu_before = cpu_seconds(pid) if pid else 0.0
    wall_before = time.monotonic()
    jobs = [(url, share, tokens, start_at) for share in shares if share]
    results = [r for batch in pool.map(worker, jobs) for r in batch]
    wall = time.monotonic() - wall_before - 0.5
    cpu = (cpu_seconds(pid) - cpu_before) / wall if pid else float("nan")
    failed = [r for r in results if r.error or r.tokens != tokens]
    lateness = [late for r in results for late in r.lateness]
    ttfts = [r.ttft for r in results if not r.error]
    return {
        "n": n,
        "ok": len(results) - len(failed),
        "errors": sorted({r.error for r in failed if r.error})[:2],
        "tokens": sum(r.tokens for r in results),
        "ttft_p50": statistics.median(ttfts) if ttfts else float("nan"),
        "ttft_max": max(ttfts, default=float("nan")),
        "late_p50": percentile(lateness, 0.5) if lateness else float("nan"),
        "late_p99": percentile(lateness, 0.99) if lateness else float("nan"),
        "late_max": max(lateness, default=float("nan")),
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,100,200,400,800,1600")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per stream")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]

    print(
        f"{os.cpu_count()} CPUs; {args.workers} client process(es); "
        f"{args.tokens} tokens per stream at {1 / DELAY:.0f} tokens/s\n"
    )
    header = (
        f"{'streams':>8} {'ok':>6} {'tokens':>8} {'TTFT p50':>9} {'TTFT max':>9} "
        f"{'late p50':>9} {'late p99':>9} {'late max':>9} {'server CPU':>10}  verdict"
    )
    print(header)
    print("-" * len(header))
    best = 0
    context = multiprocessing.get_context("spawn")
    with run_sandbox_server() as url, context.Pool(args.workers) as pool:
        pid = server_pid()
        for n in levels:
            row = run_level(pool, url, n, args.tokens, args.workers, pid)
            on_time = row["ok"] == n and row["late_max"] <= LATE
            verdict = "on time" if on_time else "LATE" if row["ok"] == n else "FAILED"
            print(
                f"{n:>8} {row['ok']:>6} {row['tokens']:>8} "
                f"{row['ttft_p50'] * 1000:>7.0f}ms {row['ttft_max'] * 1000:>7.0f}ms "
                f"{row['late_p50'] * 1000:>7.1f}ms {row['late_p99'] * 1000:>7.1f}ms "
                f"{row['late_max'] * 1000:>7.1f}ms {row['cpu'] * 100:>9.0f}%  {verdict}",
                flush=True,
            )
            if row["errors"]:
                print(f"{'':>8} errors: {row['errors']}")
            if not on_time:
                break
            best = n
            time.sleep(1)  # let the server drain between levels
    print(
        f"\nLargest N with no token later than {LATE * 1000:.0f} ms: {best or 'none'}"
        f" ({best * 50 if best else 0} tokens/s through one sandbox process)"
    )


if __name__ == "__main__":
    main()
