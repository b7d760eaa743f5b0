"""The gateway: Replicate's HTTP API under /api/v1/, for the official clients with a
personal key (see predictions/gateway.py)."""

from django.urls import path

from . import sse

app_name = "api"

urlpatterns = [
    path("v1/streams/<str:token>", sse.stream, name="stream"),
]
