"""predictions.upstream against the sandbox over real HTTP, with the real `replicate` client.

What the sandbox cannot produce (402, a host that is down, a silent server, a foreign file
host) comes from a tiny real HTTP server in this module.
"""

import asyncio
import base64
import gc
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet

from predictions import upstream
from predictions.models import ApiToken
from predictions.upstream import Credentials, UpstreamError
from sandbox.demo_models import TEXT

TEXT_INPUT = {"prompt": "Once upon a time", "max_tokens": 8, "token_delay_ms": 0}


@pytest.fixture
def creds(sandbox_url: str, sandbox_token: str) -> Credentials:
    return Credentials(token=sandbox_token, base_url=sandbox_url)


def with_faults(creds: Credentials, faults: str) -> Credentials:
    """The same sandbox with faults riding on the token; a fresh scope resets its counters."""
    return Credentials(f"{creds.token}:{faults},scope={uuid.uuid4().hex}", creds.base_url)


async def finished(
    creds: Credentials, upstream_id: str, within: float = 10.0
) -> upstream.UpstreamPrediction:
    """Poll until the prediction is terminal (how the runner does it without a stream)."""
    deadline = time.monotonic() + within
    while True:
        prediction = await upstream.get_prediction(creds, upstream_id)
        if prediction.status in ("succeeded", "failed", "canceled"):
            return prediction
        assert time.monotonic() < deadline, f"still {prediction.status} after {within}s"
        await asyncio.sleep(0.02)


