"""The console's pages: access, the model form, the live page, output files, error pages.

The executor is replaced at its seam (`executors.start_prediction`) where a test is about
the view and not the run; the browser tests run real predictions against the sandbox.
"""

import html
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.db import connection
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.views.defaults import server_error

from predictions import events, executors, forms
from predictions.models import ApiToken, CatalogModel, ModelSchema, OutputFile, Prediction
from predictions.presenters import FRAGMENTS, LiveView, badge, timeline
from predictions.templatetags.console import render_markdown

from .test_schema import FLUX_OPENAPI, MIXTRAL_INPUT, REFERENCE_FILES

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FLUX_INPUT = {
    **FLUX_OPENAPI["components"]["schemas"]["Input"],
    "components": FLUX_OPENAPI["components"],
}
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def flux(db: None) -> CatalogModel:
    return CatalogModel.objects.create(
        owner="black-forest-labs",
        name="flux-dev",
        title="FLUX.1 dev",
        description="A text-to-image model.",
        input_schema=FLUX_INPUT,
        output_schema={"type": "array", "items": {"type": "string", "format": "uri"}},
        hidden_inputs=["go_fast"],
        default_input={"go_fast": False, "num_outputs": 2},
    )


@pytest.fixture
def llm(db: None) -> CatalogModel:
    return CatalogModel.objects.create(
        owner="mistralai",
        name="mixtral",
        input_schema=MIXTRAL_INPUT,
        output_schema={
            "type": "array",
            "items": {"type": "string"},
            "x-cog-array-type": "iterator",
            "x-cog-array-display": "concatenate",
        },
    )


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def make_prediction(owner: User, model: CatalogModel, **fields: Any) -> Prediction:
    fields.setdefault("input", {"prompt": "a lighthouse at dusk"})
    return Prediction.objects.create(owner=owner, model=model, model_ref=model.ref, **fields)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Replace the executor's entry point: record the call, create the queued row."""
    calls: list[dict[str, Any]] = []

    async def start_prediction(**kwargs: Any) -> Prediction:
        calls.append(kwargs)
        model = kwargs["model"]
        return await Prediction.objects.acreate(
            owner=kwargs["owner"],
            model=model,
            model_ref=model.ref,
            input=kwargs["input"],
            source=kwargs["source"],
            parent=kwargs.get("parent"),
        )

    monkeypatch.setattr(executors, "start_prediction", start_prediction)
    yield calls


# ---------------------------------------------------------------------------- access


