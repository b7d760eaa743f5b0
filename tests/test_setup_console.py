"""`manage.py setup_console`: run by `make run` on every start, so it must be idempotent."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from predictions import upstream
from predictions.models import ApiToken, CatalogModel
from sandbox.demo_models import MODELS

SANDBOX_URL = "http://127.0.0.1:8000/sandbox"


def setup_console(*args: str) -> str:
    out = StringIO()
    call_command("setup_console", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def sandbox_mode(settings: object) -> object:
    settings.REPLICATE_API_TOKEN = ""
    settings.SANDBOX_ENABLED = True
    settings.SANDBOX_API_TOKENS = ["r8_sandbox_seed_token_0001"]
    return settings


def test_the_first_run_registers_the_sandbox_token_and_its_models(
    db: None, sandbox_mode: object
) -> None:
    output = setup_console("--sandbox-url", SANDBOX_URL + "/")

    token = ApiToken.objects.get()
    assert (token.label, token.base_url, token.is_default) == ("Sandbox", SANDBOX_URL, True)
    assert token.get_token() == "r8_sandbox_seed_token_0001"
    models = {model.ref: model for model in CatalogModel.objects.all()}
    assert sorted(models) == sorted(MODELS)
    text = models["sandbox/text"]
    assert text.schema_version == MODELS["sandbox/text"].latest_version.id
    assert text.input_schema["required"] == ["prompt"]
    assert text.streams_text
    assert text.description == MODELS["sandbox/text"].description
    assert text.title
    assert text.token == token
    assert models["sandbox/image"].input_schema["properties"]["output_format"]["enum"]
    assert output.count("\n") <= 2
    assert f"{len(MODELS)} added" in output


def test_running_again_changes_nothing_and_keeps_admin_edits(
    db: None, sandbox_mode: object
) -> None:
    setup_console()
    CatalogModel.objects.filter(name="text").update(title="Our storyteller", enabled=False)

    output = setup_console()

    assert ApiToken.objects.count() == 1
    assert CatalogModel.objects.count() == len(MODELS)
    text = CatalogModel.objects.get(name="text")
    assert (text.title, text.enabled) == ("Our storyteller", False)
    assert f"0 added, {len(MODELS)} already present" in output


def test_a_new_port_moves_the_sandbox_token_along(db: None, sandbox_mode: object) -> None:
    setup_console("--sandbox-url", SANDBOX_URL)

    setup_console("--sandbox-url", "http://127.0.0.1:9000/sandbox")

    assert ApiToken.objects.get().base_url == "http://127.0.0.1:9000/sandbox"


def test_a_changed_sandbox_token_is_updated(db: None, sandbox_mode: object) -> None:
    setup_console()
    sandbox_mode.SANDBOX_API_TOKENS = ["r8_sandbox_seed_token_0002"]

    setup_console()

    assert ApiToken.objects.get().get_token() == "r8_sandbox_seed_token_0002"


def test_the_seeded_schemas_match_what_the_sandbox_serves(
    db: None, sandbox_mode: object, sandbox_url: str, sandbox_token: str
) -> None:
    sandbox_mode.SANDBOX_API_TOKENS = [sandbox_token]
    setup_console("--sandbox-url", sandbox_url)

    for model in CatalogModel.objects.all():
        creds = upstream.credentials_for(model.resolve_token())
        served = upstream.call_sync(upstream.get_model_schema, creds, model.owner, model.name)
        assert (served.input_schema, served.output_schema, served.version_id) == (
            model.input_schema,
            model.output_schema,
            model.schema_version,
        )


def test_a_real_token_is_registered_once_and_no_sandbox_models(db: None, settings: object) -> None:
    settings.REPLICATE_API_TOKEN = "r8_real_token_from_env_9999"
    settings.REPLICATE_API_BASE_URL = "https://api.replicate.com"

    first = setup_console()
    second = setup_console()

    token = ApiToken.objects.get()
    assert (token.label, token.base_url, token.is_default) == (
        "Replicate",
        "https://api.replicate.com",
        True,
    )
    assert token.get_token() == "r8_real_token_from_env_9999"
    assert not CatalogModel.objects.exists()
    assert "Registered REPLICATE_API_TOKEN" in first
    assert "already registered" in second
    assert "r8_real" not in first + second


def test_a_real_token_takes_over_as_default_from_the_sandbox(
    db: None, sandbox_mode: object
) -> None:
    setup_console()
    sandbox_mode.REPLICATE_API_TOKEN = "r8_real_token_from_env_9999"

    setup_console()

    assert ApiToken.objects.get(is_default=True).label == "Replicate"
    # The sandbox models keep their sandbox token.
    assert {m.resolve_token().label for m in CatalogModel.objects.all()} == {"Sandbox"}


def test_with_no_token_and_no_sandbox_it_says_how_to_add_one(db: None, settings: object) -> None:
    settings.REPLICATE_API_TOKEN = ""
    settings.SANDBOX_ENABLED = False

    output = setup_console()

    assert "REPLICATE_API_TOKEN" in output
    assert "/admin/predictions/apitoken/add/" in output
    assert not ApiToken.objects.exists()


def test_a_sandbox_url_with_v1_is_refused(db: None, sandbox_mode: object) -> None:
    with pytest.raises(CommandError, match="must not end with /v1"):
        setup_console("--sandbox-url", SANDBOX_URL + "/v1")
