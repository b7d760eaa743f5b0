import base64
import hashlib
import hmac
import re
import secrets
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeAlias

from django.conf import settings
from django.contrib.auth import models as auth
from django.contrib.auth.models import AnonymousUser, Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from . import crypto, untrusted, upstream

# Replicate's owner and model names: lowercase letters, digits, dashes, underscores, dots.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*\Z")
NAME_VALIDATOR = RegexValidator(
    NAME_PATTERN.pattern,
    "Use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit "
    "(as in replicate.com/<owner>/<name>).",
)
VERSION_VALIDATOR = RegexValidator(
    r"^[0-9a-f]{64}\Z", "A version id is 64 lowercase hexadecimal characters."
)

# Whom a request or a websocket speaks for (`await request.auser()`, `scope["user"]`). The
# console keeps Django's own user model.
User: TypeAlias = auth.User | AnonymousUser


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> "ApiTokenQuerySet":
        return self.filter(enabled=True)

    def default(self) -> "ApiToken | None":
        return self.usable().filter(is_default=True).first()


class ApiToken(models.Model):
    """A Replicate API token, encrypted at rest; only its last four characters are shown."""

    label = models.CharField(max_length=100, unique=True)
    ciphertext = models.TextField(editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    base_url = models.URLField(
        "API base URL",
        default="https://api.replicate.com",
        help_text="Without /v1. The built-in sandbox is http://<host>:<port>/sandbox.",
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(
        "default", default=False, help_text="Used by catalogue models that name no token."
    )
    account_name = models.CharField(
        max_length=200, blank=True, editable=False, help_text="Set by the 'verify' action."
    )
    verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ApiTokenQuerySet.as_manager()

    # last_used_at is a hint for admins, not an audit log: one write a minute at most, so
    # busy tokens do not turn every prediction into a contended UPDATE.
    LAST_USED_PRECISION = timedelta(minutes=1)

    class Meta:
        verbose_name = "API token"
        ordering = ["label"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_token"
            )
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"…{self.last_four}" if self.last_four else "—"

    def set_token(self, plaintext: str) -> None:
        plaintext = plaintext.strip()
        self.ciphertext = crypto.encrypt(plaintext)
        self.last_four = plaintext[-4:]

    def get_token(self) -> str:
        """The plaintext token; raises crypto.TokenKeyError rather than return ciphertext."""
        return crypto.decrypt(self.ciphertext)

    @classmethod
    def mark_used(cls, pk: int) -> None:
        """Record that token `pk` was used now, unless that was recorded within the minute."""
        now = timezone.now()
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - cls.LAST_USED_PRECISION)
        cls.objects.filter(stale, pk=pk).update(last_used_at=now)


class CatalogModelQuerySet(models.QuerySet):
    def runnable_by(self, user: User) -> "CatalogModelQuerySet":
        """Enabled models whose allowed groups are empty or include one of the user's."""
        enabled = self.filter(enabled=True)
        if not user.is_authenticated:
            return enabled.none()
        if user.is_superuser:
            return enabled
        return enabled.filter(
            Q(allowed_groups__isnull=True) | Q(allowed_groups__in=user.groups.all())
        ).distinct()


class CatalogModel(models.Model):
    """A Replicate model the team may run, with its cached schema and admin-set inputs."""

    owner = models.CharField(max_length=100, validators=[NAME_VALIDATOR])
    name = models.CharField(max_length=100, validators=[NAME_VALIDATOR])
    version = models.CharField(
        max_length=64,
        blank=True,
        validators=[VERSION_VALIDATOR],
        help_text="Pin a version id; empty runs the model's latest version.",
    )
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    cover_image_url = models.URLField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True, editable=False)
    output_schema = models.JSONField(default=dict, blank=True, editable=False)
    schema_version = models.CharField(max_length=64, blank=True, editable=False)
    schema_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    # What changed in the input schema at the last pin or refresh (sentences, for admins).
    schema_changes = models.JSONField(default=list, blank=True, editable=False)
    schema_changed_from = models.CharField(max_length=64, blank=True, editable=False)
    # From the model's metadata, refreshed with the schema. Replicate runs only official
    # models by owner/name; community models need a version id.
    is_official = models.BooleanField(
        "official model",
        default=False,
        editable=False,
        help_text="Official models run by name; others run their pinned or latest known version.",
    )
    default_input = models.JSONField(
        default=dict, blank=True, help_text='Values prefilled in the form, e.g. {"seed": 42}.'
    )
    hidden_inputs = models.JSONField(
        default=list,
        blank=True,
        help_text="Input names not shown to users; their default (or the one above) is sent.",
    )
    enabled = models.BooleanField(default=True)
    allowed_groups = models.ManyToManyField(
        Group, blank=True, help_text="Who may run it; empty means everyone."
    )
    token = models.ForeignKey(
        ApiToken,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="Empty uses the default token.",
    )
    deadline_seconds = models.PositiveIntegerField(
        default=30 * 60, help_text="A prediction still running after this is canceled."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = CatalogModelQuerySet.as_manager()

    class Meta:
        verbose_name = "catalogue model"
        ordering = ["owner", "name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="unique_catalog_model")
        ]

    def __str__(self) -> str:
        return self.ref

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def display_title(self) -> str:
        return self.title or self.ref

    @property
    def streams_text(self) -> bool:
        """Cog marks token-streaming outputs as a concatenated iterator of strings."""
        schema = self.output_schema or {}
        return (
            schema.get("type") == "array"
            and schema.get("x-cog-array-type") == "iterator"
            and schema.get("items", {}).get("type") == "string"
        )

    def clean(self) -> None:
        if not isinstance(self.default_input, dict):
            raise ValidationError({"default_input": 'Enter a JSON object, e.g. {"seed": 42}.'})
        if not isinstance(self.hidden_inputs, list) or not all(
            isinstance(name, str) for name in self.hidden_inputs
        ):
            raise ValidationError({"hidden_inputs": "Enter a JSON list of input names."})
        for name in ("default_input", "hidden_inputs"):
            reason = untrusted.problem(getattr(self, name))
            if reason:
                raise ValidationError({name: f"This value cannot be saved: {reason}."})

    @property
    def run_version(self) -> str:
        """The version a new run uses: the pinned one, else (community models) the latest
        known; "" for an unpinned official model, which Replicate runs by name."""
        if self.version:
            return self.version
        return "" if self.is_official else self.schema_version

    def schema_for(self, version: str) -> tuple[dict, dict]:
        """(input, output) schema of `version` if it is kept, else the current ones."""
        if version and version != self.schema_version:
            kept = self.schemas.filter(version_id=version).first()
            if kept is not None:
                return kept.input_schema, kept.output_schema
        return self.input_schema, self.output_schema

    def resolve_token(self) -> ApiToken | None:
        """The token this model runs with: its own, else the default. The one place that
        decides it. A disabled own token is returned as is (the run then fails saying so)
        rather than silently billing another account."""
        if self.token_id:
            return self.token
        return ApiToken.objects.default()

    def credentials(self) -> upstream.Credentials:
        """The resolved token's credentials, or UpstreamError("config") saying what is wrong."""
        return upstream.credentials_for(self.resolve_token())


class ModelSchema(models.Model):
    """The input/output schema of one version of a catalogue model, kept when a newer one
    is pinned or fetched, so old predictions still render and re-run against their own."""

    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="schemas")
    version_id = models.CharField(max_length=64)
    input_schema = models.JSONField(default=dict)
    output_schema = models.JSONField(default=dict)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "-fetched_at"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version_id"], name="unique_model_schema")
        ]

    def __str__(self) -> str:
        return f"{self.model_id}:{self.version_id[:12]}"


class PredictionQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> "PredictionQuerySet":
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        shared = Prediction.shared_with.through.objects.filter(user_id=user.pk).values(
            "prediction_id"
        )
        return self.filter(Q(owner_id=user.pk) | Q(pk__in=shared))

    def active(self) -> "PredictionQuerySet":
        return self.filter(status__in=Prediction.ACTIVE_STATUSES)

    def stale(self, age: timedelta) -> "PredictionQuerySet":
        """Active predictions nobody has touched for `age`: their runner probably died."""
        return self.active().filter(updated_at__lt=timezone.now() - age)

    def claim(
        self, prediction_id: uuid.UUID, lease: float
    ) -> "tuple[Prediction, datetime, bool] | None":
        """Take the prediction for a runner: (row, the runner's lease stamp, resumed) or None
        when another runner holds it (or it already finished). Compare-and-set, so at most
        one of any number of concurrent callers succeeds."""
        now = timezone.now()
        rows = self.filter(pk=prediction_id)
        if rows.filter(status=Prediction.Status.QUEUED).update(
            status=Prediction.Status.STARTING, updated_at=now
        ):
            resumed = False
        elif (
            rows.filter(status__in=Prediction.ACTIVE_STATUSES)
            .filter(updated_at__lt=now - timedelta(seconds=lease))
            .update(updated_at=now)
        ):
            resumed = True
        else:
            return None
        prediction = rows.select_related("model", "model__token").get()
        return prediction, now, resumed

    def claimable(self, lease: float, limit: int = 500) -> list[uuid.UUID]:
        """Active predictions whose runner went quiet for a lease period (or never started)."""
        stale = self.stale(timedelta(seconds=lease)).order_by("updated_at")
        return list(stale.values_list("pk", flat=True)[:limit])

    def fenced_update(
        self,
        prediction_id: uuid.UUID,
        lease: datetime,
        stamp: datetime,
        fields: dict[str, Any],
        watch: bool,
    ) -> tuple[bool, bool]:
        """Write `fields` if the runner still holds the row (it is still stamped `lease`),
        stamping it `stamp`. Returns (written, cancel requested).

        With `watch`, the first UPDATE also requires that nobody asked to cancel, so noticing
        a cancel costs a second UPDATE once instead of a SELECT on every write.
        """
        rows = self.filter(pk=prediction_id, updated_at=lease)
        if watch and rows.filter(cancel_requested_at__isnull=True).update(
            updated_at=stamp, **fields
        ):
            return True, False
        if rows.update(updated_at=stamp, **fields):
            return True, True
        return False, False

    def filtered_history(
        self,
        *,
        model: "CatalogModel | None" = None,
        model_ref: str = "",
        status: str = "",
        owner_id: int | None = None,
        since: date | None = None,
        until: date | None = None,
        text: str = "",
    ) -> "PredictionQuerySet":
        """The history's rows matching its filters, with only what a row shows."""
        qs = self
        if model is not None:
            # The foreign key has an index with created_at.
            qs = qs.filter(model_id=model.pk)
        elif model_ref:
            qs = qs.filter(model_ref=model_ref)  # a model removed from the catalogue
        if status:
            qs = qs.filter(status=status)
        if owner_id is not None:
            qs = qs.filter(owner_id=owner_id)
        if since:
            qs = qs.filter(created_at__gte=_day_start(since))
        # The last day of the calendar has no day after it: "until then" is no bound at all.
        if until and until < date.max:
            qs = qs.filter(created_at__lt=_day_start(until + timedelta(days=1)))
        if text:
            qs = qs.filter(input_text__icontains=text)
        # Only what a row shows: output, logs and text can be large.
        return qs.select_related("owner").only(
            "id",
            "model_ref",
            "version",
            "status",
            "input_text",
            "input",
            "hidden_inputs",
            "created_at",
            "started_at",
            "completed_at",
            "cancel_requested_at",
            "source",
            "error",
            "owner__id",
            "owner__username",
        )

    def page(
        self, size: int, before: str | None = None, after: str | None = None
    ) -> tuple[list["Prediction"], bool, bool]:
        """Keyset pagination, newest first: (rows, has_newer, has_older). Constant time at
        any depth, unlike OFFSET. `before`/`after` are cursors (`encode_cursor`)."""
        older_than = decode_cursor(before)
        newer_than = decode_cursor(after)
        if newer_than:
            when, pk = newer_than
            qs = self.filter(Q(created_at__gt=when) | Q(created_at=when, pk__gt=pk))
            rows = list(qs.order_by("created_at", "pk")[: size + 1])
            return list(reversed(rows[:size])), len(rows) > size, True
        qs = self
        if older_than:
            when, pk = older_than
            qs = qs.filter(Q(created_at__lt=when) | Q(created_at=when, pk__lt=pk))
        rows = list(qs.order_by("-created_at", "-pk")[: size + 1])
        return rows[:size], older_than is not None, len(rows) > size


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def encode_cursor(p: "Prediction") -> str:
    micros = int(p.created_at.timestamp() * 1_000_000)
    return f"{micros}.{p.pk.hex}"