def test_another_users_prediction_is_404_on_every_url(
    client: Client, alice: User, bob: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(alice, flux, status="processing")
    OutputFile.objects.create(
        prediction=prediction,
        position=0,
        file=ContentFile(PNG, name="out-0.png"),
        content_type="image/png",
        size=len(PNG),
        sha256="0" * 64,
        original_url="https://replicate.delivery/x/out-0.png",
    )
    logged_in(client, bob)
    base = f"/predictions/{prediction.pk}/"

    assert client.get(base).status_code == 404
    assert client.get(base + "rerun/").status_code == 404
    assert client.post(base + "cancel/").status_code == 404
    assert client.get(base + "files/0/").status_code == 404
    assert client.get(f"/predictions/?row={prediction.pk}").status_code == 204
    prediction.refresh_from_db()
    assert prediction.cancel_requested_at is None


def test_a_shared_prediction_is_visible_but_only_its_owner_cancels_it(
    client: Client, alice: User, bob: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(alice, flux, status="processing")
    prediction.shared_with.add(bob)
    logged_in(client, bob)

    assert client.get(f"/predictions/{prediction.pk}/").status_code == 200
    assert client.post(f"/predictions/{prediction.pk}/cancel/").status_code == 403


def test_staff_see_everyones_predictions(
    client: Client, alice: User, staff: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(alice, flux, status="succeeded")
    logged_in(client, staff)

    assert client.get(f"/predictions/{prediction.pk}/").status_code == 200


def test_a_model_the_user_may_not_run_is_404(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    flux.allowed_groups.add(Group.objects.create(name="designers"))
    disabled = CatalogModel.objects.create(owner="acme", name="off", enabled=False)
    logged_in(client, alice)

    assert client.get("/models/black-forest-labs/flux-dev/").status_code == 404
    assert client.post("/models/black-forest-labs/flux-dev/", {"prompt": "x"}).status_code == 404
    assert client.get(f"/models/{disabled.owner}/{disabled.name}/").status_code == 404
    assert client.get("/models/no/such/").status_code == 404
    assert Prediction.objects.count() == 0


def test_a_group_member_may_run_a_restricted_model(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    designers = Group.objects.create(name="designers")
    flux.allowed_groups.add(designers)
    alice.groups.add(designers)
    logged_in(client, alice)

    assert client.get("/models/black-forest-labs/flux-dev/").status_code == 200


# ---------------------------------------------------------------------------- async pages


@pytest.mark.django_db(transaction=True)
async def test_every_page_renders_for_a_logged_in_user_under_the_async_client(
    async_client: AsyncClient,
) -> None:
    """Templates that touch a lazy `user` from an async view raise SynchronousOnlyOperation."""
    user = await User.objects.acreate_user("carol", is_staff=True)
    model = await CatalogModel.objects.acreate(
        owner="acme", name="llm", input_schema=MIXTRAL_INPUT, title="LLM"
    )
    parent = await Prediction.objects.acreate(
        owner=user, model=model, model_ref=model.ref, status="succeeded", input={"prompt": "a"}
    )
    prediction = await Prediction.objects.acreate(
        owner=user,
        model=model,
        model_ref=model.ref,
        status="succeeded",
        input={"prompt": "b"},
        text_output="**done**",
        parent=parent,
        completed_at=timezone.now(),
        metrics={"predict_time": 1.5, "total_time": 2.0, "output_token_count": 12},
    )
    await async_client.aforce_login(user)

    for path in [
        "/",
        "/models/acme/llm/",
        "/predictions/",
        "/predictions/?q=b&status=succeeded&model=acme/llm&since=2000-01-01&until=2999-01-01",
        f"/predictions/?row={prediction.pk}",
        f"/predictions/{prediction.pk}/",
        f"/predictions/{parent.pk}/",
        f"/predictions/{prediction.pk}/rerun/",
    ]:
        response = await async_client.get(path)
        assert response.status_code == 200, path
        assert b"carol" in response.content or "row=" in path, path
    missing = await async_client.get("/predictions/00000000-0000-0000-0000-000000000000/")
    assert missing.status_code == 404
    assert b"Nothing here" in missing.content and b"carol" in missing.content


# ---------------------------------------------------------------------------- catalogue


def test_the_catalogue_lists_runnable_models_with_the_users_last_run(
    client: Client,
    alice: User,
    bob: User,
    flux: CatalogModel,
    llm: CatalogModel,
    django_assert_max_num_queries: Any,
) -> None:
    old = make_prediction(alice, flux, status="failed")
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    latest = make_prediction(alice, flux, status="succeeded")
    make_prediction(bob, llm, status="succeeded")  # bob's run is not alice's last run
    CatalogModel.objects.create(owner="acme", name="hidden", enabled=False)
    logged_in(client, alice)

    with django_assert_max_num_queries(5):
        response = client.get("/")

    page = response.content.decode()
    assert "FLUX.1 dev" in page and "mistralai/mixtral" in page
    assert "acme/hidden" not in page
    assert f"/predictions/{latest.pk}/" in page
    assert f"/predictions/{old.pk}/" not in page
    assert "You haven’t run it yet." in page


def test_the_catalogue_query_count_does_not_grow_with_models(client: Client, alice: User) -> None:
    logged_in(client, alice)

    def queries_for_models(count: int) -> int:
        for i in range(CatalogModel.objects.count(), count):
            make_prediction(alice, CatalogModel.objects.create(owner="acme", name=f"m{i}"))
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/")
        assert response.content.decode().count("Your last run") == count
        return len(queries)

    assert queries_for_models(2) == queries_for_models(12)


def test_the_empty_catalogue_tells_an_admin_what_to_do(client: Client, staff: User) -> None:
    page = logged_in(client, staff).get("/").content.decode()

    assert "No models to run yet" in page
    assert "/admin/predictions/catalogmodel/add/" in page


def test_the_empty_catalogue_tells_a_member_whom_to_ask(client: Client, alice: User) -> None:
    page = logged_in(client, alice).get("/").content.decode()

    assert "Ask an administrator" in page
    assert "/admin/" not in page


# ---------------------------------------------------------------------------- model form


def test_the_form_follows_the_schema(client: Client, alice: User, flux: CatalogModel) -> None:
    page = logged_in(client, alice).get("/models/black-forest-labs/flux-dev/").content.decode()

    # x-order, hidden inputs gone, admin default applied, enum as a select, file upload.
    order = [
        page.index(f'name="{name}"') for name in ["prompt", "aspect_ratio", "image", "num_outputs"]
    ]
    assert order == sorted(order)
    assert 'name="go_fast"' not in page
    assert 'id="field-num_outputs" name="num_outputs" value="2"' in page
    assert '<option value="16:9">16:9</option>' in page
    assert 'type="file" id="field-image" name="image" accept="image/*"' in page
    assert 'type="range" min="1" max="4" step="1"' in page
    assert 'aria-required="true"' in page
    assert 'enctype="multipart/form-data"' in page
    assert "await client.async_run(" in page
    assert "Some inputs of this model are set by your administrator." in page


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
def test_every_reference_schema_renders_a_form(client: Client, alice: User, path: Path) -> None:
    from predictions import upstream

    openapi = json.loads(path.read_text())["openapi_schema"]
    input_schema, output_schema = upstream.split_openapi_schema(openapi)
    model = CatalogModel.objects.create(
        owner="ref", name=path.stem.replace("__", "-").lower()[:100], input_schema=input_schema
    )

    response = logged_in(client, alice).get(f"/models/ref/{model.name}/")

    assert response.status_code == 200
    page = response.content.decode()
    for name in input_schema["properties"]:
        assert f'name="{name}"' in page, name


def test_invalid_input_shows_the_form_again_with_errors_beside_fields(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    logged_in(client, alice)

    response = client.post(
        "/models/black-forest-labs/flux-dev/",
        {"prompt": "", "num_outputs": "9", "aspect_ratio": "5:1", "guidance": "3"},
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="field-prompt-error">This field is required.' in page
    assert "Ensure this value is at least 1." not in page
    assert 'id="field-num_outputs-error">Ensure this value is at most 4.' in page
    assert "is not one of the choices" in page
    assert "3 inputs need attention." in page
    # What the user typed is kept.
    assert 'name="num_outputs" value="9"' in page
    assert started == []
    assert Prediction.objects.count() == 0


def test_unknown_inputs_are_rejected(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    response = logged_in(client, alice).post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "steps": "4"}
    )

    assert response.status_code == 400
    assert "steps: This model has no input called “steps”." in response.content.decode()
    assert started == []


def test_valid_input_starts_a_prediction_and_redirects_to_it(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    response = logged_in(client, alice).post(
        "/models/black-forest-labs/flux-dev/",
        {
            "prompt": "a red fox\r\nin snow",
            "aspect_ratio": "16:9",
            "num_outputs": "1",
            "guidance": "3",
            "seed": "",
            "image": "",
            "go_fast": "true",  # hidden: the admin's False is sent
        },
    )

    assert response.status_code == 303
    (call,) = started
    assert response["Location"] == f"/predictions/{Prediction.objects.get().pk}/"
    assert call["input"] == {
        "prompt": "a red fox\nin snow",
        "aspect_ratio": "16:9",
        "num_outputs": 1,
        "guidance": 3,
        "go_fast": False,
    }
    assert call["source"] == "web"
    assert call["owner"] == alice
    assert call["parent"] is None


def test_a_small_upload_goes_in_as_a_data_uri(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    upload = ContentFile(PNG, name="fox.png")
    upload.content_type = "image/png"

    response = logged_in(client, alice).post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "image": upload}
    )

    assert response.status_code == 303
    assert started[0]["input"]["image"].startswith("data:image/png;base64,iVBORw0KGgo")


def test_a_big_upload_goes_through_the_files_api_after_validation(
    client: Client,
    alice: User,
    flux: CatalogModel,
    started: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    sandbox_url: str,
    sandbox_token: str,
) -> None:
    """The real upload path: the official client posts the file to the sandbox's /v1/files."""
    token = ApiToken(label="sandbox", base_url=sandbox_url)
    token.set_token(sandbox_token)
    token.save()
    flux.token = token
    flux.save()
    monkeypatch.setattr(forms, "DATA_URI_MAX_BYTES", 10)
    logged_in(client, alice)

    def upload() -> ContentFile:
        file = ContentFile(PNG, name="fox.png")
        file.content_type = "image/png"
        return file

    invalid = client.post("/models/black-forest-labs/flux-dev/", {"prompt": "", "image": upload()})
    assert invalid.status_code == 400
    assert "Choose “fox.png” again." in invalid.content.decode()
    assert started == []

    response = client.post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "image": upload()}
    )

    assert response.status_code == 303
    url = started[0]["input"]["image"]
    assert url.startswith(f"{sandbox_url}/v1/files/")
    auth = {"Authorization": f"Bearer {sandbox_token}"}
    assert httpx.get(f"{url}/download", headers=auth, timeout=10).content == PNG


def test_a_file_over_replicates_limit_is_refused_before_it_is_read(
    client: Client,
    alice: User,
    flux: CatalogModel,
    started: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forms, "UPLOAD_MAX_BYTES", len(PNG) - 1)

    def unread(upload: Any) -> str:
        raise AssertionError("a file over the limit was read")

    monkeypatch.setattr(forms, "data_uri", unread)
    upload = ContentFile(PNG, name="fox.png")
    upload.content_type = "image/png"

    response = logged_in(client, alice).post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "image": upload}
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "“fox.png” is 70 bytes; Replicate accepts files up to 100 MB." in page
    assert 'id="field-image-error"' in page
    assert started == []


def test_a_checkbox_left_unticked_sends_false(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    flux.hidden_inputs = []
    flux.save()

    logged_in(client, alice).post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "go_fast": ["false"]}
    )
    client.post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "go_fast": ["false", "true"]}
    )

    assert [call["input"]["go_fast"] for call in started] == [False, True]


