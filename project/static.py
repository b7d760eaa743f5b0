"""Static files through WhiteNoise, without costing every other request a thread.

WhiteNoise's middleware is sync-only. In an ASGI server Django would then run it (and
everything below it) through sync_to_async: a thread hop for every request, async views
included. Its work is a dictionary lookup (the files are indexed at start-up), so the
async path here does the same lookup on the event loop and otherwise awaits the next
middleware directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]
from whitenoise.storage import CompressedManifestStaticFilesStorage  # type: ignore[import-untyped]


class StaticStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed names; the JS modules' `import … from "./x.js"` are rewritten to
    the hashed names too, so a new release never mixes old and new modules."""

    support_js_module_import_aggregation = True


async def _chunks(content: Iterable[bytes]) -> AsyncIterator[bytes]:
    # Small local files (CSS, JS, icons), usually in the page cache: read on the loop.
    for chunk in content:
        yield chunk


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # make dev: look at the disk on every request, in a thread
            find = sync_to_async(self.find_file, thread_sensitive=False)
            static_file = await find(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        response = self.serve(static_file, request)
        # An async body, so Django does not warn about (and buffer) a sync iterator.
        response.streaming_content = _chunks(response.streaming_content)
        return response
