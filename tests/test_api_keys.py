"""Personal API keys: made on /account/keys/ (or with manage.py), shown once, kept as a hash,
revocable by their owner and by staff."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from predictions.models import ApiKey, CatalogModel

KEY = re.compile(r"rcp_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def test_a_member_creates_a_key_sees_it_once_and_it_acts_as_them(
    client: Client, alice: User
) -> None:
    client.force_login(alice)

    page = client.post("/account/keys/", {"name": "laptop", "expires": "30"})

    assert page.status_code == 200 and page["Cache-Control"].startswith("max-age=0")
    (plaintext,) = set(KEY.findall(page.content.decode()))
    key = ApiKey.objects.authenticate(plaintext)
    assert key is not None and key.user == alice and key.name == "laptop"
    assert key.expires_at is not None
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    # Kept as a prefix and a hash: the key itself is nowhere in the row.
    assert plaintext not in str(ApiKey.objects.filter(pk=key.pk).values().get())
    # Shown once: the page lists the key by its prefix only from now on.
    again = client.get("/account/keys/").content.decode()
    assert plaintext not in again and f"{key.prefix}…" in again


def test_a_revoked_expired_or_malformed_key_and_a_deactivated_user_do_not_authenticate(
    client: Client, alice: User, bob: User
) -> None:
    revoked, revoked_text = ApiKey.issue(alice, "old")
    _, expired_text = ApiKey.issue(alice, "short", timezone.now() - timedelta(seconds=1))
    _, bobs_text = ApiKey.issue(bob, "bob's")
    live, live_text = ApiKey.issue(alice, "live")
    client.force_login(alice)

    assert client.post(f"/account/keys/{revoked.pk}/revoke/").status_code == 303
    assert ApiKey.objects.authenticate(revoked_text) is None
    assert ApiKey.objects.authenticate(expired_text) is None
    # The right prefix with a wrong secret, a truncated key, and rubbish.
    forged = live_text[:-4] + ("AAAA" if not live_text.endswith("AAAA") else "BBBB")
    for presented in (forged, live_text[:-1], "", "Bearer x", "rcp_\x00"):
        assert ApiKey.objects.authenticate(presented) is None
    assert ApiKey.objects.authenticate(live_text) == live
    bob.is_active = False
    bob.save()
    assert ApiKey.objects.authenticate(bobs_text) is None


def test_nobody_revokes_another_members_key(client: Client, alice: User, bob: User) -> None:
    key, plaintext = ApiKey.issue(bob, "bob's")
    client.force_login(alice)

    assert client.post(f"/account/keys/{key.pk}/revoke/").status_code == 404
    assert client.get(f"/account/keys/{key.pk}/revoke/").status_code == 405
    assert ApiKey.objects.authenticate(plaintext) == key
    assert "bob's" not in client.get("/account/keys/").content.decode()


def test_a_key_needs_a_name_and_a_known_expiry(client: Client, alice: User) -> None:
    client.force_login(alice)

    for data in ({"name": "", "expires": ""}, {"name": "x", "expires": "7000"}):
        page = client.post("/account/keys/", data)
        assert page.status_code == 400
        assert 'class="field-error"' in page.content.decode()
    assert not ApiKey.objects.exists()


def test_the_keys_page_needs_a_login(client: Client) -> None:
    assert client.get("/account/keys/").status_code == 302


def test_create_api_key_prints_the_key_last(alice: User) -> None:
    out = StringIO()

    call_command("create_api_key", "alice", "--name", "ci", stdout=out)

    last = out.getvalue().strip().splitlines()[-1]
    key = ApiKey.objects.authenticate(last)
    assert key is not None and key.user == alice and key.name == "ci"
    with pytest.raises(CommandError, match="No user named"):
        call_command("create_api_key", "nobody", stdout=StringIO())


def test_staff_list_and_revoke_keys_in_the_admin_but_never_read_or_add_one(
    client: Client, staff: User, alice: User
) -> None:
    staff.is_superuser = True
    staff.save()
    key, plaintext = ApiKey.issue(alice, "notebook")
    client.force_login(staff)

    listing = client.get("/admin/predictions/apikey/").content.decode()
    assert "notebook" in listing and key.prefix in listing and plaintext not in listing
    assert client.get("/admin/predictions/apikey/add/").status_code == 403
    answer = client.post(
        "/admin/predictions/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert answer.status_code == 302
    assert ApiKey.objects.authenticate(plaintext) is None


def test_the_use_it_from_code_page_shows_this_console_s_gateway(
    client: Client, alice: User
) -> None:
    CatalogModel.objects.create(owner="sandbox", name="text")
    client.force_login(alice)

    page = client.get("/account/api/").content.decode()

    assert 'replicate.Client(base_url="http://testserver/api")' in page
    assert 'baseUrl: "http://testserver/api/v1"' in page
    assert "http://testserver/api/v1/models/sandbox/text/predictions" in page
    assert 'href="/api/openapi.json"' in page and "600 a minute" in page
    assert 'href="/account/api/"' in client.get("/account/keys/").content.decode()
    client.logout()
    assert client.get("/account/api/").status_code == 302
