"""A member's own account pages: personal API keys for the gateway (/account/keys/), and
how to use them from code (/account/api/)."""

from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .models import ApiKey, CatalogModel
from .responses import see_other

# How long a new key works; "never" is an empty choice.
EXPIRY_CHOICES = [("", "Never"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What it is for, e.g. “laptop notebooks” or “nightly batch”."
    )
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False, label="Expires")

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data["expires"]
        return timezone.now() + timedelta(days=int(days)) if days else None


@never_cache  # the page that shows a new key must not be kept anywhere
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert user.is_authenticated  # LoginRequiredMiddleware let the request in
    form = ApiKeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        key, plaintext = ApiKey.issue(user, form.cleaned_data["name"], form.expires_at())
        # Shown in this answer only, never stored: reloading it asks to send the form again.
        created = {"key": key, "plaintext": plaintext}
        form = ApiKeyForm()
    keys = ApiKey.objects.filter(user=user).order_by("revoked_at", "-created_at")
    context = {
        "nav": "account",
        "form": form,
        "created": created,
        "keys": keys,
        "api_base": request.build_absolute_uri("/api"),
        "now": timezone.now(),
    }
    status = 400 if request.method == "POST" and not form.is_valid() and not created else 200
    return render(request, "account/keys.html", context, status=status)


@require_POST
def revoke_api_key(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    assert user.is_authenticated  # LoginRequiredMiddleware let the request in
    key = ApiKey.objects.filter(pk=pk, user=user).first()
    if key is None:
        raise Http404("No such key.")
    key.revoke()
    messages.success(request, f"Revoked “{key.name}” ({key.prefix}…): it stops working now.")
    return see_other(reverse("predictions:api_keys"))


@require_GET
def use_from_code(request: HttpRequest) -> HttpResponse:
    first = CatalogModel.objects.runnable_by(request.user).order_by("owner", "name").first()
    context = {
        "nav": "account",
        "api_base": request.build_absolute_uri("/api"),
        "example": first.ref if first else "owner/model",
        "create_limit": settings.API_CREATE_RATE_LIMIT.replace("/", " a "),
        "call_limit": settings.API_RATE_LIMIT.replace("/", " a "),
    }
    return render(request, "account/api.html", context)