class TinyServer:
    """A real HTTP server with canned answers; paths in `silent` never answer."""

    def __init__(self) -> None:
        self.replies: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.silent: set[str] = set()
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        tiny = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                tiny.answer(self)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                tiny.answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reply(self, path: str, status: int, body: object, headers: dict | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.replies[path] = (status, {"Content-Type": "application/json", **(headers or {})}, raw)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        self.seen.append((path, dict(handler.headers)))
        if path in self.silent:
            self.release.wait(10)  # until the test ends
            return
        status, headers, body = self.replies.get(path, (404, {}, b"{}"))
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny() -> Iterator[TinyServer]:
    server = TinyServer()
    yield server
    server.close()


# Credentials --------------------------------------------------------------------------


def test_a_prediction_is_read_into_the_console_s_words() -> None:
    prediction = upstream.UpstreamPrediction.from_json(
        {
            "id": "abc",
            "status": "aborted",
            "version": "hidden",
            "output": ["a\x00b"],
            "logs": ["not", "text"],
            "metrics": "not a dict",
            "urls": {"stream": "https://stream.example/abc", "get": "x"},
            "started_at": "2025-01-02T03:04:05.5Z",
            "deadline": "2025-01-02T03:09:05Z",
            "extra": "ignored",
        }
    )

    assert (prediction.console_status, prediction.is_terminal) == ("canceled", True)
    assert prediction.never_started
    assert prediction.version_id == ""
    assert prediction.output == ["a\ufffdb"]  # scrubbed: storable
    assert (prediction.logs, prediction.metrics) == (None, {})
    assert prediction.stream_url == "https://stream.example/abc"
    assert prediction.started_at is not None and prediction.started_at.microsecond == 500_000
    assert prediction.deadline is not None and prediction.completed_at is None


@pytest.mark.parametrize(
    ("status", "console", "terminal"),
    [
        ("starting", "starting", False),
        ("processing", "processing", False),
        ("succeeded", "succeeded", True),
        ("failed", "failed", True),
        ("canceled", "canceled", True),
        ("aborted", "canceled", True),
        ("paused", None, False),
        (None, None, False),
    ],
)
def test_replicate_s_statuses_map_to_the_console_s(
    status: str | None, console: str | None, terminal: bool
) -> None:
    prediction = upstream.UpstreamPrediction.from_json({"id": "abc", "status": status})

    assert (prediction.console_status, prediction.is_terminal) == (console, terminal)


def test_a_reported_version_id_is_kept() -> None:
    version = "a" * 64
    prediction = upstream.UpstreamPrediction.from_json({"id": "abc", "version": version})

    assert prediction.version_id == version


def test_credentials_come_from_the_decrypted_token(db: None) -> None:
    token = ApiToken(label="main", base_url="http://127.0.0.1:9/sandbox/")
    token.set_token("r8_secret_value_1234")
    token.save()

    creds = upstream.credentials_for(token)

    assert creds == Credentials("r8_secret_value_1234", "http://127.0.0.1:9/sandbox")
    assert "r8_secret" not in repr(creds)


def test_missing_disabled_or_unreadable_tokens_are_config_errors(
    db: None, settings: object
) -> None:
    token = ApiToken(label="old", enabled=False)
    token.set_token("r8_secret_value_1234")
    token.save()

    with pytest.raises(UpstreamError, match="No Replicate API token") as missing:
        upstream.credentials_for(None)
    with pytest.raises(UpstreamError, match="“old” is disabled") as disabled:
        upstream.credentials_for(token)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(UpstreamError, match="“old” cannot be read") as unreadable:
        upstream.credentials_for(token, include_disabled=True)

    assert {missing.value.kind, disabled.value.kind, unreadable.value.kind} == {"config"}
    assert token.ciphertext not in str(unreadable.value)


# Predictions --------------------------------------------------------------------------


async def test_streamed_tokens_add_up_to_the_final_output(creds: Credentials) -> None:
    created = await upstream.create_prediction(
        creds, model_ref="sandbox/text", version="", input=TEXT_INPUT, stream=True
    )

    events = [event async for event in upstream.stream_events(creds, created)]
    final = await upstream.get_prediction(creds, created.id)

    assert created.status == "starting"
    assert created.model == "sandbox/text"
    assert events[-1].event == "done"
    text = "".join(event.data for event in events if event.event == "output")
    assert final.status == "succeeded"
    assert text == "".join(final.output)
    assert len(final.output) == 8
    json.dumps([final.input, final.output, final.metrics])  # plain JSON all the way down


async def test_a_pinned_version_runs_that_version(creds: Credentials) -> None:
    old = TEXT.versions[1].id

    created = await upstream.create_prediction(
        creds, model_ref="sandbox/text", version=old, input={"prompt": "hi", "max_tokens": 2}
    )

    assert created.version == old
    assert (await finished(creds, created.id)).status == "succeeded"


async def test_cancel_stops_a_running_prediction(creds: Credentials) -> None:
    created = await upstream.create_prediction(
        creds, model_ref="sandbox/slow", version="", input={"seconds": 60}
    )

    canceled = await upstream.cancel_prediction(creds, created.id)

    assert canceled.status == "canceled"
    assert (await upstream.get_prediction(creds, created.id)).status == "canceled"


# "Event loop is closed" is also what a client used from a dead loop raises: a model's
# error with that text must still come out as an error event, not a RuntimeError.
@pytest.mark.parametrize("message", ["out of cheese", "Event loop is closed"])
async def test_a_failing_model_streams_one_error_event_with_its_message(
    creds: Credentials, message: str
) -> None:
    created = await upstream.create_prediction(
        creds,
        model_ref="sandbox/fail",
        version="",
        input={"message": message, "steps": 2, "step_delay_ms": 0},
    )

    events = [event async for event in upstream.stream_events(creds, created)]

    assert [e.data for e in events if e.event == "output"] == ["partial 1 ", "partial 2 "]
    assert events[-1] == upstream.StreamEvent("error", message, "")
    assert (await finished(creds, created.id)).error == message


async def test_a_stream_cut_before_done_is_a_network_error(creds: Credentials) -> None:
    cut = with_faults(creds, "cut_after=2")
    created = await upstream.create_prediction(
        cut, model_ref="sandbox/text", version="", input=TEXT_INPUT
    )
    received = []

    with pytest.raises(UpstreamError) as error:
        async for event in upstream.stream_events(cut, created):
            received.append(event)

    assert error.value.kind == "network"
    assert error.value.retryable
    assert len(received) == 2
    # Polling, the fallback, still gets the whole output.
    assert len((await finished(cut, created.id)).output) == 8


async def test_a_prediction_without_a_stream_url_cannot_be_streamed(creds: Credentials) -> None:
    created = await upstream.create_prediction(
        creds, model_ref="sandbox/image", version="", input={"prompt": "a cat"}
    )

    with pytest.raises(UpstreamError) as error:
        async for _ in upstream.stream_events(creds, created):
            pass

    assert created.stream_url is None
    assert error.value.kind == "bad_response"


# Error mapping ------------------------------------------------------------------------


async def test_a_rejected_token_is_an_auth_error(sandbox_url: str) -> None:
    with pytest.raises(UpstreamError) as error:
        await upstream.get_account(Credentials("r8_not_a_real_token", sandbox_url))

    assert error.value.kind == "auth"
    assert error.value.status == 401
    assert str(error.value) == "Replicate rejected the API token (401). Check it in the admin."
    assert not error.value.retryable


async def test_an_unknown_model_is_not_found_by_name(creds: Credentials) -> None:
    with pytest.raises(UpstreamError) as on_create:
        await upstream.create_prediction(
            creds, model_ref="sandbox/nope", version="", input={"prompt": "x"}
        )
    with pytest.raises(UpstreamError) as on_schema:
        await upstream.get_model_schema(creds, "sandbox", "nope")

    for error in (on_create.value, on_schema.value):
        assert error.kind == "not_found"
        assert str(error) == "Model sandbox/nope does not exist or you cannot access it."


async def test_an_unknown_version_is_not_found(creds: Credentials) -> None:
    with pytest.raises(UpstreamError) as on_create:
        await upstream.create_prediction(
            creds, model_ref="sandbox/text", version="0" * 64, input={"prompt": "x"}
        )
    with pytest.raises(UpstreamError) as on_schema:
        await upstream.get_model_schema(creds, "sandbox", "text", "0" * 64)

    assert on_create.value.kind == on_schema.value.kind == "not_found"
    assert "has no version 000000000000" in str(on_create.value)


async def test_invalid_input_names_each_field(creds: Credentials) -> None:
    with pytest.raises(UpstreamError) as error:
        await upstream.create_prediction(
            creds, model_ref="sandbox/text", version="", input={"max_tokens": 0}
        )

    assert error.value.kind == "invalid_input"
    assert error.value.status == 422
    assert error.value.invalid_fields == {
        "prompt": "prompt is required",
        "max_tokens": "Must be greater than or equal to 1",
    }
    assert str(error.value).startswith("Invalid input: prompt: prompt is required; max_tokens: ")


async def test_invalid_fields_are_recovered_from_the_detail_text(tiny: TinyServer) -> None:
    # What api.replicate.com sends when a problem carries no invalid_fields list.
    tiny.reply(
        "/v1/models/acme/draw/predictions",
        422,
        {
            "title": "Input validation failed",
            "status": 422,
            "detail": '- input: prompt is required\n- input.style: style must be one of "a"\n',
        },
    )

    with pytest.raises(UpstreamError) as error:
        await upstream.create_prediction(
            Credentials("r8_x", tiny.url), model_ref="acme/draw", version="", input={}
        )

    assert error.value.invalid_fields == {
        "prompt": "prompt is required",
        "style": 'style must be one of "a"',
    }


async def test_a_throttled_create_is_rate_limited_with_retry_after(creds: Credentials) -> None:
    throttled = with_faults(creds, "create_429=1")

    with pytest.raises(UpstreamError) as error:
        await upstream.create_prediction(
            throttled, model_ref="sandbox/text", version="", input=TEXT_INPUT
        )

    assert error.value.kind == "rate_limited"
    assert error.value.retry_after == 1
    assert error.value.retryable
    assert str(error.value) == "Rate limited by Replicate; try again in 1 s."
    # Only the first create was throttled.
    await upstream.create_prediction(
        throttled, model_ref="sandbox/text", version="", input=TEXT_INPUT
    )


async def test_retry_after_is_read_from_the_body_when_no_header_says(tiny: TinyServer) -> None:
    tiny.reply(
        "/v1/predictions",
        429,
        {"detail": "Request was throttled. Your rate limit resets in ~10s.", "status": 429},
    )

    with pytest.raises(UpstreamError) as error:
        await upstream.create_prediction(
            Credentials("r8_x", tiny.url), model_ref="a/b", version="f" * 64, input={}
        )

    assert error.value.retry_after == 10
    assert str(error.value) == "Rate limited by Replicate; try again in 10 s."


async def test_a_server_error_while_reading_is_retryable(creds: Credentials) -> None:
    flaky = with_faults(creds, "read_5xx=1")
    created = await upstream.create_prediction(
        flaky, model_ref="sandbox/text", version="", input=TEXT_INPUT
    )

    with pytest.raises(UpstreamError) as error:
        await upstream.get_prediction(flaky, created.id)

    assert (error.value.kind, error.value.status, error.value.retryable) == ("server", 500, True)
    assert (await upstream.get_prediction(flaky, created.id)).id == created.id


async def test_payment_required_is_a_billing_error(tiny: TinyServer) -> None:
    tiny.reply(
        "/v1/models/a/b/predictions",
        402,
        {"title": "Insufficient credit", "detail": "You have insufficient credit.", "status": 402},
    )

    with pytest.raises(UpstreamError) as error:
        await upstream.create_prediction(
            Credentials("r8_x", tiny.url), model_ref="a/b", version="", input={}
        )

    assert error.value.kind == "billing"
    assert str(error.value) == (
        "Replicate needs billing set up for this account (402 Payment Required)."
    )


async def test_an_unreachable_host_is_a_network_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"

    with pytest.raises(UpstreamError) as error:
        await upstream.get_account(Credentials("r8_x", closed))

    assert error.value.kind == "network"
    assert error.value.retryable
    assert str(error.value).startswith(f"Could not reach Replicate at {closed}: ")


async def test_a_silent_server_is_a_timeout(tiny: TinyServer) -> None:
    tiny.silent.add("/v1/account")

    with pytest.raises(UpstreamError) as error:
        await upstream.get_account(Credentials("r8_x", tiny.url, timeout=0.2))

    assert error.value.kind == "timeout"
    assert str(error.value) == "Replicate did not answer within 0.2 s."


# Clients and event loops --------------------------------------------------------------


def test_each_event_loop_gets_a_working_client(creds: Credentials) -> None:
    # A client shared across loops fails every second call with "Event loop is closed".
    first = asyncio.run(upstream.get_account(creds))
    second = asyncio.run(upstream.get_account(creds))
    third = upstream.call_sync(upstream.get_account, creds)
    fourth = upstream.call_sync(upstream.get_account, creds)

    assert first["username"] == second["username"] == third["username"] == fourth["username"]


def test_clients_of_finished_loops_are_let_go(creds: Credentials) -> None:
    loops: list[weakref.ref] = []

    async def account() -> dict:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await upstream.get_account(creds)

    asyncio.run(account())
    asyncio.run(account())
    gc.collect()

    # The second loop's first call dropped the first loop's client (and with it the loop).
    assert loops[0]() is None


# Models, account, webhook secret ------------------------------------------------------


async def test_model_schema_of_the_latest_version_has_enums_inline(creds: Credentials) -> None:
    schema = await upstream.get_model_schema(creds, "sandbox", "image")

    output_format = schema.input_schema["properties"]["output_format"]
    assert schema.input_schema["required"] == ["prompt"]
    assert output_format["enum"] == ["webp", "jpg", "png"]
    assert output_format["default"] == "webp"
    assert "allOf" not in output_format
    assert schema.output_schema["items"] == {"type": "string", "format": "uri"}
    assert schema.description.startswith("Draws the prompt")


async def test_model_schema_of_a_pinned_version(creds: Credentials) -> None:
    latest = await upstream.get_model_schema(creds, "sandbox", "text")
    pinned = await upstream.get_model_schema(creds, "sandbox", "text", TEXT.versions[1].id)

    assert latest.version_id == TEXT.versions[0].id
    assert pinned.version_id == TEXT.versions[1].id
    assert "token_delay_ms" in latest.input_schema["properties"]
    assert "token_delay_ms" not in pinned.input_schema["properties"]
    assert pinned.output_schema["x-cog-array-type"] == "iterator"


async def test_the_account_and_webhook_secret(creds: Credentials) -> None:
    account = await upstream.get_account(creds)
    secret = await upstream.webhook_signing_secret(creds)

    assert account["username"] == "sandbox"
    assert secret.startswith("whsec_")


# Webhooks -----------------------------------------------------------------------------

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = '{"id": "abc", "status": "succeeded"}'


def sign(body: str, secret: str = SECRET, webhook_id: str = "msg_1", at: int | None = None) -> dict:
    timestamp = str(int(time.time()) if at is None else at)
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def test_the_documented_test_vector_validates() -> None:
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }

    assert upstream.validate_webhook(headers, '{"test": 2432232314}', SECRET, tolerance=10**10)


