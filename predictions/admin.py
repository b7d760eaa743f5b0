import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Field, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import untrusted, upstream
from .models import ApiKey, ApiToken, CatalogModel, ModelSchema, OutputFile, Prediction
from .schema import admin_input_problems, schema_diff


class ApiTokenForm(forms.ModelForm):
    """Takes the token write-only: it is encrypted on save and never rendered back."""

    token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Paste the Replicate API token. It is encrypted and never shown again; "
        "leave empty to keep the current one.",
    )

    class Meta:
        model = ApiToken
        fields = ["label", "token", "base_url", "enabled", "is_default"]
        # The admin renders help texts as HTML: no <placeholders> in them.
        help_texts = {
            "base_url": "Without /v1: https://api.replicate.com, or the built-in sandbox "
            "at http://HOST:PORT/sandbox.",
        }

    def clean_token(self) -> str:
        token = self.cleaned_data["token"]
        if not token and not self.instance.pk:
            raise forms.ValidationError("Enter the token.")
        if token and (len(token) < 8 or any(c.isspace() for c in token)):
            raise forms.ValidationError("That does not look like an API token.")
        return token

    def clean_is_default(self) -> bool:
        is_default = self.cleaned_data["is_default"]
        others = ApiToken.objects.filter(is_default=True).exclude(pk=self.instance.pk)
        current = others.first() if is_default else None
        if current is not None:
            raise forms.ValidationError(
                f"“{current.label}” is already the default; untick it there first."
            )
        return is_default

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        moved = self.instance.pk and "base_url" in self.changed_data
        if moved and not cleaned.get("token") and not self.has_error("token"):
            # Otherwise "Save and verify" would send the stored token to the new host.
            self.add_error(
                "token",
                "Enter the token again: the API base URL changed, and the stored "
                "token is only ever sent to the host it was entered for.",
            )
        return cleaned

    def save(self, commit: bool = True) -> ApiToken:
        if self.cleaned_data.get("token"):
            self.instance.set_token(self.cleaned_data["token"])
            # A new token, or a new host: whatever was verified before no longer holds.
            self.instance.account_name, self.instance.verified_at = "", None
        return super().save(commit)


def verify_token(request: HttpRequest, token: ApiToken) -> bool:
    """Ask Replicate who the token belongs to; record it, or say clearly why not."""
    try:
        # A disabled token may be checked before it is switched on.
        creds = upstream.credentials_for(token, include_disabled=True)
        account = upstream.call_sync(upstream.get_account, creds)
    except upstream.UpstreamError as exc:
        if exc.kind == "auth" and token.verified_at:
            # A rejected token must not keep looking verified.
            token.account_name, token.verified_at = "", None
            token.save(update_fields=["account_name", "verified_at"])
        messages.error(request, f"“{token.label}” could not be verified: {exc}")
        return False
    token.account_name = str(account.get("username") or account.get("name") or "")[:200]
    token.verified_at = timezone.now()
    token.save(update_fields=["account_name", "verified_at"])
    messages.success(request, f"“{token.label}” works: Replicate account “{token.account_name}”.")
    return True


def fetch_schema(model: CatalogModel) -> upstream.ModelSchema:
    """The pinned (or latest) version's schema and metadata; UpstreamError if unavailable."""
    creds = model.credentials()
    return upstream.call_sync(
        upstream.get_model_schema, creds, model.owner, model.name, model.version
    )


def apply_schema(request: HttpRequest, model: CatalogModel, schema: upstream.ModelSchema) -> None:
    """Cache a fetched schema on a saved catalogue entry, keep every version's schema (old
    predictions render and re-run against their own), and tell the admin what changed."""
    old_input, old_version = model.input_schema or {}, model.schema_version
    if old_version and old_input:
        ModelSchema.objects.update_or_create(
            model=model,
            version_id=old_version,
            defaults={"input_schema": old_input, "output_schema": model.output_schema or {}},
        )
    changed = ["input_schema", "output_schema", "schema_version", "schema_fetched_at"]
    if old_input and (old_version != schema.version_id or old_input != schema.input_schema):
        model.schema_changes = schema_diff(
            old_input, schema.input_schema, model.default_input, model.hidden_inputs
        )
        model.schema_changed_from = old_version
        changed += ["schema_changes", "schema_changed_from"]
    model.input_schema = schema.input_schema
    model.output_schema = schema.output_schema
    model.schema_version = schema.version_id
    model.schema_fetched_at = timezone.now()
    model.is_official = schema.is_official
    changed.append("is_official")
    # Fill what the admin left empty; never overwrite their wording.
    for name, value in [
        ("title", schema.title),
        ("description", schema.description),
        ("cover_image_url", schema.cover_image_url),
    ]:
        field = CatalogModel._meta.get_field(name)
        assert isinstance(field, Field)  # title, description, cover_image_url: columns
        max_length = field.max_length
        fits = max_length is None or len(value) <= max_length
        if value and fits and not getattr(model, name):
            setattr(model, name, value)
            changed.append(name)
    model.save(update_fields=changed)
    ModelSchema.objects.update_or_create(
        model=model,
        version_id=schema.version_id,
        defaults={"input_schema": schema.input_schema, "output_schema": schema.output_schema},
    )
    messages.success(request, f"{model.ref}: schema of version {schema.version_id[:12]} cached.")
    if "schema_changes" in changed:
        listing = format_html_join("", "<li>{}</li>", ((c,) for c in model.schema_changes))
        summary = listing or format_html("<li>{}</li>", "No input changed.")
        messages.warning(
            request,
            format_html(
                "{}: input schema changes from version {} to {}:<ul>{}</ul>",
                model.ref,
                (old_version or "?")[:12],
                schema.version_id[:12],
                summary,
            ),
        )


