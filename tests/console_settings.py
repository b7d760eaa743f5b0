"""Settings for console processes that tests start: the project's, plus a Celery queue of
the test's own, so stray messages from other runs never reach its workers."""

import os

from project.settings import *  # noqa: F403

CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
