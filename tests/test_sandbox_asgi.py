"""The optional middleware-free mount for the sandbox (sandbox.asgi.with_sandbox)."""

from typing import Any

import httpx
from django.core.asgi import get_asgi_application
from pytest_django.fixtures import Settings

from sandbox.asgi import with_sandbox


async def test_sandbox_paths_skip_the_middleware_and_the_rest_pass_through(
    settings: Settings,
):
    settings.SANDBOX_API_TOKENS = ["r8_mount"]
    passed_through = []

    async def console(scope: dict, receive: Any, send: Any) -> None:
        passed_through.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = with_sandbox(console)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        account = await http.get(
            "/sandbox/v1/account", headers={"Authorization": "Bearer r8_mount"}
        )
        other = await http.get("/predictions/")

    assert account.status_code == 200
    assert account.json()["username"] == "sandbox"
    # The console's XFrameOptionsMiddleware would have added this header.
    assert "X-Frame-Options" not in account.headers
    assert other.status_code == 204
    assert passed_through == ["/predictions/"]


async def test_the_full_app_still_serves_the_sandbox_with_middleware(settings: Settings):
    settings.SANDBOX_API_TOKENS = ["r8_mount"]

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=get_asgi_application()), base_url="http://testserver"
    ) as http:
        account = await http.get(
            "/sandbox/v1/account", headers={"Authorization": "Bearer r8_mount"}
        )

    assert account.status_code == 200
    assert account.headers["X-Frame-Options"] == "DENY"
