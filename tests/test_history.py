"""The history page: who sees what, filters, search, keyset pagination, constant queries."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from predictions import forms
from predictions.models import CatalogModel, OutputFile, Prediction


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def text_model(db: None) -> CatalogModel:
    return CatalogModel.objects.create(owner="sandbox", name="text")


@pytest.fixture
def image_model(db: None) -> CatalogModel:
    return CatalogModel.objects.create(owner="sandbox", name="image")


def add_predictions(
    owner: User, model: CatalogModel, count: int, *, status: str = "succeeded", prompt: str = "p"
) -> list[Prediction]:
    """Rows one minute apart, newest last; bulk_create skips save(), so set input_text."""
    start = timezone.now() - timedelta(minutes=count + 1)
    rows = [
        Prediction(
            owner=owner,
            model=model,
            model_ref=model.ref,
            status=status,
            input={"prompt": f"{prompt} {i}"},
            input_text=f"{prompt} {i}",
            created_at=start + timedelta(minutes=i),
            completed_at=start + timedelta(minutes=i, seconds=3),
        )
        for i in range(count)
    ]
    return Prediction.objects.bulk_create(rows)


def row_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-prediction="([0-9a-f-]+)"', page)


def get(client: Client, query: str = "") -> str:
    response = client.get("/predictions/" + query)
    assert response.status_code == 200
    return response.content.decode()


def test_members_see_their_own_and_shared_predictions_newest_first(
    client: Client, alice: User, bob: User, text_model: CatalogModel
) -> None:
    mine = add_predictions(alice, text_model, 3)
    theirs = add_predictions(bob, text_model, 2)
    theirs[0].shared_with.add(alice)
    client.force_login(alice)

    ids = row_ids(get(client))

    visible = sorted([*mine, theirs[0]], key=lambda p: p.created_at, reverse=True)
    assert ids == [str(p.pk) for p in visible]


def test_staff_see_everyone_and_can_filter_by_owner(
    client: Client, alice: User, bob: User, staff: User, text_model: CatalogModel
) -> None:
    add_predictions(alice, text_model, 2)
    bobs = add_predictions(bob, text_model, 1)
    client.force_login(staff)

    assert len(row_ids(get(client))) == 3
    assert row_ids(get(client, f"?owner={bob.pk}")) == [str(bobs[0].pk)]
    assert 'name="owner"' in get(client)


@pytest.mark.parametrize("owner", ["²", "①", "9" * 30, "-1", "1e3"])
def test_an_owner_filter_that_is_no_user_id_is_ignored(
    client: Client, alice: User, staff: User, text_model: CatalogModel, owner: str
) -> None:
    add_predictions(alice, text_model, 1)
    client.force_login(staff)

    assert len(row_ids(get(client, f"?owner={owner}"))) == 1


def test_members_get_no_owner_filter(
    client: Client, alice: User, bob: User, text_model: CatalogModel
) -> None:
    add_predictions(bob, text_model, 1)
    client.force_login(alice)

    page = get(client, f"?owner={bob.pk}")

    assert 'name="owner"' not in page
    assert row_ids(page) == []


def test_filters_by_model_status_dates_and_input_text(
    client: Client, alice: User, text_model: CatalogModel, image_model: CatalogModel
) -> None:
    texts = add_predictions(alice, text_model, 2, prompt="a lighthouse")
    images = add_predictions(alice, image_model, 2, prompt="a fox", status="failed")
    old = images[0]
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    client.force_login(alice)
    today = timezone.now().date()

    assert set(row_ids(get(client, "?model=sandbox/text"))) == {str(p.pk) for p in texts}
    assert row_ids(get(client, "?status=failed&model=sandbox/image")) == [
        str(images[1].pk),
        str(old.pk),
    ]
    assert set(row_ids(get(client, "?q=LIGHTHOUSE"))) == {str(p.pk) for p in texts}
    assert row_ids(get(client, "?q=fox&since=" + str(today - timedelta(days=1)))) == [
        str(images[1].pk)
    ]
    assert row_ids(get(client, f"?until={today - timedelta(days=5)}")) == [str(old.pk)]
    assert "No predictions match" in get(client, "?q=nothing-like-this")


def model_options(page: str) -> list[str]:
    select = page.split('<select id="f-model"')[1].split("</select>")[0]
    return re.findall(r'<option value="([^"]+)"', select)


def test_the_model_filter_lists_only_models_a_member_may_run(
    client: Client, alice: User, staff: User, text_model: CatalogModel
) -> None:
    CatalogModel.objects.create(owner="acme", name="retired", enabled=False)
    secret = CatalogModel.objects.create(owner="acme", name="secret")
    secret.allowed_groups.add(Group.objects.create(name="research"))

    client.force_login(alice)
    assert model_options(get(client)) == ["sandbox/text"]

    client.force_login(staff)
    assert model_options(get(client)) == ["acme/retired", "acme/secret", "sandbox/text"]


def test_the_default_page_size_is_the_views_constant(
    client: Client, alice: User, text_model: CatalogModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forms, "DEFAULT_PAGE_SIZE", 10)
    add_predictions(alice, text_model, 12)
    client.force_login(alice)

    assert len(row_ids(get(client, "?per_page=7"))) == 10


def test_bad_filter_values_are_ignored_not_errors(
    client: Client, alice: User, text_model: CatalogModel
) -> None:
    add_predictions(alice, text_model, 2)
    client.force_login(alice)

    page = get(client, "?status=bogus&since=yesterday&per_page=²&before=nope&owner=x")

    assert len(row_ids(page)) == 2


@pytest.mark.parametrize("bound", ["since", "until"])
@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_dates_at_the_ends_of_the_calendar_filter_without_error(
    client: Client, alice: User, text_model: CatalogModel, bound: str, day: str
) -> None:
    add_predictions(alice, text_model, 2)
    client.force_login(alice)

    page = get(client, f"?{bound}={day}")

    everything = (bound, day) in {("since", "0001-01-01"), ("until", "9999-12-31")}
    assert len(row_ids(page)) == (2 if everything else 0)


def test_keyset_pages_cover_every_row_once(
    client: Client, alice: User, text_model: CatalogModel
) -> None:
    rows = add_predictions(alice, text_model, 23)
    # Two rows with the same timestamp: the id breaks the tie.
    Prediction.objects.filter(pk=rows[5].pk).update(created_at=rows[6].created_at)
    client.force_login(alice)

    seen: list[str] = []
    page = get(client, "?per_page=10")
    while True:
        seen += row_ids(page)
        older = re.search(r'href="\?([^"]*)" rel="next"', page)
        if not older:
            break
        page = get(client, "?" + older.group(1).replace("&amp;", "&"))

    assert len(seen) == 23 and len(set(seen)) == 23
    # And back again with "Newer".
    newer = re.search(r'href="\?([^"]*)" rel="prev"', page)
    assert newer is not None
    back = row_ids(get(client, "?" + newer.group(1).replace("&amp;", "&")))
    assert back == seen[10:20]


def test_thumbnails_show_the_first_image_output(
    client: Client, alice: User, image_model: CatalogModel
) -> None:
    (prediction,) = add_predictions(alice, image_model, 1)
    for position in (1, 0):
        OutputFile.objects.create(
            prediction=prediction,
            position=position,
            file=ContentFile(b"img", name=f"out-{position}.png"),
            content_type="image/png",
            size=3,
            sha256="0" * 64,
            original_url="https://replicate.delivery/x.png",
        )
    client.force_login(alice)

    assert f'<img src="/predictions/{prediction.pk}/files/0/"' in get(client)


def test_one_row_can_be_fetched_for_live_updates(
    client: Client, alice: User, text_model: CatalogModel
) -> None:
    (prediction,) = add_predictions(alice, text_model, 1, status="processing")
    client.force_login(alice)

    row = get(client, f"?row={prediction.pk}")
    assert row.strip().startswith(f'<tr data-prediction="{prediction.pk}"')
    assert 'data-status="processing"' in row
    # Filters apply: a row that does not match is "no content".
    assert client.get(f"/predictions/?status=failed&row={prediction.pk}").status_code == 204
    assert client.get("/predictions/?row=not-a-uuid").status_code == 404


def queries_for(client: Client, query: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        get(client, query)
    return len(captured)


@pytest.mark.parametrize("who", ["member", "staff"])
def test_the_query_count_is_constant_across_page_sizes_and_row_counts(
    client: Client,
    alice: User,
    staff: User,
    text_model: CatalogModel,
    image_model: CatalogModel,
    who: str,
) -> None:
    client.force_login(staff if who == "staff" else alice)
    add_predictions(alice, text_model, 3)
    few = {size: queries_for(client, f"?per_page={size}") for size in (10, 100)}

    rows = add_predictions(alice, image_model, 150)
    for p in rows[::3]:
        OutputFile.objects.create(
            prediction=p,
            file=ContentFile(b"img", name="o.png"),
            content_type="image/png",
            size=3,
            sha256="0" * 64,
            original_url="https://replicate.delivery/o.png",
        )
    many = {size: queries_for(client, f"?per_page={size}") for size in (10, 100)}
    filtered = queries_for(client, "?per_page=50&q=p&status=succeeded&model=sandbox/image")

    assert len({*few.values(), *many.values(), filtered}) == 1
    # session, user (middleware), user (async view), models, rows, thumbnails (+ owners)
    assert many[100] <= (7 if who == "staff" else 6)
