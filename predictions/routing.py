"""Websocket routes (mounted by project/asgi.py)."""

websocket_urlpatterns: list = []