def refresh_schema(request: HttpRequest, model: CatalogModel) -> bool:
    """Fetch the pinned (or latest) version's schema into the catalogue entry."""
    try:
        schema = fetch_schema(model)
    except upstream.UpstreamError as exc:
        messages.error(request, f"{model.ref}: could not fetch the schema. {exc}")
        return False
    apply_schema(request, model, schema)
    return True


class CatalogModelForm(forms.ModelForm):
    """Checks the model with Replicate before saving: a model that does not exist there (or
    whose schema cannot be fetched) is a form error, never a broken catalogue entry; the
    admin's default and hidden inputs must fit the schema."""

    # A changed model, pinned version or token makes the cached schema someone else's.
    SCHEMA_FIELDS = frozenset({"owner", "name", "version", "token"})
    refresh_requested = False  # set by the admin for "Save and refresh schema"

    class Meta:
        model = CatalogModel
        fields = [
            "owner",
            "name",
            "version",
            "enabled",
            "title",
            "description",
            "cover_image_url",
            "default_input",
            "hidden_inputs",
            "deadline_seconds",
            "allowed_groups",
            "token",
        ]
        field_classes = {
            "default_input": untrusted.JSONFormField,
            "hidden_inputs": untrusted.JSONFormField,
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        self.fetched: upstream.ModelSchema | None = None
        if self.errors:
            return cleaned
        input_schema = self.instance.input_schema or {}
        stale = self.SCHEMA_FIELDS.intersection(self.changed_data) or not input_schema
        if stale or self.refresh_requested:
            candidate = CatalogModel(
                owner=cleaned["owner"],
                name=cleaned["name"],
                version=cleaned.get("version", ""),
                token=cleaned.get("token"),
            )
            try:
                self.fetched = fetch_schema(candidate)
            except upstream.UpstreamError as exc:
                raise forms.ValidationError(
                    f"Not saved: {candidate.ref} could not be checked with Replicate. {exc}"
                ) from None
            input_schema = self.fetched.input_schema
        problems = admin_input_problems(
            input_schema, cleaned.get("default_input"), cleaned.get("hidden_inputs")
        )
        for name, messages_ in problems.items():
            self.add_error(name, messages_)
        return cleaned


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = [
        "label",
        "masked",
        "base_url",
        "enabled",
        "is_default",
        "account_name",
        "verified_at",
        "last_used_at",
    ]
    list_filter = ["enabled"]
    readonly_fields = [
        "masked",
        "verify_button",
        "account_name",
        "verified_at",
        "last_used_at",
        "created_at",
    ]
    actions = ["verify_tokens"]

    @admin.display(description="token")
    def masked(self, obj: ApiToken) -> str:
        return obj.masked

    @admin.display(description="verify")
    def verify_button(self, obj: ApiToken) -> str:
        # A submit button of the change form itself: it saves, then verifies.
        return mark_safe(
            '<input type="submit" class="button" name="_verify" value="Save and verify">'
            '<p class="help">Asks Replicate which account the token belongs to.</p>'
        )

    @admin.action(description="Verify selected tokens with Replicate")
    def verify_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            verify_token(request, token)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        if "_verify" in request.POST:
            verify_token(request, obj)
            return HttpResponseRedirect(reverse("admin:predictions_apitoken_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: ApiToken) -> HttpResponse:
        if "_verify" in request.POST:
            verify_token(request, obj)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    form = CatalogModelForm
    list_display = [
        "ref",
        "title",
        "enabled",
        "is_official",
        "version_short",
        "schema_status",
        "token",
    ]
    list_editable = ["enabled"]
    list_filter = ["enabled", "owner"]
    search_fields = ["owner", "name", "title"]
    filter_horizontal = ["allowed_groups"]
    readonly_fields = [
        "is_official",
        "schema_version",
        "schema_fetched_at",
        "schema_inputs",
        "schema_change_list",
        "refresh_button",
    ]
    fieldsets = [
        (None, {"fields": ["owner", "name", "version", "enabled"]}),
        ("Presentation", {"fields": ["title", "description", "cover_image_url"]}),
        ("Inputs", {"fields": ["default_input", "hidden_inputs", "deadline_seconds"]}),
        ("Access", {"fields": ["allowed_groups", "token"]}),
        ("Schema", {"fields": tuple(readonly_fields)}),  # all read-only: what Replicate said
    ]
    actions = ["refresh_schemas"]

    @admin.action(description="Refresh schema from Replicate")
    def refresh_schemas(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> None:
        for model in queryset.select_related("token"):
            refresh_schema(request, model)

    def get_form(
        self,
        request: HttpRequest,
        obj: CatalogModel | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[forms.ModelForm]:
        form = super().get_form(request, obj, change, **kwargs)
        assert issubclass(form, CatalogModelForm)  # modelform_factory subclasses self.form
        form.refresh_requested = "_refresh_schema" in request.POST
        return form

    def save_model(
        self, request: HttpRequest, obj: CatalogModel, form: forms.ModelForm, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        fetched = getattr(form, "fetched", None)
        if fetched is not None:  # checked in the form's clean(): it exists upstream
            apply_schema(request, obj, fetched)

    def response_change(self, request: HttpRequest, obj: CatalogModel) -> HttpResponse:
        if "_refresh_schema" in request.POST:
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    @admin.display(description="inputs")
    def schema_inputs(self, obj: CatalogModel) -> str:
        properties = (obj.input_schema or {}).get("properties") or {}
        if not properties:
            return "—"
        ordered = sorted(properties, key=lambda name: properties[name].get("x-order", 1_000))
        return ", ".join(ordered)

    @admin.display(description="schema changes")
    def schema_change_list(self, obj: CatalogModel) -> str:
        if not obj.schema_changed_from:
            return "—"
        changes = obj.schema_changes or ["No input changed."]
        return format_html(
            "<p>From version <code>{}</code> to <code>{}</code>:</p><ul>{}</ul>",
            obj.schema_changed_from[:12],
            obj.schema_version[:12],
            format_html_join("", "<li>{}</li>", ((change,) for change in changes)),
        )

    @admin.display(description="refresh")
    def refresh_button(self, obj: CatalogModel) -> str:
        # A submit button of the change form itself: it saves, then fetches the schema.
        return mark_safe(
            '<input type="submit" class="button" name="_refresh_schema" '
            'value="Save and refresh schema">'
            '<p class="help">Fetches the pinned version\'s schema, or the latest one.</p>'
        )

    @admin.display(description="model", ordering="owner")
    def ref(self, obj: CatalogModel) -> str:
        return obj.ref

    @admin.display(description="version")
    def version_short(self, obj: CatalogModel) -> str:
        return obj.version[:12] if obj.version else "latest"

    @admin.display(description="schema")
    def schema_status(self, obj: CatalogModel) -> str:
        if not obj.input_schema:
            return "not fetched"
        return f"{obj.schema_version[:12]} · {obj.schema_fetched_at:%Y-%m-%d %H:%M}"


class OutputFileInline(admin.TabularInline):
    model = OutputFile
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "position",
        "archived_copy",
        "content_type",
        "size",
        "sha256",
        "original_url",
    )

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="file")
    def archived_copy(self, obj: OutputFile) -> str:
        # The console serves archived files itself (after its access checks), whatever the
        # storage; MEDIA_URL serves nothing.
        url = reverse("predictions:file", args=[obj.prediction_id, obj.position])
        return format_html('<a href="{}">{}</a>', url, obj.file.name.rsplit("/", 1)[-1])


class PredictionChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        # The list shows none of these (possibly large) fields. Only here: the change page
        # shows them all, and deferred there they would cost a query each.
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer("logs", "text_output", "output")


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["short_id", "status", "model_ref", "owner", "created_at", "duration_display"]
    list_filter = ["status", "model", "owner", "created_at", "source"]
    list_select_related = ["owner"]
    search_fields = ["upstream_id", "input_text"]
    date_hierarchy = "created_at"
    inlines = [OutputFileInline]
    # The history is a record: staff may inspect or delete it, not rewrite it.
    readonly_fields = [
        "id",
        "owner",
        "model",
        "model_ref",
        "version",
        "status",
        "upstream_id",
        "formatted_input",
        "output",
        "text_output",
        "logs",
        "error",
        "metrics",
        "created_at",
        "started_at",
        "completed_at",
        "cancel_requested_at",
        "event_seq",
        "parent",
        "source",
    ]
    exclude = ["input", "shared_with"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return PredictionChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="id")
    def short_id(self, obj: Prediction) -> str:
        return str(obj.id)[:8]

    @admin.display(description="duration")
    def duration_display(self, obj: Prediction) -> str:
        duration = obj.duration
        return f"{duration.total_seconds():.1f} s" if duration else "—"

    @admin.display(description="input")
    def formatted_input(self, obj: Prediction) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.input, indent=2, ensure_ascii=False))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Members' gateway keys: staff see and revoke them, never read one (only a hash is
    kept). Keys are made by their owners on /account/keys/ or with `create_api_key`."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "state"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "expires_at", "created_at"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "expires_at"]
    readonly_fields += ["revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return "revoked"
        return "live" if obj.is_live else "expired"

    @admin.action(description="Revoke selected keys", permissions=["delete"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s): they stop working now.")
