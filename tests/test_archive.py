"""predictions.archive: output files copied into our storage, the output pointing at them."""

import base64
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from predictions import archive
from predictions.models import OutputFile, Prediction
from predictions.upstream import Credentials

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
# Never dialled: every URL in these outputs is a data: URI.
NOWHERE = Credentials(token="r8_unused", base_url="http://127.0.0.1:9")


def test_file_urls_are_found_in_a_stable_order_and_rewritten_in_place() -> None:
    output: Any = {
        "images": ["https://replicate.delivery/a.png", "not a url", "data:text/plain,hi"],
        "seed": 4,
        "cover": "http://example.test/b.jpg",
    }

    urls = archive.file_urls(output)
    rewritten = archive.rewrite_urls(output, {0: "/ours/0", 2: "/ours/2"})

    assert urls == [
        "https://replicate.delivery/a.png",
        "data:text/plain,hi",
        "http://example.test/b.jpg",
    ]
    assert rewritten == {
        "images": ["/ours/0", "not a url", "data:text/plain,hi"],
        "seed": 4,
        "cover": "/ours/2",
    }


@pytest.mark.django_db(transaction=True)
async def test_archived_files_are_saved_once_and_the_output_points_at_them(
    settings: Any, tmp_path: Path, member: User
) -> None:
    settings.MEDIA_ROOT = tmp_path
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/image")
    output = [f"data:image/png;base64,{PNG}", "data:text/plain,hello"]

    first, files = await archive.archive(prediction.pk, output, NOWHERE)
    again, kept = await archive.archive(prediction.pk, output, NOWHERE)

    ours = [f"/predictions/{prediction.pk}/files/{n}/" for n in (0, 1)]
    assert first == again == ours
    assert [(f.position, f.content_type, f.size) for f in files] == [
        (0, "image/png", 13),
        (1, "text/plain", 5),
    ]
    assert files[0].file.name.endswith("output-0.png")
    assert [f.pk for f in kept] == [f.pk for f in files]
    assert await OutputFile.objects.filter(prediction=prediction).acount() == 2


@pytest.mark.django_db(transaction=True)
async def test_a_file_that_cannot_be_fetched_keeps_its_url(
    settings: Any, tmp_path: Path, member: User
) -> None:
    settings.MEDIA_ROOT = tmp_path
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/image")
    output = ["https://elsewhere.test/x.png", "data:text/plain,hello"]

    rewritten, files = await archive.archive(prediction.pk, output, NOWHERE)

    assert rewritten == ["https://elsewhere.test/x.png", f"/predictions/{prediction.pk}/files/1/"]
    assert [f.position for f in files] == [1]
