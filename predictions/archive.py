"""Archiving: output files are copied into our storage, since Replicate's URLs expire
within the hour, and the output is rewritten to point at our copies.

The runner calls `archive()` once, as a prediction ends. It is safe to call again after a
restart: files already copied (by position) are kept, not fetched twice. A file that cannot
be fetched keeps its upstream URL; passing failures are retried a few times first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils.text import get_valid_filename

from . import metrics, upstream
from .database import db
from .models import OutputFile
from .upstream import Credentials, UpstreamError

logger = logging.getLogger(__name__)

# An output file download that fails for a passing reason (5xx, 429, network) is tried this
# many times in all, waiting twice as long each time from the first wait; then its URL is kept.
DOWNLOAD_ATTEMPTS = 4
DOWNLOAD_FIRST_WAIT_SECONDS = 0.5
_URL_PREFIXES = ("https://", "http://", "data:")


def max_file_bytes() -> int:
    """Output files larger than this stay on Replicate (their URL is kept)."""
    return settings.PREDICTION_MAX_FILE_BYTES


async def archive(
    prediction_id: uuid.UUID, output: Any, creds: Credentials
) -> tuple[Any, list[OutputFile]]:
    """Copy output files into our storage: (the output pointing at our copies, the files)."""
    urls = file_urls(output)
    if not urls:
        return output, []
    existing = await db(_existing_files)(prediction_id)
    saved: dict[int, OutputFile] = {}
    for position, url in enumerate(urls):
        if position in existing:
            saved[position] = existing[position]  # copied before a restart
            continue
        try:
            content, content_type = await _download(prediction_id, creds, url)
        except UpstreamError as exc:
            metrics.archive_failed()
            logger.warning(
                "prediction %s: output file %d not copied: %s", prediction_id, position, exc
            )
            continue
        saved[position] = await db(_save_file)(prediction_id, position, url, content, content_type)
    ours = {
        position: reverse("predictions:file", args=[prediction_id, position]) for position in saved
    }
    return rewrite_urls(output, ours), [saved[p] for p in sorted(saved)]


async def _download(prediction_id: uuid.UUID, creds: Credentials, url: str) -> tuple[bytes, str]:
    """One output file, retrying passing failures with backoff (bounded)."""
    wait = DOWNLOAD_FIRST_WAIT_SECONDS
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return await upstream.download_file(creds, url, max_bytes=max_file_bytes())
        except UpstreamError as exc:
            if not exc.retryable or attempt == DOWNLOAD_ATTEMPTS:
                raise
            logger.info("prediction %s: download attempt %d: %s", prediction_id, attempt, exc)
            await asyncio.sleep(exc.retry_after if exc.retry_after else wait)
            wait *= 2
    raise AssertionError("unreachable")


def file_urls(output: Any) -> list[str]:
    """Every URL (or data: URI) in an output, in a stable order (lists, then dict values)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value.startswith(_URL_PREFIXES):
                found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(output)
    return found


def rewrite_urls(output: Any, ours: dict[int, str]) -> Any:
    """The output with the n-th URL replaced by ours[n] (where we have a copy)."""
    counter = iter(range(1_000_000))

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith(_URL_PREFIXES):
                return ours.get(next(counter), value)
            return value
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        return value

    return walk(output)


def _existing_files(prediction_id: uuid.UUID) -> dict[int, OutputFile]:
    return {f.position: f for f in OutputFile.objects.filter(prediction_id=prediction_id)}


def _save_file(
    prediction_id: uuid.UUID, position: int, url: str, content: bytes, content_type: str
) -> OutputFile:
    name = _file_name(url, position, content_type)
    output_file = OutputFile(
        prediction_id=prediction_id,
        position=position,
        content_type=content_type[:100],
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        # A data: URI is the file itself; keep only its header.
        original_url=url if not url.startswith("data:") else url.split(",", 1)[0][:200],
    )
    output_file.file.save(name, ContentFile(content), save=False)
    output_file.save()
    return output_file


def _file_name(url: str, position: int, content_type: str) -> str:
    if not url.startswith("data:"):
        base = get_valid_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
        if base and "." in base:
            return base[-100:]
    extension = mimetypes.guess_extension(content_type) or ""
    return f"output-{position}{extension}"
