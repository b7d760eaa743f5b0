"""Admin actions that talk to Replicate (here: the sandbox over real HTTP)."""

import json
import socket
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from predictions.models import ApiToken, CatalogModel, Prediction
from sandbox.demo_models import ECHO, IMAGE, TEXT

TOKENS = reverse("admin:predictions_apitoken_changelist")
MODELS = reverse("admin:predictions_catalogmodel_changelist")


def messages_of(response: object) -> list[str]:
    return [str(message) for message in response.context["messages"]]  # type: ignore[attr-defined]


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/sandbox"


def make_token(base_url: str, plaintext: str, label: str = "Sandbox", **extra: object) -> ApiToken:
    token = ApiToken(label=label, base_url=base_url, **extra)
    token.set_token(plaintext)
    token.save()
    return token


@pytest.fixture
def sandbox_default(db: None, sandbox_url: str, sandbox_token: str) -> ApiToken:
    return make_token(sandbox_url, sandbox_token, is_default=True)


def verify(admin_client: Client, token: ApiToken) -> list[str]:
    response = admin_client.post(
        TOKENS, {"action": "verify_tokens", "_selected_action": [token.pk]}, follow=True
    )
    assert response.status_code == 200
    return messages_of(response)


def refresh(admin_client: Client, model: CatalogModel) -> list[str]:
    response = admin_client.post(
        MODELS, {"action": "refresh_schemas", "_selected_action": [model.pk]}, follow=True
    )
    assert response.status_code == 200
    return messages_of(response)


# Verify token -------------------------------------------------------------------------


