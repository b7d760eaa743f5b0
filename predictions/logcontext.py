"""Which prediction a log line is about, on every line a runner logs (and every line
logged by what it calls: the upstream module, httpx, the database).

The runner calls `follow(run)` as it starts; the value lives in a context variable, so
the runner's task and the tasks it starts see it, and other predictions' do not. The
`PredictionContext` filter (LOGGING in settings) adds `prediction_id` and `upstream_id`
to each record; the JSON formatter writes them as fields.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

_current: ContextVar[Any] = ContextVar("console_prediction", default=None)


def follow(run: Any) -> None:
    """Log lines from here on (in this task and its children) are about `run` (any object
    with `pk` and `upstream_id`; read at each line, so the upstream id appears once known)."""
    _current.set(run)


class PredictionContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        run = _current.get()
        if run is not None and not hasattr(record, "prediction_id"):
            record.prediction_id = str(run.pk)
            record.upstream_id = run.upstream_id or None
        return True
