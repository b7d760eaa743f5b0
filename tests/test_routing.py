"""Who may open a websocket at all: the Origin check, through the real ASGI application.

A console at http://127.0.0.1:8000: only its own pages (same scheme, host and port) or a
CSRF_TRUSTED_ORIGINS entry may open a socket, as Django's CSRF check demands of forms.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

HOST = "127.0.0.1:8000"


async def handshake(origin: str | None, host: str = HOST, **headers: str) -> bool:
    """Whether the handshake for the feed gets past the origin check. (An anonymous
    visitor is let in, then closed with 4403: that is the consumer's answer, not ours.)"""
    sent = [(b"host", host.encode())]
    if origin is not None:
        sent.append((b"origin", origin.encode()))
    sent += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    socket = WebsocketCommunicator(application, "/ws/predictions/", headers=sent)
    connected, _ = await socket.connect()
    if connected:
        assert await socket.receive_output() == {"type": "websocket.close", "code": 4403}
    return connected


async def test_the_consoles_own_pages_may_connect() -> None:
    assert await handshake("http://127.0.0.1:8000")
    assert await handshake("http://localhost:8000", host="localhost:8000")


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another port of the same host
        "https://127.0.0.1",  # another scheme (and port)
        "https://127.0.0.1:8000",  # another scheme
        "http://127.0.0.1",  # the default port is another port
        "http://localhost:8000",  # another host name for the same machine
        "https://evil.example",
        "null",  # sandboxed frames, file: pages
    ],
)
async def test_other_origins_are_refused(origin: str) -> None:
    assert not await handshake(origin)


async def test_a_handshake_without_origin_is_refused() -> None:
    assert not await handshake(None)


async def test_a_host_outside_allowed_hosts_is_refused_even_from_itself() -> None:
    # DNS rebinding: evil.example resolves to us, and its page is "same origin" with it.
    assert not await handshake("http://evil.example:8000", host="evil.example:8000")


async def test_csrf_trusted_origins_may_connect(settings: Any) -> None:
    """Behind a TLS proxy the console sees plain ws on its own port."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "console.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.com", "https://*.team.example"]

    assert await handshake("https://console.example.com", host="console.example.com")
    assert await handshake("https://app.team.example", host="console.example.com")
    assert not await handshake("https://console.example.com:8443", host="console.example.com")
    assert not await handshake("http://console.example.com:8000", host="console.example.com")
    assert not await handshake("http://app.team.example", host="console.example.com")


async def test_a_proxy_saying_https_makes_the_own_origin_https(settings: Any) -> None:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "console.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    host = "console.example.com"

    assert await handshake("https://console.example.com", host=host, x_forwarded_proto="https")
    assert not await handshake("http://console.example.com", host=host, x_forwarded_proto="https")
    assert not await handshake("https://console.example.com", host=host)
