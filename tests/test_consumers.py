"""Websockets through the real ASGI application (origin check, session auth, routing),
with runners in the test process streaming from the sandbox over HTTP."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, User
from django.contrib.sessions.models import Session
from django.test import AsyncClient, Client

from predictions import events, runner
from predictions.models import CatalogModel, Prediction
from project.asgi import application
from tests.engine_helpers import MakeModel, expected_text, submit, wait_for, wait_until_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_runs")]

ORIGIN = "http://127.0.0.1"


async def session_cookie(user: User) -> str:
    client = Client()
    await sync_to_async(client.force_login)(user)
    return client.cookies["sessionid"].value


async def open_socket(
    path: str, user: User | None = None, origin: str = ORIGIN, cookie: str | None = None
) -> WebsocketCommunicator:
    """A socket with the user's session (a new one, or the session `cookie`) or none."""
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await session_cookie(user)
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


class Browser:
    """Does what the page's script does: start from a snapshot, apply events in order."""

    def __init__(self, socket: WebsocketCommunicator) -> None:
        self.socket = socket
        self.seq: int | None = None
        self.text = ""
        self.snapshots = 0
        self.final: dict[str, Any] | None = None

    async def receive(self) -> dict[str, Any]:
        message = await self.socket.receive_json_from(timeout=20)
        if message["type"] == "snapshot":
            self.snapshots += 1
            self.seq = message["seq"]
            self.text = message["prediction"]["text_output"]
            if message["prediction"]["status"] in Prediction.TERMINAL_STATUSES:
                self.final = message["prediction"]
            return message
        # The consumer promises events in order with nothing missing.
        assert self.seq is not None and message["seq"] == self.seq + 1, (self.seq, message)
        self.seq = message["seq"]
        if message["type"] == "output":
            self.text += message["text"]
        elif message["type"] == "done":
            self.final = message["prediction"]
        return message

    async def until(self, kind: str) -> dict[str, Any]:
        while True:
            message = await self.receive()
            if message["type"] == kind:
                return message

    async def until_finished(self) -> str:
        """The text as assembled from the snapshot and deltas when the end arrives."""
        while self.final is None:
            await self.receive()
        return self.text


async def start_text(
    model: CatalogModel, user: User, tokens: int = 150, delay: int = 10
) -> tuple[Prediction, str]:
    prompt = f"live {uuid.uuid4().hex}"
    prediction = await submit(
        model, user, prompt=prompt, seed=11, max_tokens=tokens, token_delay_ms=delay
    )
    return prediction, expected_text(prompt, 11, tokens)


async def published(prediction: Prediction, at_least: int) -> None:
    async def enough() -> bool:
        return await events.replay_log().last_seq(prediction.pk) >= at_least

    await wait_for(enough)


async def test_a_browser_joining_mid_stream_ends_with_exactly_the_upstream_text(
    sandbox_model: MakeModel, member: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The row is written about once a second; here not until the end, so it is surely
    # behind what has been published when the browser joins, however slow the machine.
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 60.0)
    prediction, expected = await start_text(await sandbox_model("text"), member)
    await published(prediction, 5)

    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    assert (await socket.connect())[0]
    browser = Browser(socket)
    snapshot = await browser.receive()

    assert snapshot["type"] == "snapshot"
    # The case under test: the row was behind what had been published.
    assert snapshot["seq"] < 5
    assert await browser.until_finished() == expected
    assert browser.final["text_output"] == expected
    assert browser.final["status"] == "succeeded"
    await socket.disconnect()


