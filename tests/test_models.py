"""Model behaviour that is not about access: tokens per model, runners' claims and fenced
writes, archived files' lifetime."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.utils import timezone

from predictions.models import ApiToken, CatalogModel, OutputFile, Prediction


def make_token(label: str, **fields: object) -> ApiToken:
    token = ApiToken(label=label, **fields)
    token.set_token(f"r8_{label}_secret_value")
    token.save()
    return token


def test_a_model_uses_its_own_token_else_the_default(db: None) -> None:
    default = make_token("default", is_default=True)
    own = make_token("own")
    plain = CatalogModel.objects.create(owner="sandbox", name="text")
    pinned = CatalogModel.objects.create(owner="sandbox", name="image", token=own)

    assert plain.resolve_token() == default
    assert pinned.resolve_token() == own


def test_a_disabled_own_token_is_not_silently_replaced_by_the_default(db: None) -> None:
    make_token("default", is_default=True)
    own = make_token("own", enabled=False)
    model = CatalogModel.objects.create(owner="sandbox", name="image", token=own)

    assert model.resolve_token() == own


def test_a_prediction_uses_its_model_s_token_else_the_default(alice: User) -> None:
    default = make_token("default", is_default=True)
    own = make_token("own")
    pinned = CatalogModel.objects.create(owner="sandbox", name="image", token=own)
    removed = Prediction.objects.create(owner=alice, model_ref="gone/model", model=None)
    run = Prediction.objects.create(owner=alice, model_ref=pinned.ref, model=pinned)

    assert (removed.api_token(), run.api_token()) == (default, own)
    assert run.credentials().token == "r8_own_secret_value"


def test_a_queued_prediction_is_claimed_by_one_runner_only(alice: User) -> None:
    prediction = Prediction.objects.create(owner=alice, model_ref="sandbox/text")

    first = Prediction.objects.claim(prediction.pk, lease=30)
    second = Prediction.objects.claim(prediction.pk, lease=30)

    assert first is not None and second is None
    row, stamp, resumed = first
    assert (row.status, row.updated_at, resumed) == (Prediction.Status.STARTING, stamp, False)


def test_a_quiet_runner_s_prediction_is_claimable_and_taken_over(alice: User) -> None:
    prediction = Prediction.objects.create(owner=alice, model_ref="sandbox/text")
    Prediction.objects.claim(prediction.pk, lease=30)
    assert Prediction.objects.claimable(lease=30) == []
    quiet_since = timezone.now() - timedelta(seconds=31)
    Prediction.objects.filter(pk=prediction.pk).update(updated_at=quiet_since)

    assert Prediction.objects.claimable(lease=30) == [prediction.pk]
    claimed = Prediction.objects.claim(prediction.pk, lease=30)

    assert claimed is not None and claimed[2] is True


def test_a_fenced_write_needs_the_runner_s_own_stamp_and_reports_a_cancel(alice: User) -> None:
    prediction = Prediction.objects.create(owner=alice, model_ref="sandbox/text")
    claimed = Prediction.objects.claim(prediction.pk, lease=30)
    assert claimed is not None
    stamp = claimed[1]
    later = stamp + timedelta(seconds=1)
    rows = Prediction.objects

    assert rows.fenced_update(prediction.pk, later, later, {"logs": "a"}, True) == (False, False)
    assert rows.fenced_update(prediction.pk, stamp, later, {"logs": "b"}, True) == (True, False)
    rows.filter(pk=prediction.pk).update(cancel_requested_at=timezone.now())
    latest = later + timedelta(seconds=1)
    assert rows.fenced_update(prediction.pk, later, latest, {"logs": "c"}, True) == (True, True)
    assert rows.get(pk=prediction.pk).logs == "c"


@pytest.mark.django_db(transaction=True)
def test_deleting_a_prediction_frees_its_archived_files(
    settings: object, tmp_path: Path, alice: User
) -> None:
    settings.MEDIA_ROOT = tmp_path
    prediction = Prediction.objects.create(owner=alice, model_ref="sandbox/image")
    archived = OutputFile(prediction=prediction, content_type="image/png", size=3, sha256="0" * 64)
    archived.original_url = "https://replicate.delivery/x/out.png"
    archived.file.save("out.png", ContentFile(b"png"), save=True)
    path = Path(archived.file.path)
    assert path.exists()

    prediction.delete()

    assert not path.exists()
