"""Websocket routes (mounted by project/asgi.py)."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/predictions/", consumers.FeedConsumer.as_asgi()),
    path("ws/predictions/<uuid:pk>/", consumers.PredictionConsumer.as_asgi()),
]
