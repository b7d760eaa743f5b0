"""Websocket routes, and the Origin check in front of them (both mounted by project/asgi.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path, re_path
from django.utils.http import is_same_domain

from . import consumers

websocket_urlpatterns = [
    path("ws/predictions/", consumers.FeedConsumer.as_asgi()),
    path("ws/predictions/<uuid:pk>/", consumers.PredictionConsumer.as_asgi()),
    # Last: any other path is closed cleanly (URLRouter would raise, a 500 handshake).
    re_path(r"", consumers.UnknownPathConsumer.as_asgi()),
]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    """The header's value if it was sent exactly once (twice is ambiguous: refused)."""
    values = [value for key, value in scope.get("headers", []) if key == name]
    return values[0].decode("latin1") if len(values) == 1 else None


def _scheme(scope: dict[str, Any]) -> str:
    """http or https, as Django's request.scheme would say for this handshake."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        # "HTTP_X_FORWARDED_PROTO" is the header x-forwarded-proto.
        header = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        value = _header(scope, header)
        if value is not None:
            return "https" if value.split(",", 1)[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Django's CSRF origin check (CsrfViewMiddleware), applied to a websocket handshake.

    The Origin must be the request's own origin — its scheme and Host header, the host
    being one of ALLOWED_HOSTS — or one of CSRF_TRUSTED_ORIGINS (`https://*.example.com`
    covers subdomains), compared exactly: scheme, host and port.
    """
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if origin is None:
        return False  # every browser sends one; a page cannot remove it
    # The request's own origin, as long as its host is one we serve.
    domain = split_domain_port(host)[0] if host is not None else ""
    own = f"{_scheme(scope)}://{host}"
    if domain and validate_host(domain, settings.ALLOWED_HOSTS) and origin == own:
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parts.netloc, pattern.netloc.lstrip("*"))
        for pattern in (urlsplit(entry) for entry in trusted if "*" in entry)
        if pattern.scheme == parts.scheme
    )


class OriginValidator:
    """Lets a websocket handshake through only from a page of this console.

    Browsers send cookies with a websocket handshake from any site, so this is the
    websocket's CSRF protection. Channels' AllowedHostsOriginValidator compares host
    names only: a page on another port or scheme of the same host got in.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
