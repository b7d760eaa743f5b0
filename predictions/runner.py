"""The runner: one coroutine drives one prediction from `queued` to a terminal state.

Both executors call `run_prediction(id)` (inline: an asyncio task in daphne; celery: a task
on a worker's event loop). It is safe to call any number of times, anywhere:

- **Claim.** A runner first claims the row with a compare-and-set UPDATE: a `queued` row
  becomes `starting`, or an active row nobody has touched for a lease period is taken
  over. Every later write is fenced on the `updated_at` it wrote last, so a runner that
  lost the row (another one took over) finds out at its next write and stops.
  A live runner writes at least every lease/6 seconds (a heartbeat when idle).
- **Create once.** The upstream id is written the moment the create returns; a runner
  that finds it set resumes that prediction (polling) and never creates another. A runner
  that died between the create and that write (or a create whose answer was lost on the
  network) left a prediction upstream that no row names: the next runner looks for it
  among the account's recent predictions (same model, version and input, created after
  the row, not another row's) and adopts it rather than creating a second.
- **Events.** Tokens, logs, progress and status go out as numbered events (events.py;
  the numbering and what was sent are relay_state.py), batched: the first at once, then
  at most every BATCH_SECONDS. The row is written about
  once a second, never per token, with `event_seq` in the same UPDATE as the text and
  logs, so a row is always a consistent snapshot as of its seq.
- **Resume = reset.** A runner that takes over cannot know what a dead one published
  after its last flush, so it skips one seq number past anything published (the replay
  log knows the highest), writes the authoritative state from upstream under the next
  one, and only then publishes. Every watcher sees the gap and re-reads that row.
- **The end.** The final prediction is fetched, output files are copied into our storage
  and the output rewritten to our URLs (archive.py), the row is written, then `done` is
  published.
- **Nothing stays active.** Create is retried on 429/5xx (bounded, honouring
  Retry-After); a broken stream falls back to polling; reads are retried (bounded);
  a per-model deadline cancels upstream; any other error fails the prediction with a
  sentence a person can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from . import archive, events, logcontext, upstream
from . import metrics as prom  # not `metrics`: a prediction has metrics too
from .database import db
from .models import ApiToken, OutputFile, Prediction
from .relay_state import RelayState
from .upstream import Credentials, UpstreamError, UpstreamPrediction

logger = logging.getLogger(__name__)

Status = Prediction.Status

# At most one publish per prediction this often (after the first one, which goes at once).
BATCH_SECONDS = 0.05
# The row is written about this often while something changed.
FLUSH_SECONDS = 1.0
# Polling backoff: fast while output changes, slower while nothing happens.
POLL_MIN_SECONDS = 0.5
POLL_MAX_SECONDS = 5.0
# Creating is retried on 429/5xx this many times in all, waiting at most this long each.
CREATE_ATTEMPTS = 5
CREATE_MAX_WAIT_SECONDS = 30.0
# Consecutive failed reads (5xx, network) before the prediction is given up as failed.
READ_ATTEMPTS = 8
# Replicate's own Cancel-After stops a prediction at its deadline; the console's timer
# waits this much longer, as the fallback when upstream did not (or could not be asked).
DEADLINE_GRACE_SECONDS = 5.0

# Clocks differ: look for an unrecorded create this long before the row was written.
CLOCK_SKEW = timedelta(minutes=2)


class LeaseLost(Exception):
    """Another runner took the row over (or someone saved it): stop without writing."""


@dataclass(frozen=True)
class Ending:
    """How following a prediction ended: upstream's last word, and the console's verdict
    where it decided the outcome itself."""

    final: UpstreamPrediction | None  # None: upstream never said anything
    error: str = ""  # a failure of ours: the prediction fails with this sentence
    canceled: bool = False  # the console stopped it (its deadline, a cancel before create)


def lease_seconds() -> float:
    """How long a silent runner keeps its claim; PREDICTION_LEASE_SECONDS, default 30."""
    return settings.PREDICTION_LEASE_SECONDS


def webhook_url() -> str | None:
    public = getattr(settings, "PUBLIC_URL", "")
    return public.rstrip("/") + reverse("predictions:webhook") if public else None


def _human_duration(seconds: float) -> str:
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def _recorded_ids(upstream_ids: list[str]) -> set[str]:
    recorded = Prediction.objects.filter(upstream_id__in=upstream_ids)
    return set(recorded.values_list("upstream_id", flat=True))


# ---------------------------------------------------------------------------- the run


async def run_prediction(prediction_id: uuid.UUID | str) -> str:
    """Drive one prediction to a terminal state, or resume it. The one entry point.

    Returns what happened: "finished", "busy" (another runner holds it, or it is done),
    "lost" (another runner took over midway) or "error" (infrastructure trouble: the row
    is left for the reconciler). Raises CancelledError when the process shuts down, after
    handing the prediction back (see Run.release).
    """
    pk = uuid.UUID(str(prediction_id))
    claimed = await db(_claim_with_credentials)(pk, lease_seconds())
    if claimed is None:
        return "busy"
    prediction, lease, resumed, creds, token_pk = claimed
    run = Run(prediction, lease, resumed)
    run.token_pk = token_pk
    return await run.main(creds)


async def cancel(prediction: Prediction) -> bool:
    """Ask for this prediction to stop; False if it had already finished.

    Only the runner numbers events, so this does not publish one: it records the
    request, asks Replicate, and tells watchers to re-read the row (which now says
    "canceling"). The runner notices the request at its next write, publishes a
    numbered status, and the final state comes from upstream. A prediction that no
    runner has picked up yet is canceled right here.
    """
    canceled_here = await db(prediction.request_cancel)()
    if not canceled_here and not prediction.is_active:
        return False
    if prediction.is_active and prediction.upstream_id:
        try:
            creds = await db(prediction.credentials)()
            await upstream.cancel_prediction(creds, prediction.upstream_id)
        except UpstreamError as exc:
            # The runner asks again when it notices the request.
            logger.warning("cancel of %s upstream failed: %s", prediction.pk, exc)
    await events.publish_refresh(prediction.pk)
    await events.publish_user_status(
        prediction.owner_id,
        events.user_status_event(
            prediction.pk, prediction.status, prediction.model_ref, prediction.is_canceling
        ),
    )
    return True


def _claim_with_credentials(
    prediction_id: uuid.UUID, lease: float
) -> tuple[Prediction, datetime, bool, Credentials | UpstreamError, int | None] | None:
    """The claim and the token to use (credentials and its pk), in one trip to a DB thread."""
    claimed = Prediction.objects.claim(prediction_id, lease)
    if claimed is None:
        return None
    token = claimed[0].api_token()
    try:
        creds: Credentials | UpstreamError = upstream.credentials_for(token)
    except UpstreamError as exc:
        creds = exc
    return (*claimed, creds, token.pk if token else None)


class Run:
    """One runner following one prediction: the asyncio side (the pump that publishes and
    writes, the driver that follows upstream, the deadline). What watchers were told, and
    what the row gets, is `self.state` (relay_state.py). `main()` once."""

    def __init__(self, prediction: Prediction, lease: datetime, resumed: bool) -> None:
        self.p = prediction
        self.pk: uuid.UUID = prediction.pk
        self.lease = lease
        self.resumed = resumed
        model = prediction.model
        self.streams_text = bool(model and model.streams_text)
        deadline = model.deadline_seconds if model else 30 * 60
        self.deadline_seconds = float(deadline)
        self.deadline_at = prediction.created_at + timedelta(seconds=deadline)
        self.creds: Credentials | None = None
        self.token_pk: int | None = None
        self.state = RelayState(prediction, streams_text=self.streams_text)
        # Set when the deadline stopped it (ours or upstream's): the reason, for a person.
        self.deadline_reason = ""
        # Whether the create asked Replicate to enforce the deadline (Cancel-After).
        self.cancel_after_sent = False
        self.last_data: UpstreamPrediction | None = None

        self.heartbeat = lease_seconds() / 6
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_publish = float("-inf")
        self._last_write = 0.0
        self._pump_task: asyncio.Task[None] | None = None
        self._cancel_sent = False
        self._background: set[asyncio.Task[None]] = set()
        self._user_status: asyncio.Task[None] | None = None

    @property
    def upstream_id(self) -> str | None:
        """The upstream prediction's id once known (log lines name it: logcontext.py)."""
        return self.state.upstream_id

    # ------------------------------------------------------------------ main

    async def main(self, creds: Credentials | UpstreamError) -> str:
        logcontext.follow(self)  # every log line from here names this prediction
        loop = asyncio.get_running_loop()
        self._last_write = loop.time()
        try:
            if isinstance(creds, UpstreamError):
                await self.finish(Ending(None, error=str(creds)))
                return "finished"
            self.creds = creds
            self._pump_task = asyncio.create_task(self._pump(), name=f"pump-{self.pk}")
            ending = await self._supervised()
            await self._stop_pump()
            await self.finish(ending)
            return "finished"
        except LeaseLost:
            logger.info("prediction %s: another runner took over", self.pk)
            return "lost"
        except asyncio.CancelledError:
            await self._stop_pump()
            await self.release()
            raise
        except Exception:
            # The database or the channel layer failed: the row stays active and the
            # reconciler resumes it once it goes stale.
            logger.exception("prediction %s: runner stopped", self.pk)
            return "error"
        finally:
            await self._stop_pump()
            if self._background:  # the last feed update, a cancel request in flight
                await asyncio.wait(set(self._background), timeout=15)

    async def _supervised(self) -> Ending:
        """Follow upstream to the end, within the deadline, while the pump keeps running."""
        loop = asyncio.get_running_loop()
        assert self._pump_task is not None
        driver = asyncio.create_task(self._drive(), name=f"drive-{self.pk}")
        remaining = (self.deadline_at - timezone.now()).total_seconds()
        if self.deadline_seconds >= upstream.MIN_CANCEL_AFTER_SECONDS:
            remaining += DEADLINE_GRACE_SECONDS  # upstream's Cancel-After goes first
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, remaining)):
                await asyncio.wait({driver, self._pump_task}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            # Stop following first: a create in flight lands and its id is stored.
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)
            await self._cancel_upstream()
            limit = _human_duration(self.deadline_seconds)
            self.deadline_reason = (
                f"Stopped after {limit}: {self.p.model_ref} did not finish within its "
                "deadline, so the console canceled it."
            )
            return Ending(self.last_data, canceled=True)
        finally:
            if not driver.done():
                driver.cancel()
                await asyncio.gather(driver, return_exceptions=True)
        if not driver.done() or driver.cancelled():
            self._pump_task.result()  # the pump failed first: raise its error
            raise RuntimeError("the prediction's driver stopped without a result")
        try:
            return driver.result()
        except UpstreamError as exc:
            await self._cancel_upstream()
            return Ending(self.last_data, error=str(exc))
        except (LeaseLost, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("prediction %s: unexpected error", self.pk)
            await self._cancel_upstream()
            return Ending(
                self.last_data,
                error="The console hit an internal error while following this prediction "
                "and stopped it; the details are in the server log.",
            )

    async def _drive(self) -> Ending:
        """Create (or pick up) the upstream prediction and follow it to a terminal state."""
        if self.resumed and self.upstream_id is None:
            # The last runner claimed the row, so it may have created upstream and died.
            found = await self._created_unrecorded()
            if found is not None:
                self.state.upstream_id = found.id  # recorded by the reset below
        if self.resumed:
            data = await self._read() if self.upstream_id else None
            await self._reset(data)
            if data is not None and data.is_terminal:
                return Ending(data)
        if self.upstream_id is None:
            if self.state.canceling:
                return Ending(None, canceled=True)  # asked before it ever reached Replicate
            data = await self._create()
            await self._record_created(data)
            if self.token_pk is not None:
                await db(ApiToken.mark_used)(self.token_pk)
            if data.is_terminal:
                return Ending(data)
            if self.streams_text and data.stream_url:
                try:
                    await self._stream(data)
                except UpstreamError as exc:
                    if exc.kind in ("auth", "billing", "config"):
                        raise
                    logger.info("prediction %s: %s; polling instead", self.pk, exc)
        return await self._poll()

    # ------------------------------------------------------------------ upstream

    def _cancel_after(self) -> int | None:
        """Seconds left until the deadline, for Replicate's Cancel-After (None: too short)."""
        left = math.ceil((self.deadline_at - timezone.now()).total_seconds())
        return left if left >= upstream.MIN_CANCEL_AFTER_SECONDS else None

    async def _create(self) -> UpstreamPrediction:
        assert self.creds is not None
        hook = webhook_url()
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            cancel_after = self._cancel_after()
            self.cancel_after_sent = cancel_after is not None
            call = asyncio.ensure_future(
                upstream.create_prediction(
                    self.creds,
                    model_ref=self.p.model_ref,
                    version=self.state.version,
                    input=self.p.input,
                    stream=self.streams_text,
                    webhook=hook,
                    webhook_events_filter=["completed"] if hook else None,
                    cancel_after=cancel_after,
                )
            )
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                # Stopped mid-create (shutdown, deadline): it may exist upstream already.
                # Let the answer land and store its id, so nobody ever creates a second.
                with contextlib.suppress(Exception):
                    await self._record_created(await call)
                raise
            except UpstreamError as exc:
                # A 429 (or a 5xx) says nothing was created; a network error might have
                # created one, so that one is looked for rather than created again.
                if exc.kind in ("network", "timeout"):
                    found = await self._created_unrecorded()
                    if found is not None:
                        return found
                if exc.kind not in ("rate_limited", "server"):
                    raise
                if attempt == CREATE_ATTEMPTS:
                    raise UpstreamError(
                        exc.kind,
                        f"Could not start the prediction after {attempt} attempts: {exc}",
                        status=exc.status,
                    ) from exc
                wait = exc.retry_after if exc.retry_after is not None else 2.0 ** (attempt - 1)
                logger.info("prediction %s: create attempt %d: %s", self.pk, attempt, exc)
                await asyncio.sleep(min(wait, CREATE_MAX_WAIT_SECONDS))
        raise AssertionError("unreachable")

    async def _created_unrecorded(self) -> UpstreamPrediction | None:
        """The upstream prediction a create for this row made, if one exists that no row
        has recorded (see "Create once" above); None when there is none (or no way to ask)."""
        assert self.creds is not None
        try:
            recent = await upstream.recent_predictions(self.creds, self.p.created_at - CLOCK_SKEW)
        except UpstreamError as exc:
            logger.warning("prediction %s: cannot look for an earlier create: %s", self.pk, exc)
            return None
        ours = [
            data
            for data in recent
            if data.model == self.p.model_ref
            and (not self.p.version or data.version == self.p.version)
            and data.input == self.p.input
        ]
        if not ours:
            return None
        taken = await db(_recorded_ids)([data.id for data in ours])
        # Oldest first: of identical runs, the earliest create is the earliest row's.
        for data in reversed(ours):
            if data.id not in taken:
                logger.info("prediction %s: adopting %s, created earlier", self.pk, data.id)
                return data
        return None

    async def _read(self) -> UpstreamPrediction:
        """GET the prediction, retrying transient failures a bounded number of times."""
        assert self.creds is not None and self.upstream_id is not None
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                data = await upstream.get_prediction(self.creds, self.upstream_id)
            except UpstreamError as exc:
                if not exc.retryable or attempt == READ_ATTEMPTS:
                    raise
                wait = exc.retry_after if exc.retry_after else min(0.25 * 2**attempt, 10.0)
                await asyncio.sleep(wait)
                continue
            self.last_data = data
            return data
        raise AssertionError("unreachable")

    async def _stream(self, data: UpstreamPrediction) -> None:
        """Consume server-sent events until `done` (or `error`); raises on a broken stream."""
        assert self.creds is not None
        async for event in upstream.stream_events(self.creds, data):
            if event.event == "output":
                self.state.set_status(Status.PROCESSING)
                prom.received(self, output=True)
                self.state.receive_text(event.data)
                self._wake.set()
            elif event.event == "logs":
                self.state.set_status(Status.PROCESSING)
                # Replicate's `logs` field is the lines joined with newlines.
                prom.received(self, output=False)
                self.state.receive_logs(event.data + "\n")
                self._wake.set()
            elif event.event in ("error", "done"):
                return

    async def _poll(self) -> Ending:
        """Poll until terminal; quick while things change, backing off while they don't."""
        delay = POLL_MIN_SECONDS
        while True:
            data = await self._read()
            if data.is_terminal:
                return Ending(data)
            changed = await self._absorb(data)
            delay = POLL_MIN_SECONDS if changed else min(delay * 1.5, POLL_MAX_SECONDS)
            await asyncio.sleep(delay)

    async def _cancel_upstream(self) -> None:
        """Best effort: the prediction must not keep running (and billing) upstream."""
        if self.upstream_id is None or self.creds is None:
            return
        try:
            async with asyncio.timeout(15):
                await upstream.cancel_prediction(self.creds, self.upstream_id)
        except (UpstreamError, TimeoutError) as exc:
            logger.warning("prediction %s: could not cancel upstream: %s", self.pk, exc)

    # ------------------------------------------------------------------ state

    async def _absorb(self, data: UpstreamPrediction) -> bool:
        """Take a polled prediction in as deltas; True if anything changed."""
        self.last_data = data
        absorbed = self.state.absorb(data)
        if absorbed == "diverged":
            # Not a continuation of what watchers have: start them over from the row.
            await self._reset(data)
            return True
        if absorbed == "changed":
            self._wake.set()
            return True
        return False

    # ------------------------------------------------------------------ events and writes

    async def _write(self, fields: dict[str, Any] | None = None, *, stamp: Any = None) -> None:
        """Write our state (plus `fields`) if we still hold the row; raise LeaseLost if not."""
        new_lease = stamp or timezone.now()
        values = {**self.state.row_fields(), **(fields or {})}
        update = asyncio.ensure_future(
            db(Prediction.objects.fenced_update)(
                self.pk, self.lease, new_lease, values, not self.state.canceling
            )
        )
        try:
            written, cancel = await asyncio.shield(update)
        except asyncio.CancelledError:
            # The UPDATE runs to its end in its thread anyway: keep our stamp in step with
            # it, or the hand-back that follows would find the row "taken".
            with contextlib.suppress(Exception):
                if (await update)[0]:
                    self.lease = new_lease
            raise
        if not written:
            raise LeaseLost
        self.lease = new_lease
        self.state.written_seq = values["event_seq"]
        self._last_write = asyncio.get_running_loop().time()
        if cancel and self.state.notice_cancel():
            # Someone pressed cancel: show it, and make sure upstream heard it.
            self._wake.set()
            if self.upstream_id and not self._cancel_sent:
                self._cancel_sent = True
                # In the background: the pump must not wait on Replicate.
                task = asyncio.create_task(self._cancel_upstream())
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        received_at = prom.take_received(self)
        for event in batch:
            await events.publish(self.pk, event, received_at=received_at)
        if any(event["type"] == events.STATUS for event in batch):
            self._send_user_status()
        if batch:
            self._last_publish = asyncio.get_running_loop().time()

    def _send_user_status(self) -> None:
        """Tell the owner's feed, in the background: a user with many tabs open must not
        slow this prediction's tokens. Each waits for the one before, so they stay in order."""
        event = events.user_status_event(
            self.pk, self.state.status, self.p.model_ref, self.state.canceling
        )
        previous = self._user_status

        async def push() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await events.publish_user_status(self.p.owner_id, event)

        self._user_status = asyncio.create_task(push())
        self._background.add(self._user_status)
        self._user_status.add_done_callback(self._background.discard)

    def _write_due(self, now: float) -> float:
        """Seconds until the next write is due (<= 0: now)."""
        if self.state.unwritten:
            return self._last_write + FLUSH_SECONDS - now
        return self._last_write + self.heartbeat - now

    async def _pump(self) -> None:
        """Publish what arrived, at most every BATCH_SECONDS; flush and heartbeat the row."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._write_due(loop.time()))):
                    await self._wake.wait()
            pause = self._last_publish + BATCH_SECONDS - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            self._wake.clear()
            async with self._lock:
                await self._send(self.state.take_pending())
                if self._write_due(loop.time()) <= 0:
                    await self._write()

    async def _stop_pump(self) -> None:
        task, self._pump_task = self._pump_task, None
        if task is not None and not task.done():
            async with self._lock:  # so it never stops halfway through a publish or write
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _record_created(self, data: UpstreamPrediction) -> None:
        """Store the upstream id before anything else can happen, then announce it."""
        async with self._lock:
            self.last_data = data
            event = self.state.record_created(data)
            try:
                await self._write()
            except LeaseLost:
                await self._cancel_upstream()  # nobody would ever follow this one
                raise
            event["canceling"] = self.state.canceling  # the write may have noticed a cancel
            await self._send([event])

    async def _reset(self, data: UpstreamPrediction | None) -> None:
        """Make every watcher start over from the row: see the module docstring."""
        async with self._lock:
            if data is not None:
                self.state.adopt(data)
            else:
                self.state.take_pending()  # fold anything received into our state
            published = await events.replay_log().last_seq(self.pk)
            event = self.state.restart_after(published)
            await self._write()
            await self._send([event])

    async def release(self) -> None:
        """Shutting down: save what watchers saw and hand the row back at once (the lease
        stamp is back-dated, so the next server or worker claims it without waiting)."""
        old = timezone.now() - timedelta(seconds=2 * lease_seconds())
        with contextlib.suppress(LeaseLost):
            await self._write(stamp=old)

    # ------------------------------------------------------------------ the end

    async def finish(self, ending: Ending) -> None:
        """Archive files, write the terminal row, publish `done`."""
        final, error = ending.final, ending.error
        status: str
        if error:
            status = Status.FAILED
        elif ending.canceled:
            status = Status.CANCELED
        else:
            status = (final.console_status if final else None) or Status.FAILED
        if not error and status == Status.FAILED:
            reported = final.error.strip() if final else ""
            error = reported or "The model failed without saying why."
        if status == Status.CANCELED and not error:
            never_started = final is not None and final.never_started and not ending.canceled
            error = self._deadline_reason(never_started)
        state = self.state
        async with self._lock:
            output = final.output if final is not None else state.output
            await self._send(state.take_final(output, final.logs if final else None))

            files: list[OutputFile] = []
            if not self.streams_text and self.creds is not None:
                # Failed and canceled runs may have made files too: they expire all the same.
                output, files = await archive.archive(self.pk, output, self.creds)
                if files:
                    listing = [events.serialize_file(self.pk, f) for f in files]
                    await self._send([state.numbered(events.FILES, files=listing)])
            done_seq = state.finish(status, output)
            now = timezone.now()
            completed_at = (final.completed_at if final else None) or now
            started_at = state.started_at or (final.started_at if final else None)
            metrics = final.metrics if final else {}
            terminal = {
                "status": status,
                "output": output,
                "error": error,
                "metrics": metrics or self.p.metrics,
                "started_at": started_at,
                "completed_at": completed_at,
            }
            await self._write(terminal)
            for name, value in {**state.row_fields(), **terminal}.items():
                setattr(self.p, name, value)
            done = {
                "type": events.DONE,
                "seq": done_seq,
                "prediction": events.serialize_prediction(self.p, files),
            }
            await self._send([done])
            self._send_user_status()
        logger.info("prediction %s: %s", self.pk, status)
        prom.finished(self.p.model_ref, status)

    def _deadline_reason(self, never_started: bool) -> str:
        """Why a prediction nobody canceled ended canceled: its deadline (ours or upstream's)."""
        if self.deadline_reason:
            return self.deadline_reason  # the console's own timer
        if self.state.canceling:
            return ""  # someone pressed cancel
        limit = _human_duration(self.deadline_seconds)
        if never_started:
            return (
                f"Canceled: {self.p.model_ref} had not started within its {limit} deadline, "
                "so Replicate stopped it before it ran (not billed)."
            )
        asked = self.cancel_after_sent or (self.last_data and self.last_data.deadline)
        # (A cancel well before the deadline came from elsewhere, e.g. Replicate's web page.)
        if asked and timezone.now() >= self.deadline_at - timedelta(seconds=1):
            return (
                f"Canceled: {self.p.model_ref} did not finish within its {limit} deadline, "
                "so Replicate stopped it."
            )
        return ""
