"""The gateway: Replicate's HTTP API under /api/v1/, for the official clients with a
personal key (see predictions/gateway.py). No trailing slashes: the clients call
/v1/predictions exactly."""

from django.urls import path, re_path

from . import gateway, openapi, sse, uploads

app_name = "api"

urlpatterns = [
    path("openapi.json", openapi.openapi_json, name="openapi"),
    path("v1/streams/<str:token>", sse.stream, name="stream"),
    path("v1/account", gateway.account, name="account"),
    path("v1/models", gateway.models, name="models"),
    path("v1/models/<str:owner>/<str:name>", gateway.model, name="model"),
    path("v1/models/<str:owner>/<str:name>/versions", gateway.model_versions, name="versions"),
    path(
        "v1/models/<str:owner>/<str:name>/versions/<str:version_id>",
        gateway.model_version,
        name="version",
    ),
    path(
        "v1/models/<str:owner>/<str:name>/predictions",
        gateway.model_predictions,
        name="model_predictions",
    ),
    path("v1/predictions", gateway.predictions, name="predictions"),
    path("v1/predictions/<uuid:prediction_id>", gateway.prediction, name="prediction"),
    path("v1/predictions/<uuid:prediction_id>/cancel", gateway.cancel, name="cancel"),
    path(
        "v1/predictions/<uuid:prediction_id>/files/<int:position>",
        gateway.output_file,
        name="file",
    ),
    path("v1/files", uploads.files, name="files"),
    path("v1/files/<str:file_id>", uploads.file, name="upload"),
    path("v1/files/<str:file_id>/download", uploads.download, name="upload-download"),
    path("v1/webhooks/default/secret", gateway.webhook_secret, name="webhook_secret"),
    # Last: anything else under /api/ is Replicate's 404 (JSON, never a page or a redirect).
    re_path(r"", gateway.unknown),
]
