"""How async code uses the database: a connection is held for one unit of work, never longer.

Under a burst on PostgreSQL (50 web submits at once) the console used to deadlock: each
request's own thread kept the connection of its first query (the catalogue lookup) until
its response was closed, then waited for a second connection for the row insert in another
thread. Twenty such requests held the pool's twenty connections and waited for each other
until the pool gave up. So, in this project:

- Async code reaches the ORM only through `db(fn)`: `fn` runs in one of DB_THREADS threads
  and gives its connection back to the pool the moment it returns. Not the ORM's `a…`
  methods: those run on the request's thread, which keeps its connection until the
  response is closed, across every await that follows.
- `UserMiddleware` loads the session and user the same way, so an async view's own thread
  never holds a connection. Sync views (the admin, login) hold one for the span of the
  view, as under WSGI, and never wait for a second. Websockets do likewise
  (`AuthMiddlewareStack`), instead of Channels' one process-wide thread for logins.
- DB_THREADS stays below the pool's size, so a unit waits for the pool only when the
  database itself is exhausted. Then the request fails fast: `UserMiddleware` answers 503
  with Retry-After, and nothing was half-written (each unit is one statement or one
  transaction).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from channels.auth import AuthMiddleware, CookieMiddleware
from channels.db import database_sync_to_async
from channels.sessions import SessionMiddleware
from django.contrib import auth
from django.db.utils import OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Threads for db() units in one process: below the pool's max_size (settings), so the
# request threads of sync views always find a connection too.
DB_THREADS = 12
# What a 503 asks the client to wait before trying again.
RETRY_AFTER_SECONDS = 5

_executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="db")


def db(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """`fn` (ORM code) as a coroutine, run in a database thread.

    From async code that thread is one of ours, and its connection goes back to the pool
    when `fn` returns (Channels' wrapper closes it; CONN_MAX_AGE is 0). From sync code that
    awaits it through async_to_sync (an admin action, the sync test client, the shell) it
    is the caller's own thread: that thread already holds a connection, and waiting there
    for a second one is how the deadlock began. It also sees the caller's transaction.
    """
    pooled = database_sync_to_async(fn, thread_sensitive=False, executor=_executor)
    in_caller = sync_to_async(fn, thread_sensitive=True)

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        # Set by async_to_sync while a sync caller waits (asgiref's own way to find it).
        if getattr(AsyncToSync.executors, "current", None) is not None:
            return await in_caller(*args, **kwargs)
        return await pooled(*args, **kwargs)

    return run


def session_user(session: Any) -> Any:
    """The user a session logs in (AnonymousUser if none): auth.get_user, which reads
    nothing of the request but its session."""
    return auth.get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]


def database_busy(exc: OperationalError) -> HttpResponse:
    """The product's 503 page; rendered without a request, so it needs no database."""
    # An expected condition with a known cause: one line, not a traceback.
    logger.warning("database unavailable, answering 503: %s", exc)
    response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class UserMiddleware:
    """Load the session's user in a database thread (after AuthenticationMiddleware, which
    would load it on the request's thread), and turn an exhausted database into a 503.

    Under WSGI (the sync test client) the request's thread is the only one: nothing to do.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        try:
            user = await db(session_user)(request.session)
        except OperationalError as exc:
            return database_busy(exc)

        async def auser() -> Any:
            return user

        request.user = user
        request.auser = auser
        return await self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError):
            return database_busy(exception)
        return None


class DatabaseThreadAuthMiddleware(AuthMiddleware):
    """Channels' AuthMiddleware, but the user is read in a database thread: Channels' own
    runs every login of the process on one shared thread, where one wait for the pool
    stalls every websocket that connects after it."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await db(session_user)(scope["session"])


def AuthMiddlewareStack(inner: Any) -> Any:  # the name Channels gives it
    """Channels' AuthMiddlewareStack with DatabaseThreadAuthMiddleware."""
    return CookieMiddleware(SessionMiddleware(DatabaseThreadAuthMiddleware(inner)))
