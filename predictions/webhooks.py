"""Signed webhook receiver (placeholder until the engine issue lands)."""

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@login_not_required
@require_POST
def replicate_webhook(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=400)
