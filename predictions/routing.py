"""Websocket routes (mounted by project/asgi.py)."""

from django.urls import path, re_path

from . import consumers

websocket_urlpatterns = [
    path("ws/predictions/", consumers.FeedConsumer.as_asgi()),
    path("ws/predictions/<uuid:pk>/", consumers.PredictionConsumer.as_asgi()),
    # Last: any other path is closed cleanly (URLRouter would raise, a 500 handshake).
    re_path(r"", consumers.UnknownPathConsumer.as_asgi()),
]