def test_a_correctly_signed_fresh_webhook_is_valid() -> None:
    assert upstream.validate_webhook(sign(BODY), BODY, SECRET)


def test_a_good_signature_after_a_malformed_one_still_counts() -> None:
    headers = sign(BODY)
    headers["webhook-signature"] = "v1,not-base64!! " + headers["webhook-signature"]

    assert upstream.validate_webhook(headers, BODY, SECRET)


@pytest.mark.parametrize(
    ("headers", "body", "secret"),
    [
        pytest.param(sign(BODY), BODY + " ", SECRET, id="tampered body"),
        pytest.param(sign(BODY), BODY, "whsec_" + base64.b64encode(b"x" * 24).decode(), id="key"),
        pytest.param(sign(BODY, at=int(time.time()) - 3600), BODY, SECRET, id="stale"),
        pytest.param(sign(BODY), BODY.encode(), SECRET, id="bytes body"),
        pytest.param({**sign(BODY), "webhook-signature": "v1,%%%"}, BODY, SECRET, id="garbage"),
        pytest.param({**sign(BODY), "webhook-signature": "v1"}, BODY, SECRET, id="no comma"),
        pytest.param({**sign(BODY), "webhook-timestamp": "soon"}, BODY, SECRET, id="timestamp"),
        pytest.param({}, BODY, SECRET, id="no headers"),
        pytest.param(sign(BODY), "", SECRET, id="empty body"),
        pytest.param(sign(BODY), BODY, "not_a_whsec_key", id="malformed secret"),
        pytest.param(sign(BODY), BODY, "", id="no secret"),
    ],
)
def test_anything_else_is_invalid_and_never_raises(headers: dict, body: str, secret: str) -> None:
    assert upstream.validate_webhook(headers, body, secret) is False