def test_rerun_prefills_the_form_and_records_the_parent(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    parent = make_prediction(
        alice, flux, status="succeeded", input={"prompt": "first try", "num_outputs": 3}
    )
    logged_in(client, alice)

    page = client.get(f"/predictions/{parent.pk}/rerun/").content.decode()
    assert f'name="parent" value="{parent.pk}"' in page
    assert "first try</textarea>" in page
    assert 'name="num_outputs" value="3"' in page

    response = client.post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "second try", "parent": str(parent.pk)}
    )
    assert response.status_code == 303
    assert started[0]["parent"] == parent
    child = Prediction.objects.get(parent=parent)
    detail = client.get(f"/predictions/{parent.pk}/").content.decode()
    assert f"/predictions/{child.pk}/" in detail
    assert f"/predictions/{parent.pk}/" in client.get(f"/predictions/{child.pk}/").content.decode()


def test_a_parent_the_viewer_cannot_see_is_not_shown(
    client: Client, alice: User, bob: User, staff: User, flux: CatalogModel
) -> None:
    secret = make_prediction(bob, flux, status="failed")
    child = make_prediction(bob, flux, status="succeeded", parent=secret)
    child.shared_with.add(alice)

    page = logged_in(client, alice).get(f"/predictions/{child.pk}/").content.decode()

    assert str(secret.pk) not in page and str(secret.pk)[:8] not in page
    assert "Related runs" not in page
    staff_page = logged_in(client, staff).get(f"/predictions/{child.pk}/").content.decode()
    assert f"/predictions/{secret.pk}/" in staff_page


