from django.urls import path, re_path

from sandbox import views

app_name = "sandbox"

# No trailing slashes: the client calls /v1/predictions exactly.
urlpatterns = [
    path("", views.root, name="root"),
    path("v1/predictions", views.predictions, name="predictions"),
    path("v1/predictions/<str:prediction_id>", views.prediction, name="prediction"),
    path("v1/predictions/<str:prediction_id>/cancel", views.cancel, name="cancel"),
    path("v1/streams/<str:key>", views.stream, name="stream"),
    path("v1/models", views.models, name="models"),
    path("v1/models/<str:owner>/<str:name>", views.model, name="model"),
    path("v1/models/<str:owner>/<str:name>/versions", views.model_versions, name="versions"),
    path("v1/models/<str:owner>/<str:name>/examples", views.model_examples, name="examples"),
    path("v1/models/<str:owner>/<str:name>/readme", views.model_readme, name="readme"),
    path(
        "v1/models/<str:owner>/<str:name>/versions/<str:version_id>",
        views.model_version,
        name="version",
    ),
    path(
        "v1/models/<str:owner>/<str:name>/predictions",
        views.latest_version_predictions,
        name="model_predictions",
    ),
    path(
        "v1/deployments/<str:owner>/<str:name>/predictions",
        views.latest_version_predictions,
        {"deployment": True},
        name="deployment_predictions",
    ),
    path("v1/files", views.files, name="files"),
    path("v1/files/<str:file_id>", views.file, name="file"),
    path("v1/files/<str:file_id>/download", views.file_download, name="file_download"),
    path("v1/account", views.account, name="account"),
    path("v1/webhooks/default/secret", views.webhook_secret, name="webhook_secret"),
    path("delivery/<str:prediction_id>/<str:filename>", views.delivery, name="delivery"),
    path("p/<str:prediction_id>", views.web, name="web"),
    path("m/<str:owner>/<str:name>", views.model_web, name="model_web"),
    re_path(r"^v1/", views.unknown),
]
