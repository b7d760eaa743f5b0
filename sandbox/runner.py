"""Runs predictions as asyncio tasks on the server's event loop.

starting -> processing -> succeeded | failed | canceled. A model's predict() raising any
exception fails the prediction with the exception's message as `error`.
"""

import asyncio
import base64
import logging
import re
from urllib.parse import unquote_to_bytes, urlsplit

from sandbox.store import Prediction, files, outputs
from sandbox.validation import with_defaults

MAX_INPUT_BYTES = 20 * 1024 * 1024

logger = logging.getLogger(__name__)

# Tasks must be referenced somewhere or the loop may garbage-collect them mid-run.
_tasks: set[asyncio.Task] = set()


def start(prediction: Prediction) -> None:
    task = asyncio.create_task(_run(prediction), name=f"sandbox-prediction-{prediction.id}")
    prediction.task = task
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    _watch_deadline(prediction)


def cancel(prediction: Prediction) -> None:
    if prediction.finish("canceled") and prediction.task is not None:
        prediction.task.cancel()


def _enforce_deadline(prediction: Prediction) -> None:
    """Cancel-After: `aborted` if it never started, `canceled` if it was running."""
    if prediction.is_terminal:
        return
    if prediction.started_at is None:
        if prediction.finish("aborted") and prediction.task is not None:
            prediction.task.cancel()
    else:
        cancel(prediction)


def _watch_deadline(prediction: Prediction) -> None:
    if prediction.deadline is None:
        return
    loop = asyncio.get_running_loop()
    seconds = (prediction.deadline - prediction.created_at).total_seconds()
    handle = loop.call_later(max(0.0, seconds), _enforce_deadline, prediction)
    prediction.finished_callbacks.append(handle.cancel)


async def _run(prediction: Prediction) -> None:
    if prediction.faults.stuck:
        # The `stuck` fault: never start; cancel() or the deadline is the only way out.
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


def _decode_data_uri(uri: str) -> bytes:
    match = _DATA_URI.match(uri)
    if not match:
        raise ValueError("malformed data URI")
    payload = uri[match.end() :]
    # Checked before decoding: base64 is 4 characters per 3 bytes.
    if (len(payload) * 3 // 4 if match["b64"] else len(payload)) > MAX_INPUT_BYTES:
        raise ValueError(f"the data URI is larger than {MAX_INPUT_BYTES} bytes")
    return base64.b64decode(payload) if match["b64"] else unquote_to_bytes(payload)


def _local_content(prediction: Prediction, uri: str) -> bytes | None:
    """The bytes behind one of this sandbox's file or output URLs; None for any other URL."""
    parts, root = urlsplit(uri), urlsplit(prediction.base_url)
    if (
        parts.scheme not in ("http", "https")
        or parts.netloc != root.netloc
        or not parts.path.startswith(root.path)
    ):
        return None
    local = parts.path[len(root.path) :].strip("/").split("/")
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
    return None


async def fetch_input(prediction: Prediction, uri: str) -> bytes:
    """The bytes behind a file input: a data: URI, or a file or output URL of this sandbox.

    Nothing is fetched over the network: the sandbox's own URLs resolve from memory (which
    also works for files the client uploaded), and any other URL is refused, so a
    prediction's input cannot make the sandbox request internal services (SSRF).
    """
    if uri.startswith("data:"):
        return _decode_data_uri(uri)
    content = _local_content(prediction, uri)
    if content is None:
        raise ValueError(
            f"cannot fetch {uri[:200]!r}: only data: URIs and this sandbox's own file and "
            "output URLs are accepted"
        )
    return content
