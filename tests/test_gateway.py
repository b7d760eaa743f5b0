"""The gateway (/api/v1/): Replicate's API, backed by the console's own engine.

Two parts. The first asks the gateway in-process (Django's test client) about what needs
no run: keys, shapes, errors, limits. The second drives the official `replicate` client
over real HTTP against a console daphne (inline executor) whose upstream is the sandbox,
as a team's script would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import replicate
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from replicate.exceptions import ModelError, ReplicateError

from predictions import executors, gateway, throttles
from predictions.models import ApiKey, CatalogModel, Prediction
from sandbox.demo_models import MODELS
from tests.console_server import ConsoleServer, console_env, free_port
from tests.engine_helpers import MakeModel, expected_text
from tests.test_gateway_files import PNG as PNG_1X1
from tests.test_js_client import js_client, run_scenario  # noqa: F401 (js_client: a fixture)
from tests.waiting import wait_for

TEXT_INPUT = {"prompt": "hi", "seed": 1, "max_tokens": 5, "token_delay_ms": 0}


def issue(user: User, **fields: Any) -> str:
    return ApiKey.issue(user, "test", **fields)[1]


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def text_model(db: None) -> CatalogModel:
    """sandbox/text as the catalogue keeps it (no upstream needed for what these ask)."""
    from predictions import upstream

    demo = MODELS["sandbox/text"]
    input_schema, output_schema = upstream.split_openapi_schema(demo.latest_version.openapi_schema)
    return CatalogModel.objects.create(
        owner="sandbox",
        name="text",
        description="Streams text.",
        input_schema=input_schema,
        output_schema=output_schema,
        schema_version=demo.latest_version.id,
        schema_fetched_at=timezone.now(),
        is_official=True,
        hidden_inputs=["token_delay_ms"],
        default_input={"token_delay_ms": 0},
    )


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The executor's entry point, recorded: a queued row and no runner."""
    calls: list[dict[str, Any]] = []

    async def start_prediction(**kwargs: Any) -> Prediction:
        calls.append(kwargs)
        model = kwargs["model"]
        return await Prediction.objects.acreate(
            owner=kwargs["owner"],
            model=model,
            model_ref=model.ref,
            version=kwargs["version"] or "",
            input=kwargs["input"],
            hidden_inputs=list(model.hidden_inputs),
            source=kwargs["source"],
        )

    monkeypatch.setattr(executors, "start_prediction", start_prediction)
    return calls


# ---------------------------------------------------------------------------- in-process


@pytest.mark.django_db
def test_no_key_a_bad_key_a_revoked_and_an_expired_key_are_401_problems(
    client: Client, alice: User
) -> None:
    revoked_key, revoked = ApiKey.issue(alice, "old")
    revoked_key.revoke()
    expired = issue(alice, expires_at=timezone.now() - timedelta(seconds=1))
    bad = issue(alice)[:-2] + "xx"

    answers = [client.get("/api/v1/account")]
    answers += [client.get("/api/v1/account", **bearer(k)) for k in (bad, revoked, expired)]
    answers.append(client.get("/api/v1/account", HTTP_AUTHORIZATION="Basic abc"))

    for response in answers:
        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["title"] == "Unauthenticated"
    assert answers[0].json()["detail"] == "You did not pass an authentication token"
    assert answers[1].json()["detail"] == "You did not pass a valid authentication token"


@pytest.mark.django_db
def test_a_key_acts_as_its_user_and_is_marked_used(client: Client, alice: User) -> None:
    key, plaintext = ApiKey.issue(alice, "laptop")

    response = client.get("/api/v1/account", HTTP_AUTHORIZATION=f"Token {plaintext}")

    assert response.status_code == 200
    assert response.json() == {"type": "user", "username": "alice", "name": "alice"}
    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.django_db
def test_unknown_paths_and_wrong_methods_are_json_problems_never_pages(
    client: Client, alice: User
) -> None:
    key = bearer(issue(alice))

    unknown = client.post("/api/v1/nothing/here", **key)
    slash = client.get("/api/v1/account/", **key)
    wrong = client.delete("/api/v1/account", **key)
    bad_id = client.get("/api/v1/predictions/not-a-uuid", **key)

    for response in (unknown, slash, bad_id):
        assert response.status_code == 404
        assert response.json()["detail"] == "The requested resource could not be found"
    assert wrong.status_code == 405
    assert wrong["Allow"] == "GET"
    assert wrong.json()["status"] == 405


