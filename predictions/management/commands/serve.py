"""Serve the console with daphne; several `serve` processes can share one port.

Daphne has no worker processes of its own. Each `serve` binds the address with
SO_REUSEPORT and hands the socket to daphne (`--fd`), so `make up` (the Procfile's
`web` ×N) runs N daphne processes on one port and the kernel spreads connections across
them: no proxy needed on one machine. Any process may serve any request or websocket:
sessions live in the database, live events go through Redis.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Serve the console (daphne) on HOST:PORT; start it several times to share the port."
    requires_system_checks = []  # daphne's own start-up runs them

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--proxy-headers",
            action="store_true",
            help="Take the client's address from X-Forwarded-For (behind a proxy only).",
        )

    def handle(self, *args: Any, host: str, port: int, proxy_headers: bool, **opts: Any) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            listener.bind((host.strip("[]"), port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        listener.listen(1024)
        listener.set_inheritable(True)
        command = [sys.executable, "-m", "daphne", "--fd", str(listener.fileno())]
        if proxy_headers:
            command.append("--proxy-headers")
        command.append("project.asgi:application")
        self.stdout.write(f"Serving on http://{host}:{port}/ (pid {os.getpid()})")
        self.stdout.flush()
        # daphne replaces this process (same pid, so supervisors and signals reach it).
        os.execv(sys.executable, command)
