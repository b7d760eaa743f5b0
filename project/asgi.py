"""ASGI entry point: HTTP through Django, websockets through Channels (the tutorial's shape)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

try:
    from twisted.web import http as twisted_http
except ImportError:  # another ASGI server: it has its own reason phrases
    pass
else:
    # daphne passes only the status code on, and Twisted's table lacks these: without them
    # a 422 or 429 goes out as "HTTP/1.1 422 Unknown Status".
    twisted_http.RESPONSES.setdefault(422, b"Unprocessable Entity")
    twisted_http.RESPONSES.setdefault(429, b"Too Many Requests")
# Initialise Django (apps, models) before anything imports them.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from predictions.database import AuthMiddlewareStack  # noqa: E402
from predictions.executors import ServerLifecycle  # noqa: E402
from predictions.metrics import count_websockets  # noqa: E402
from predictions.routing import OriginValidator, websocket_urlpatterns  # noqa: E402

# ServerLifecycle starts the inline executor once per server process (resuming predictions
# left active) and lets running predictions hand back in order at shutdown.
application = ServerLifecycle(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Like AllowedHostsOriginValidator, but scheme and port must match too; like
            # Channels' AuthMiddlewareStack, but the user is read in a database thread.
            "websocket": count_websockets(
                OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
            ),
        }
    )
)
