"""Template helpers for the console: safe Markdown for model output, durations, logs."""

import json
import re
from datetime import datetime, timedelta
from typing import Any

import markdown
import nh3
from django import template
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

register = template.Library()

# Our archived copies of output files (the runner rewrites output URLs to these). They are
# the only images model output may show: a remote image would leak the viewer's address
# to whoever the model (or its prompt) pointed at. views.py uses it too.
OWN_FILE_URL = re.compile(
    r"^/predictions/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/files/\d+/$"
)
_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "del",
    "code", "pre", "blockquote", "ul", "ol", "li", "a", "img", "table", "thead", "tbody",
    "tr", "th", "td", "sup", "sub",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"},
               "td": {"align"}, "ol": {"start"}}  # fmt: skip


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src":
        return value if OWN_FILE_URL.match(value) else None
    return value


def render_markdown(text: str) -> SafeString:
    """Untrusted Markdown → sanitised HTML: raw HTML is shown as text, never interpreted."""
    md = markdown.Markdown(extensions=["fenced_code", "tables", "sane_lists"])
    # Without these two, Python-Markdown passes raw HTML through untouched.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    html = md.convert(text)
    # nh3 again anyway: a second line of defence if a Markdown extension slips.
    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # sanitised by nh3 just above


@register.filter
def markdown_safe(text: str | None) -> SafeString:
    return render_markdown(text or "")


def _seconds(value: float) -> str:
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def duration(value: timedelta | float | int | None) -> str:
    """2.3 s, 45 s, 3 min 5 s, 1 h 2 min."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return _seconds(max(seconds, 0.0))


@register.simple_tag
def between(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return ""
    return duration(end - start)


def visible_logs(text: str) -> str:
    """Logs as a terminal shows them: a carriage return redraws its line (tqdm bars)."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rsplit("\r", 1)[-1] if "\r" in line else line for line in lines)


@register.filter
def filesize(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@register.filter
def ago(value: datetime | None) -> str:
    """“just now”, “5 minutes ago”: timesince, minus its “0 minutes”."""
    if not value:
        return ""
    if timezone.now() - value < timedelta(minutes=1):
        return "just now"
    return f"{timesince(value).split(', ')[0]} ago"


@register.filter
def initials(model_ref: str) -> str:
    """“sandbox/text” → “TE”, for placeholder covers and thumbnails."""
    return str(model_ref).rsplit("/", 1)[-1][:2].upper()


@register.filter
def hue(value: Any) -> int:
    """A stable colour (0-359) for a name, for placeholder covers."""
    return sum(ord(c) * 31**i for i, c in enumerate(str(value))) % 360


@register.filter
def short_id(value: Any) -> str:
    return str(value)[:8]
