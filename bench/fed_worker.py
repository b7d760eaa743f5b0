"""The other way to run predictions in a Celery worker, kept for the bench's comparison.

`celery -A bench.fed_worker worker --pool solo`: each task hands its prediction to the
process's event loop and returns at once, so one process runs every prediction it
receives side by side. The console's own worker (predictions.tasks, `--pool threads`)
instead keeps one pool thread waiting per prediction. bench/engine.py runs both
("celery-fed" and "celery") and reports the difference.
"""

import asyncio
import sys
from pathlib import Path
from typing import Any

from celery import signals

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from project.celery import app  # noqa: E402

__all__ = ["app"]


@signals.worker_ready.connect
def feed_the_loop(**kwargs: Any) -> None:
    from predictions import runner, tasks

    def run_in_background(prediction_id: str) -> str:
        asyncio.run_coroutine_threadsafe(
            runner.run_prediction(prediction_id), tasks.worker_loop.loop()
        )
        return "fed"

    tasks.run_prediction.run = run_in_background
