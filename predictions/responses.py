"""Small HTTP answers the edges share: redirects, and Replicate-style JSON problems for the
gateway (/api/)."""

from typing import Any

from django.http import HttpRequest, HttpResponseRedirect, JsonResponse


def see_other(url: str) -> HttpResponseRedirect:
    """303: after a POST the browser GETs the new page (no "resubmit form?" on reload)."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def console_url(request: HttpRequest) -> str:
    """This console as the request reached it (scheme and host), for absolute URLs."""
    return request.build_absolute_uri("/").rstrip("/")


def problem(status: int, title: str, detail: str, **extra: Any) -> JsonResponse:
    """An error as Replicate answers it: RFC 7807 JSON."""
    body = {"title": title, "detail": detail, "status": status, **extra}
    return JsonResponse(body, status=status, content_type="application/problem+json")


def not_found() -> JsonResponse:
    # Replicate's body exactly: no title.
    body = {"detail": "The requested resource could not be found", "status": 404}
    return JsonResponse(body, status=404, content_type="application/problem+json")


def unauthenticated(presented: bool) -> JsonResponse:
    """401 for no key, or for one that is not a live key."""
    detail = "You did not pass an authentication token"
    if presented:
        detail = "You did not pass a valid authentication token"
    response = problem(401, "Unauthenticated", detail)
    response["WWW-Authenticate"] = "Bearer"
    return response
