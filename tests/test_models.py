"""Model behaviour that is not about access: tokens per model, archived files' lifetime."""

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile

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