def decode_cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not raw:
        return None
    try:
        micros, hex_id = raw.split(".", 1)
        when = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
        return when, uuid.UUID(hex_id)
    except (ValueError, OverflowError, OSError):
        return None


class Prediction(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        STARTING = "starting"
        PROCESSING = "processing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    class Source(models.TextChoices):
        WEB = "web", "Web"
        WEBSOCKET = "websocket", "Websocket"
        API = "api", "API"

    ACTIVE_STATUSES = (Status.QUEUED, Status.STARTING, Status.PROCESSING)
    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="predictions"
    )
    model = models.ForeignKey(
        CatalogModel, null=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    # Kept as text so history survives a model leaving the catalogue.
    model_ref = models.CharField("model", max_length=201)
    # The exact version id that ran (as upstream reported it); empty until it is known.
    version = models.CharField(max_length=64, blank=True)
    input = models.JSONField(default=dict)
    # Inputs an admin set and hid from members (the model's hidden_inputs when it ran):
    # only staff see their values.
    hidden_inputs = models.JSONField(default=list, blank=True, editable=False)
    # The input's visible values as one string, for the history's search.
    input_text = models.TextField(blank=True, editable=False)
    status = models.CharField(max_length=16, choices=Status, default=Status.QUEUED)
    upstream_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    text_output = models.TextField(blank=True)
    logs = models.TextField(blank=True)
    error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    event_seq = models.PositiveIntegerField(default=0)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    source = models.CharField(max_length=16, choices=Source, default=Source.WEB)
    shared_with = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="shared_predictions"
    )

    objects = PredictionQuerySet.as_manager()

    # Not columns: set on the history page's rows by views.decorate_rows.
    thumbnail: dict[str, Any] | None
    summary: str

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="prediction_owner_created"),
            models.Index(fields=["status"], name="prediction_status"),
            models.Index(fields=["model", "-created_at"], name="prediction_model_created"),
            models.Index(fields=["-created_at"], name="prediction_created"),
        ]

    def __str__(self) -> str:
        return f"{self.model_ref} · {self.id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.input_text = input_as_text(self.public_input)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "input" in update_fields:
            kwargs["update_fields"] = {*update_fields, "input_text"}
        super().save(*args, **kwargs)

    @property
    def public_input(self) -> dict[str, Any]:
        """The input as members see it: without the values an admin hid."""
        hidden = set(self.hidden_inputs or [])
        return {k: v for k, v in (self.input or {}).items() if k not in hidden}

    def input_for(self, user: User) -> dict[str, Any]:
        return dict(self.input or {}) if user.is_staff else self.public_input

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def is_canceling(self) -> bool:
        return self.is_active and self.cancel_requested_at is not None

    @property
    def duration(self) -> timedelta | None:
        if self.completed_at:
            return self.completed_at - self.created_at
        return None

    def api_token(self) -> ApiToken | None:
        """The token this prediction runs (and is canceled, and is checked) with: its
        catalogue model's (`CatalogModel.resolve_token`), else the default."""
        if self.model is not None:
            return self.model.resolve_token()
        return ApiToken.objects.default()

    def credentials(self) -> upstream.Credentials:
        """The token's credentials, or UpstreamError("config") saying what is wrong."""
        return upstream.credentials_for(self.api_token())

    def request_cancel(self) -> bool:
        """Record a cancel request (True: canceled here, before any runner took it) and
        reload. The rest of a cancel (Replicate, watchers) is `runner.cancel`."""
        now = timezone.now()
        rows = Prediction.objects.filter(pk=self.pk)
        # Compare-and-set against the runner's claim (which moves it out of `queued`).
        canceled_here = rows.filter(status=self.Status.QUEUED, upstream_id__isnull=True).update(
            status=self.Status.CANCELED,
            cancel_requested_at=now,
            completed_at=now,
            error="Canceled before it started.",
            updated_at=now,
        )
        if not canceled_here:
            # `update()` leaves updated_at alone: the runner's claim stamp stays valid.
            rows.filter(status__in=self.ACTIVE_STATUSES, cancel_requested_at__isnull=True).update(
                cancel_requested_at=now
            )
        self.refresh_from_db()
        return bool(canceled_here)


