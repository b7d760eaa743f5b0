"""One policy for text from outside: browsers, programs and Replicate alike.

Two characters can arrive in JSON or form data but cannot be stored: NUL (U+0000), which
PostgreSQL refuses in text and jsonb, and a lone surrogate (U+D800–U+DFFF), which no UTF-8
encoder accepts (SQLite stores it, then every page that reads the row fails). Nor can the
numbers NaN and ±Infinity, which Python's JSON parser accepts and no database's JSON does.
Left in, they make the row write fail, and a prediction whose write fails never finishes.
So where text enters:

- **input** (the form, websocket messages, webhook bodies): `problem()` names the first
  such character, and the caller answers with a field error or a 4xx;
- **addresses** (path and query string): `address_middleware` answers 400 before any view
  sees them;
- **model output** (everything upstream.py returns): `scrub()` replaces each with U+FFFD,
  the visible replacement character, and a structure nested too deep to store with a
  note saying so. The run keeps its output and finishes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django import forms
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.decorators import sync_and_async_middleware

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# JSON deeper than this is not stored as it came (json and the databases recurse on it).
MAX_DEPTH = 64
TOO_DEEP = "[nested too deeply to store]"


def describe(char: str) -> str:
    if char == "\x00":
        return "a NUL character (\\u0000)"
    return f"an unpaired surrogate (\\u{ord(char):04x})"


def problem(value: Any) -> str | None:
    """Why `value` (text, or JSON: keys included) cannot be stored; None when it can."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            return f"it is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            found = UNSTORABLE.search(item)
            if found:
                return f"it contains {describe(found.group())}"
        elif isinstance(item, float) and not math.isfinite(item):
            return "it contains a number that is not finite (NaN or Infinity)"
        elif isinstance(item, dict):
            pending.extend((key, depth + 1) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            pending.extend((child, depth + 1) for child in item)
    return None


def scrub(value: Any, depth: int = 0) -> Any:
    """`value` with every unstorable character replaced by U+FFFD (keys too), and NaN or
    Infinity by their names."""
    if isinstance(value, str):
        return UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": visible, and storable
    if depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        return TOO_DEEP
    if isinstance(value, dict):
        return {scrub(str(key)): scrub(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, depth + 1) for item in value]
    return value


def _bad_address(request: HttpRequest) -> HttpResponse | None:
    # The path too: its parts become lookups (/models/<owner>/<name>/).
    reason = problem(request.path) or problem(list(request.GET.lists()))
    if reason:
        message = f"The address cannot be used: {reason}. Remove it and try again."
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
    return None


@sync_and_async_middleware
def address_middleware(get_response: Callable[[HttpRequest], Any]) -> Any:
    """Refuse a path or query parameters that cannot be stored or searched for, before any
    view (ours or the admin's) puts them in a query. Forms validate their own fields: Django's
    refuse NUL, and the model form goes through schema.clean_input."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            return _bad_address(request) or await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        return _bad_address(request) or get_response(request)

    return middleware


class JSONFormField(forms.JSONField):
    """Django's JSON form field, for JSON typed by a person: a value that cannot be stored
    is shown again as it was typed (the model's clean() says why), not re-encoded, which
    fails for a lone surrogate and turned the admin's error page into a 500."""

    def bound_data(self, data: Any, initial: Any) -> Any:
        value = super().bound_data(data, initial)
        if problem(value):
            return InvalidJSONInput(data)
        return value
