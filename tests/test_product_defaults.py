"""What `make run` serves by default (DEBUG off, embedded): the console's own error pages,
never Django's technical ones; static files with hashed names from daphne itself
(WhiteNoise); a branded admin whose links work."""

from __future__ import annotations

import gzip
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.test import Client

from predictions.models import CatalogModel, OutputFile, Prediction

from .test_schema import MIXTRAL_INPUT

pytestmark = pytest.mark.django_db

TECHNICAL = ("Traceback", "URLconf", "DEBUG = True", "Request Method:")


@pytest.fixture
def member_client(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


@pytest.fixture
def llm(db: None) -> CatalogModel:
    return CatalogModel.objects.create(
        owner="mistralai", name="mixtral", input_schema=MIXTRAL_INPUT
    )


def assert_product_page(html: str, heading: str) -> None:
    assert heading in html
    assert "Replicate console" in html
    for marker in TECHNICAL:
        assert marker not in html


def test_make_run_defaults_have_debug_off() -> None:
    assert settings.DEBUG is False
    assert settings.EMBEDDED is True


def test_an_unknown_model_is_the_consoles_404(member_client: Client) -> None:
    response = member_client.get("/models/nobody/nothing/")

    assert response.status_code == 404
    assert_product_page(response.content.decode(), "Nothing here")


def test_an_oversized_prompt_is_the_consoles_413(member_client: Client, llm: CatalogModel) -> None:
    prompt = "x" * (11 * 1024 * 1024)  # above DATA_UPLOAD_MAX_MEMORY_SIZE (10 MB)

    response = member_client.post("/models/mistralai/mixtral/", {"prompt": prompt})

    assert response.status_code == 413
    assert_product_page(response.content.decode(), "That was too large")
    assert "10 MB" in response.content.decode()
    assert not Prediction.objects.exists()


def test_a_malformed_request_is_the_consoles_400(member_client: Client) -> None:
    response = member_client.get("/predictions/", {"q": "nul\x00byte"})

    assert response.status_code == 400
    assert "Traceback" not in response.content.decode()


def test_a_crash_is_the_consoles_500(member_client: Client, monkeypatch: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(CatalogModel.objects, "runnable_by", broken)
    member_client.raise_request_exception = False

    response = member_client.get("/")

    assert response.status_code == 500
    assert_product_page(response.content.decode(), "Something went wrong on our side")
    assert "secret internals" not in response.content.decode()


# ---------------------------------------------------------------------------- static files


def test_pages_link_hashed_static_files_served_compressed_and_cached_for_good(
    client: Client,
) -> None:
    page = client.get("/accounts/login/").content.decode()
    (css,) = re.findall(r'href="(/static/css/console\.[0-9a-f]{12}\.css)"', page)

    plain = client.get(css)
    zipped = client.get(css, headers={"accept-encoding": "gzip"})

    assert plain.status_code == 200
    assert plain["Content-Type"].startswith("text/css")
    assert "immutable" in plain["Cache-Control"]
    assert "max-age=315360000" in plain["Cache-Control"]
    assert zipped["Content-Encoding"] == "gzip"
    assert gzip.decompress(b"".join(zipped.streaming_content)) == b"".join(plain.streaming_content)


def test_javascript_modules_import_each_other_by_hashed_name(
    member_client: Client, llm: CatalogModel
) -> None:
    page = member_client.get("/models/mistralai/mixtral/").content.decode()
    (script,) = re.findall(r'src="(/static/js/form\.[0-9a-f]{12}\.js)"', page)

    body = b"".join(member_client.get(script).streaming_content).decode()

    imports = re.findall(r'from "(\./[^"]+)"', body)
    assert imports
    assert all(re.fullmatch(r"\./\w+\.[0-9a-f]{12}\.js", name) for name in imports)


def test_a_static_path_trick_is_a_404_not_a_500(client: Client) -> None:
    response = client.get("/static/%2e%2e/project/settings.py")

    assert response.status_code in (400, 404)


# ---------------------------------------------------------------------------- admin


def test_the_admin_is_branded_and_its_help_texts_are_readable(admin_client: Client) -> None:
    index = admin_client.get("/admin/").content.decode()
    token_form = admin_client.get("/admin/predictions/apitoken/add/").content.decode()

    assert "Replicate console administration" in index
    assert "Django administration" not in index
    assert "http://HOST:PORT/sandbox" in token_form
    assert "http://:/sandbox" not in token_form


def test_the_admins_output_file_links_are_the_consoles_own(
    admin_client: Client, alice: User, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path
    prediction = Prediction.objects.create(owner=alice, model_ref="a/b", status="succeeded")
    output = OutputFile(prediction=prediction, position=0, content_type="image/png", size=3)
    output.file.save("out.png", ContentFile(b"png"), save=True)

    page = admin_client.get(f"/admin/predictions/prediction/{prediction.pk}/change/")
    html = page.content.decode()

    url = f"/predictions/{prediction.pk}/files/0/"
    assert f'href="{url}"' in html
    assert "/media/" not in html
    assert admin_client.get(url).status_code == 200
