"""How fast the history page is with 100,000 predictions, and how many queries it makes.

Builds a scratch database (SQLite in a temporary directory, or the empty PostgreSQL
database named by BENCH_DATABASE_URL), fills it with predictions from a few users and
models, then renders /predictions/ through Django's test client: first page, a page deep
in the history, filters, search, as a member and as staff. For each it prints the median
time over several requests and the number of SQL queries.

    .venv/bin/python bench/history.py [--rows 100000] [--repeat 5]

The number of queries must be the same for every page (a constant, whatever the page
size or depth); the time should not grow with depth (keyset pagination, not OFFSET).
"""

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure() -> None:
    """Point the settings at a scratch database before Django loads them."""
    os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="bench-history-")
    atexit.register(shutil.rmtree, os.environ["VAR_DIR"], ignore_errors=True)
    os.environ["DEBUG"] = "1"
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("DATABASE_URL", None)
    if os.environ.get("BENCH_DATABASE_URL"):
        os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ["LOG_LEVEL"] = "WARNING"


def fill(rows: int) -> None:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from predictions.models import CatalogModel, OutputFile, Prediction

    users = [User.objects.create_user(f"user{i}") for i in range(5)]
    models = [
        CatalogModel.objects.create(owner="sandbox", name=n) for n in ("text", "image", "slow")
    ]
    words = ["lighthouse", "fox", "harbor", "meadow", "lantern"]
    words += ["copper", "glacier", "orbit", "velvet", "ember"]
    statuses = ["succeeded"] * 8 + ["failed", "canceled"]
    start = timezone.now() - timedelta(seconds=rows * 30)
    batch: list[Prediction] = []
    began = time.monotonic()
    for i in range(rows):
        model = models[i % len(models)]
        prompt = f"a {words[i % 10]} and a {words[(i * 7) % 10]} number {i}"
        created = start + timedelta(seconds=i * 30)
        batch.append(
            Prediction(
                owner=users[i % len(users)],
                model=model,
                model_ref=model.ref,
                status=statuses[i % len(statuses)],
                input={"prompt": prompt, "seed": i},
                input_text=f"{prompt} {i}",
                created_at=created,
                started_at=created + timedelta(seconds=1),
                completed_at=created + timedelta(seconds=4),
                text_output="lorem ipsum " * 40 if model.name == "text" else "",
                logs="step\n" * 20,
            )
        )
        if len(batch) == 5000:
            saved = Prediction.objects.bulk_create(batch)
            OutputFile.objects.bulk_create(
                OutputFile(
                    prediction=p,
                    position=0,
                    file="outputs/bench.png",
                    content_type="image/png",
                    size=1000,
                    sha256="0" * 64,
                    original_url="https://replicate.delivery/bench.png",
                )
                for p in saved
                if p.model_ref == "sandbox/image"
            )
            batch = []
    if batch:
        Prediction.objects.bulk_create(batch)
    print(f"filled {rows:,} predictions in {time.monotonic() - began:.1f} s")


def measure(client, path: str, repeat: int) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - began)
        assert response.status_code == 200, (path, response.status_code)
        queries = len(captured)
    rows = response.content.decode().count("<tr data-prediction=")
    return statistics.median(times), queries, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    configure()
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from predictions.models import Prediction, encode_cursor

    call_command("migrate", verbosity=0)
    fill(args.rows)

    member = User.objects.get(username="user0")
    staff = User.objects.create_user("staff", is_staff=True)
    mine = Prediction.objects.filter(owner=member).order_by("-created_at", "-pk")
    deep_mine = encode_cursor(mine[int(mine.count() * 0.9)])
    everyone = Prediction.objects.order_by("-created_at", "-pk")
    deep_all = encode_cursor(everyone[int(args.rows * 0.9)])
    day = everyone[args.rows // 2].created_at.date()

    cases = [
        ("member", "first page", "/predictions/"),
        ("member", "second page", f"/predictions/?before={encode_cursor(mine[24])}"),
        ("member", "first page, 100 rows", "/predictions/?per_page=100"),
        ("member", "90% deep", f"/predictions/?before={deep_mine}"),
        ("member", "model + status", "/predictions/?model=sandbox/image&status=succeeded"),
        ("member", "search 'copper'", "/predictions/?q=copper"),
        ("member", "search, no match", "/predictions/?q=zebra"),
        ("member", "one day", f"/predictions/?since={day}&until={day}"),
        ("staff", "first page", "/predictions/"),
        ("staff", "first page, 100 rows", "/predictions/?per_page=100"),
        ("staff", "90% deep", f"/predictions/?before={deep_all}"),
        ("staff", "owner filter", f"/predictions/?owner={member.pk}"),
        ("staff", "search 'harbor'", "/predictions/?q=harbor&per_page=50"),
    ]
    clients = {}
    for who, user in (("member", member), ("staff", staff)):
        clients[who] = Client(HTTP_HOST="localhost")
        clients[who].force_login(user)
        clients[who].get("/predictions/")  # warm up templates and the session

    print(f"\n{'who':<7} {'page':<24} {'median ms':>10} {'queries':>8} {'rows':>5}")
    per_role: dict[str, set[int]] = {}
    for who, label, path in cases:
        seconds, queries, rows = measure(clients[who], path, args.repeat)
        if rows:
            # An empty page skips the thumbnails query; pages with rows must all agree.
            per_role.setdefault(who, set()).add(queries)
        print(f"{who:<7} {label:<24} {seconds * 1000:>10.1f} {queries:>8} {rows:>5}")
    constant = all(len(v) == 1 for v in per_role.values())
    print("\nqueries per page with rows:", {k: sorted(v) for k, v in per_role.items()}, end=" ")
    print("(constant)" if constant else "(NOT constant)")
    if not constant:
        sys.exit(1)


if __name__ == "__main__":
    main()