@pytest.mark.django_db
def test_a_crash_is_a_json_500_and_a_body_too_big_a_json_413(
    client: Client,
    alice: User,
    text_model: CatalogModel,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    key = bearer(issue(alice))

    def crash(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway, "model_json", crash)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    crashed = client.get("/api/v1/models/sandbox/text", **key)
    too_big = client.post(
        "/api/v1/models/sandbox/text/predictions",
        {"input": {"prompt": "x" * 200}},
        content_type="application/json",
        **key,
    )

    assert crashed.status_code == 500
    assert crashed.json()["title"] == "Internal Server Error"
    assert "a bug" not in crashed.content.decode()
    assert too_big.status_code == 413
    assert too_big["Content-Type"] == "application/problem+json"


@pytest.mark.django_db
def test_creates_need_no_csrf_token(
    alice: User, text_model: CatalogModel, started: list[dict[str, Any]]
) -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post(
        "/api/v1/models/sandbox/text/predictions",
        {"input": {"prompt": "hi"}},
        content_type="application/json",
        **bearer(issue(alice)),
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "starting"
    assert started[0]["source"] == Prediction.Source.API


@pytest.mark.django_db
def test_invalid_input_is_replicate_s_422_with_invalid_fields(
    client: Client, alice: User, text_model: CatalogModel, started: list[dict[str, Any]]
) -> None:
    response = client.post(
        "/api/v1/models/sandbox/text/predictions",
        {"input": {"max_tokens": 0, "colour": "red"}},
        content_type="application/json",
        **bearer(issue(alice)),
    )

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Input validation failed"
    fields = {(f["type"], f["field"]): f["description"] for f in body["invalid_fields"]}
    assert fields[("required", "input")] == "prompt is required"
    assert fields[("invalid", "input.max_tokens")] == "Ensure this value is at least 1."
    assert "colour" in fields[("additional_property_not_allowed", "input")]
    assert "- input: prompt is required\n" in body["detail"]
    assert started == []


@pytest.mark.django_db
def test_hidden_inputs_take_the_admin_s_value_and_are_not_shown(
    client: Client, alice: User, text_model: CatalogModel, started: list[dict[str, Any]]
) -> None:
    key = bearer(issue(alice))

    created = client.post(
        "/api/v1/predictions",
        {"version": "sandbox/text", "input": {"prompt": "hi", "token_delay_ms": 999}},
        content_type="application/json",
        **key,
    )
    described = client.get("/api/v1/models/sandbox/text", **key).json()

    assert created.status_code == 201, created.content
    assert started[0]["input"] == {"prompt": "hi", "token_delay_ms": 0}
    assert created.json()["input"] == {"prompt": "hi"}
    schema = described["latest_version"]["openapi_schema"]["components"]["schemas"]
    assert "token_delay_ms" not in schema["Input"]["properties"]
    assert "prompt" in schema["Input"]["properties"]
    assert schema["Output"]["x-cog-array-type"] == "iterator"


@pytest.mark.django_db
def test_a_model_outside_the_user_s_groups_is_404_as_on_replicate(
    client: Client, alice: User, text_model: CatalogModel, started: list[dict[str, Any]]
) -> None:
    text_model.allowed_groups.add(Group.objects.create(name="image team"))
    key = bearer(issue(alice))
    version = text_model.schema_version

    run = client.post(
        "/api/v1/models/sandbox/text/predictions",
        {"input": {"prompt": "hi"}},
        content_type="application/json",
        **key,
    )
    by_version = client.post(
        "/api/v1/predictions",
        {"version": version, "input": {"prompt": "hi"}},
        content_type="application/json",
        **key,
    )
    described = client.get("/api/v1/models/sandbox/text", **key)
    listed = client.get("/api/v1/models", **key).json()

    assert run.status_code == 404
    assert described.status_code == 404
    assert by_version.status_code == 422
    assert by_version.json()["title"] == "Invalid version or not permitted"
    assert listed["results"] == []
    assert started == []


@pytest.mark.django_db
def test_a_pinned_model_runs_only_its_pinned_version(
    client: Client, alice: User, text_model: CatalogModel, started: list[dict[str, Any]]
) -> None:
    pinned = MODELS["sandbox/text"].versions[-1].id
    text_model.version = pinned
    text_model.save()
    key = bearer(issue(alice))

    def create(version: str) -> Any:
        body = {"version": version, "input": {"prompt": "hi"}}
        return client.post("/api/v1/predictions", body, content_type="application/json", **key)

    answers = [create(pinned), create(f"sandbox/text:{pinned}"), create("sandbox/text")]
    other = create(f"sandbox/text:{text_model.schema_version}")

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [c["version"] for c in started] == [pinned] * 3
    assert other.status_code == 422


@pytest.mark.django_db
def test_models_are_listed_in_cursor_pages_with_their_latest_version(
    client: Client, alice: User, text_model: CatalogModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    CatalogModel.objects.create(owner="acme", name="other")  # no schema yet
    monkeypatch.setattr(gateway, "MODELS_PAGE_SIZE", 1)
    key = bearer(issue(alice))

    first = client.get("/api/v1/models", **key).json()
    second = client.get(first["next"], **key).json()

    assert [m["name"] for m in first["results"] + second["results"]] == ["other", "text"]
    assert first["previous"] is None and second["next"] is None
    assert first["next"].startswith("http://testserver/api/v1/models?cursor=")
    assert first["results"][0]["latest_version"] is None
    text = second["results"][0]
    assert text["latest_version"]["id"] == text_model.schema_version
    assert text["url"] == "http://testserver/models/sandbox/text/"
    assert isinstance(text["run_count"], int)
    versions = client.get("/api/v1/models/sandbox/text/versions", **key).json()
    assert [v["id"] for v in versions["results"]] == [text_model.schema_version]
    one = client.get(f"/api/v1/models/sandbox/text/versions/{text_model.schema_version}", **key)
    assert one.json()["cog_version"] == "unknown"


@pytest.mark.django_db
def test_calls_carry_the_key_s_rate_limit_and_are_refused_with_retry_after_when_spent(
    client: Client, alice: User, settings: Any
) -> None:
    settings.API_RATE_LIMIT = "2/minute"
    key = bearer(issue(alice))

    answers = [client.get("/api/v1/account", **key) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a["ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
    assert int(answers[0]["ratelimit-reset"]) >= 1
    refused = answers[2]
    assert int(refused["Retry-After"]) >= 1
    assert refused.json()["retry_after"] == int(refused["Retry-After"])
    # Per key: another key of the same user has its own.
    assert client.get("/api/v1/account", **bearer(issue(alice))).status_code == 200


@pytest.mark.django_db
def test_creates_count_against_the_member_s_submit_limit_as_the_web_form_does(
    client: Client,
    bob: User,
    text_model: CatalogModel,
    started: list[dict[str, Any]],
    settings: Any,
) -> None:
    settings.SUBMIT_RATE_LIMIT = "1/minute"
    # Ids repeat across test databases, and Redis outlives them.
    throttles.clear("submit", "1/minute", bob.pk)
    key = bearer(issue(bob))

    def create() -> Any:
        body = {"input": {"prompt": "hi"}}
        path = "/api/v1/models/sandbox/text/predictions"
        return client.post(path, body, content_type="application/json", **key)

    first, second = create(), create()

    assert (first.status_code, second.status_code) == (201, 429)
    assert second["Retry-After"]
    assert len(started) == 1


@pytest.mark.django_db
def test_output_paths_become_gateway_urls_and_upstream_urls_are_never_shown(
    client: Client, alice: User, text_model: CatalogModel
) -> None:
    prediction = Prediction.objects.create(
        owner=alice, model=text_model, model_ref="sandbox/text", status="succeeded"
    )
    prediction.output = [
        f"/predictions/{prediction.pk}/files/0/",
        "https://replicate.delivery/expiring.png",
        "plain text",
    ]
    prediction.save()

    data = client.get(f"/api/v1/predictions/{prediction.pk}", **bearer(issue(alice))).json()

    assert data["output"] == [
        f"http://testserver/api/v1/predictions/{prediction.pk}/files/0",
        None,
        "plain text",
    ]
    assert data["urls"]["web"] == f"http://testserver/predictions/{prediction.pk}/"
    assert data["urls"]["stream"].startswith("http://testserver/api/v1/streams/")
    assert data["version"] == "hidden"


@pytest.mark.django_db
def test_predictions_made_through_the_api_are_in_the_history(
    client: Client, alice: User, text_model: CatalogModel, started: list[dict[str, Any]]
) -> None:
    created = client.post(
        "/api/v1/models/sandbox/text/predictions",
        {"input": {"prompt": "from a script"}},
        content_type="application/json",
        **bearer(issue(alice)),
    ).json()
    client.force_login(alice)

    page = client.get("/predictions/").content.decode()

    assert Prediction.objects.get(pk=created["id"]).source == "api"
    assert created["id"] in page
    assert created["source"] == "api"


# ---------------------------------------------------------------------------- the client


@pytest.fixture(scope="module")
def console(django_db_setup: None) -> Iterator[ConsoleServer]:
    """A console daphne on this session's database, inline executor, sandbox upstream
    (each test's catalogue model names the sandbox through its own token)."""
    server = ConsoleServer(
        free_port(),
        console_env(
            PREDICTION_EXECUTOR="inline",
            # The tests' runs, not the members' limits (those are tested in-process).
            SUBMIT_RATE_LIMIT="100000/minute",
        ),
    )
    yield server
    server.stop()


def official_client(console: ConsoleServer, key: str) -> replicate.Client:
    client = replicate.Client(api_token=key, base_url=f"{console.url}/api")
    client.poll_interval = 0.05
    return client


async def akey(user: User, **fields: Any) -> str:
    return await sync_to_async(issue)(user, **fields)


async def joined(output: Any) -> str:
    if isinstance(output, AsyncIterator):
        return "".join([str(item) async for item in output])
    return "".join(output)


processes = pytest.mark.processes  # they drive a console process


@processes
@pytest.mark.django_db(transaction=True)
async def test_async_run_by_name_and_pinned_gives_the_model_s_text(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text", pinned=True)
    version = MODELS["sandbox/text"].latest_version.id
    client = official_client(console, await akey(member))

    by_name = await client.async_run("sandbox/text", input={**TEXT_INPUT, "prompt": "by name"})
    pinned = await client.async_run(
        f"sandbox/text:{version}", input={**TEXT_INPUT, "prompt": "pinned"}
    )

    assert await joined(by_name) == expected_text("by name", 1, 5)
    assert await joined(pinned) == expected_text("pinned", 1, 5)
    rows = await sync_to_async(list)(Prediction.objects.filter(owner=member).order_by("created_at"))
    assert [(p.source, p.status, p.version) for p in rows] == [("api", "succeeded", version)] * 2


@processes
@pytest.mark.django_db(transaction=True)
async def test_a_failing_model_raises_model_error_with_its_message(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("fail")
    client = official_client(console, await akey(member))

    with pytest.raises(ModelError) as raised:
        await client.async_run("sandbox/fail", input={"message": "boom", "step_delay_ms": 0})

    assert str(raised.value) == "boom"
    assert raised.value.prediction.status == "failed"
    assert "step 3/3" in (raised.value.prediction.logs or "")


@processes
@pytest.mark.django_db(transaction=True)
async def test_image_outputs_are_the_console_s_copies_readable_with_the_same_key(
    console: ConsoleServer, sandbox_model: MakeModel, member: User, stranger: User
) -> None:
    await sandbox_model("image")
    key = await akey(member)
    client = official_client(console, key)

    output = await client.async_run(
        "sandbox/image", input={"prompt": "a cat", "num_outputs": 2, "num_inference_steps": 1}
    )

    assert len(output) == 2
    assert all(str(url).startswith(f"{console.url}/api/v1/predictions/") for url in output)
    async with httpx.AsyncClient() as http:
        mine = await http.get(str(output[0]), headers={"Authorization": f"Bearer {key}"})
        anonymous = await http.get(str(output[0]))
        strangers = await http.get(
            str(output[0]), headers={"Authorization": f"Bearer {await akey(stranger)}"}
        )
    assert mine.status_code == 200
    assert mine.headers["content-type"].startswith("image/")
    assert mine.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in mine.headers["content-security-policy"]
    assert len(mine.content) > 100
    assert anonymous.status_code == 401
    assert strangers.status_code == 404


@processes
@pytest.mark.django_db(transaction=True)
async def test_create_wait_and_cancel_a_long_prediction(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("slow")
    client = official_client(console, await akey(member))

    prediction = await client.models.predictions.async_create(
        model="sandbox/slow", input={"seconds": 60}, wait=False
    )
    assert prediction.status == "starting"

    async def running() -> bool:
        await prediction.async_reload()
        return prediction.status == "processing"

    await wait_for(running, within=20, what="the slow prediction running")
    await prediction.async_cancel()

    assert prediction.status == "canceled"
    await prediction.async_wait()
    row = await Prediction.objects.aget(pk=prediction.id)
    assert (row.status, row.source) == ("canceled", "api")


@processes
@pytest.mark.django_db(transaction=True)
async def test_prefer_wait_holds_the_answer_until_done_or_says_starting_when_out_of_time(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("slow")
    await sandbox_model("text")
    key = await akey(member)
    headers = {"Authorization": f"Bearer {key}"}

    async with httpx.AsyncClient(base_url=f"{console.url}/api", headers=headers) as http:
        short = await http.post(
            "/v1/models/sandbox/slow/predictions",
            json={"input": {"seconds": 30}},
            headers={"Prefer": "wait=1"},
        )
        done = await http.post(
            "/v1/models/sandbox/text/predictions",
            json={"input": TEXT_INPUT, "stream": True},
            headers={"Prefer": "wait"},
        )
        await http.post(short.json()["urls"]["cancel"])

    assert short.status_code == 202
    assert (short.json()["status"], short.json()["output"]) == ("starting", None)
    assert done.status_code == 201
    assert done.headers["Preference-Applied"] == "wait"
    assert done.json()["status"] == "succeeded"
    assert "".join(done.json()["output"]) == expected_text("hi", 1, 5)
    assert done.json()["urls"]["stream"].startswith(f"{console.url}/api/v1/streams/")


@processes
@pytest.mark.django_db(transaction=True)
async def test_bad_revoked_and_expired_keys_get_401_from_the_client(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text")
    revoked_key, revoked = await sync_to_async(ApiKey.issue)(member, "old")
    await sync_to_async(revoked_key.revoke)()
    expired = await akey(member, expires_at=timezone.now() - timedelta(minutes=1))

    for key in ("rcp_nonsense", revoked, expired):
        with pytest.raises(ReplicateError) as raised:
            await official_client(console, key).async_run("sandbox/text", input=TEXT_INPUT)
        assert (raised.value.status, raised.value.title) == (401, "Unauthenticated")
    assert not await Prediction.objects.filter(owner=member).aexists()


@processes
@pytest.mark.django_db(transaction=True)
async def test_invalid_input_and_models_outside_the_groups_are_errors_the_client_raises(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text")
    image = await sandbox_model("image")
    group = await Group.objects.acreate(name=f"designers {uuid.uuid4().hex[:6]}")
    await sync_to_async(image.allowed_groups.add)(group)
    client = official_client(console, await akey(member))

    with pytest.raises(ReplicateError) as invalid:
        await client.async_run("sandbox/text", input={"max_tokens": 0})
    with pytest.raises(ReplicateError) as outside:
        await client.async_run("sandbox/image", input={"prompt": "x"})

    assert (invalid.value.status, invalid.value.title) == (422, "Input validation failed")
    assert "- input: prompt is required\n" in (invalid.value.detail or "")
    assert "- input.max_tokens: " in (invalid.value.detail or "")
    assert outside.value.status == 404


@processes
@pytest.mark.django_db(transaction=True)
async def test_the_predictions_list_is_the_caller_s_own_newest_first_in_cursor_pages(
    console: ConsoleServer, sandbox_model: MakeModel, member: User, stranger: User
) -> None:
    model = await sandbox_model("text")
    start = timezone.now() - timedelta(hours=1)

    def make_rows() -> list[str]:
        rows = [
            Prediction(
                owner=member,
                model=model,
                model_ref=model.ref,
                status="succeeded",
                source="api",
                input={"prompt": f"p{i}"},
                created_at=start + timedelta(seconds=i),
            )
            for i in range(gateway.PREDICTIONS_PAGE_SIZE + 5)
        ]
        Prediction.objects.bulk_create(rows)
        Prediction.objects.create(owner=stranger, model=model, model_ref=model.ref)
        return [str(p.pk) for p in reversed(rows)]

    expected = await sync_to_async(make_rows)()
    client = official_client(console, await akey(member))

    first = await client.predictions.async_list()
    assert first.next is not None
    second = await client.predictions.async_list(cursor=first.next)
    back = await client.predictions.async_list(cursor=second.previous)

    assert [p.id for p in first.results] + [p.id for p in second.results] == expected
    assert second.next is None
    assert [p.id for p in back.results] == [p.id for p in first.results]


@processes
@pytest.mark.django_db(transaction=True)
async def test_another_user_s_key_never_sees_or_cancels_someone_else_s_prediction(
    console: ConsoleServer, sandbox_model: MakeModel, member: User, stranger: User
) -> None:
    await sandbox_model("slow")
    mine = official_client(console, await akey(member))
    theirs = official_client(console, await akey(stranger))
    prediction = await mine.models.predictions.async_create(
        model="sandbox/slow", input={"seconds": 60}, wait=False
    )

    with pytest.raises(ReplicateError) as seen:
        await theirs.predictions.async_get(prediction.id)
    with pytest.raises(ReplicateError) as canceled:
        await theirs.predictions.async_cancel(prediction.id)
    listed = await theirs.predictions.async_list()

    assert seen.value.status == 404
    assert canceled.value.status == 404
    assert listed.results == []
    row = await Prediction.objects.aget(pk=prediction.id)
    assert row.cancel_requested_at is None
    await mine.predictions.async_cancel(prediction.id)


@processes
@pytest.mark.django_db(transaction=True)
async def test_fifty_concurrent_async_runs_each_get_their_own_text(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text", faults="create_limit=0,read_limit=0")
    client = official_client(console, await akey(member))
    prompts = [f"gather {i} {uuid.uuid4().hex[:6]}" for i in range(50)]

    outputs = await asyncio.wait_for(
        asyncio.gather(
            *(client.async_run("sandbox/text", input={**TEXT_INPUT, "prompt": p}) for p in prompts)
        ),
        timeout=120,
    )

    assert [await joined(o) for o in outputs] == [expected_text(p, 1, 5) for p in prompts]
    count = await Prediction.objects.filter(owner=member, source="api", status="succeeded").acount()
    assert count == 50


@processes
@pytest.mark.django_db(transaction=True)
def test_the_javascript_client_runs_and_cancels_through_the_gateway(
    js_client: Any,  # noqa: F811
    console: ConsoleServer,
    sandbox_model: MakeModel,
    member: User,
) -> None:
    async_to_sync(sandbox_model)("text")
    async_to_sync(sandbox_model)("slow")
    key, url = issue(member), f"{console.url}/api"

    ran = run_scenario(js_client, url, key, "run-official-by-name")
    seen = run_scenario(js_client, url, key, "predictions-create-get-cancel-list")

    assert "".join(ran["output"]) == expected_text("hello from js", 7, 8)
    # The console's UUIDs are ids the client takes as they are.
    assert uuid.UUID(seen["fetchedId"])
    assert (seen["createdStatus"], seen["canceledStatus"]) == ("starting", "canceled")
    assert seen["listed"] is True


@processes
@pytest.mark.django_db(transaction=True)
async def test_a_file_input_is_uploaded_by_the_client_and_reaches_the_model(
    console: ConsoleServer, sandbox_model: MakeModel, member: User, tmp_path: Any
) -> None:
    await sandbox_model("image")
    picture = tmp_path / "init.png"
    picture.write_bytes(PNG_1X1)
    client = official_client(console, await akey(member))

    with picture.open("rb") as handle:
        output = await client.async_run(
            "sandbox/image",
            input={"prompt": "over it", "image": handle, "num_inference_steps": 1},
        )

    assert len(output) == 1
    row = await Prediction.objects.aget(owner=member)
    # The client uploaded it to the gateway's files API and sent its URL; the model got
    # the file itself (upstream cannot reach the console's API).
    assert row.status == "succeeded"
    assert row.input["image"].startswith("data:image/png;base64,")


@processes
@pytest.mark.django_db(transaction=True)
async def test_async_stream_through_the_gateway_gives_exactly_the_text(
    console: ConsoleServer, sandbox_model: MakeModel, member: User
) -> None:
    await sandbox_model("text")
    client = official_client(console, await akey(member))
    streamed = {**TEXT_INPUT, "prompt": "streamed", "max_tokens": 40, "token_delay_ms": 10}

    events = await client.async_stream("sandbox/text", input=streamed)
    chunks = [str(event) async for event in events]

    assert "".join(chunks) == expected_text("streamed", 1, 40)
    assert len(chunks) > 1  # as it was written, not all at the end
    row = await Prediction.objects.aget(owner=member)
    assert row.source == "api" and row.status == "succeeded"
