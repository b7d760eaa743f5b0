"""Forms: a catalogue model's input, and the history filters.

`PredictionForm` is built from one version's input schema (parsed once, by
`schema.fields_for`). It validates the web form's POST and the websocket `submit` alike:
a POST's strings and files are turned into input values first, a socket's JSON values go
in as they are; each input then runs the schema's rules (`schema.clean_value`: type,
range, choices, pattern, then the NUL/surrogate/NaN checks of untrusted.py). Hidden
inputs take the admin's value whatever was sent; errors go through `add_error`.

Files up to DATA_URI_MAX_BYTES become data: URIs; bigger ones wait as placeholders and
go through Replicate's files API only once the input is valid (`aupload_pending`).
"""

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.http import QueryDict

from . import schema, throttles, untrusted, upstream
from .database import db
from .models import CatalogModel, Prediction, PredictionQuerySet, User
from .schema import MISSING, Field
from .templatetags.console import filesize

# Files up to this size go into the input as data: URIs; bigger ones through the files API.
DATA_URI_MAX_BYTES = 256 * 1024
# Replicate's files API takes files up to 100 MB.
UPLOAD_MAX_BYTES = 100 * 1024 * 1024
PAGE_SIZES = (10, 25, 50, 100)
DEFAULT_PAGE_SIZE = 25
# The API snippet's preview posts the form with the files left out, and one of these
# ("<input>:<file name>") for each file picked. Not an identifier: no input is named so.
FILE_NAMES = "file-name"
# Form fields that are not model inputs.
CONTROL_FIELDS = {"csrfmiddlewaretoken", "parent", "run_version", FILE_NAMES}


@dataclass
class PendingUpload:
    """A file too big for a data: URI: uploaded upstream only once the input is valid."""

    field: str
    placeholder: str
    upload: UploadedFile


def chosen_file_names(post: QueryDict) -> dict[str, list[str]]:
    """Input name → the names of the files picked for it, from a snippet preview's post."""
    chosen: dict[str, list[str]] = {}
    for entry in post.getlist(FILE_NAMES):
        name, _, file_name = entry.partition(":")
        if file_name:
            chosen.setdefault(name, []).append(file_name)
    return chosen


def data_uri(upload: UploadedFile) -> str:
    content_type = upload.content_type or "application/octet-stream"
    encoded = base64.b64encode(upload.read()).decode()
    return f"data:{content_type};base64,{encoded}"


