"""Settings for console processes that tests start: the project's, plus knobs tests turn.

PREDICTION_LEASE_SECONDS short so a killed runner's prediction is resumed within seconds;
a queue of the test's own so stray messages from other runs never reach its workers.
"""

import os

from project.settings import *  # noqa: F403

PREDICTION_LEASE_SECONDS = float(os.environ.get("PREDICTION_LEASE_SECONDS", "30"))
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
