"""The gateway: the console speaks Replicate's HTTP API (/api/v1/), so the official clients
work unchanged against it with a personal key (models.ApiKey). Every create goes through
the same form and engine as the web UI."""

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse


@login_not_required
def stream(request: HttpRequest, token: str) -> HttpResponse:
    return JsonResponse(
        {"title": "Not found", "detail": "Not built yet.", "status": 404}, status=404
    )
