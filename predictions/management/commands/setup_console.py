"""Register the default API token and the sandbox's demo models; safe to run on every start.

`make run` calls it before the server starts, so the sandbox models' schemas are read
in-process from `sandbox.demo_models`, not over HTTP. Later runs never overwrite what an
admin changed; they only keep the sandbox token pointing at the current host and port.
"""

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from predictions import crypto, upstream
from predictions.models import ApiToken, CatalogModel
from sandbox.demo_models import MODELS

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8000/sandbox"
SANDBOX_LABEL = "Sandbox"
REPLICATE_LABEL = "Replicate"


class Command(BaseCommand):
    help = "Register the default API token and the sandbox demo models (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sandbox-url",
            default=DEFAULT_SANDBOX_URL,
            help="Base URL of the built-in sandbox as the server will serve it, without /v1 "
            f"(default {DEFAULT_SANDBOX_URL}).",
        )

    def handle(self, *args: Any, sandbox_url: str, **options: Any) -> None:
        if settings.REPLICATE_API_TOKEN:
            self.stdout.write(self.register_replicate_token())
        elif settings.SANDBOX_ENABLED and settings.SANDBOX_API_TOKENS:
            self.stdout.write(self.register_sandbox(clean_base_url(sandbox_url)))
        elif not ApiToken.objects.usable().exists():
            self.stdout.write(
                "No Replicate API token yet. Set REPLICATE_API_TOKEN=r8_… in the environment "
                "and start again, or add one in the admin under API tokens "
                "(/admin/predictions/apitoken/add/)."
                + (
                    ""
                    if settings.SANDBOX_ENABLED
                    else " The built-in sandbox is off (SANDBOX_ENABLED=0)."
                )
            )
        else:
            self.stdout.write("API tokens are configured in the admin; nothing to set up.")

    @transaction.atomic
    def register_replicate_token(self) -> str:
        if ApiToken.objects.filter(label=REPLICATE_LABEL).exists():
            return f"API token “{REPLICATE_LABEL}” is already registered (manage it in the admin)."
        current = ApiToken.objects.filter(is_default=True).first()
        # Take over as default from the seeded sandbox token, never from an admin's choice.
        take_default = current is None or current.label == SANDBOX_LABEL
        if current is not None and take_default:
            current.is_default = False
            current.save(update_fields=["is_default"])
        token = ApiToken(
            label=REPLICATE_LABEL,
            base_url=settings.REPLICATE_API_BASE_URL,
            is_default=take_default,
        )
        token.set_token(settings.REPLICATE_API_TOKEN)
        token.save()
        note = "" if take_default or current is None else f" (“{current.label}” stays the default)"
        return (
            f"Registered REPLICATE_API_TOKEN as API token “{REPLICATE_LABEL}” "
            f"for {token.base_url}{note}."
        )

    @transaction.atomic
    def register_sandbox(self, base_url: str) -> str:
        token, created = self.sandbox_token(base_url)
        added = self.sandbox_models(token)
        what = "registered" if created else "up to date"
        return (
            f"Sandbox API token “{token.label}” {what} ({token.base_url}); "
            f"sandbox models: {added} added, {len(self.demo_models()) - added} already present."
        )

    def sandbox_token(self, base_url: str) -> tuple[ApiToken, bool]:
        plaintext = settings.SANDBOX_API_TOKENS[0]
        token = ApiToken.objects.filter(label=SANDBOX_LABEL).first()
        if token is None:
            token = ApiToken(
                label=SANDBOX_LABEL,
                base_url=base_url,
                is_default=not ApiToken.objects.filter(is_default=True).exists(),
            )
            token.set_token(plaintext)
            token.save()
            return token, True
        changed = []
        if token.base_url != base_url:
            # `make run PORT=9000`: the sandbox moved with the server.
            token.base_url = base_url
            changed.append("base_url")
        try:
            readable = token.get_token() in settings.SANDBOX_API_TOKENS
        except crypto.TokenKeyError:
            readable = False
        if not readable:
            # The sandbox's tokens (or the encryption keys) changed: this token is ours to fix.
            token.set_token(plaintext)
            changed += ["ciphertext", "last_four"]
        if changed:
            token.save(update_fields=changed)
        return token, False

    def sandbox_models(self, token: ApiToken) -> int:
        added = 0
        for demo in self.demo_models():
            if CatalogModel.objects.filter(owner=demo.owner, name=demo.name).exists():
                continue  # the admin owns it now
            input_schema, output_schema = upstream.split_openapi_schema(
                demo.latest_version.openapi_schema
            )
            CatalogModel.objects.create(
                owner=demo.owner,
                name=demo.name,
                title=getattr(demo, "title", "") or f"Sandbox {demo.name}",
                description=demo.description,
                input_schema=input_schema,
                output_schema=output_schema,
                schema_version=demo.latest_version.id,
                schema_fetched_at=timezone.now(),
                is_official=demo.is_official,
                # Pinned to the sandbox token so they keep working when a real token
                # becomes the default.
                token=token,
            )
            added += 1
        return added

    @staticmethod
    def demo_models() -> list[Any]:
        return list(MODELS.values())


def clean_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise CommandError(f"--sandbox-url must be an http(s) URL; got {url!r}") from None
    if url.endswith("/v1"):
        # The client adds /v1 itself; keeping it would request /v1/v1/...
        raise CommandError(f"--sandbox-url must not end with /v1; got {url!r}")
    return url
