"""How a prediction is shown: the values the page's templates draw, computed once here.

The server is the only renderer of a prediction. The live page, the fragments its socket
carries (LiveView) and the history rows are all drawn from these and the partials of
`predictions/detail.html`; the browser only swaps fragments in and appends streamed text
and logs. Nothing here touches the network.
"""

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.http import FileResponse, Http404
from django.template.loader import render_to_string
from django.utils import timezone

from . import events
from .models import OutputFile, Prediction, User
from .schema import MISSING, ChosenFile, Field, clean_value
from .templatetags.console import OWN_FILE_URL, duration, visible_logs

# Output files shown inline; anything else is downloaded as opaque bytes. No SVG: it
# can carry script.
INLINE_TYPES = {
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/ogg",
    "audio/flac",
    "audio/webm",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
}


def media_kind(content_type: str) -> str:
    """image, audio or video for the types shown (and served) inline; "file" otherwise."""
    main = content_type.split(";", 1)[0].strip().lower()
    return main.split("/", 1)[0] if main in INLINE_TYPES else "file"


def snippet_input(
    fields: list[Field], chosen_files: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """The form's values as a program would send them, minus the model's own defaults
    (upstream applies those anyway, and a short snippet reads better). A value that is not
    valid yet is left out. `chosen_files`: input name → names of files picked for it in the
    browser (they take the place of a file input's URL, and follow a list's typed items).
    """
    chosen = chosen_files or {}
    values = {}
    for spec in fields:
        value = _snippet_value(spec)
        files = [ChosenFile(name) for name in chosen.get(spec.name, [])]
        if files and spec.kind == "file":
            value = files[-1]
        elif files and spec.kind == "file_list":
            value = [*(value if isinstance(value, list) else []), *files]
        if value is not MISSING:
            values[spec.name] = value
    return values


def _snippet_value(spec: Field) -> Any:
    try:
        # The run's own rules, which also refuse JSON nested too deep to write out.
        value = clean_value(spec, spec.value, {})
    except (ValueError, TypeError):
        return MISSING
    if spec.has_default and value == spec.default:
        return MISSING
    return value


def archived_file(user: User, pk: uuid.UUID, position: int, *, download: bool) -> FileResponse:
    """Our archived copy of an output file, to those who may see the prediction (the web
    page's file URLs and the gateway's serve it alike). Images, audio and video are shown
    inline (the page's players need that) unless `download`; the rest downloads as
    opaque bytes."""
    if not Prediction.objects.visible_to(user).filter(pk=pk).exists():
        raise Http404("No such prediction.")
    output = OutputFile.objects.filter(prediction_id=pk, position=position).first()
    if output is None or not output.file:
        raise Http404("No such output file.")
    shown = media_kind(output.content_type) != "file"
    content_type = output.content_type.split(";", 1)[0].strip().lower()
    if not shown:
        content_type = "application/octet-stream"
    response = FileResponse(
        output.file.open("rb"),
        as_attachment=download or not shown,
        filename=output.file.name.rsplit("/", 1)[-1],
        content_type=content_type,
    )
    response["X-Content-Type-Options"] = "nosniff"
    # Opened directly, a file is a document of its own: it may run nothing.
    response["Content-Security-Policy"] = (
        "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"
    )
    response["Cache-Control"] = "private, max-age=3600"
    return response


def shown_file(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A file as the live events describe it (events.serialize_file), plus how it is shown."""
    return {
        **entry,
        "kind": media_kind(entry["content_type"]),
        "name": entry["name"] or f"output-{entry['position']}",
    }


def file_entry(prediction_id: uuid.UUID, f: OutputFile) -> dict[str, Any]:
    return shown_file(events.serialize_file(prediction_id, f))


def is_url(value: Any) -> bool:
    return isinstance(value, str) and (
        value.startswith(("http://", "https://", "data:")) or bool(OWN_FILE_URL.match(value))
    )


def text_of(prediction: Prediction) -> str:
    """The prediction's text output: streamed tokens, or a plain string output."""
    if prediction.text_output:
        return prediction.text_output
    output = prediction.output
    if isinstance(output, str) and not is_url(output):
        return output
    if (
        isinstance(output, list)
        and output
        and all(isinstance(o, str) for o in output)
        and not any(is_url(o) for o in output)
    ):
        return "".join(output)
    return ""


def structured_output(prediction: Prediction, text: str, files: list) -> Any:
    """Output worth showing as JSON: not the text already shown, not only file URLs."""
    output = prediction.output
    if output is None or text or (files and _only_urls(output)):
        return None
    return output


def _only_urls(value: Any) -> bool:
    if isinstance(value, str):
        return is_url(value)
    if isinstance(value, list):
        return all(_only_urls(v) for v in value)
    if isinstance(value, dict):
        return all(_only_urls(v) for v in value.values())
    return False


def input_rows(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, value in values.items():
        row: dict[str, Any] = {"name": key, "value": value, "kind": "text"}
        if isinstance(value, str) and value.startswith("data:"):
            row["kind"] = "data"
            row["value"] = value[5:].split(";", 1)[0] or "file"
            row["size"] = len(value.partition(",")[2]) * 3 // 4
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            row["kind"] = "url"
        elif not isinstance(value, str):
            row["kind"] = "json"
        rows.append(row)
    return rows


def timeline(p: Prediction) -> list[dict[str, Any]]:
    """Queued → starting → processing → done, each done/current/pending, with durations.

    The current step's clock runs from `since`: the page ticks it between events.
    """
    Status = Prediction.Status
    active = Prediction.ACTIVE_STATUSES  # the steps before the end, in order
    reached = active.index(p.status) if p.is_active else len(active)
    end = p.completed_at
    durations = {
        Status.STARTING: p.started_at - p.created_at if p.started_at else None,
        Status.PROCESSING: end - p.started_at if end and p.started_at else None,
    }
    clocks: dict[str, datetime | None] = {
        Status.QUEUED: p.created_at,
        Status.STARTING: p.created_at,
        Status.PROCESSING: p.started_at,
    }
    steps = []
    for index, name in enumerate(active):
        state = "done" if index < reached else "current" if index == reached else "pending"
        took = durations.get(name)
        if not p.is_active and p.status != Status.SUCCEEDED and took is None and index > 0:
            state = "skipped"  # failed or canceled before getting this far
        since = clocks[name] if state == "current" else None
        if since is not None:
            took = timezone.now() - since
        steps.append(
            {
                "name": name,
                "label": Status(name).label,
                "state": state,
                "duration": duration(took) if took is not None else "",
                "since": since,
            }
        )
    steps.append(
        {
            "name": "done",
            "label": "Done" if p.is_active else p.get_status_display(),
            "state": "pending" if p.is_active else p.status,
            "duration": duration(end - p.created_at) if end else "",
        }
    )
    return steps


def extra_metrics(metrics: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    rows = []
    for key, value in (metrics or {}).items():
        if key in {"predict_time", "total_time"} or isinstance(value, dict | list):
            continue
        if isinstance(value, float):
            value = f"{value:.2f}".rstrip("0").rstrip(".")
        rows.append((key.replace("_", " ").capitalize(), str(value)))
    return rows


def summary_of(p: Prediction) -> str:
    """What a row shows of the input: the prompt if there is one, else its short values."""
    values = p.public_input
    prompt = values.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    parts = [
        f"{key}: {value}"
        for key, value in values.items()
        if isinstance(value, str | int | float) and not is_url(value) and len(str(value)) < 200
    ]
    return " · ".join(parts[:4])


def decorate_rows(rows: list[Prediction]) -> list[Prediction]:
    """Each row's summary and first image output (all thumbnails in one query)."""
    images = OutputFile.objects.filter(
        prediction_id__in=[p.pk for p in rows], content_type__in=INLINE_TYPES
    ).filter(content_type__startswith="image/")
    thumbs: dict[uuid.UUID, dict[str, Any]] = {}
    for f in images.order_by("prediction_id", "position"):
        thumbs.setdefault(f.prediction_id, file_entry(f.prediction_id, f))
    for p in rows:
        p.thumbnail = thumbs.get(p.pk)
        p.summary = summary_of(p)
    return rows


def pending_files(output: Any, archived: int) -> list[str]:
    """Names of the output files upstream has made but we have not copied yet: the page
    shows placeholders for them (showing upstream's would load remote media in the
    viewer's browser)."""
    urls: list[str] = []
    _collect_urls(output, urls)
    return [url.split("?", 1)[0].rsplit("/", 1)[-1] or "file" for url in urls[archived:]]


def _collect_urls(value: Any, found: list[str]) -> None:
    if isinstance(value, str):
        if is_url(value) and not value.startswith("data:"):
            found.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_urls(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_urls(item, found)


def output_context(prediction: Prediction, files: list[dict[str, Any]]) -> dict[str, Any]:
    """What the `output` partial shows; `files` as shown_file() gives them."""
    text = text_of(prediction)
    structured = structured_output(prediction, text, files)
    pending = pending_files(prediction.output, len(files)) if prediction.is_active else []
    if pending and _only_urls(prediction.output):
        structured = None
    return {
        "prediction": prediction,
        "files": files,
        "pending": pending,
        "text": text,
        "structured": structured,
    }


def page_context(
    prediction: Prediction, files: list[dict[str, Any]], progress: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Everything the live partials of detail.html draw (the page adds what is the
    viewer's own: inputs, lineage, actions)."""
    return {
        **output_context(prediction, files),
        "logs": visible_logs(prediction.logs),
        "progress": progress if prediction.is_active else None,
        "timeline": timeline(prediction),
        "extra_metrics": extra_metrics(prediction.metrics),
    }


def badge(status: str, canceling: bool) -> str:
    """includes/badge.html for a status the owner's feed announces."""
    p = Prediction(status=status, cancel_requested_at=timezone.now() if canceling else None)
    return render_to_string("predictions/includes/badge.html", {"p": p})


# The partials of detail.html that a live page swaps in, by the id of the element each is.
FRAGMENTS = {
    "status-badge": "status",
    "cancel-button": "cancel",
    "timeline": "timeline",
    "metrics": "metrics",
    "progress-row": "progress",
    "output": "output",
    "logs": "logs",
}
# Which fragments each kind of event changes; text and log deltas change none.
_CHANGED_BY = {
    events.STATUS: ("status-badge", "cancel-button", "timeline"),
    events.OUTPUT: ("output",),
    events.PROGRESS: ("progress-row",),
    events.FILES: ("output",),
    # The page drops its cancel form at the end.
    events.DONE: tuple(id_ for id_ in FRAGMENTS if id_ != "cancel-button"),
}


class LiveView:
    """One live page's prediction, kept up to date from the numbered events, so that each
    event the socket sends carries the fragments it changed, rendered by the same partials
    as the page. The row read for a snapshot starts it; the events move it on.

    Deltas (text, logs) are not kept: no fragment drawn between snapshots shows them.
    """

    def __init__(self, prediction: Prediction, files: Iterable[OutputFile]) -> None:
        self.prediction = prediction
        self.files = [file_entry(prediction.pk, f) for f in files]
        self.progress = events.parse_progress(prediction.logs)

    def render(self, ids: Iterable[str] = FRAGMENTS) -> dict[str, str]:
        context = page_context(self.prediction, self.files, self.progress)
        return {
            id_: render_to_string(f"predictions/detail.html#{FRAGMENTS[id_]}", context)
            for id_ in ids
        }

    def apply(self, event: Mapping[str, Any]) -> dict[str, str]:
        """Move on by one event; the fragments it changed."""
        p, kind = self.prediction, event["type"]
        if kind == events.OUTPUT and "output" not in event:
            return {}  # a text delta
        if kind == events.STATUS:
            p.status = event["status"]
            if event.get("canceling") and p.cancel_requested_at is None:
                p.cancel_requested_at = timezone.now()
            p.started_at = _parse_time(event.get("started_at")) or p.started_at
            if p.status == Prediction.Status.PROCESSING and p.started_at is None:
                p.started_at = timezone.now()  # a runner that did not say when
        elif kind == events.OUTPUT:
            p.output = event["output"]
        elif kind == events.PROGRESS:
            self.progress = {key: event.get(key) for key in ("percent", "current", "total")}
        elif kind == events.FILES:
            self.files = [shown_file(entry) for entry in event["files"]]
        elif kind == events.DONE:
            self._finish(event["prediction"])
        return self.render(_CHANGED_BY.get(kind, ()))

    def _finish(self, final: Mapping[str, Any]) -> None:
        p = self.prediction
        for name in ("status", "version", "output", "text_output", "logs", "error", "metrics"):
            setattr(p, name, final[name])
        p.started_at = _parse_time(final["started_at"])
        p.completed_at = _parse_time(final["completed_at"])
        self.files = [shown_file(entry) for entry in final["files"]]


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