# Files --------------------------------------------------------------------------------


async def test_output_files_download_within_the_size_limit(creds: Credentials) -> None:
    created = await upstream.create_prediction(
        creds,
        model_ref="sandbox/image",
        version="",
        input={"prompt": "a cat", "output_format": "png", "num_inference_steps": 1},
    )
    url = (await finished(creds, created.id)).output[0]

    content, content_type = await upstream.download_file(creds, url, max_bytes=10_000_000)
    with pytest.raises(UpstreamError, match="Output file larger than 1 kB") as error:
        await upstream.download_file(creds, url, max_bytes=1_000)

    assert content.startswith(b"\x89PNG")
    assert content_type == "image/png"
    assert error.value.kind == "bad_response"


async def test_data_uris_decode_locally_within_the_size_limit(creds: Credentials) -> None:
    uri = "data:text/plain;base64," + base64.b64encode(b"hello").decode()

    assert await upstream.download_file(creds, uri, max_bytes=5) == (b"hello", "text/plain")
    with pytest.raises(UpstreamError, match="larger than 4 bytes"):
        await upstream.download_file(creds, uri, max_bytes=4)


async def test_the_token_goes_only_to_the_api_file_urls(tiny: TinyServer) -> None:
    api = Credentials("r8_own_host", f"{tiny.url}/api")
    tiny.reply("/api/v1/files/abc/download", 200, b"uploaded", {"Content-Type": "text/plain"})
    tiny.reply("/api/delivery/p1/out.txt", 200, b"output", {"Content-Type": "text/plain"})

    uploaded = await upstream.download_file(
        api, f"{tiny.url}/api/v1/files/abc/download", max_bytes=100
    )
    output = await upstream.download_file(api, f"{tiny.url}/api/delivery/p1/out.txt", max_bytes=100)

    assert (uploaded, output) == ((b"uploaded", "text/plain"), (b"output", "text/plain"))
    (_, file_headers), (_, delivery_headers) = tiny.seen
    assert file_headers["Authorization"] == "Bearer r8_own_host"
    assert "Authorization" not in delivery_headers


