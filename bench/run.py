"""`make bench`: the console's benchmarks, one after another, each printing its table.

    .venv/bin/python bench/run.py [--quick]

- bench/engine.py: console vs direct streams, both executors (a few minutes);
- bench/sandbox_capacity.py, when present: how many streams one sandbox keeps on time;
- bench/history.py, when present: the history page over many predictions.

`--quick` runs smaller levels of each, for a smoke test of the benchmarks themselves.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# (script, full arguments, quick arguments)
BENCHMARKS = [
    ("engine.py", [], ["--levels", "1:20,20:20"]),
    ("sandbox_capacity.py", ["--levels", "50,100,200,400"], ["--levels", "50"]),
    ("history.py", [], ["--rows", "5000"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small levels only")
    args = parser.parse_args()
    failed = []
    for script, full, quick in BENCHMARKS:
        path = BENCH / script
        if not path.exists():
            continue
        print(f"\n=== {script} ===", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(path), *(quick if args.quick else full)])
        print(f"({script}: {time.monotonic() - started:.0f} s)", flush=True)
        if result.returncode:
            failed.append(script)
    if failed:
        print(f"\nFailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
