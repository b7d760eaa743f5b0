"""Placeholder: seeding of the default token and sandbox models lands with the sandbox issue."""

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Register the default API token and the demo models (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write("Nothing to set up yet.")
