"""`manage.py create_api_key USERNAME [--name NAME]`: a personal gateway key for a user.

The key is the last line of the output, for scripts:

    KEY=$(manage.py create_api_key alice | tail -1)
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictions.models import ApiKey


class Command(BaseCommand):
    help = "Create a personal API key for the gateway (/api/v1/); prints the key last."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="Created with manage.py", help="What it is for.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"{username} is deactivated: their keys would not work.")
        key, plaintext = ApiKey.issue(user, name[:100])
        self.stdout.write(f"Created API key {key.prefix}… ({key.name}) for {username}.")
        self.stdout.write("It is shown only this once; keep it somewhere safe.")
        self.stdout.write(plaintext)