class InputField(forms.Field):
    """One model input, checked by the schema's rules for it."""

    def __init__(
        self, spec: Field, admin_defaults: Mapping[str, Any], refused: list[str] | None = None
    ) -> None:
        super().__init__(required=False, label=spec.label, help_text=spec.help)
        self.spec = spec
        self.admin_defaults = admin_defaults
        # Errors found before cleaning (a file over the cap): "required" would only repeat them.
        self.refused = refused or []
        # Set when an unknown input's name, once scrubbed, is this one's.
        self.unknown = ""

    def clean(self, value: Any) -> Any:
        if self.refused:
            raise ValidationError(self.refused)
        try:
            cleaned = schema.clean_value(
                self.spec, MISSING if value is None else value, self.admin_defaults
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if self.unknown:
            raise ValidationError(self.unknown)
        return cleaned


class UnknownInput(forms.Field):
    """A name the schema does not have: always an error, under the name as sent (scrubbed)."""

    def clean(self, value: Any) -> Any:
        raise ValidationError(schema.unknown_input(str(self.label)))


class PredictionForm(forms.Form):
    """A model's input against one version's schema; `cleaned_input` once valid."""

    def __init__(
        self,
        model: CatalogModel,
        input_schema: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
        initial: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.admin_defaults: dict[str, Any] = (
            model.default_input if isinstance(model.default_input, dict) else {}
        )
        self.hidden = set(model.hidden_inputs or [])
        self.schema_fetched = bool((input_schema or {}).get("properties"))
        self.all_specs = schema.fields_for(input_schema)
        # The inputs the form shows, in display order.
        self.specs = [spec for spec in self.all_specs if spec.name not in self.hidden]
        self.pending: list[PendingUpload] = []
        refused: dict[str, list[str]] = {}
        if isinstance(data, QueryDict):
            data, self.pending, refused = self.post_values(data, files)
        super().__init__(data=data, initial=dict(initial) if initial is not None else None)
        self.cleaned_input: dict[str, Any] = {}
        for spec in self.specs:
            self.fields[spec.name] = InputField(spec, self.admin_defaults, refused.get(spec.name))
        if not self.schema_fetched:
            return
        known = {spec.name for spec in self.all_specs}
        for name in data or {}:
            if name in known:
                continue
            shown = untrusted.scrub(name)
            field = self.fields.get(shown)
            if isinstance(field, InputField):
                field.unknown = schema.unknown_input(shown)
            else:
                self.fields[shown] = UnknownInput(label=shown)

    def post_values(
        self, post: QueryDict, files: Any
    ) -> tuple[dict[str, Any], list[PendingUpload], dict[str, list[str]]]:
        """A form post as input values (strings; the fields coerce them), pending uploads,
        and errors about files too big to send."""
        specs = {spec.name: spec for spec in self.specs}
        values: dict[str, Any] = {}
        for name in post:
            if name in CONTROL_FIELDS:
                continue
            spec = specs.get(name)
            entries = post.getlist(name)
            if spec is None:
                values[name] = entries[-1]  # named as unknown (or ignored, if hidden)
            elif spec.kind == "boolean":
                # A hidden "false" precedes the checkbox: the last entry is the answer.
                values[name] = entries[-1]
            elif spec.kind == "file":
                # The URL box, or the previous file kept as a hidden data: URI.
                values[name] = next((e.strip() for e in reversed(entries) if e.strip()), "")
            else:
                # Browsers send textarea line breaks as CRLF.
                values[name] = entries[-1].replace("\r\n", "\n")
        pending: list[PendingUpload] = []
        too_big: dict[str, list[str]] = {}
        for name in files or {}:
            spec = specs.get(name)
            uploads = [f for f in files.getlist(name) if f.name and f.size]
            if not uploads:
                continue
            if spec is None or spec.kind not in {"file", "file_list"}:
                values[name] = "(a file)"
                continue
            urls = []
            for upload in uploads:
                if upload.size > UPLOAD_MAX_BYTES:
                    # Refused before anything reads it: it stays in Django's temporary file.
                    too_big.setdefault(name, []).append(
                        f"“{upload.name}” is {filesize(upload.size)}; "
                        "Replicate accepts files up to 100 MB."
                    )
                elif upload.size <= DATA_URI_MAX_BYTES:
                    urls.append(data_uri(upload))
                else:
                    placeholder = f"https://upload.invalid/{len(pending)}"
                    pending.append(PendingUpload(name, placeholder, upload))
                    urls.append(placeholder)
            if not urls:
                continue
            if spec.kind == "file":
                values[name] = urls[-1]
            else:
                typed = [line for line in str(values.get(name, "")).splitlines() if line.strip()]
                values[name] = typed + urls
        return values, pending, too_big

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean() or {}
        if not self.schema_fetched:
            raise ValidationError(schema.NOT_FETCHED)
        self.cleaned_input = {}
        if self.errors:  # the field errors so far: the input is whole only once all pass
            return cleaned_data
        for spec in self.all_specs:
            if spec.name in self.hidden:
                if spec.name in self.admin_defaults:
                    self.cleaned_input[spec.name] = self.admin_defaults[spec.name]
            elif cleaned_data.get(spec.name, MISSING) is not MISSING:
                self.cleaned_input[spec.name] = cleaned_data[spec.name]
        return cleaned_data

    def input_errors(self) -> dict[str, list[str]]:
        """Field name ("__all__" for general) → messages, as the socket sends them."""
        if not self.is_bound:
            return {}
        # An ErrorList yields its messages as text.
        return {name: [str(m) for m in messages] for name, messages in self.errors.items()}

    async def acheck_throttle(self, user: User) -> throttles.Throttled | None:
        """Counted only for a run that would start: a typo costs no attempt."""
        if self.errors:
            return None
        refused = await throttles.check_submit(user)
        if refused is not None:
            self.add_error(None, refused.message)
        return refused

    def forget_pending(self) -> None:
        """Big files are not kept between attempts (they never left this request)."""
        for item in self.pending:
            self.add_error(item.field, f"Choose “{item.upload.name}” again.")

    async def aupload_pending(self) -> None:
        """Send the big files through the files API and put their URLs into the input."""
        if not self.pending:
            return
        creds = await db(self.model.credentials)()
        cleaned = self.cleaned_input
        for item in self.pending:
            content = await sync_to_async(item.upload.read)()
            url = await upstream.upload_file(
                creds,
                content,
                item.upload.name or "upload",
                item.upload.content_type or "application/octet-stream",
            )
            value = cleaned.get(item.field)
            if isinstance(value, list):
                cleaned[item.field] = [url if v == item.placeholder else v for v in value]
            elif value == item.placeholder:
                cleaned[item.field] = url

    def shown_fields(self) -> list[Field]:
        """The inputs to show, each with its value and errors.

        The value is, in order: what was submitted (or the re-run prediction's input), the
        admin's default, the schema's default. A big file is not kept: it must be chosen again.
        """
        values: Mapping[str, Any] | None = self.data if self.is_bound else self.initial or None
        blank = {item.field for item in self.pending} if self.input_errors() else set()
        errors = self.input_errors()
        for spec in self.specs:
            if spec.name in blank:
                spec.value = ""
            elif values is not None and spec.name in values:
                spec.value = values[spec.name]
            elif spec.name in self.admin_defaults:
                spec.value = self.admin_defaults[spec.name]
            else:
                spec.value = spec.default
            spec.errors = list(errors.get(spec.name, []))
        return self.specs

    def general_errors(self) -> list[str]:
        """Errors about inputs the form does not show (unknown, or general), for the summary."""
        shown = {spec.name for spec in self.specs}
        return [
            message if name == "__all__" else f"{name}: {message}"
            for name, messages in self.input_errors().items()
            if name not in shown
            for message in messages
        ]


# ---------------------------------------------------------------------------- history


class LenientDate(forms.Field):
    """An ISO date; anything else is no date (a filter that does not parse is ignored)."""

    def to_python(self, value: Any) -> date | None:
        try:
            return date.fromisoformat(value) if value else None
        except (ValueError, TypeError):
            return None


class Stripped(forms.Field):
    def __init__(self, *, max_length: int | None = None) -> None:
        super().__init__(required=False)
        self.max_length = max_length

    def to_python(self, value: Any) -> str:
        return str(value or "").strip()[: self.max_length]


@dataclass
class HistoryFilters:
    """The history's filters as the page shows them."""

    model: str = ""
    status: str = ""
    owner: str = ""
    q: str = ""
    since: date | None = None
    until: date | None = None
    per_page: int = DEFAULT_PAGE_SIZE

    @property
    def active(self) -> bool:
        return bool(self.model or self.status or self.owner or self.q or self.since or self.until)


class HistoryFilterForm(forms.Form):
    """The history page's query string. A value that does not parse is ignored, not an
    error: a hand-edited link still lists something."""

    q = Stripped(max_length=200)
    model = Stripped()
    status = forms.ChoiceField(choices=Prediction.Status.choices, required=False)
    owner = Stripped()
    since = LenientDate(required=False)
    until = LenientDate(required=False)
    per_page = forms.TypedChoiceField(
        choices=[(str(size), str(size)) for size in PAGE_SIZES], coerce=int, required=False
    )

    def __init__(self, data: QueryDict, user: User) -> None:
        super().__init__(data)
        if not user.is_staff:
            del self.fields["owner"]  # members see their own and what is shared with them

    @property
    def filters(self) -> HistoryFilters:
        self.is_valid()
        values = self.cleaned_data
        return HistoryFilters(
            model=values.get("model", ""),
            status=values.get("status", ""),
            owner=values.get("owner", ""),
            q=values.get("q", ""),
            since=values.get("since"),
            until=values.get("until"),
            per_page=values.get("per_page") or DEFAULT_PAGE_SIZE,
        )

    def history(self, qs: PredictionQuerySet, models: list[CatalogModel]) -> PredictionQuerySet:
        """`qs` (what the user may see) narrowed to the filters; `models` are the listed ones."""
        filters = self.filters
        # A user id: ASCII digits ("²".isdigit() is true), within a bigint.
        owner_id = int(filters.owner) if re.fullmatch(r"[0-9]{1,18}", filters.owner) else None
        return qs.filtered_history(
            model=next((m for m in models if m.ref == filters.model), None),
            model_ref=filters.model,
            status=filters.status,
            owner_id=owner_id,
            since=filters.since,
            until=filters.until,
            text=filters.q,
        )
