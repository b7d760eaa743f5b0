from django.conf import settings
from django.contrib import admin
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import URLPattern, URLResolver, include, path

from predictions import health

admin.site.site_header = "Replicate console administration"
admin.site.site_title = "Replicate console administration"
admin.site.index_title = "Console administration"

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("predictions.api_urls")),
    path("", include("predictions.urls")),
]

if settings.SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/", include("sandbox.urls")))


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400, or 413 when the body is over DATA_UPLOAD_MAX_MEMORY_SIZE: the product's pages.
    Rendered without the request's context: the failed request may be half read."""
    if isinstance(exception, RequestDataTooBig):
        limit_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024)
        return HttpResponse(render_to_string("413.html", {"limit_mb": limit_mb}), status=413)
    return HttpResponse(render_to_string("400.html"), status=400)


handler400 = bad_request
