"""Settings for console processes that tests start: the project's, plus knobs tests turn.

PREDICTION_LEASE_SECONDS short so a killed runner's prediction is resumed within seconds;
a queue of the test's own so stray messages from other runs never reach its workers; a
channel-layer pool that survives bursts (redis-py's default pool raises "Too many
connections" at 100 connections in use: 200 browsers connecting at once crash consumers);
without Redis, the engine's lighter in-memory layer (see predictions.events).
"""

import os

from project.settings import *  # noqa: F403

PREDICTION_LEASE_SECONDS = float(os.environ.get("PREDICTION_LEASE_SECONDS", "30"))
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")

if REDIS_URL:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [  # noqa: F405
        {"address": REDIS_URL, "max_connections": 1000}  # noqa: F405
    ]
else:
    CHANNEL_LAYERS["default"]["BACKEND"] = "predictions.events.InMemoryChannelLayer"  # noqa: F405