@pytest.mark.parametrize(
    "url",
    [
        "{api}/v1/predictions",  # the API itself, not a file
        "{api}/v1/files/..%2f..%2fv1%2fpredictions",
        "{api}/out.txt",
        "{tiny}/v1/files/abc",  # the API's host, outside its base URL
        "{other}/api/v1/files/abc",  # another host, same path
        "http://replicate.delivery/abc/out.png",  # not https
        "https://replicate.delivery.example.com/out.png",
        "https://evilreplicate.delivery/out.png",
        "file:///etc/passwd",
        "ftp://replicate.delivery/out.png",
    ],
)
async def test_output_urls_elsewhere_are_refused_without_a_request(
    tiny: TinyServer, url: str
) -> None:
    api = Credentials("r8_own_host", f"{tiny.url}/api")
    other = tiny.url.replace("127.0.0.1", "localhost")
    tiny.reply("/api/v1/predictions", 200, {"results": []})

    with pytest.raises(UpstreamError, match="Not fetching output file") as error:
        await upstream.download_file(
            api, url.format(api=api.base_url, tiny=tiny.url, other=other), max_bytes=100
        )

    assert error.value.kind == "bad_response"
    assert tiny.seen == []


async def test_the_sandbox_api_is_not_an_output_file(creds: Credentials) -> None:
    with pytest.raises(UpstreamError, match="Not fetching output file"):
        await upstream.download_file(creds, f"{creds.base_url}/v1/predictions", max_bytes=100)