def test_verifying_a_token_records_its_account(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    messages = verify(admin_client, sandbox_default)

    sandbox_default.refresh_from_db()
    assert messages == ["“Sandbox” works: Replicate account “sandbox”."]
    assert sandbox_default.account_name == "sandbox"
    assert sandbox_default.verified_at is not None


def test_verifying_a_rejected_token_says_so_and_clears_the_old_verification(
    admin_client: Client, db: None, sandbox_url: str
) -> None:
    token = make_token(sandbox_url, "r8_revoked_token_abcd", account_name="someone")
    token.verified_at = token.created_at
    token.save()

    messages = verify(admin_client, token)

    token.refresh_from_db()
    assert messages == [
        "“Sandbox” could not be verified: "
        "Replicate rejected the API token (401). Check it in the admin."
    ]
    assert (token.account_name, token.verified_at) == ("", None)


def test_verifying_against_an_unreachable_host_says_so(admin_client: Client, db: None) -> None:
    url = closed_port_url()
    token = make_token(url, "r8_anything_at_all")

    (message,) = verify(admin_client, token)

    assert message.startswith(
        f"“Sandbox” could not be verified: Could not reach Replicate at {url}"
    )


def test_verifying_an_undecryptable_token_says_so(
    admin_client: Client, sandbox_default: ApiToken, settings: object
) -> None:
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    (message,) = verify(admin_client, sandbox_default)

    assert "“Sandbox” cannot be read" in message
    assert "TOKEN_ENCRYPTION_KEYS" in message
    assert sandbox_default.ciphertext not in message


def test_the_change_page_button_saves_then_verifies(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    change = reverse("admin:predictions_apitoken_change", args=[sandbox_default.pk])
    assert 'name="_verify"' in admin_client.get(change).content.decode()

    response = admin_client.post(
        change,
        {
            "label": "Sandbox renamed",
            "token": "",
            "base_url": sandbox_default.base_url,
            "enabled": "on",
            "is_default": "on",
            "_verify": "Save and verify",
        },
    )

    sandbox_default.refresh_from_db()
    assert response.status_code == 302
    assert response["Location"] == change
    assert sandbox_default.label == "Sandbox renamed"
    assert sandbox_default.account_name == "sandbox"


def change_token(admin_client: Client, api_token: ApiToken, **changes: str) -> object:
    form = {
        "label": api_token.label,
        "token": "",
        "base_url": api_token.base_url,
        "enabled": "on",
        **changes,
    }
    change = reverse("admin:predictions_apitoken_change", args=[api_token.pk])
    return admin_client.post(change, form)


def test_moving_a_token_to_another_host_needs_the_token_again(
    admin_client: Client, db: None, sandbox_url: str
) -> None:
    token = make_token(sandbox_url, "r8_stored_secret_token", account_name="sandbox")
    token.verified_at = timezone.now()
    token.save()
    elsewhere = closed_port_url()

    response = change_token(admin_client, token, base_url=elsewhere, _verify="Save and verify")

    token.refresh_from_db()
    assert response.status_code == 200  # the form again, nothing saved or sent
    assert "Enter the token again: the API base URL changed" in response.content.decode()
    assert (token.base_url, token.account_name) == (sandbox_url, "sandbox")


def test_a_token_moved_with_the_token_re_entered_is_no_longer_verified(
    admin_client: Client, db: None, sandbox_url: str
) -> None:
    token = make_token(closed_port_url(), "r8_old_token_for_old_host", account_name="old")
    token.verified_at = timezone.now()
    token.save()

    response = change_token(admin_client, token, base_url=sandbox_url, token="r8_new_host_token")

    token.refresh_from_db()
    assert response.status_code == 302
    assert token.base_url == sandbox_url
    assert token.get_token() == "r8_new_host_token"
    assert (token.account_name, token.verified_at) == ("", None)


# Prediction history -------------------------------------------------------------------

LARGE_FIELDS = {"logs", "text_output", "output"}


def test_only_the_prediction_list_defers_the_large_fields(
    admin_client: Client, alice: User
) -> None:
    prediction = Prediction.objects.create(
        owner=alice, model_ref="sandbox/text", logs="log line", text_output="words", output=["w"]
    )

    listed = admin_client.get(reverse("admin:predictions_prediction_changelist"))
    shown = admin_client.get(reverse("admin:predictions_prediction_change", args=[prediction.pk]))

    (row,) = listed.context["cl"].result_list
    assert row.get_deferred_fields() == LARGE_FIELDS
    # The change page shows all three: deferred, each would cost a query of its own.
    assert shown.context["original"].get_deferred_fields() == set()
    assert "log line" in shown.content.decode()


# Refresh schema -----------------------------------------------------------------------


def test_refreshing_caches_the_latest_schema_and_fills_empty_presentation(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    model = CatalogModel.objects.create(owner="sandbox", name="image", title="Pictures")

    messages = refresh(admin_client, model)

    model.refresh_from_db()
    assert messages == [f"sandbox/image: schema of version {IMAGE.versions[0].id[:12]} cached."]
    assert model.schema_version == IMAGE.versions[0].id
    assert model.schema_fetched_at is not None
    assert model.input_schema["properties"]["output_format"]["enum"] == ["webp", "jpg", "png"]
    assert model.output_schema["type"] == "array"
    assert model.title == "Pictures"  # the admin's wording stays
    assert model.description == IMAGE.description


def test_refreshing_a_pinned_model_caches_that_versions_schema(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    model = CatalogModel.objects.create(owner="sandbox", name="text", version=TEXT.versions[1].id)

    refresh(admin_client, model)

    model.refresh_from_db()
    assert model.schema_version == TEXT.versions[1].id
    assert "token_delay_ms" not in model.input_schema["properties"]


def test_refreshing_an_unknown_model_says_so(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    model = CatalogModel.objects.create(owner="sandbox", name="nope")

    messages = refresh(admin_client, model)

    model.refresh_from_db()
    assert messages == [
        "sandbox/nope: could not fetch the schema. "
        "Model sandbox/nope does not exist or you cannot access it."
    ]
    assert model.input_schema == {}


def test_refreshing_without_any_token_says_how_to_add_one(admin_client: Client, db: None) -> None:
    model = CatalogModel.objects.create(owner="sandbox", name="text")

    (message,) = refresh(admin_client, model)

    assert "No Replicate API token is configured" in message


def add_model(
    admin_client: Client,
    name: str,
    owner: str = "sandbox",
    default_input: str = "{}",
    hidden_inputs: str = "[]",
) -> Any:
    return admin_client.post(
        reverse("admin:predictions_catalogmodel_add"),
        {
            "owner": owner,
            "name": name,
            "version": "",
            "enabled": "on",
            "title": "",
            "description": "",
            "cover_image_url": "",
            "default_input": default_input,
            "hidden_inputs": hidden_inputs,
            "deadline_seconds": "1800",
            "token": "",
        },
        follow=True,
    )


def test_adding_a_model_fetches_its_schema(admin_client: Client, sandbox_default: ApiToken) -> None:
    response = add_model(admin_client, "slow")

    model = CatalogModel.objects.get(owner="sandbox", name="slow")
    assert response.status_code == 200
    assert model.input_schema["properties"]["seconds"]["type"] == "integer"
    assert model.description.startswith("Runs for a while")


def test_a_model_replicate_does_not_know_is_a_form_error_and_not_published(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    response = add_model(admin_client, "nope")

    assert not CatalogModel.objects.filter(owner="sandbox", name="nope").exists()
    assert "Not saved: sandbox/nope could not be checked with Replicate." in response.text
    assert "Model sandbox/nope does not exist or you cannot access it." in response.text


def test_a_default_over_the_schema_s_maximum_is_a_form_error(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    response = add_model(admin_client, "slow", default_input='{"seconds": 9999}')

    assert not CatalogModel.objects.filter(owner="sandbox", name="slow").exists()
    assert "seconds: " in response.text and "600" in response.text


def test_hiding_an_input_the_model_does_not_have_is_a_form_error(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    response = add_model(admin_client, "slow", hidden_inputs='["speed"]')

    assert not CatalogModel.objects.filter(owner="sandbox", name="slow").exists()
    assert "The model has no input “speed”." in response.text


def test_a_community_model_is_recorded_as_not_official(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    add_model(admin_client, "echo", owner="sandbox-community")

    model = CatalogModel.objects.get(owner="sandbox-community", name="echo")
    assert model.is_official is False
    assert model.schema_version == ECHO.latest_version.id
    assert model.run_version == ECHO.latest_version.id


def test_pinning_another_version_shows_the_schema_diff_and_keeps_the_old_schema(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    v3, v2 = ECHO.versions[0].id, ECHO.versions[1].id
    add_model(admin_client, "echo", owner="sandbox-community", default_input='{"repeat": 8}')
    model = CatalogModel.objects.get(owner="sandbox-community", name="echo")

    response = admin_client.post(
        reverse("admin:predictions_catalogmodel_change", args=[model.pk]),
        {**model_form(model), "version": v2, "default_input": '{"repeat": 8}'},
        follow=True,
    )

    # v2 allows at most 5 repeats: the default no longer fits, so nothing is saved...
    assert "repeat: " in response.text
    model.refresh_from_db()
    assert model.schema_version == v3
    # ...and with a default that fits, the pin is saved and the differences are shown.
    response = admin_client.post(
        reverse("admin:predictions_catalogmodel_change", args=[model.pk]),
        {**model_form(model), "version": v2, "default_input": '{"repeat": 3}'},
        follow=True,
    )
    model.refresh_from_db()
    shown = " ".join(messages_of(response))
    assert model.schema_version == v2
    assert model.schema_changed_from == v3
    assert "Added input “separator” (text)." in model.schema_changes
    assert "Removed input “uppercase”." in model.schema_changes
    assert "Input “repeat”: default 2 → 1." in model.schema_changes
    assert "Input “repeat”: range 1–10 → 1–5." in model.schema_changes
    assert "Removed input “uppercase”." in shown
    assert set(model.schemas.values_list("version_id", flat=True)) == {v2, v3}
    assert model.schema_for(v3)[0]["properties"].keys() >= {"uppercase"}


def test_refreshing_reports_defaults_that_no_longer_apply(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    v3, v1 = ECHO.versions[0].id, ECHO.versions[-1].id
    model = CatalogModel.objects.create(
        owner="sandbox-community", name="echo", version=v3, default_input={"uppercase": True}
    )
    refresh(admin_client, model)
    CatalogModel.objects.filter(pk=model.pk).update(version=v1)  # pinned elsewhere

    messages = refresh(admin_client, CatalogModel.objects.get(pk=model.pk))

    model.refresh_from_db()
    assert "Default input no longer applies: The model has no input “uppercase”." in (
        model.schema_changes
    )
    assert any("uppercase" in message for message in messages)


def model_form(model: CatalogModel) -> dict[str, str]:
    return {
        "owner": model.owner,
        "name": model.name,
        "version": model.version,
        "enabled": "on",
        "title": model.title,
        "description": model.description,
        "cover_image_url": model.cover_image_url,
        "default_input": json.dumps(model.default_input),
        "hidden_inputs": json.dumps(model.hidden_inputs),
        "deadline_seconds": str(model.deadline_seconds),
        "token": "",
    }
