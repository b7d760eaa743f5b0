"""The gateway: Replicate's HTTP API under /api/v1/, for the official clients with a
personal key (see predictions/gateway.py)."""

from django.urls import path

from . import sse, uploads

app_name = "api"

urlpatterns = [
    path("v1/streams/<str:token>", sse.stream, name="stream"),
    path("v1/files", uploads.files, name="files"),
    path("v1/files/<str:file_id>", uploads.file, name="file"),
    path("v1/files/<str:file_id>/download", uploads.download, name="file-download"),
]
