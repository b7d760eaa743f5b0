"""Runs predictions as asyncio tasks on the server's event loop.

starting -> processing -> succeeded | failed | canceled. A model's predict() raising any
exception fails the prediction with the exception's message as `error`.
"""

import asyncio
import base64
import logging
import re
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from sandbox.store import Prediction, files, outputs
from sandbox.validation import with_defaults

MAX_FETCH_BYTES = 20 * 1024 * 1024

logger = logging.getLogger(__name__)

# Tasks must be referenced somewhere or the loop may garbage-collect them mid-run.
_tasks: set[asyncio.Task] = set()


def start(prediction: Prediction) -> None:
    task = asyncio.create_task(_run(prediction), name=f"sandbox-prediction-{prediction.id}")
    prediction.task = task
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def cancel(prediction: Prediction) -> None:
    if prediction.finish("canceled") and prediction.task is not None:
        prediction.task.cancel()


async def _run(prediction: Prediction) -> None:
    if prediction.stuck:
        # The `stuck` fault: never start; cancel() is the only way out.
        await prediction.finished.wait()
        return
    prediction.mark_processing()
    inputs = with_defaults(prediction.version.openapi_schema, prediction.input)
    try:
        await prediction.version.predict(prediction, inputs)
    except asyncio.CancelledError:
        prediction.finish("canceled")
        raise
    except Exception as exc:
        if not prediction.is_terminal:
            prediction.log(f"{type(exc).__name__}: {exc}")
        prediction.finish("failed", error=str(exc) or type(exc).__name__)
    else:
        prediction.finish("succeeded")


_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,")


async def fetch_input(prediction: Prediction, uri: str) -> bytes:
    """The bytes behind a file input: a data: URI, a sandbox file or output URL, or any URL."""
    if uri.startswith("data:"):
        match = _DATA_URI.match(uri)
        if not match:
            raise ValueError("malformed data URI")
        payload = uri[match.end() :]
        return base64.b64decode(payload) if match["b64"] else unquote_to_bytes(payload)
    if uri.startswith(prediction.base_url):
        # Our own URLs resolve from memory, which also works for files the client uploaded.
        local = uri[len(prediction.base_url) :].split("?", 1)[0].strip("/").split("/")
        if len(local) in (3, 4) and local[:2] == ["v1", "files"]:
            stored = files.get(local[2])
            if stored is None:
                raise ValueError(f"file {local[2]} does not exist (or was deleted)")
            return stored.content
        if len(local) == 3 and local[0] == "delivery":
            found = outputs.get(local[1], local[2])
            if found is None:
                raise ValueError(f"output file {uri} is no longer available")
            return found[1]
    if urlsplit(uri).scheme not in ("http", "https"):
        raise ValueError(f"cannot fetch {uri!r}")
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=True) as client:
        response = await client.get(uri)
        response.raise_for_status()
        if len(response.content) > MAX_FETCH_BYTES:
            raise ValueError(f"{uri} is larger than {MAX_FETCH_BYTES} bytes")
        return response.content
