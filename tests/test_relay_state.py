"""predictions.relay_state: numbering, the forward-only status, deltas and restarts.

Plain objects only: no database, no network, no event loop.
"""

from datetime import UTC, datetime
from typing import Any

from predictions.models import Prediction
from predictions.relay_state import RelayState
from predictions.upstream import UpstreamPrediction

VERSION = "b" * 64


def state_of(streams_text: bool = True, **row: Any) -> RelayState:
    fields = {"model_ref": "sandbox/text", "status": "starting", "event_seq": 3, **row}
    return RelayState(Prediction(**fields), streams_text=streams_text)


def upstream(**fields: Any) -> UpstreamPrediction:
    return UpstreamPrediction.from_json({"id": "up1", "status": "processing", **fields})


def test_received_text_and_logs_become_numbered_events_and_the_row_as_of_them() -> None:
    state = state_of()
    state.set_status("processing")
    state.receive_text("Hel")
    state.receive_text("lo")
    state.receive_logs(" 50%|#####     | 5/10 [00:01<00:01]\n")

    batch = state.take_pending()

    assert [(e["type"], e["seq"]) for e in batch] == [
        ("status", 4),
        ("output", 5),
        ("logs", 6),
        ("progress", 7),
    ]
    assert batch[1]["text"] == "Hello"
    assert batch[3]["percent"] == 50.0
    row = state.row_fields()
    assert (row["event_seq"], row["text_output"], row["status"]) == (7, "Hello", "processing")
    assert "output" not in row  # a text model's output is its text
    assert state.take_pending() == []


def test_the_status_only_moves_forward_and_its_events_say_when_it_started() -> None:
    state = state_of(status="queued")
    assert state.set_status("processing")
    started = state.started_at
    assert started is not None

    assert not state.set_status("starting")  # a late poll
    [event] = state.take_pending()

    assert event == {
        "type": "status",
        "seq": 4,
        "status": "processing",
        "canceling": False,
        "started_at": started.isoformat(),
    }


def test_a_status_event_before_the_start_has_no_started_at() -> None:
    state = state_of(status="queued")
    state.set_status("starting")

    [event] = state.take_pending()

    assert (event["status"], event["started_at"]) == ("starting", None)


def test_a_poll_that_continues_what_was_received_becomes_deltas() -> None:
    state = state_of(text_output="Hello", logs="step 1\n")

    first = state.absorb(upstream(output=["Hello", " world"], logs="step 1\nstep 2\n"))
    again = state.absorb(upstream(output=["Hello", " world"], logs="step 1\nstep 2\n"))

    assert (first, again) == ("changed", "same")
    assert (state.pending_text, state.pending_logs) == ([" world"], ["step 2\n"])


def test_a_poll_that_rewrites_the_text_is_a_divergence() -> None:
    state = state_of(text_output="Hello")

    assert state.absorb(upstream(output=["Goodbye"])) == "diverged"


def test_a_changed_output_of_a_non_text_model_is_an_output_event() -> None:
    state = state_of(streams_text=False, output=None)

    assert state.absorb(upstream(output=["https://replicate.delivery/a.png"])) == "changed"
    events = state.take_pending()

    assert [e["type"] for e in events] == ["status", "output"]
    assert events[1]["output"] == ["https://replicate.delivery/a.png"]
    assert state.row_fields()["output"] == ["https://replicate.delivery/a.png"]


def test_a_restart_adopts_upstream_and_numbers_past_a_gap() -> None:
    state = state_of(text_output="Hel", logs="a\n")
    state.receive_text("lo?")

    state.adopt(
        upstream(
            status="succeeded",
            output=["Hello", "!"],
            logs="a\nb\n",
            started_at="2025-01-02T03:04:05Z",
        )
    )
    event = state.restart_after(published=9)

    assert (event["seq"], event["status"]) == (11, "processing")  # 10 is never published
    assert event["started_at"] == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat()
    assert (state.text, state.logs, state.pending_text) == ("Hello!", "a\nb\n", [])
    assert state.row_fields()["event_seq"] == 11


def test_the_final_answer_sends_the_unseen_tail_then_holds_it_whole() -> None:
    state = state_of(text_output="Hello", logs="a\n")

    batch = state.take_final(["Hello", " world"], "a\nb\n")
    done_seq = state.finish("succeeded", ["Hello", " world"])

    assert [(e["type"], e["text"]) for e in batch] == [("output", " world"), ("logs", "b\n")]
    assert (state.text, state.logs, done_seq) == ("Hello world", "a\nb\n", 6)


def test_a_cancel_is_announced_once() -> None:
    state = state_of()

    assert state.notice_cancel() and not state.notice_cancel()
    [event] = state.take_pending()

    assert (event["type"], event["canceling"]) == ("status", True)


def test_the_create_s_answer_names_the_version_unless_it_is_hidden() -> None:
    pinned = state_of(version="a" * 64)
    named = state_of()

    pinned.record_created(upstream(status="starting", version="hidden"))
    event = named.record_created(upstream(status="starting", version=VERSION))

    assert (pinned.upstream_id, pinned.version) == ("up1", "a" * 64)
    assert named.version == VERSION
    assert (event["type"], event["seq"], event["status"]) == ("status", 4, "starting")


def test_the_row_lags_until_a_write_records_the_seq() -> None:
    state = state_of()
    assert not state.unwritten
    state.receive_text("x")
    state.take_pending()
    assert state.unwritten

    state.written_seq = state.row_fields()["event_seq"]

    assert not state.unwritten