def input_as_text(value: object) -> str:
    """Flatten an input's string and number values (not its keys) for searching."""
    if isinstance(value, dict):
        return " ".join(filter(None, (input_as_text(v) for v in value.values())))
    if isinstance(value, list):
        return " ".join(filter(None, (input_as_text(v) for v in value)))
    if value is None or isinstance(value, bool):
        return ""
    text = str(value)
    # Data URIs are file contents, not words anyone searches for.
    return "" if text.startswith("data:") else text


class OutputFile(models.Model):
    """A copy of an output file in our storage: Replicate's URLs expire within the hour."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="files")
    position = models.PositiveIntegerField(default=0)
    file = models.FileField(upload_to="outputs/%Y/%m/%d/")
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    original_url = models.URLField(max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prediction", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["prediction", "position"], name="unique_output_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.prediction_id} #{self.position}"


class WebhookEvent(models.Model):
    """A webhook Replicate sent us, kept for a while so a redelivery (same webhook-id)
    is recognised and ignored."""

    webhook_id = models.CharField(max_length=200, unique=True)
    upstream_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.webhook_id} ({self.upstream_id} {self.status})"


class ApiKeyQuerySet(models.QuerySet):
    def live(self) -> "ApiKeyQuerySet":
        """Keys that work now: not revoked, not expired, their user still active."""
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        return self.filter(unexpired, revoked_at__isnull=True, user__is_active=True)

    def presented(self, authorization: str) -> str:
        """The key in an `Authorization: Bearer <key>` header (or Replicate's older
        `Token <key>`); empty if there is none."""
        scheme, _, credential = authorization.partition(" ")
        return credential.strip() if scheme.lower() in ("bearer", "token") else ""

    def use(self, presented: str) -> "ApiKey | None":
        """The live key `presented` is, marked used now; None if it is no such key."""
        key = self.authenticate(presented)
        if key is not None:
            key.mark_used()
        return key

    def authenticate(self, presented: str) -> "ApiKey | None":
        """The live key that `presented` is, or None (unknown, revoked, expired, malformed)."""
        match = ApiKey.FORMAT.match(presented)
        if match is None:
            return None
        key = self.live().select_related("user").filter(prefix=match["prefix"]).first()
        if key is None or not hmac.compare_digest(key.key_hash, ApiKey.hash(presented)):
            return None
        return key


class ApiKey(models.Model):
    """A member's personal key for the gateway (/api/v1/). It acts as its user. The key is
    shown once, when made; what is kept is its prefix (to tell keys apart) and a hash.

    A plain SHA-256 is enough: the secret part is 256 random bits, so there is nothing to
    guess, and checking a key must be cheap (every API call does it).
    """

    FORMAT = re.compile(r"^(?P<prefix>rcp_[0-9a-f]{8})_[A-Za-z0-9_-]{43}\Z")
    # last_used_at is a hint, written once a minute at most (as for ApiToken).
    LAST_USED_PRECISION = timedelta(minutes=1)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(plaintext: str) -> str:
        return hashlib.sha256(plaintext.encode()).hexdigest()

    @classmethod
    def issue(
        cls, user: auth.User, name: str, expires_at: datetime | None = None
    ) -> tuple["ApiKey", str]:
        """A new key for `user`, and its plaintext: the only time anyone sees it."""
        prefix = f"rcp_{secrets.token_hex(4)}"
        plaintext = f"{prefix}_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(
            user=user, name=name, prefix=prefix, key_hash=cls.hash(plaintext), expires_at=expires_at
        )
        return key, plaintext

    @property
    def is_live(self) -> bool:
        expired = self.expires_at is not None and self.expires_at <= timezone.now()
        return self.revoked_at is None and not expired

    def revoke(self) -> None:
        ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.refresh_from_db(fields=["revoked_at"])

    def mark_used(self) -> None:
        """Record that the key was used now, unless that was recorded within the minute."""
        now = timezone.now()
        if self.last_used_at and self.last_used_at > now - self.LAST_USED_PRECISION:
            return
        ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now


class WebhookSecret(models.Model):
    """A member's webhook signing secret (GET /api/v1/webhooks/default/secret), encrypted at
    rest: the webhooks the console delivers for their predictions are signed with it."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret"
    )
    ciphertext = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.user}"

    @classmethod
    def of(cls, user: auth.User) -> str:
        """The user's secret ("whsec_…"), made the first time it is asked for."""
        plaintext = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        row, _ = cls.objects.get_or_create(
            user=user, defaults={"ciphertext": crypto.encrypt(plaintext)}
        )
        return crypto.decrypt(row.ciphertext)