def test_a_parent_the_user_cannot_see_is_refused(
    client: Client, alice: User, bob: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    secret = make_prediction(bob, flux)

    response = logged_in(client, alice).post(
        "/models/black-forest-labs/flux-dev/", {"prompt": "x", "parent": str(secret.pk)}
    )

    assert response.status_code == 400
    assert "not visible to you" in response.content.decode()
    assert started == []


def test_the_form_post_needs_a_csrf_token(alice: User, flux: CatalogModel) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/models/black-forest-labs/flux-dev/", {"prompt": "x"})

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()


# ---------------------------------------------------------------------------- API snippet

SNIPPET = "/models/black-forest-labs/flux-dev/snippet/"
# What the flux form posts as the page first shows it (the admin's num_outputs, defaults).
FLUX_FORM = {
    "prompt": "",
    "aspect_ratio": "1:1",
    "image": "",
    "num_outputs": "2",
    "guidance": "3",
    "seed": "",
    "megapixels": "1",
}


def snippet_of(response: Any) -> str:
    """The snippet's Python, from the fragment alone or from the whole page."""
    text = response.content.decode()
    if "<code" in text:
        text = text.split('id="api-snippet"', 1)[1].split(">", 1)[1].split("</code>", 1)[0]
    return html.unescape(text)


def test_the_snippet_is_drawn_for_the_posted_values_and_runs_nothing(
    client: Client, alice: User, flux: CatalogModel, started: list[dict[str, Any]]
) -> None:
    logged_in(client, alice)
    values = {**FLUX_FORM, "prompt": 'a "fox"', "aspect_ratio": "16:9", "num_outputs": "1"}

    response = client.post(SNIPPET, values)

    assert response.status_code == 200
    snippet = snippet_of(response)
    assert '"prompt": "a \\"fox\\""' in snippet
    assert '"aspect_ratio": "16:9"' in snippet
    # The model's defaults are left out: upstream applies them anyway.
    assert "num_outputs" not in snippet and "guidance" not in snippet
    assert "seed" not in snippet and "megapixels" not in snippet
    compile(snippet, "snippet", "exec")
    assert started == [] and Prediction.objects.count() == 0


def test_the_snippet_of_the_untouched_form_is_the_pages_own(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    logged_in(client, alice)

    page = client.get("/models/black-forest-labs/flux-dev/")
    fragment = client.post(SNIPPET, FLUX_FORM)

    # The admin's num_outputs shows (it is not the model's default); go_fast is hidden.
    assert snippet_of(fragment) == snippet_of(page)
    assert '"num_outputs": 2' in snippet_of(fragment)
    assert "go_fast" not in snippet_of(client.post(SNIPPET, {**FLUX_FORM, "go_fast": "true"}))


def test_the_snippet_shows_the_valid_values_of_a_form_with_errors(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    logged_in(client, alice)
    values = {
        **FLUX_FORM,
        "prompt": "ok",
        "num_outputs": "9",
        "guidance": "lots",
        "aspect_ratio": "5:1",
        "seed": "12",
        "steps": "4",
    }

    response = client.post(SNIPPET, values)

    assert response.status_code == 200
    snippet = snippet_of(response)
    assert '"prompt": "ok"' in snippet and '"seed": 12' in snippet
    for left_out in ("num_outputs", "guidance", "aspect_ratio", "steps"):
        assert left_out not in snippet
    assert client.post(SNIPPET, {}).status_code == 200


def test_json_nested_too_deep_to_run_is_left_out_of_the_snippet(
    client: Client, alice: User
) -> None:
    CatalogModel.objects.create(
        owner="acme",
        name="config",
        input_schema={"type": "object", "properties": {"config": {"type": "object"}}},
    )
    logged_in(client, alice)
    deep = "[" * 500 + "]" * 500

    fragment = client.post("/models/acme/config/snippet/", {"config": deep})
    page = client.post("/models/acme/config/", {"config": deep})

    assert fragment.status_code == 200 and "input={}," in snippet_of(fragment)
    assert page.status_code == 400 and "nested more than 64 levels" in page.content.decode()


def test_the_snippet_opens_picked_files_by_name(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    logged_in(client, alice)

    picked = client.post(SNIPPET, {**FLUX_FORM, "file-name": "image:my fox.png"})
    kept = client.post(SNIPPET, {**FLUX_FORM, "image": "data:image/png;base64,"})
    url = client.post(SNIPPET, {**FLUX_FORM, "image": "https://example.com/fox.png"})

    assert '"image": open("my fox.png", "rb")' in snippet_of(picked)
    assert '"image": open("image-file", "rb")' in snippet_of(kept)
    assert '"image": "https://example.com/fox.png"' in snippet_of(url)


def test_the_snippet_runs_the_model_through_this_console_s_gateway_by_name(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    old, current = "a" * 64, "b" * 64
    flux.schema_version = current
    flux.save()
    ModelSchema.objects.create(model=flux, version_id=old, input_schema=FLUX_INPUT)
    parent = make_prediction(alice, flux, version=old)
    logged_in(client, alice)

    rerun = snippet_of(
        client.post(SNIPPET, {**FLUX_FORM, "parent": str(parent.pk), "run_version": old})
    )

    # The gateway runs the catalogue's version; the member's key comes from the environment.
    assert '"black-forest-labs/flux-dev",' in rerun and old not in rerun
    assert 'replicate.Client(base_url="http://testserver/api")' in rerun
    assert "http://testserver/account/keys/" in rerun
    compile(rerun, "snippet", "exec")


def test_the_snippet_follows_the_model_pages_rules(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    logged_in(client, alice)
    assert client.get(SNIPPET).status_code == 405

    flux.allowed_groups.add(Group.objects.create(name="designers"))
    assert client.post(SNIPPET, FLUX_FORM).status_code == 404
    assert client.post("/models/no/such/snippet/", FLUX_FORM).status_code == 404

    client.logout()
    response = client.post(SNIPPET, FLUX_FORM)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_snippet_needs_a_csrf_token(alice: User, flux: CatalogModel) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(SNIPPET, FLUX_FORM).status_code == 403


# ---------------------------------------------------------------------------- live page


def test_a_finished_text_prediction_shows_sanitised_markdown(
    client: Client, alice: User, llm: CatalogModel
) -> None:
    prediction = make_prediction(
        alice,
        llm,
        status="succeeded",
        text_output="# Title\n\n**bold** <script>alert(1)</script> ![x](https://evil.example/a.png)",
        completed_at=timezone.now(),
        metrics={"predict_time": 1.25, "total_time": 2.5},
    )

    page = logged_in(client, alice).get(f"/predictions/{prediction.pk}/").content.decode()

    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    assert "evil.example" not in page.split('id="rendered"')[1].split("</div>")[0]
    assert "1.2 s" in page and "2.5 s" in page
    assert 'id="raw-text"' in page


def test_markdown_allows_only_our_own_file_urls_for_images() -> None:
    own = "/predictions/0b6f2c8e-1111-4222-8333-944455556666/files/0/"

    html = render_markdown(
        f"![ours]({own}) ![theirs](https://evil.example/x.png) [link](javascript:alert(1))"
    )

    assert f'src="{own}"' in html
    assert "evil.example" not in html
    assert "javascript:" not in html


def test_a_failed_prediction_shows_its_error(
    client: Client, alice: User, llm: CatalogModel
) -> None:
    prediction = make_prediction(
        alice,
        llm,
        status="failed",
        error="Rate limited by Replicate; try again in 7 s.",
        completed_at=timezone.now(),
    )

    page = logged_in(client, alice).get(f"/predictions/{prediction.pk}/").content.decode()

    assert "This run failed" in page
    assert "Rate limited by Replicate; try again in 7 s." in page
    assert 'role="alert"' in page


def test_an_active_prediction_page_is_ready_for_live_updates(
    client: Client, alice: User, llm: CatalogModel
) -> None:
    prediction = make_prediction(
        alice,
        llm,
        status="processing",
        started_at=timezone.now(),
        text_output="Once upon",
        logs="loading\r 45%|████▌     | 45/100 [00:04<00:05, 9.98it/s]",
        event_seq=7,
    )

    page = logged_in(client, alice).get(f"/predictions/{prediction.pk}/").content.decode()

    assert 'id="stream" aria-live="polite"' in page
    assert ">Once upon</div>" in page
    assert 'value="45"' in page  # progress from the logs' tqdm line
    assert "loading\r" not in page  # logs shown as a terminal would
    assert 'id="cancel-form"' in page
    config = json.loads(
        page.split('id="prediction-config" type="application/json">')[1].split("</script>")[0]
    )
    assert config["seq"] == 7
    assert config["socket"] == f"/ws/predictions/{prediction.pk}/"
    assert '<meta http-equiv="refresh" content="5">' in page  # no-JS fallback


def test_cancel_asks_for_cancellation_and_goes_back(
    client: Client, alice: User, llm: CatalogModel
) -> None:
    prediction = make_prediction(alice, llm, status="queued")
    logged_in(client, alice)

    response = client.post(f"/predictions/{prediction.pk}/cancel/")

    assert response.status_code == 303
    assert response["Location"] == f"/predictions/{prediction.pk}/"
    prediction.refresh_from_db()
    assert prediction.status == "canceled"


def test_cancel_answers_json_to_scripts(client: Client, alice: User, llm: CatalogModel) -> None:
    prediction = make_prediction(alice, llm, status="queued")

    response = logged_in(client, alice).post(
        f"/predictions/{prediction.pk}/cancel/", headers={"accept": "application/json"}
    )

    assert response.json() == {"status": "canceled", "canceling": False}


def test_cancel_needs_post(client: Client, alice: User, llm: CatalogModel) -> None:
    prediction = make_prediction(alice, llm, status="processing")

    assert logged_in(client, alice).get(f"/predictions/{prediction.pk}/cancel/").status_code == 405


# ---------------------------------------------------------------------------- output files


def add_file(
    prediction: Prediction, position: int, content: bytes, name: str, content_type: str
) -> None:
    OutputFile.objects.create(
        prediction=prediction,
        position=position,
        file=ContentFile(content, name=name),
        content_type=content_type,
        size=len(content),
        sha256="0" * 64,
        original_url=f"https://replicate.delivery/x/{name}",
    )


def test_output_files_are_served_with_safe_types(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(alice, flux, status="succeeded")
    add_file(prediction, 0, PNG, "out-0.png", "image/png")
    add_file(prediction, 1, b"<svg onload=alert(1)>", "out-1.svg", "image/svg+xml")
    add_file(prediction, 2, b"<html><script>alert(1)</script>", "out-2.html", "text/html")
    logged_in(client, alice)
    base = f"/predictions/{prediction.pk}/files/"

    image = client.get(base + "0/")
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert image["X-Content-Type-Options"] == "nosniff"
    assert image["Content-Disposition"].startswith("inline")
    assert b"".join(image.streaming_content) == PNG

    for position in (1, 2):
        risky = client.get(f"{base}{position}/")
        assert risky["Content-Type"] == "application/octet-stream"
        assert risky["Content-Disposition"].startswith("attachment")
        assert "sandbox" in risky["Content-Security-Policy"]

    download = client.get(base + "0/?download=1")
    assert download["Content-Disposition"].startswith("attachment")
    assert client.get(base + "9/").status_code == 404


def test_audio_and_video_are_served_inline_for_the_players(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(alice, flux, status="succeeded")
    add_file(prediction, 0, b"ID3", "out-0.mp3", "audio/mpeg")
    add_file(prediction, 1, b"\x00\x00\x00\x18ftypmp42", "out-1.mp4", "Video/MP4; codecs=avc1")
    logged_in(client, alice)
    base = f"/predictions/{prediction.pk}/"

    for position, content_type in ((0, "audio/mpeg"), (1, "video/mp4")):
        response = client.get(f"{base}files/{position}/")
        assert response["Content-Type"] == content_type
        assert response["Content-Disposition"].startswith("inline")
        assert response["X-Content-Type-Options"] == "nosniff"
    page = client.get(base).content.decode()
    assert f'<audio controls preload="metadata" src="{base}files/0/">' in page
    assert f'<video controls preload="metadata" src="{base}files/1/">' in page


def test_the_live_page_shows_images_inline_with_downloads(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(
        alice, flux, status="succeeded", output=["https://replicate.delivery/x/out-0.png"]
    )
    add_file(prediction, 0, PNG, "out-0.png", "image/png")

    page = logged_in(client, alice).get(f"/predictions/{prediction.pk}/").content.decode()

    url = f"/predictions/{prediction.pk}/files/0/"
    assert f'<img src="{url}"' in page
    assert f'href="{url}?download=1" download' in page
    assert "replicate.delivery" not in page.split('id="output"')[1].split("</section>")[0]


# ---------------------------------------------------------------------------- error pages


def test_404_is_in_the_sites_style(client: Client, alice: User) -> None:
    response = logged_in(client, alice).get("/predictions/00000000-0000-0000-0000-000000000000/")

    assert response.status_code == 404
    assert "Nothing here" in response.content.decode()
    assert "alice" in response.content.decode()


def test_500_renders_without_a_request_or_database(rf: RequestFactory) -> None:
    # As Django's handler does it: no RequestContext, so no context processors, no user.
    html = server_error(rf.get("/")).content.decode()

    assert "Something went wrong on our side" in html
    assert "Traceback" not in html


# ---------------------------------------------------------------------------- live fragments
# The server draws every fragment a live page shows: what a page gets over its socket is the
# same HTML as the same part of a fresh load of that page.


def page_of(client: Client, prediction: Prediction) -> str:
    response = client.get(f"/predictions/{prediction.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def element(html: str, id_: str) -> str:
    """The element with this id, as the fragment for it starts (one line is enough)."""
    match = re.search(rf'<[a-z]+ [^>]*id="{id_}"[^>]*>', html)
    assert match, f"no #{id_}"
    return match.group(0)


def test_a_live_page_that_followed_the_events_ends_as_a_fresh_load_draws_it(
    client: Client, alice: User, flux: CatalogModel
) -> None:
    prediction = make_prediction(alice, flux, status="queued")
    view = LiveView(Prediction.objects.get(pk=prediction.pk), [])
    started = timezone.now()

    starting = view.apply({"type": "status", "seq": 1, "status": "starting", "canceling": False})
    assert set(starting) == {"status-badge", "cancel-button", "timeline"}
    assert 'data-status="starting"' in starting["status-badge"]
    processing = view.apply(
        {
            "type": "status",
            "seq": 2,
            "status": "processing",
            "canceling": False,
            "started_at": started.isoformat(),
        }
    )
    # The running step's clock starts when upstream started it.
    assert f'data-since="{started.isoformat()}"' in processing["timeline"]
    upstream_urls = [
        "https://replicate.delivery/x/out-0.png",
        "https://replicate.delivery/x/out-1.png",
    ]
    made = view.apply({"type": "output", "seq": 3, "output": upstream_urls})
    # Not copied yet: placeholders, never the upstream image itself.
    assert made["output"].count("saving a copy…") == 2
    assert "replicate.delivery" not in made["output"].replace("out-0.png</", "").split("saving")[0]
    assert "<img" not in made["output"]

    for position in (0, 1):
        add_file(prediction, position, PNG, f"out-{position}.png", "image/png")
    files = list(prediction.files.order_by("position"))
    listing = [events.serialize_file(prediction.pk, f) for f in files]
    copied = view.apply({"type": "files", "seq": 4, "files": listing})
    assert copied["output"].count("<img") == 2 and "saving a copy…" not in copied["output"]

    Prediction.objects.filter(pk=prediction.pk).update(
        status="succeeded",
        started_at=started,
        completed_at=timezone.now(),
        output=[f["url"] for f in listing],
        metrics={"predict_time": 1.25, "total_time": 1.5},
        event_seq=5,
    )
    final = Prediction.objects.get(pk=prediction.pk)
    done = view.apply(
        {"type": "done", "seq": 5, "prediction": events.serialize_prediction(final, files)}
    )

    assert set(done) == set(FRAGMENTS) - {"cancel-button"}  # the page drops its cancel form
    page = page_of(logged_in(client, alice), final)
    for id_, fragment in done.items():
        assert fragment.strip() in page, id_
    assert "1.2 s" in done["metrics"] and 'data-status="succeeded"' in done["status-badge"]


def test_the_snapshot_fragments_are_the_page_as_loaded(
    client: Client, alice: User, llm: CatalogModel
) -> None:
    prediction = make_prediction(
        alice,
        llm,
        status="processing",
        started_at=timezone.now(),
        text_output="Once <b>upon</b>",
        logs="loading\r 45%|████▌     | 45/100 [00:04<00:05, 9.98it/s]",
        event_seq=7,
    )
    fragments = LiveView(prediction, []).render()
    page = page_of(logged_in(client, alice), prediction)

    for id_ in ("status-badge", "cancel-button", "metrics", "progress-row", "output", "logs"):
        assert fragments[id_].strip() in page, id_
    for id_, fragment in fragments.items():  # each fragment is the element it replaces
        assert element(fragment, id_) == element(page, id_), id_
    assert "Once &lt;b&gt;upon&lt;/b&gt;" in fragments["output"]  # model output is escaped
    assert "45% · 45/100" in fragments["progress-row"]


def test_a_cancel_request_shows_canceling_and_the_deltas_change_no_fragment(
    alice: User, llm: CatalogModel
) -> None:
    view = LiveView(make_prediction(alice, llm, status="processing"), [])

    canceling = view.apply({"type": "status", "seq": 1, "status": "processing", "canceling": True})

    assert "Canceling…" in canceling["status-badge"]
    assert "disabled" in canceling["cancel-button"] and "Canceling…" in canceling["cancel-button"]
    assert view.apply({"type": "output", "seq": 2, "text": "more"}) == {}
    assert view.apply({"type": "logs", "seq": 3, "text": "a line\n"}) == {}
    progress = view.apply({"type": "progress", "seq": 4, "percent": 12.5, "current": 1, "total": 8})
    assert "13% · 1/8" in progress["progress-row"] and 'value="12.5' in progress["progress-row"]


def test_the_feed_badge_is_the_history_rows_badge(
    client: Client, alice: User, llm: CatalogModel
) -> None:
    prediction = make_prediction(alice, llm, status="succeeded")
    history = logged_in(client, alice).get("/predictions/").content.decode()

    assert badge("succeeded", False).strip() in history
    assert "Canceling…" in badge("processing", True)
    assert "Canceling…" not in badge("canceled", True)
    assert str(prediction.pk) in history


def test_the_timeline_says_what_was_reached_skipped_and_still_running(
    alice: User, llm: CatalogModel
) -> None:
    now = timezone.now()
    queued = make_prediction(alice, llm, status="queued")
    running = make_prediction(alice, llm, status="processing", started_at=now)
    failed_early = make_prediction(alice, llm, status="failed", completed_at=now)

    def states(p: Prediction) -> list[tuple[str, str, bool]]:
        return [(s["name"], s["state"], s.get("since") is not None) for s in timeline(p)]

    assert states(queued) == [
        ("queued", "current", True),  # the page ticks its clock
        ("starting", "pending", False),
        ("processing", "pending", False),
        ("done", "pending", False),
    ]
    assert states(running)[2] == ("processing", "current", True)
    assert timeline(running)[2]["since"] == now
    assert states(failed_early) == [
        ("queued", "done", False),
        ("starting", "skipped", False),
        ("processing", "skipped", False),
        ("done", "failed", False),
    ]
    assert timeline(failed_early)[3]["label"] == "Failed"