async def test_reconnecting_and_a_second_tab_both_end_exact(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction, expected = await start_text(await sandbox_model("text"), member)
    path = f"/ws/predictions/{prediction.pk}/"
    first = await open_socket(path, member)
    await first.connect()
    browser = Browser(first)
    await browser.until("output")
    await first.disconnect()  # the network drops …
    await published(prediction, (browser.seq or 0) + 5)  # … while tokens keep coming

    again, second_tab = await open_socket(path, member), await open_socket(path, member)
    await again.connect()
    await second_tab.connect()
    texts = await asyncio.gather(
        Browser(again).until_finished(), Browser(second_tab).until_finished()
    )

    assert texts == [expected, expected]
    await again.disconnect()
    await second_tab.disconnect()


async def test_a_finished_prediction_is_one_final_snapshot(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction, expected = await start_text(await sandbox_model("text"), member, 10, 0)
    await wait_until_finished(prediction.pk)

    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    await socket.connect()
    snapshot = await socket.receive_json_from()

    assert snapshot["prediction"]["status"] == "succeeded"
    assert snapshot["prediction"]["text_output"] == expected
    assert snapshot["seq"] == snapshot["prediction"]["seq"]
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()


async def test_others_anonymous_and_foreign_sites_are_refused(member: User, stranger: User) -> None:
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    path = f"/ws/predictions/{prediction.pk}/"

    for user in (stranger, None):
        socket = await open_socket(path, user)
        assert (await socket.connect())[0]
        assert await socket.receive_output() == {"type": "websocket.close", "code": 4403}
    foreign = await open_socket(path, member, origin="https://evil.example")
    connected, _ = await foreign.connect()
    assert not connected


async def test_shared_with_and_staff_may_watch(member: User, stranger: User) -> None:
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    await prediction.shared_with.aadd(stranger)
    staff = await User.objects.acreate(username="staff", is_staff=True)

    for user in (stranger, staff):
        socket = await open_socket(f"/ws/predictions/{prediction.pk}/", user)
        await socket.connect()
        assert (await socket.receive_json_from())["type"] == "snapshot"
        await socket.disconnect()


async def test_missed_events_come_from_the_replay_log_then_from_a_newer_row(
    member: User,
) -> None:
    prediction = await Prediction.objects.acreate(
        owner=member, model_ref="sandbox/text", status="processing"
    )
    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    await socket.connect()
    browser = Browser(socket)
    await browser.until("snapshot")

    # Event 1 is logged but the channel layer drops it; event 2 arrives.
    await events.replay_log().append(prediction.pk, {"type": "output", "seq": 1, "text": "a"})
    await events.publish(prediction.pk, {"type": "output", "seq": 2, "text": "b"})
    assert [(await browser.receive())["seq"] for _ in range(2)] == [1, 2]
    assert browser.text == "ab"

    # Event 3 is nowhere (a runner that took over skipped it): the consumer waits for a
    # row written past it, and starts the browser over from that.
    await events.publish(prediction.pk, {"type": "output", "seq": 4, "text": "d"})
    assert await socket.receive_nothing(timeout=0.2)
    await Prediction.objects.filter(pk=prediction.pk).aupdate(text_output="abcd", event_seq=4)
    snapshot = await browser.until("snapshot")

    assert snapshot["seq"] == 4 and browser.text == "abcd"
    await events.publish(prediction.pk, {"type": "output", "seq": 5, "text": "e"})
    assert (await browser.receive())["seq"] == 5 and browser.text == "abcde"
    await socket.disconnect()


async def test_bad_messages_get_an_error_and_resync_a_snapshot(member: User) -> None:
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    await socket.connect()
    await socket.receive_json_from()

    nested = "[" * 100_000 + "]" * 100_000
    for bad in ("not json", '{"type": "nope"}', '{"type": "resync", "after": "x"}', "[]", nested):
        await socket.send_to(text_data=bad)
        assert (await socket.receive_json_from())["type"] == "error"
    await socket.send_to(bytes_data=b"\x00")
    assert (await socket.receive_json_from())["type"] == "error"
    await socket.send_json_to({"type": "resync", "after": 0})
    assert (await socket.receive_json_from())["type"] == "snapshot"
    await socket.disconnect()


async def test_empty_frames_and_lone_surrogates_get_an_error_not_a_crash(
    sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text")
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    frames = [
        "",  # an empty text frame (the test client refuses to send one: send it raw)
        '{"type": "resync", "after": 0, "note": "\\ud800"}',
        '{"type": "submit", "model": "sandbox/\\ud800", "input": {}}',
        '{"type": "submit", "model": "sandbox/text", "input": {"prompt": "a \\udfff b"}}',
        '{"type": "submit", "model": "sandbox/text\\u0000", "input": {"prompt": "hi"}}',
    ]
    for path in (f"/ws/predictions/{prediction.pk}/", "/ws/predictions/"):
        socket = await open_socket(path, member)
        assert (await socket.connect())[0]
        if path != "/ws/predictions/":
            assert (await socket.receive_json_from())["type"] == "snapshot"
        for frame in frames:
            await socket.send_input({"type": "websocket.receive", "text": frame})
            answer = await socket.receive_json_from(timeout=5)
            assert answer["type"] == "error", (path, frame, answer)
        # Still open and answering.
        await socket.send_json_to({"type": "nope"})
        assert (await socket.receive_json_from())["type"] == "error"
        await socket.disconnect()
    assert await Prediction.objects.acount() == 1


@pytest.mark.parametrize("path", ["/ws/x/", "/ws/predictions/not-a-uuid/", "/ws/predictions/1/2/"])
async def test_unknown_paths_are_closed_cleanly_without_login(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    socket = await open_socket(path)

    connected, _ = await socket.connect()

    assert connected
    assert await socket.receive_output() == {"type": "websocket.close", "code": 4404}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_cancel_shows_canceling_at_once_and_ends_canceled(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction = await submit(await sandbox_model("slow"), member, seconds=30)
    await wait_for(
        lambda: Prediction.objects.filter(pk=prediction.pk, status="processing").aexists()
    )
    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    await socket.connect()
    browser = Browser(socket)
    await browser.until("snapshot")

    await runner.cancel(prediction)

    while True:
        message = await browser.receive()
        if message["type"] == "snapshot" and message["prediction"]["canceling"]:
            break
    # The server draws what the page shows: "Canceling…" on the badge and the button.
    assert "Canceling…" in message["fragments"]["status-badge"]
    assert "Canceling…" in message["fragments"]["cancel-button"]
    await browser.until_finished()
    assert browser.final["status"] == "canceled"
    await socket.disconnect()


async def test_every_change_but_a_delta_carries_the_fragments_it_changed(
    sandbox_model: MakeModel, member: User
) -> None:
    prediction, expected = await start_text(await sandbox_model("text"), member, 40, 10)
    socket = await open_socket(f"/ws/predictions/{prediction.pk}/", member)
    assert (await socket.connect())[0]
    browser = Browser(socket)

    snapshot = await browser.until("snapshot")
    assert set(snapshot["fragments"]) >= {"status-badge", "timeline", "output", "logs"}
    assert snapshot["finished"] is False
    received = [snapshot]
    while browser.final is None:
        received.append(await browser.receive())

    for message in received[1:]:
        if message["type"] in ("output", "logs"):
            assert "fragments" not in message  # deltas only
        elif message["type"] == "status":
            badge = message["fragments"]["status-badge"]
            assert f'data-status="{message["status"]}"' in badge
    done = received[-1]
    assert done["type"] == "done"
    # The end is drawn whole: the final text (as Markdown), the timeline, the metrics.
    assert expected.split()[0] in done["fragments"]["output"]
    assert 'id="rendered"' in done["fragments"]["output"]
    assert "step-succeeded" in done["fragments"]["timeline"]
    assert "data-since" not in done["fragments"]["timeline"]  # no clock runs any more
    await socket.disconnect()


# ---------------------------------------------------------------------------- the feed


async def test_the_feed_submits_and_reports_status(sandbox_model: MakeModel, member: User) -> None:
    await sandbox_model("text")
    socket = await open_socket("/ws/predictions/", member)
    assert (await socket.connect())[0]

    earlier = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    await socket.send_json_to(
        {
            "type": "submit",
            "model": "sandbox/text",
            "input": {"prompt": "hi", "max_tokens": 3},
            "parent": str(earlier.pk),
        }
    )
    submitted = await socket.receive_json_from(timeout=5)

    assert submitted["type"] == "submitted"
    assert submitted["url"] == f"/predictions/{submitted['id']}/"
    prediction = await Prediction.objects.aget(pk=submitted["id"])
    assert prediction.owner_id == member.pk and prediction.source == "websocket"
    assert prediction.parent_id == earlier.pk
    statuses = []
    while not statuses or statuses[-1] not in Prediction.TERMINAL_STATUSES:
        message = await socket.receive_json_from(timeout=20)
        assert message["type"] == "status" and message["id"] == submitted["id"]
        assert message["model"] == "sandbox/text"
        # The badge a history row swaps in, drawn by the server.
        assert f'data-status="{message["status"]}"' in message["fragments"]["badge"]
        assert message["terminal"] == (message["status"] in Prediction.TERMINAL_STATUSES)
        statuses.append(message["status"])
    assert statuses[-1] == "succeeded"
    await socket.disconnect()


async def test_the_feed_rejects_bad_submissions_with_field_errors(
    sandbox_model: MakeModel, member: User
) -> None:
    model = await sandbox_model("text")
    staff_only = await Group.objects.acreate(name="staff-only")
    await model.allowed_groups.aadd(staff_only)
    socket = await open_socket("/ws/predictions/", member)
    await socket.connect()

    await socket.send_json_to({"type": "submit", "model": "sandbox/text", "input": {}})
    assert (await socket.receive_json_from())["message"] == "unknown model"

    await model.allowed_groups.aclear()
    await socket.send_json_to(
        {"type": "submit", "model": "sandbox/text", "input": {"max_tokens": "many"}}
    )
    invalid = await socket.receive_json_from()
    assert invalid["type"] == "error"
    assert set(invalid["errors"]) == {"prompt", "max_tokens"}

    await socket.send_json_to({"type": "launch"})
    assert (await socket.receive_json_from())["type"] == "error"

    stranger = await User.objects.acreate(username="stranger")
    theirs = await Prediction.objects.acreate(owner=stranger, model_ref="sandbox/text")
    for parent in (str(theirs.pk), "not-a-uuid"):
        await socket.send_json_to(
            {"type": "submit", "model": "sandbox/text", "input": {"prompt": "hi"}, "parent": parent}
        )
        refused = await socket.receive_json_from()
        assert refused["errors"] == {"parent": ["Unknown prediction."]}
    assert await Prediction.objects.acount() == 1
    await socket.disconnect()


async def test_the_feed_refuses_anonymous_visitors() -> None:
    socket = await open_socket("/ws/predictions/")
    await socket.connect()

    assert await socket.receive_output() == {"type": "websocket.close", "code": 4403}


# ---------------------------------------------------------------------------- sessions


async def expect_session_ended(socket: WebsocketCommunicator) -> None:
    """What a socket whose session is over gets: an error saying so, then 4403."""
    ended = await socket.receive_json_from(timeout=5)
    assert ended["type"] == "error" and "log in again" in ended["message"]
    assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}


async def test_a_socket_whose_session_ended_may_not_submit(
    sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text")
    socket = await open_socket("/ws/predictions/", member)
    assert (await socket.connect())[0]

    # Ended without a logout signal: expired, cleared, or logged out in another process.
    await Session.objects.all().adelete()
    await socket.send_json_to({"type": "submit", "model": "sandbox/text", "input": {"prompt": "x"}})

    await expect_session_ended(socket)
    assert await Prediction.objects.acount() == 0


async def test_a_deactivated_users_socket_may_not_submit(
    sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text")
    socket = await open_socket("/ws/predictions/", member)
    assert (await socket.connect())[0]

    await User.objects.filter(pk=member.pk).aupdate(is_active=False)  # no signal either
    await socket.send_json_to({"type": "submit", "model": "sandbox/text", "input": {"prompt": "x"}})

    await expect_session_ended(socket)
    assert await Prediction.objects.acount() == 0


async def test_logging_out_closes_that_sessions_sockets_only(member: User) -> None:
    prediction = await Prediction.objects.acreate(owner=member, model_ref="sandbox/text")
    this_browser = Client()
    await sync_to_async(this_browser.force_login)(member)
    cookie = this_browser.cookies["sessionid"].value
    feed = await open_socket("/ws/predictions/", cookie=cookie)
    watch = await open_socket(f"/ws/predictions/{prediction.pk}/", cookie=cookie)
    elsewhere = await open_socket("/ws/predictions/", member)  # another browser
    for socket in (feed, watch, elsewhere):
        assert (await socket.connect())[0]
    assert (await watch.receive_json_from())["type"] == "snapshot"

    logout = AsyncClient()
    logout.cookies["sessionid"] = cookie
    assert (await logout.post("/accounts/logout/")).status_code == 302

    await expect_session_ended(feed)
    await expect_session_ended(watch)
    assert await elsewhere.receive_nothing(timeout=0.3)
    await elsewhere.disconnect()


async def test_deactivating_a_user_closes_all_their_sockets(member: User) -> None:
    sockets = [await open_socket("/ws/predictions/", member) for _ in range(2)]
    for socket in sockets:
        assert (await socket.connect())[0]

    member.is_active = False
    await member.asave()  # as the admin does

    for socket in sockets:
        await expect_session_ended(socket)
