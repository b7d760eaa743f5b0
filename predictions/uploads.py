"""The gateway's files API (/api/v1/files), shaped like Replicate's, and what makes those
files usable as inputs.

Replicate's Python client uploads a file passed as an input (`open(path, "rb")`) through
`files.create` and sends the file's `urls.get` as the input's value. Upstream cannot reach
our API, so before a create `inline_own_files` turns such a value — the URL of one of the
caller's own files, or its download URL — into a `data:` URI of the file's bytes, which
the console's form and Replicate both take. A URL naming anyone else's file is left as it
is: it then fails like any other URL upstream cannot read, and says nothing of the file.

Content types: the one the client declares (the `type` field, else the part's own) is
kept when it is well-formed, but a file that claims to be an image, audio or video must
look like one (its first bytes), since such files are served inline; otherwise it becomes
what its bytes say, or application/octet-stream. Downloads go out as attachments unless
they are such media, with `nosniff` and a sandboxing CSP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import mimetypes
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import models as auth
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve, reverse
from django.views.decorators.csrf import csrf_exempt

from . import untrusted
from .database import db
from .models import ApiKey, Upload
from .presenters import media_kind
from .responses import not_found, problem, unauthenticated

# GET /v1/files answers this many a page (Replicate's page size).
PAGE_SIZE = 100
# Metadata is a small JSON object describing the file, not a second file.
METADATA_MAX_BYTES = 64 * 1024
FILENAME_MAX_BYTES = 255
OCTET_STREAM = "application/octet-stream"
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}\Z")
_INLINED = {"api:upload", "api:upload-download"}

# First bytes of the media we serve inline (and a few we do not), for sniffing.
_SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"WAVE", 8, "audio/wav"),
    (b"ID3", 0, "audio/mpeg"),
    (b"OggS", 0, "audio/ogg"),
    (b"fLaC", 0, "audio/flac"),
    (b"ftyp", 4, "video/mp4"),
    (b"\x1aE\xdf\xa3", 0, "video/webm"),
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
]
# Containers one signature cannot tell apart: the declared type stands within its family.
_FAMILIES = {"video/mp4": ("video/", "audio/mp4", "audio/aac", "image/avif")}


# ---------------------------------------------------------------------------- helpers


def presented_key(request: HttpRequest) -> str:
    return ApiKey.objects.presented(request.headers.get("Authorization", ""))


def key_user(request: HttpRequest) -> auth.User | None:
    """The user whose live key the request carries, or None. ORM: call it through db()."""
    key = ApiKey.objects.use(presented_key(request))
    return key.user if key is not None else None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_json(request: HttpRequest, upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "name": upload.name,
        "content_type": upload.content_type,
        "size": upload.size,
        "etag": upload.md5,
        "checksums": {"sha256": upload.sha256, "md5": upload.md5},
        "metadata": upload.metadata,
        "created_at": _iso(upload.created_at),
        "expires_at": _iso(upload.expires_at),
        "urls": {"get": request.build_absolute_uri(reverse("api:upload", args=[upload.id]))},
    }


# ---------------------------------------------------------------------------- content types


def sniff(head: bytes) -> str | None:
    """The type the first bytes of a file say, if they are one we know."""
    for signature, offset, content_type in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            if content_type in ("image/webp", "audio/wav") and not head.startswith(b"RIFF"):
                continue
            return content_type
    if head.startswith((b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")):
        return "audio/mpeg"
    return None


def _declared(value: str | None) -> str | None:
    main = (value or "").split(";", 1)[0].strip().lower()
    return main if _MIME.match(main) else None


def content_type_of(declared: str | None, filename: str, head: bytes) -> str:
    """The type a file is kept (and served) as: see the module docstring."""
    claimed = _declared(declared) or OCTET_STREAM
    sniffed = sniff(head)
    if claimed == OCTET_STREAM:  # no word from the client: the bytes, else the name
        claimed = sniffed or _declared(mimetypes.guess_type(filename)[0]) or OCTET_STREAM
    if media_kind(claimed) == "file":
        return claimed  # never served inline: the client's word stands
    if sniffed == claimed or (sniffed and claimed.startswith(_FAMILIES.get(sniffed, ()))):
        return claimed
    return sniffed or OCTET_STREAM


# ---------------------------------------------------------------------------- storing


def _filename(request: HttpRequest, upload: UploadedFile) -> str | None:
    """The name to keep; None when it is too long. Only ever shown, never a storage path."""
    name = request.POST.get("filename") or upload.name or "file"
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    if untrusted.problem(name) or len(name.encode()) > FILENAME_MAX_BYTES:
        return None
    return "".join(c if c.isprintable() else "_" for c in name)


def _metadata(request: HttpRequest, files: Any) -> dict[str, Any] | str:
    """The metadata object, or why it is refused. A form field (the Python client), or a
    JSON file part (the JavaScript client sends `name="metadata"; filename="blob"`)."""
    part = files.get("metadata")
    if part is not None:
        if (part.size or 0) > METADATA_MAX_BYTES:
            return f"metadata may be at most {METADATA_MAX_BYTES} bytes"
        raw: str | bytes = part.read()
    else:
        raw = request.POST.get("metadata") or "{}"
    if len(raw) > METADATA_MAX_BYTES:
        return f"metadata may be at most {METADATA_MAX_BYTES} bytes"
    try:
        metadata = json.loads(raw or "{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "metadata must be a JSON object"
    if not isinstance(metadata, dict):
        return "metadata must be a JSON object"
    reason = untrusted.problem(metadata)
    return f"metadata cannot be stored: {reason}" if reason else metadata


def _store(
    owner: auth.User,
    upload: UploadedFile,
    name: str,
    declared: str | None,
    metadata: dict[str, Any],
) -> Upload:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    head = b""
    for chunk in upload.chunks():
        if len(head) < 64:
            head += chunk[: 64 - len(head)]
        sha256.update(chunk)
        md5.update(chunk)
    upload.seek(0)
    row = Upload(
        owner=owner,
        name=name,
        content_type=content_type_of(declared, name, head),
        size=upload.size or 0,
        sha256=sha256.hexdigest(),
        md5=md5.hexdigest(),
        metadata=metadata,
    )
    row.file.save(row.id, upload, save=False)  # our id, never the client's name, on disk
    row.save()
    return row


def _parse(request: HttpRequest) -> tuple[Any, Any]:
    return request.POST, request.FILES


async def _create(request: HttpRequest, user: auth.User) -> HttpResponse:
    limit = settings.API_FILE_MAX_BYTES
    too_large = problem(
        413, "Content Too Large", f"Files may be at most {limit} bytes.", max_size=limit
    )
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    # The body also holds the other fields and the multipart framing.
    if length > limit + METADATA_MAX_BYTES + 64 * 1024:
        return too_large
    if not (request.content_type or "").startswith("multipart/form-data"):
        return problem(400, "Bad request", "Send the file as multipart/form-data.")
    # Parsing the body (big parts spill to temporary files) blocks: off the event loop.
    try:
        post, files = await asyncio.to_thread(_parse, request)
    except (RequestDataTooBig, TooManyFieldsSent):
        return problem(413, "Content Too Large", "The form fields are too large.")
    except MultiPartParserError as exc:
        return problem(400, "Bad request", f"The multipart body cannot be read: {exc}")
    upload = files.get("content")
    if upload is None:
        return problem(400, "Bad request", "Send the file as the multipart field 'content'.")
    if (upload.size or 0) > limit:
        return too_large
    name = _filename(request, upload)
    if name is None:
        return problem(400, "Bad request", f"filename may be at most {FILENAME_MAX_BYTES} bytes.")
    metadata = await asyncio.to_thread(_metadata, request, files)
    if isinstance(metadata, str):
        return problem(400, "Bad request", metadata)
    declared = post.get("type") or upload.content_type
    row = await db(_store)(user, upload, name, declared, metadata)
    return JsonResponse(file_json(request, row), status=201)


# ---------------------------------------------------------------------------- listing


def _cursor(upload: Upload) -> str:
    raw = f"{int(upload.created_at.timestamp() * 1_000_000)}.{upload.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _page(user: auth.User, cursor: str | None) -> tuple[list[Upload], bool] | None:
    """A page of the user's files, newest first, and whether older ones follow; None for a
    cursor we did not make."""
    files = Upload.objects.owned_by(user).order_by("-created_at", "-id")
    if cursor:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            micros, upload_id = raw.split(".", 1)
            when = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
        except (ValueError, UnicodeDecodeError, OverflowError, OSError):
            return None
        files = files.filter(Q(created_at__lt=when) | Q(created_at=when, id__lt=upload_id))
    rows = list(files[: PAGE_SIZE + 1])
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE


async def _list(request: HttpRequest, user: auth.User) -> HttpResponse:
    page = await db(_page)(user, request.GET.get("cursor"))
    if page is None:
        return problem(400, "Invalid cursor", "The cursor is not one this API handed out.")
    rows, more = page
    url = request.build_absolute_uri(reverse("api:files"))
    return JsonResponse(
        {
            "next": f"{url}?cursor={_cursor(rows[-1])}" if more else None,
            "previous": None,
            "results": [file_json(request, row) for row in rows],
        }
    )


# ---------------------------------------------------------------------------- views


def _own(user: auth.User, file_id: str) -> Upload | None:
    return Upload.objects.owned_by(user).filter(pk=file_id).first()


def _delete(user: auth.User, file_id: str) -> bool:
    upload = _own(user, file_id)
    if upload is None:
        return False
    upload.delete()
    return True


def _open(upload: Upload) -> IO[bytes]:
    return upload.file.open("rb")


async def _authenticated(request: HttpRequest, *methods: str) -> auth.User | HttpResponse:
    if request.method not in methods:
        response = problem(405, "Method not allowed", f"{request.method} is not allowed here.")
        response["Allow"] = ", ".join(methods)
        return response
    user = await db(key_user)(request)
    return user if user is not None else unauthenticated(bool(presented_key(request)))


@csrf_exempt  # key-authenticated: no cookie, so nothing to forge
@login_not_required
async def files(request: HttpRequest) -> HttpResponse:
    """POST: upload (multipart `content`, `filename`, `type`, `metadata`); GET: list."""
    user = await _authenticated(request, "GET", "POST")
    if isinstance(user, HttpResponse):
        return user
    if request.method == "POST":
        return await _create(request, user)
    return await _list(request, user)


@csrf_exempt
@login_not_required
async def file(request: HttpRequest, file_id: str) -> HttpResponse:
    user = await _authenticated(request, "GET", "DELETE")
    if isinstance(user, HttpResponse):
        return user
    if request.method == "DELETE":
        deleted = await db(_delete)(user, file_id)
        return HttpResponse(status=204) if deleted else not_found()
    upload = await db(_own)(user, file_id)
    return JsonResponse(file_json(request, upload)) if upload else not_found()


async def _chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, 256 * 1024):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


@login_not_required
async def download(request: HttpRequest, file_id: str) -> HttpResponseBase:
    """The file's bytes, to its owner's key."""
    user = await _authenticated(request, "GET")
    if isinstance(user, HttpResponse):
        return user
    upload = await db(_own)(user, file_id)
    if upload is None:
        return not_found()
    try:
        handle = await asyncio.to_thread(_open, upload)
    except OSError:
        return not_found()  # the bytes are gone from storage
    inline = media_kind(upload.content_type) != "file"
    response = StreamingHttpResponse(
        _chunks(handle), content_type=upload.content_type if inline else OCTET_STREAM
    )
    response["Content-Length"] = str(upload.size)
    disposition = "inline" if inline else "attachment"
    ascii_name = upload.name.encode("ascii", "replace").decode().replace('"', "_")
    response["Content-Disposition"] = f'{disposition}; filename="{ascii_name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["ETag"] = f'"{upload.md5}"'
    response["Cache-Control"] = "private, max-age=3600"
    return response


# ---------------------------------------------------------------------------- inputs


def _own_file_id(value: str) -> str | None:
    """The file id in a URL (absolute or a path) of our files API, or None."""
    if "/files/" not in value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("", "http", "https"):
        return None
    try:
        match = resolve(parts.path)
    except Resolver404:
        return None
    return match.kwargs.get("file_id") if match.view_name in _INLINED else None


def _data_uri(upload: Upload) -> str:
    with upload.file.open("rb") as handle:
        encoded = base64.b64encode(handle.read()).decode()
    return f"data:{upload.content_type};base64,{encoded}"


def inline_own_files(user: auth.User, input: dict[str, Any]) -> dict[str, Any]:
    """`input` with each URL of one of `user`'s own files (`urls.get` or the download
    URL) replaced by a `data:` URI of its content, in lists and objects too. Other values,
    other users' files among them, stay as they are. ORM and storage: call it through db().
    """
    found: dict[str, Upload | None] = {}

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: inline(item) for key, item in value.items()}
        if isinstance(value, list):
            return [inline(item) for item in value]
        if not isinstance(value, str):
            return value
        file_id = _own_file_id(value)
        if file_id is None:
            return value
        if file_id not in found:
            found[file_id] = _own(user, file_id)
        upload = found[file_id]
        return _data_uri(upload) if upload is not None else value

    return {key: inline(value) for key, value in input.items()}