def test_replicate_delivery_and_its_subdomains_are_output_hosts(creds: Credentials) -> None:
    for url in ("https://replicate.delivery/a/out.png", "https://pbxt.replicate.delivery/b.png"):
        target, with_token = upstream._output_url(creds, url)

        assert (str(target), with_token) == (url, False)


async def test_each_redirect_is_checked_again(tiny: TinyServer) -> None:
    api = Credentials("r8_own_host", f"{tiny.url}/api")
    other = tiny.url.replace("127.0.0.1", "localhost")
    tiny.reply("/api/delivery/p1/away.png", 302, b"", {"Location": f"{other}/internal"})
    tiny.reply("/api/delivery/p1/moved.png", 302, b"", {"Location": "/api/delivery/p1/here.png"})
    tiny.reply("/api/delivery/p1/here.png", 200, b"png", {"Content-Type": "image/png"})

    with pytest.raises(UpstreamError, match="Not fetching output file"):
        await upstream.download_file(api, f"{tiny.url}/api/delivery/p1/away.png", max_bytes=100)
    moved = await upstream.download_file(
        api, f"{tiny.url}/api/delivery/p1/moved.png", max_bytes=100
    )

    assert moved == (b"png", "image/png")
    assert [path for path, _ in tiny.seen] == [
        "/api/delivery/p1/away.png",
        "/api/delivery/p1/moved.png",
        "/api/delivery/p1/here.png",
    ]
    assert not any("Authorization" in headers for _, headers in tiny.seen)


async def test_an_uploaded_file_can_be_a_prediction_input(creds: Credentials) -> None:
    png = await upstream.download_file(
        creds,
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
        "/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==",
        max_bytes=1_000,
    )

    url = await upstream.upload_file(creds, png[0], "dot.png", "image/png")
    created = await upstream.create_prediction(
        creds,
        model_ref="sandbox/image",
        version="",
        input={"prompt": "on a dot", "image": url, "num_inference_steps": 1},
    )

    assert url.startswith(creds.base_url)
    assert (await finished(creds, created.id)).status == "succeeded"
