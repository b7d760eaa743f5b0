"""Encryption of Replicate API tokens at rest (MultiFernet over TOKEN_ENCRYPTION_KEYS).

The first key encrypts; all keys decrypt, so a rotation is "put a new key first, run
`manage.py rotate_token_keys`, then drop the old key".
"""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class TokenKeyError(Exception):
    """A stored token cannot be decrypted with the configured keys."""


def _fernet() -> MultiFernet:
    keys = settings.TOKEN_ENCRYPTION_KEYS
    if not keys:
        raise TokenKeyError(
            "No TOKEN_ENCRYPTION_KEYS are configured; stored tokens are unreadable."
        )
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenKeyError(
            "This API token was encrypted with a key that is not in TOKEN_ENCRYPTION_KEYS; "
            "add the old key back (after the new one) or enter the token again."
        ) from None


def reencrypt(ciphertext: str) -> str:
    """The same secret under the newest key (raises TokenKeyError if no key reads it)."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenKeyError("A stored token cannot be read with any configured key.") from None
