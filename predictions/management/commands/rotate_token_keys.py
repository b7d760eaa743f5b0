"""Re-encrypt every stored API token under the newest key of TOKEN_ENCRYPTION_KEYS.

A rotation: put a new key first in TOKEN_ENCRYPTION_KEYS (keep the old one after it),
run this command, then drop the old key once it reports no unreadable tokens.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from predictions import crypto
from predictions.models import ApiToken


class Command(BaseCommand):
    help = "Re-encrypt all API tokens with the first key in TOKEN_ENCRYPTION_KEYS."

    def handle(self, *args: object, **options: object) -> None:
        rotated = 0
        unreadable: list[str] = []
        with transaction.atomic():
            for token in ApiToken.objects.select_for_update().order_by("label"):
                try:
                    token.ciphertext = crypto.reencrypt(token.ciphertext)
                except crypto.TokenKeyError:
                    # Left exactly as stored: the missing key may still be added back.
                    unreadable.append(token.label)
                    continue
                token.save(update_fields=["ciphertext"])
                rotated += 1
        self.stdout.write(f"Re-encrypted {rotated} API token(s) under the newest key.")
        if unreadable:
            names = ", ".join(f"“{label}”" for label in unreadable)
            raise CommandError(
                f"{len(unreadable)} API token(s) cannot be read with any configured key and "
                f"were left unchanged: {names}. Add the key they were encrypted with to "
                "TOKEN_ENCRYPTION_KEYS (after the new one) and run this again, or enter "
                "those tokens again in the admin."
            )