class WebhookSubscription(models.Model):
    """Where the console delivers a gateway prediction's webhooks (`webhook` and
    `webhook_events_filter` on its create). `start`, `output` and `logs` are sent while it
    runs, best effort; `completed` is kept here until it is delivered (deliveries.py)."""

    EVENTS = ("start", "output", "logs", "completed")

    prediction = models.OneToOneField(
        Prediction, on_delete=models.CASCADE, related_name="webhook_subscription"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    # The console as the create reached it: absolute URLs in the payloads start with it.
    base_url = models.CharField(max_length=300)
    # The `completed` webhook's webhook-id: the same on every attempt.
    completed_id = models.CharField(max_length=64, default="", editable=False)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"{self.prediction_id} → {self.url}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.completed_id:
            self.completed_id = f"msg_{secrets.token_hex(16)}"
        super().save(*args, **kwargs)

    @classmethod
    def for_create(cls, url: str, events: list[str], base_url: str) -> "WebhookSubscription":
        """What a create asks for (unsaved). A wanted `completed` is due from the start, so
        the reconcilers deliver it once the prediction ends, whoever else does not."""
        due = timezone.now() if "completed" in events else None
        return cls(url=url, events=sorted(set(events)), base_url=base_url, next_attempt_at=due)


@receiver(post_delete, sender=OutputFile)
def delete_archived_file(sender: type[OutputFile], instance: OutputFile, **kwargs: object) -> None:
    """Deleting a prediction (or one of its files) frees the storage, once the delete sticks."""
    if instance.file:
        transaction.on_commit(lambda: instance.file.delete(save=False))


def _new_upload_id() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, as unguessable as a key's secret


def _upload_expiry() -> datetime:
    return timezone.now() + timedelta(hours=settings.API_FILE_TTL_HOURS)


class UploadQuerySet(models.QuerySet):
    def live(self) -> "UploadQuerySet":
        return self.filter(expires_at__gt=timezone.now())

    def expired(self) -> "UploadQuerySet":
        return self.filter(expires_at__lte=timezone.now())

    def owned_by(self, user: User) -> "UploadQuerySet":
        """The user's own unexpired files: nobody else's, not even for staff."""
        if not user.is_authenticated:
            return self.none()
        return self.live().filter(owner_id=user.pk)


class Upload(models.Model):
    """A file a member uploaded through the gateway's files API (Replicate's /v1/files),
    to pass as an input: the console inlines it for upstream, which cannot reach us."""

    id = models.CharField(primary_key=True, max_length=32, default=_new_upload_id, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    file = models.FileField(upload_to="uploads/%Y/%m/%d/")
    name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    md5 = models.CharField(max_length=32)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(default=_upload_expiry)

    objects = UploadQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="upload_owner_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


@receiver(post_delete, sender=Upload)
def delete_uploaded_file(sender: type[Upload], instance: Upload, **kwargs: object) -> None:
    """Deleting an upload frees its storage, once the delete sticks."""
    if instance.file:
        transaction.on_commit(lambda: instance.file.delete(save=False))
