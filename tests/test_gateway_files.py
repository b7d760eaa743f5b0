"""The gateway's files API (/api/v1/files) with a personal key, through the real ASGI
application, driven by Replicate's own Python client where it has a call for it; and
`inline_own_files`, which turns the URLs that client sends for file inputs into data: URIs.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import replicate
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone
from replicate.exceptions import ReplicateError
from replicate.helpers import async_encode_json

from predictions import tasks, uploads
from predictions.database import db
from predictions.models import ApiKey, Upload
from project.asgi import application
from tests.asgi_http import StreamingASGITransport
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "http://testserver"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def key_for(user: User) -> str:
    return (await sync_to_async(ApiKey.issue)(user, "test"))[1]


def official_client(key: str) -> replicate.Client:
    return replicate.Client(
        api_token=key, base_url=f"{BASE}/api", transport=StreamingASGITransport(application)
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = StreamingASGITransport(application)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def upload(
    http: httpx.AsyncClient, key: str, content: bytes, filename: str = "f.bin", **fields: str
) -> httpx.Response:
    return await http.post(
        "/api/v1/files",
        headers=auth(key),
        files={"content": (filename, content, fields.pop("part_type", "application/octet-stream"))},
        data=fields,
    )


async def test_the_official_client_creates_gets_lists_and_deletes_a_file(member: User) -> None:
    client = official_client(await key_for(member))

    created = await client.files.async_create(
        io.BytesIO(b"hello file"), filename="hello.txt", metadata={"purpose": "test", "n": 1}
    )
    fetched = await client.files.async_get(created.id)
    listed = await client.files.async_list()
    deleted = await client.files.async_delete(created.id)

    assert created.name == "hello.txt"
    assert created.content_type == "text/plain"
    assert created.size == len(b"hello file")
    assert created.etag == hashlib.md5(b"hello file").hexdigest()
    assert created.checksums == {
        "sha256": hashlib.sha256(b"hello file").hexdigest(),
        "md5": created.etag,
    }
    assert created.metadata == {"purpose": "test", "n": 1}
    assert created.urls["get"] == f"{BASE}/api/v1/files/{created.id}"
    assert created.expires_at is not None and created.expires_at > created.created_at
    assert fetched.id == created.id and fetched.metadata == created.metadata
    assert [f.id for f in listed] == [created.id]
    assert deleted is True
    assert not await Upload.objects.filter(pk=created.id).aexists()
    with pytest.raises(ReplicateError) as gone:
        await client.files.async_get(created.id)
    assert gone.value.status == 404


async def test_the_download_gives_the_bytes_to_the_owner_s_key(
    member: User, http: httpx.AsyncClient
) -> None:
    key = await key_for(member)
    created = (await upload(http, key, PNG, "dot.png", type="image/png")).json()

    response = await http.get(f"/api/v1/files/{created['id']}/download", headers=auth(key))

    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-disposition"].startswith("inline")


async def test_without_a_valid_key_every_endpoint_is_a_json_401(
    member: User, http: httpx.AsyncClient
) -> None:
    key = await key_for(member)
    created = (await upload(http, key, b"x")).json()
    revoked_key, revoked = await key_for(member), None
    revoked = await ApiKey.objects.aget(prefix=revoked_key[:12])
    await sync_to_async(revoked.revoke)()
    paths = ["/api/v1/files", f"/api/v1/files/{created['id']}"]
    paths.append(f"/api/v1/files/{created['id']}/download")

    for headers in ({}, auth("rcp_nonsense"), auth(revoked_key), {"Authorization": "Basic eA=="}):
        for path in paths:
            response = await http.get(path, headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["title"] == "Unauthenticated"
        posted = await http.post("/api/v1/files", headers=headers, files={"content": b"x"})
        assert posted.status_code == 401
    # Replicate's docs still show the older scheme.
    old_scheme = await http.get("/api/v1/files", headers={"Authorization": f"Token {key}"})
    assert old_scheme.status_code == 200


async def test_a_user_sees_only_their_own_files(
    member: User, stranger: User, http: httpx.AsyncClient
) -> None:
    mine, theirs = await key_for(member), await key_for(stranger)
    created = (await upload(http, mine, b"private")).json()
    file_url = f"/api/v1/files/{created['id']}"

    listed = (await http.get("/api/v1/files", headers=auth(theirs))).json()
    got = await http.get(file_url, headers=auth(theirs))
    downloaded = await http.get(f"{file_url}/download", headers=auth(theirs))
    deleted = await http.delete(file_url, headers=auth(theirs))

    assert listed["results"] == []
    assert got.status_code == downloaded.status_code == deleted.status_code == 404
    assert got.json() == {"detail": "The requested resource could not be found", "status": 404}
    assert (await http.get(file_url, headers=auth(mine))).status_code == 200


async def test_the_list_is_newest_first_in_cursor_pages(
    member: User, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "PAGE_SIZE", 2)
    key = await key_for(member)
    ids = [(await upload(http, key, bytes([n]))).json()["id"] for n in range(5)]

    seen, url = [], f"{BASE}/api/v1/files"
    while url:
        page = (await http.get(url, headers=auth(key))).json()
        assert len(page["results"]) <= 2
        seen += [f["id"] for f in page["results"]]
        url = page["next"]

    assert seen == ids[::-1]
    bad = await http.get("/api/v1/files?cursor=nonsense", headers=auth(key))
    assert bad.status_code == 400 and bad.json()["title"] == "Invalid cursor"


@override_settings(API_FILE_MAX_BYTES=10)
async def test_a_file_over_the_limit_is_a_json_413(member: User, http: httpx.AsyncClient) -> None:
    key = await key_for(member)

    response = await upload(http, key, b"x" * 11)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Content Too Large"
    assert response.json()["max_size"] == 10
    assert not await Upload.objects.aexists()
    assert (await upload(http, key, b"x" * 10)).status_code == 201


async def test_bad_requests_get_json_problems(member: User, http: httpx.AsyncClient) -> None:
    key = await key_for(member)

    cases = [
        await http.post("/api/v1/files", headers=auth(key), json={"content": "x"}),
        await http.post("/api/v1/files", headers=auth(key), files={"other": b"x"}),
        await upload(http, key, b"x", metadata="[1, 2]"),
        await upload(http, key, b"x", metadata="{not json"),
        await upload(http, key, b"x", metadata='{"a": "\\u0000"}'),
        await http.post(
            "/api/v1/files",
            headers=auth(key),
            files={"content": ("f", b"x")},
            data={"filename": "n" * 256},
        ),
        await http.put("/api/v1/files", headers=auth(key)),
    ]

    assert [r.status_code for r in cases] == [400, 400, 400, 400, 400, 400, 405]
    for response in cases:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"]


@pytest.mark.parametrize(
    ("declared", "content", "kept_as"),
    [
        ("image/png", PNG, "image/png"),
        ("application/octet-stream", PNG, "image/png"),  # the bytes say what it is
        ("image/png", b"<html><script>alert(1)</script>", "application/octet-stream"),
        ("image/jpeg", PNG, "image/png"),  # media are what their bytes say
        ("text/html; charset=utf-8", b"<html>", "text/html"),  # kept, never served as such
        ("not a type", b"plain words", "text/plain"),  # from the name, f.txt
    ],
)
async def test_content_types_are_checked_against_the_bytes(
    member: User, http: httpx.AsyncClient, declared: str, content: bytes, kept_as: str
) -> None:
    key = await key_for(member)

    created = (await upload(http, key, content, "f.txt", type=declared)).json()
    download = await http.get(f"/api/v1/files/{created['id']}/download", headers=auth(key))

    assert created["content_type"] == kept_as
    assert download.content == content
    if kept_as != "image/png":
        # Anything not shown inline downloads as opaque bytes, and may run nothing.
        assert download.headers["content-type"] == "application/octet-stream"
        assert download.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in download.headers["content-security-policy"]


async def test_the_javascript_client_s_metadata_part_is_read(
    member: User, http: httpx.AsyncClient
) -> None:
    key = await key_for(member)
    response = await http.post(
        "/api/v1/files",
        headers=auth(key),
        files={
            "content": ("blob", b"hello", "text/plain"),
            "metadata": ("blob", b'{"from": "js"}', "application/json"),
        },
    )

    assert response.status_code == 201
    assert response.json()["metadata"] == {"from": "js"}


# ---------------------------------------------------------------------------- inline_own_files


async def test_the_url_the_official_client_sends_for_a_file_input_becomes_a_data_uri(
    member: User,
) -> None:
    client = official_client(await key_for(member))
    photo, notes = io.BytesIO(PNG), io.BytesIO(b"some notes")
    photo.name, notes.name = "photo.png", "notes.txt"
    # Exactly what async_run / predictions.async_create send for these inputs.
    sent: dict[str, Any] = await async_encode_json(
        {"image": photo, "extra": [notes, "https://example.com/x.png"], "steps": 4}, client
    )
    assert sent["image"].startswith(f"{BASE}/api/v1/files/")

    inlined = await db(uploads.inline_own_files)(member, sent)

    assert inlined == {
        "image": "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "extra": [
            "data:text/plain;base64," + base64.b64encode(b"some notes").decode(),
            "https://example.com/x.png",
        ],
        "steps": 4,
    }


async def test_download_urls_and_paths_are_inlined_too(
    member: User, http: httpx.AsyncClient
) -> None:
    key = await key_for(member)
    file_id = (await upload(http, key, b"abc", "a.txt")).json()["id"]
    data_uri = "data:text/plain;base64," + base64.b64encode(b"abc").decode()

    inlined = await db(uploads.inline_own_files)(
        member,
        {
            "a": f"{BASE}/api/v1/files/{file_id}/download",
            "b": f"/api/v1/files/{file_id}",
            "c": {"nested": [f"https://console.example/api/v1/files/{file_id}"]},
            "d": "/api/v1/files/unknown-id",
            "e": f"/predictions/{file_id}",
        },
    )

    assert inlined == {
        "a": data_uri,
        "b": data_uri,
        "c": {"nested": [data_uri]},
        "d": "/api/v1/files/unknown-id",
        "e": f"/predictions/{file_id}",
    }


async def test_another_users_file_is_never_inlined(
    member: User, stranger: User, http: httpx.AsyncClient
) -> None:
    url = (await upload(http, await key_for(member), b"secret")).json()["urls"]["get"]

    inlined = await db(uploads.inline_own_files)(stranger, {"image": url, "list": [url]})

    assert inlined == {"image": url, "list": [url]}


async def test_expired_uploads_are_forgotten_by_the_reconciler_storage_and_all(
    member: User, http: httpx.AsyncClient
) -> None:
    key = await key_for(member)
    kept = (await upload(http, key, PNG, "kept.png")).json()
    gone = (await upload(http, key, PNG, "gone.png")).json()
    old = await Upload.objects.aget(pk=gone["id"])
    await Upload.objects.filter(pk=old.pk).aupdate(expires_at=timezone.now())

    assert await sync_to_async(tasks.forget_expired_uploads)() == 1

    assert await Upload.objects.filter(pk=kept["id"]).aexists()
    assert not await Upload.objects.filter(pk=gone["id"]).aexists()
    stored = old.file.name

    async def freed() -> bool:
        return not await sync_to_async(old.file.storage.exists)(stored)

    await wait_for(freed, what="the expired file's storage freed")
    assert (await http.get(f"/api/v1/files/{gone['id']}", headers=auth(key))).status_code == 404
