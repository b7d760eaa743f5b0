from django.urls import path

from . import accounts, views, webhooks

app_name = "predictions"

urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    path("models/<str:owner>/<str:name>/", views.model_page, name="model"),
    path("models/<str:owner>/<str:name>/snippet/", views.model_snippet, name="snippet"),
    path("predictions/", views.history, name="history"),
    path("predictions/<uuid:pk>/", views.prediction_detail, name="detail"),
    path("predictions/<uuid:pk>/cancel/", views.prediction_cancel, name="cancel"),
    path("predictions/<uuid:pk>/rerun/", views.prediction_rerun, name="rerun"),
    path("predictions/<uuid:pk>/files/<int:position>/", views.output_file, name="file"),
    path("account/keys/", accounts.api_keys, name="api_keys"),
    path("account/keys/<int:pk>/revoke/", accounts.revoke_api_key, name="revoke_api_key"),
    path("account/api/", accounts.use_from_code, name="use_from_code"),
    path("webhooks/replicate/", webhooks.replicate_webhook, name="webhook"),
]
