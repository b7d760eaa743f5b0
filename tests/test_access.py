"""Who sees what: login everywhere, staff-only admin, predictions visible to owner/shared/staff."""

import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from predictions.models import CatalogModel, Prediction


@pytest.mark.parametrize("path", ["/", "/predictions/", "/models/sandbox/text/"])
def test_logged_out_visitors_are_sent_to_the_login_page(
    client: Client, db: None, path: str
) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith(f"/accounts/login/?next={path}")


def test_after_login_the_user_lands_on_the_catalogue(client: Client, alice: User) -> None:
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice-123"}, follow=True
    )

    assert response.redirect_chain[-1][0] == "/"
    assert response.status_code == 200


def log_in(client: Client, password: str, username: str = "alice") -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_repeated_wrong_passwords_lock_the_login_until_an_admin_unlocks_it(
    client: Client, alice: User, bob: User, settings: Any
) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        wrong = log_in(client, "guess")
        assert wrong.status_code == 200
        assert "didn’t match" in wrong.content.decode()

    locked = log_in(client, "guess")

    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    # Now not even the right password gets in (for the cool-off, or until unlocked) …
    assert log_in(client, "pw-alice-123").status_code == 429
    # … while other accounts are not affected.
    assert log_in(Client(), "pw-bob-123", username="bob").status_code == 302

    call_command("axes_reset_username", "alice", stdout=io.StringIO())

    assert log_in(client, "pw-alice-123").status_code == 302


@pytest.mark.parametrize("username", ["a" * 256, "b" * 5000, "nul\x00name"])
def test_an_impossible_username_is_a_wrong_login_not_a_server_error(
    client: Client, db: None, username: str
) -> None:
    response = log_in(client, "whatever", username=username)

    assert response.status_code == 200
    assert 'name="password"' in response.content.decode()


def test_the_login_page_itself_is_public(client: Client, db: None) -> None:
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert 'name="password"' in response.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/predictions/apitoken/",
        "/admin/predictions/apitoken/add/",
        "/admin/predictions/catalogmodel/",
        "/admin/predictions/catalogmodel/add/",
        "/admin/predictions/prediction/",
        "/admin/auth/user/",
        "/admin/auth/group/",
    ],
)
def test_admin_pages_render_for_staff_and_refuse_others(
    admin_client: Client, client: Client, alice: User, path: str
) -> None:
    assert admin_client.get(path).status_code == 200

    client.force_login(alice)
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_prediction_admin_is_a_read_only_record(admin_client: Client, alice: User) -> None:
    prediction = Prediction.objects.create(
        owner=alice, model_ref="sandbox/text", input={"prompt": "a red fox"}, upstream_id="abc123"
    )

    page = admin_client.get(f"/admin/predictions/prediction/{prediction.pk}/change/")
    found = admin_client.get("/admin/predictions/prediction/?q=red+fox")
    by_upstream_id = admin_client.get("/admin/predictions/prediction/?q=abc123")

    assert page.status_code == 200
    assert "a red fox" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert str(prediction.pk)[:8] in found.content.decode()
    assert str(prediction.pk)[:8] in by_upstream_id.content.decode()


@pytest.mark.parametrize(
    ("owner", "name", "version", "message"),
    [
        ("Sandbox", "text", "", "Use lowercase letters"),
        ("sandbox", "te xt", "", "Use lowercase letters"),
        ("sandbox", "text", "abc", "64 lowercase hexadecimal"),
    ],
)
def test_catalogue_admin_explains_bad_names_and_versions(
    admin_client: Client, owner: str, name: str, version: str, message: str
) -> None:
    response = admin_client.post(
        "/admin/predictions/catalogmodel/add/",
        {
            "owner": owner,
            "name": name,
            "version": version,
            "enabled": "on",
            "default_input": "{}",
            "hidden_inputs": "[]",
            "deadline_seconds": "1800",
        },
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not CatalogModel.objects.exists()


def test_predictions_are_visible_to_owner_shared_users_and_staff(
    alice: User, bob: User, carol: User, staff: User
) -> None:
    own = Prediction.objects.create(owner=alice, model_ref="sandbox/text")
    shared = Prediction.objects.create(owner=bob, model_ref="sandbox/text")
    shared.shared_with.add(alice)
    private = Prediction.objects.create(owner=bob, model_ref="sandbox/text")

    assert set(Prediction.objects.visible_to(alice)) == {own, shared}
    assert set(Prediction.objects.visible_to(bob)) == {shared, private}
    assert set(Prediction.objects.visible_to(carol)) == set()
    assert set(Prediction.objects.visible_to(staff)) == {own, shared, private}


def test_catalogue_models_follow_their_allowed_groups(alice: User, bob: User) -> None:
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    open_model = CatalogModel.objects.create(owner="sandbox", name="text")
    team_model = CatalogModel.objects.create(owner="sandbox", name="image")
    team_model.allowed_groups.add(team)
    CatalogModel.objects.create(owner="sandbox", name="fail", enabled=False)

    assert set(CatalogModel.objects.runnable_by(alice)) == {open_model, team_model}
    assert set(CatalogModel.objects.runnable_by(bob)) == {open_model}


def test_active_and_stale_predictions(alice: User) -> None:
    old = timezone.now() - timedelta(minutes=10)
    running = Prediction.objects.create(owner=alice, model_ref="m/a", status="processing")
    stuck = Prediction.objects.create(owner=alice, model_ref="m/a", status="starting")
    Prediction.objects.filter(pk=stuck.pk).update(updated_at=old)
    Prediction.objects.create(owner=alice, model_ref="m/a", status="succeeded")

    assert set(Prediction.objects.active()) == {running, stuck}
    assert list(Prediction.objects.stale(timedelta(minutes=5))) == [stuck]


def test_logging_out_works_even_when_the_channel_layer_is_down(
    client: Client, alice: User, settings: Any
) -> None:
    # Logging out also closes the session's sockets; that must never stand in its way.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},  # nothing listens there
        }
    }
    client.force_login(alice)

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
