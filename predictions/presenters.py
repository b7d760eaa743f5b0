"""How a prediction is shown: the values the page's templates draw, computed once here.

The detail page, its live fragments and the history rows are all drawn by the server from
these; nothing here touches the network.
"""

import re
import uuid
from collections.abc import Mapping
from typing import Any

from . import events
from .models import OutputFile, Prediction
from .schema import MISSING, ChosenFile, Field, clean_value
from .templatetags.console import OWN_FILE_URL, duration

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


def file_entry(prediction_id: uuid.UUID, f: OutputFile) -> dict[str, Any]:
    """A file as the live events describe it, plus how the page shows it."""
    entry = events.serialize_file(prediction_id, f)
    entry["kind"] = media_kind(f.content_type)
    entry["name"] = entry["name"] or f"output-{f.position}"
    return entry


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


def progress_of(logs: str) -> dict[str, Any] | None:
    """The last tqdm line's progress, for the first paint (live updates bring their own)."""
    last = None
    for match in re.finditer(r"(\d+)%\|[^|\n\r]*\|\s*(\d+)/(\d+)", logs or ""):
        last = match
    if not last:
        return None
    return {"percent": int(last.group(1)), "current": int(last.group(2)), "total": last.group(3)}


STEPS = [("queued", "Queued"), ("starting", "Starting"), ("processing", "Processing")]


def timeline(p: Prediction) -> list[dict[str, str]]:
    """Queued → starting → processing → done, each done/current/pending, with durations.

    static/js/live.js redraws it the same way as events arrive.
    """
    reached = {"queued": 0, "starting": 1, "processing": 2}.get(p.status, 3)
    end = p.completed_at
    waited = p.started_at - p.created_at if p.started_at else None
    ran = (end - p.started_at) if (end and p.started_at) else None
    durations = {
        "queued": "",
        "starting": duration(waited) if waited is not None else "",
        "processing": duration(ran) if ran is not None else "",
    }
    steps = []
    for index, (name, label) in enumerate(STEPS):
        state = "done" if index < reached else "current" if index == reached else "pending"
        if reached == 3 and p.status != "succeeded" and not durations[name] and index > 0:
            state = "skipped"  # failed or canceled before getting this far
        steps.append({"name": name, "label": label, "state": state, "duration": durations[name]})
    last_state = p.status if reached == 3 else "pending"
    steps.append(
        {
            "name": "done",
            "label": p.get_status_display() if reached == 3 else "Done",
            "state": last_state,
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
