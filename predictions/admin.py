import json

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from .models import ApiToken, CatalogModel, OutputFile, Prediction


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
        if is_default and others.exists():
            raise forms.ValidationError(
                f"“{others.first().label}” is already the default; untick it there first."
            )
        return is_default

    def save(self, commit: bool = True) -> ApiToken:
        if self.cleaned_data.get("token"):
            self.instance.set_token(self.cleaned_data["token"])
        return super().save(commit)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["label", "masked", "enabled", "is_default", "account_name", "last_used_at"]
    list_filter = ["enabled"]
    readonly_fields = ["masked", "account_name", "verified_at", "last_used_at", "created_at"]

    @admin.display(description="token")
    def masked(self, obj: ApiToken) -> str:
        return obj.masked


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["ref", "title", "enabled", "version_short", "schema_status", "token"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "owner"]
    search_fields = ["owner", "name", "title"]
    filter_horizontal = ["allowed_groups"]
    readonly_fields = ["schema_version", "schema_fetched_at"]
    fieldsets = [
        (None, {"fields": ["owner", "name", "version", "enabled"]}),
        ("Presentation", {"fields": ["title", "description", "cover_image_url"]}),
        ("Inputs", {"fields": ["default_input", "hidden_inputs", "deadline_seconds"]}),
        ("Access", {"fields": ["allowed_groups", "token"]}),
        ("Schema", {"fields": ["schema_version", "schema_fetched_at"]}),
    ]

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
    fields = ["position", "file", "content_type", "size", "sha256", "original_url"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("logs", "text_output", "output")

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
