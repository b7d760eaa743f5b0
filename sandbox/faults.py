"""Fault injection, chosen per token and per request.

A fault spec is a comma-separated list of modes. It can ride on the API token as a suffix,
``Authorization: Bearer <token>:<spec>`` (``<token>`` must be in ``SANDBOX_API_TOKENS``),
or come in an ``X-Sandbox-Faults: <spec>`` request header; when both are present they are
merged and the header wins. Example: ``r8_abc:latency=200,create_429=2,cut_after=5``.

Modes:

``latency=MS``
    Wait MS milliseconds before answering (for streams: before the stream opens).
``create_429=N``
    The first N prediction creates carrying this spec answer 429 with ``Retry-After: 1``.
    The client never retries a POST, so the caller sees ``ReplicateError(status=429)``.
``read_5xx=N``
    The first N ``GET /v1/predictions/{id}`` of each prediction answer 500. The client does
    not retry 500s, so the caller sees them.
``read_503=N``
    Same, but 503 with ``Retry-After: 0``: the client retries these on its own.
``cut_after=N``
    Each stream connection closes after N events without ``done``. The prediction keeps
    running, so a poller still gets the final result.
``stuck``
    Predictions created with this spec stay ``starting`` until canceled.
``download_5xx=N``
    The first N downloads of each output file of predictions created with this spec
    answer 503 (the file is there; a client that retries gets it).
``create_limit=N`` / ``read_limit=N``
    Per-minute rate limits for this spec instead of 600 creates / 3000 other calls;
    0 means unlimited (the capacity benchmark uses this).
``scope=LABEL``
    No effect of its own. Counters are kept per (token string, header spec), so a fresh
    label gives a test fresh counters on a long-lived sandbox.
"""

from dataclasses import dataclass, fields

# Modes that take an integer; `stuck` is the only flag.
_INT_MODES = {
    "latency",
    "create_429",
    "read_5xx",
    "read_503",
    "cut_after",
    "download_5xx",
    "create_limit",
    "read_limit",
}


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Faults:
    latency: int = 0
    create_429: int = 0
    read_5xx: int = 0
    read_503: int = 0
    cut_after: int | None = None
    download_5xx: int = 0
    stuck: bool = False
    create_limit: int | None = None
    read_limit: int | None = None
    scope: str = ""

    def merged(self, other: "Faults") -> "Faults":
        """`other` wins for every mode it sets."""
        values = {}
        defaults = Faults()
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            values[field.name] = theirs if theirs != getattr(defaults, field.name) else mine
        return Faults(**values)


def parse(spec: str) -> Faults:
    """Parse a spec such as ``latency=200,stuck``; raise FaultSpecError on anything unknown."""
    values: dict[str, object] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, has_value, raw = part.partition("=")
        name = name.strip()
        if name == "stuck" and not has_value:
            values["stuck"] = True
        elif name == "scope" and has_value:
            values["scope"] = raw.strip()
        elif name in _INT_MODES and has_value:
            try:
                number = int(raw)
            except ValueError:
                raise FaultSpecError(f"{name} needs a whole number, got {raw!r}") from None
            if number < 0:
                raise FaultSpecError(f"{name} must not be negative")
            values[name] = number
        else:
            raise FaultSpecError(f"unknown fault mode {part!r}")
    return Faults(**values)  # type: ignore[arg-type]


class Counters:
    """'First N' counters, keyed by whatever the caller chooses; bounded so they cannot grow."""

    limit = 10_000

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def take(self, key: str, allowance: int) -> bool:
        """True while `key` has been taken fewer than `allowance` times (and count this one)."""
        used = self._used.get(key, 0)
        if used >= allowance:
            return False
        if key not in self._used and len(self._used) >= self.limit:
            self._used.pop(next(iter(self._used)))
        self._used[key] = used + 1
        return True


counters = Counters()
