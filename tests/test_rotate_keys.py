"""Rotating TOKEN_ENCRYPTION_KEYS: prepend a key, run `rotate_token_keys`, drop the old key."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from predictions import crypto
from predictions.models import ApiToken


def new_key() -> str:
    return Fernet.generate_key().decode()


def stored_token(label: str, plaintext: str) -> ApiToken:
    token = ApiToken(label=label)
    token.set_token(plaintext)
    token.save()
    return token


def test_old_tokens_stay_readable_after_a_new_key_is_prepended(db: None, settings: object) -> None:
    settings.TOKEN_ENCRYPTION_KEYS = [old := new_key()]
    token = stored_token("main", "r8_main_token_0001")

    settings.TOKEN_ENCRYPTION_KEYS = [new_key(), old]

    assert ApiToken.objects.get(pk=token.pk).get_token() == "r8_main_token_0001"


def test_rotation_reencrypts_every_token_under_the_new_key(db: None, settings: object) -> None:
    settings.TOKEN_ENCRYPTION_KEYS = [old := new_key()]
    stored_token("main", "r8_main_token_0001")
    stored_token("backup", "r8_backup_token_0002")
    settings.TOKEN_ENCRYPTION_KEYS = [new := new_key(), old]
    out = StringIO()

    call_command("rotate_token_keys", stdout=out)

    only_new = Fernet(new.encode())
    plaintexts = {t.label: only_new.decrypt(t.ciphertext.encode()) for t in ApiToken.objects.all()}
    assert plaintexts == {"main": b"r8_main_token_0001", "backup": b"r8_backup_token_0002"}
    assert "Re-encrypted 2 API token(s)" in out.getvalue()
    settings.TOKEN_ENCRYPTION_KEYS = [new]  # the old key can go now
    assert ApiToken.objects.get(label="main").get_token() == "r8_main_token_0001"


def test_tokens_no_key_can_read_are_listed_and_left_alone(db: None, settings: object) -> None:
    settings.TOKEN_ENCRYPTION_KEYS = [new_key()]
    lost = stored_token("lost", "r8_lost_token_0003")
    settings.TOKEN_ENCRYPTION_KEYS = [old := new_key()]
    kept = stored_token("kept", "r8_kept_token_0004")
    settings.TOKEN_ENCRYPTION_KEYS = [new := new_key(), old]

    with pytest.raises(CommandError, match="left unchanged: “lost”") as error:
        call_command("rotate_token_keys", stdout=StringIO())

    assert ApiToken.objects.get(pk=lost.pk).ciphertext == lost.ciphertext
    kept.refresh_from_db()
    assert Fernet(new.encode()).decrypt(kept.ciphertext.encode()) == b"r8_kept_token_0004"
    assert "TOKEN_ENCRYPTION_KEYS" in str(error.value)


def test_a_wrong_key_is_a_clear_error_and_never_returns_ciphertext(
    db: None, settings: object
) -> None:
    token = stored_token("main", "r8_main_token_0001")
    settings.TOKEN_ENCRYPTION_KEYS = [new_key()]

    with pytest.raises(crypto.TokenKeyError) as error:
        ApiToken.objects.get(pk=token.pk).get_token()

    assert "TOKEN_ENCRYPTION_KEYS" in str(error.value)
    assert token.ciphertext not in str(error.value)
