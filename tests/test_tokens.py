"""API tokens: encrypted at rest, write-only in the admin, never in a page, the DB or a log."""

import logging
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection
from django.test import Client

from predictions import crypto
from predictions.models import ApiToken

PLAINTEXT = "r8_Plaintext4Test0nlyZz9Qx"


def test_a_token_round_trips_and_is_stored_encrypted(db: None) -> None:
    token = ApiToken(label="main")
    token.set_token(PLAINTEXT)
    token.save()

    stored = ApiToken.objects.get(pk=token.pk)

    assert stored.get_token() == PLAINTEXT
    assert PLAINTEXT not in stored.ciphertext
    assert stored.masked == "…z9Qx"


def test_rotating_keys_keeps_old_tokens_readable(db: None, settings: object) -> None:
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    token = ApiToken(label="old")
    token.set_token(PLAINTEXT)
    token.save()
    new_key = Fernet.generate_key().decode()

    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]

    assert ApiToken.objects.get(pk=token.pk).get_token() == PLAINTEXT
    # New tokens are written with the newest key only.
    fresh = crypto.encrypt("r8_fresh")
    assert Fernet(new_key.encode()).decrypt(fresh.encode()) == b"r8_fresh"


def test_a_wrong_key_gives_a_clear_error_never_ciphertext(db: None, settings: object) -> None:
    token = ApiToken(label="lost")
    token.set_token(PLAINTEXT)
    token.save()

    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(crypto.TokenKeyError, match="TOKEN_ENCRYPTION_KEYS"):
        ApiToken.objects.get(pk=token.pk).get_token()


def test_no_keys_configured_is_a_clear_error(db: None, settings: object) -> None:
    settings.TOKEN_ENCRYPTION_KEYS = []

    with pytest.raises(crypto.TokenKeyError, match="No TOKEN_ENCRYPTION_KEYS"):
        crypto.encrypt(PLAINTEXT)


def every_stored_value() -> str:
    """All rows of all tables as text: the database's content, whatever the backend."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # names from introspection
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


@pytest.mark.django_db(transaction=True)
def test_the_plaintext_appears_nowhere_in_the_database_the_admin_or_the_logs(
    admin_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    response = admin_client.post(
        "/admin/predictions/apitoken/add/",
        {
            "label": "team",
            "token": PLAINTEXT,
            "base_url": "https://api.replicate.com",
            "enabled": "on",
            "is_default": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    token = ApiToken.objects.get(label="team")
    pages = [
        admin_client.get("/admin/predictions/apitoken/").content.decode(),
        admin_client.get(f"/admin/predictions/apitoken/{token.pk}/change/").content.decode(),
    ]

    assert token.get_token() == PLAINTEXT
    for page in pages:
        assert PLAINTEXT not in page
        assert "…z9Qx" in page
    assert PLAINTEXT not in every_stored_value()
    assert PLAINTEXT not in caplog.text
    if connection.vendor == "sqlite":
        db_file = Path(settings.DATABASES["default"]["NAME"])
        for path in [db_file, Path(f"{db_file}-wal")]:
            if path.exists():
                assert PLAINTEXT.encode() not in path.read_bytes()


def test_changing_a_token_without_retyping_it_keeps_the_secret(admin_client: Client) -> None:
    token = ApiToken(label="keep")
    token.set_token(PLAINTEXT)
    token.save()

    response = admin_client.post(
        f"/admin/predictions/apitoken/{token.pk}/change/",
        {"label": "renamed", "token": "", "base_url": "https://api.replicate.com", "enabled": "on"},
    )

    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.label, token.get_token()) == ("renamed", PLAINTEXT)


def test_adding_a_token_requires_the_token(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/predictions/apitoken/add/",
        {"label": "empty", "token": "", "base_url": "https://api.replicate.com"},
    )

    assert response.status_code == 200
    assert "Enter the token." in response.content.decode()
    assert not ApiToken.objects.exists()


def test_only_one_token_can_be_the_default(admin_client: Client) -> None:
    first = ApiToken(label="first", is_default=True)
    first.set_token(PLAINTEXT)
    first.save()

    response = admin_client.post(
        "/admin/predictions/apitoken/add/",
        {
            "label": "second",
            "token": "r8_another_token_1234",
            "base_url": "https://api.replicate.com",
            "is_default": "on",
        },
    )

    assert response.status_code == 200
    assert "already the default" in response.content.decode()
