"""The gateway: Replicate's HTTP API under /api/v1/, for the official clients with a
personal key (see predictions/gateway.py)."""

from django.urls import path

from . import gateway, openapi

app_name = "api"

urlpatterns = [
    path("openapi.json", openapi.openapi_json, name="openapi"),
    path("v1/streams/<str:token>", gateway.stream, name="stream"),
]
