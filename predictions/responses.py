"""Small HTTP answers the edges share."""

from django.http import HttpRequest, HttpResponseRedirect


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
