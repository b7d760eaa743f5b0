"""Admin actions that talk to Replicate (here: the sandbox over real HTTP)."""

import socket

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from predictions.models import ApiToken, CatalogModel, Prediction
from sandbox.demo_models import IMAGE, TEXT

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


def test_only_the_prediction_list_defers_the_large_fields(admin_client: Client, db: None) -> None:
    owner = User.objects.create_user("historian")
    prediction = Prediction.objects.create(
        owner=owner, model_ref="sandbox/text", logs="log line", text_output="words", output=["w"]
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


def add_model(admin_client: Client, name: str) -> object:
    return admin_client.post(
        reverse("admin:predictions_catalogmodel_add"),
        {
            "owner": "sandbox",
            "name": name,
            "version": "",
            "enabled": "on",
            "title": "",
            "description": "",
            "cover_image_url": "",
            "default_input": "{}",
            "hidden_inputs": "[]",
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


def test_adding_a_model_replicate_does_not_know_still_saves_it_with_a_message(
    admin_client: Client, sandbox_default: ApiToken
) -> None:
    response = add_model(admin_client, "nope")

    assert CatalogModel.objects.filter(owner="sandbox", name="nope").exists()
    assert any("does not exist" in message for message in messages_of(response))
