"""What a runner has told watchers about one prediction, and what it has yet to tell them.

Synchronous on purpose, with no database, network or event loop: `runner.Run` feeds it
what upstream says and publishes and writes what it hands back. Its rules:

- **Numbering.** Only this numbers events (`seq`, one more per event). `take_pending`
  turns what was received into events and folds each into the state as of its seq, in one
  step, so `row_fields()` is always the snapshot as of its `event_seq` (see events.py).
- **Forward only.** The status moves queued → starting → processing and never back (a
  late "starting" from a poll must not undo "processing"); the terminal state is set once,
  by `finish`.
- **Deltas or a restart.** A polled prediction whose text and logs continue what was
  received becomes deltas (`absorb`). One that does not (upstream's answer diverged) is
  adopted whole and numbered past a gap (`adopt`, `restart_after`): every watcher sees
  the gap and re-reads the row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.utils import timezone

from . import events
from .models import Prediction
from .upstream import UpstreamPrediction

Status = Prediction.Status
FORWARD = Prediction.ACTIVE_STATUSES  # in order: a status only ever moves forward


def text_of(output: Any) -> str | None:
    """A text model's output as one string (Cog's iterator of strings is concatenated)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(item, str) for item in output):
        return "".join(output)
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class RelayState:
    """One prediction's event state, starting from its row."""

    def __init__(self, prediction: Prediction, *, streams_text: bool) -> None:
        self.streams_text = streams_text
        self.upstream_id = prediction.upstream_id
        self.version = prediction.version
        # What watchers have been sent (and what the row gets at each write).
        self.seq = prediction.event_seq
        self.status: str = prediction.status
        self.canceling = prediction.cancel_requested_at is not None
        self.text = prediction.text_output
        self.logs = prediction.logs
        self.output = prediction.output
        self.started_at = prediction.started_at
        # Received but not yet published.
        self.pending_text: list[str] = []
        self.pending_logs: list[str] = []
        self.status_changed = False
        self.output_changed = False
        # The seq the row has (as of the last write).
        self.written_seq = self.seq

    # ------------------------------------------------------------------ receiving

    def set_status(self, status: str) -> bool:
        """Move the status forward (True if it moved); any other move is ignored."""
        if status in FORWARD and FORWARD.index(status) > FORWARD.index(self.status):
            self.status = status
            self.status_changed = True
            if status == Status.PROCESSING and self.started_at is None:
                self.started_at = timezone.now()
            return True
        return False

    def receive_text(self, delta: str) -> None:
        self.pending_text.append(delta)

    def receive_logs(self, delta: str) -> None:
        self.pending_logs.append(delta)

    def received_text(self) -> str:
        return self.text + "".join(self.pending_text)

    def received_logs(self) -> str:
        return self.logs + "".join(self.pending_logs)

    def notice_cancel(self) -> bool:
        """Someone asked to cancel (a write found out): True the first time, when watchers
        are to be told."""
        if self.canceling:
            return False
        self.canceling = True
        self.status_changed = True
        return True

    def record_created(self, data: UpstreamPrediction) -> dict[str, Any]:
        """The create's answer: its id and version, and the status event announcing it."""
        self.upstream_id = data.id
        # Official models may not name it; then the requested version (if any) stands.
        if data.version_id:
            self.version = data.version_id
        self.set_status(data.console_status or Status.STARTING)
        self.status_changed = False
        return self.status_event()

    def absorb(self, data: UpstreamPrediction) -> Literal["same", "changed", "diverged"]:
        """Take a polled prediction in as deltas. "diverged": it does not continue what
        was received, so the caller must start watchers over (`adopt`, `restart_after`)."""
        before = (len(self.pending_text), len(self.pending_logs), self.status, self.output)
        self.set_status(data.console_status or Status.PROCESSING)
        diverged = False
        output = data.output
        if self.streams_text:
            text = text_of(output)
            received = self.received_text()
            if text is not None and text != received:
                if text.startswith(received):
                    self.pending_text.append(text[len(received) :])
                else:
                    diverged = True
        elif output != self.output:
            self.output = output
            self.output_changed = True
        logs = data.logs or ""
        received = self.received_logs()
        if logs != received:
            if logs.startswith(received):
                self.pending_logs.append(logs[len(received) :])
            else:
                diverged = True
        if diverged:
            return "diverged"
        after = (len(self.pending_text), len(self.pending_logs), self.status, self.output)
        return "changed" if after != before or self.output_changed else "same"

    def adopt(self, data: UpstreamPrediction) -> None:
        """Replace the state with upstream's (no deltas): what a restart starts from."""
        self.pending_text.clear()
        self.pending_logs.clear()
        output = data.output
        if self.streams_text:
            self.text = text_of(output) or self.text
        else:
            self.output = output
        self.logs = data.logs or self.logs
        self.status = data.console_status or self.status
        if self.status in Prediction.TERMINAL_STATUSES:
            self.status = Status.PROCESSING  # the terminal state is set by finish()
        self.started_at = self.started_at or data.started_at

    # ------------------------------------------------------------------ numbering

    def numbered(self, kind: str, **body: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": kind, "seq": self.seq, **body}

    def status_event(self) -> dict[str, Any]:
        """The next `status` event. It carries `started_at` (ISO 8601, or None) so a page
        can draw the timeline without reading the row."""
        return self.numbered(
            events.STATUS,
            status=self.status,
            canceling=self.canceling,
            started_at=_iso(self.started_at),
        )

    def take_pending(self) -> list[dict[str, Any]]:
        """Turn what was received into numbered events, updating the state as of each seq."""
        batch = []
        if self.status_changed:
            self.status_changed = False
            batch.append(self.status_event())
        if self.pending_text:
            delta = "".join(self.pending_text)
            self.pending_text.clear()
            self.text += delta
            batch.append(self.numbered(events.OUTPUT, text=delta))
        if self.output_changed:
            self.output_changed = False
            batch.append(self.numbered(events.OUTPUT, output=self.output))
        if self.pending_logs:
            delta = "".join(self.pending_logs)
            self.pending_logs.clear()
            self.logs += delta
            batch.append(self.numbered(events.LOGS, text=delta))
            progress = events.parse_progress(delta)
            if progress is not None:
                batch.append(self.numbered(events.PROGRESS, **progress))
        return batch

    def restart_after(self, published: int) -> dict[str, Any]:
        """Skip one number past anything published (`published`: the highest seq anyone
        may have seen) and return the status event that follows the gap."""
        self.seq = max(self.seq, published) + 1  # never published: a gap for everyone
        self.status_changed = False
        return self.status_event()

    def take_final(self, output: Any, logs: str | None) -> list[dict[str, Any]]:
        """The final text and logs: what watchers have not seen of them as deltas (sent
        before `done`); the state then holds them whole."""
        final_text = text_of(output) if self.streams_text else None
        if final_text is not None:
            received = self.received_text()
            if final_text.startswith(received) and final_text != received:
                self.pending_text.append(final_text[len(received) :])
        if isinstance(logs, str) and logs.startswith(self.received_logs()):
            self.pending_logs.append(logs[len(self.received_logs()) :])
        self.status_changed = False
        batch = self.take_pending()
        if final_text is not None:
            self.text = final_text
        if isinstance(logs, str):
            self.logs = logs
        return batch

    def finish(self, status: str, output: Any) -> int:
        """The terminal state; returns the `done` event's seq."""
        self.status = status
        self.output = output
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------------ the row

    @property
    def unwritten(self) -> bool:
        """Whether the row lags what watchers were sent (or are about to be)."""
        return self.seq != self.written_seq or self.status_changed

    def row_fields(self) -> dict[str, Any]:
        """The columns a write sets: the row as of `seq`."""
        fields: dict[str, Any] = {
            "status": self.status,
            "text_output": self.text,
            "logs": self.logs,
            "event_seq": self.seq,
            "started_at": self.started_at,
            "upstream_id": self.upstream_id,
            "version": self.version,
        }
        if not self.streams_text:
            fields["output"] = self.output
        return fields
