"""The console's ASGI application with the inline executor's start-up/shutdown hooks, for
daphne processes that tests start (a no-op wrapper once project/asgi.py has them)."""

# isort: off
from project.asgi import application as project_application  # first: it sets Django up
from predictions.executors import ServerLifecycle

# isort: on

application = (
    project_application
    if isinstance(project_application, ServerLifecycle)
    else ServerLifecycle(project_application)
)
