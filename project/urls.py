from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.contrib.staticfiles.views import serve as serve_static
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, include, path, re_path

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("predictions.urls")),
]

if settings.SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/", include("sandbox.urls")))

if settings.DEBUG:

    @login_not_required  # the login page needs its stylesheet
    def static(request: HttpRequest, path: str) -> HttpResponseBase:
        return serve_static(request, path)

    # `make run` serves static files here (runserver --nostatic), not through runserver's
    # own static handler: that one bypasses Django's request handling, so a path such as
    # /static/%2e%2e/… was a 500 instead of the 400 any suspicious request gets.
    urlpatterns.append(re_path(r"^static/(?P<path>.*)$", static))
