"""The UI in a real browser: Playwright drives Debian's Chromium against a real console.

One daphne process per module serves the console and the built-in sandbox (inline
executor, SQLite in a temporary VAR_DIR), seeded with `setup_console` like `make run`.
Screenshots go to artifacts/screenshots/ for a designer's eye.

Every wait is on a condition (Playwright's expect / wait_for_function), never a sleep.
"""

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Page,
    Request,
    Route,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from predictions.models import Prediction
from predictions.presenters import LiveView
from predictions.templatetags.console import visible_logs
from tests.conftest import need_service
from tests.console_server import Process, free_port
from tests.sandbox_server import ROOT, TEST_TOKEN, server_env

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
PASSWORD = "pw-browser-123"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Console:
    url: str
    var_dir: str


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@contextlib.contextmanager
def run_console() -> Iterator[Console]:
    """The console as `make run` starts it: runserver (daphne's); static through the URLconf."""
    var_dir = tempfile.mkdtemp(prefix="console-browser-")
    env = server_env(var_dir, TEST_TOKEN, {"PREDICTION_EXECUTOR": "inline"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "setup_console", "--sandbox-url", f"{url}/sandbox")
    create = (
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user('member', password='{PASSWORD}'); "
        f"User.objects.create_user('admin', password='{PASSWORD}', is_staff=True, "
        "is_superuser=True)"
    )
    manage(env, "shell", "-c", create)
    server = Process(
        [sys.executable, "manage.py", "runserver", "--noreload", "--nostatic", f"127.0.0.1:{port}"],
        env,
    )

    def serving_static() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/static/css/console.css", timeout=2).status_code == 200
        return False

    try:
        server.wait_until(serving_static, "console")
        yield Console(url=url, var_dir=var_dir)
    finally:
        server.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    need_service(
        "Chromium", Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt install chromium)"
    )
    with run_console() as running:
        yield running


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def login(browser: Browser, console: Console, username: str = "member", **options: object) -> Page:
    context = browser.new_context(base_url=console.url, **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(console.url + "/")
    return page


@pytest.fixture(scope="module")
def member_session(browser: Browser, console: Console) -> dict[str, Any]:
    """Log in through the form once; later pages reuse the session cookie."""
    page = login(browser, console)
    state = page.context.storage_state()
    page.context.close()
    return state


@pytest.fixture
def page(browser: Browser, console: Console, member_session: dict[str, Any]) -> Iterator[Page]:
    context = browser.new_context(
        base_url=console.url, storage_state=member_session, viewport={"width": 1280, "height": 860}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "response",
        # Pages may answer 400 on purpose (a form with errors); their resources may not.
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )
    yield page
    context.close()
    assert errors == [], "JavaScript errors on the page"


def shot(page: Page, name: str) -> None:
    """The whole page, as a viewport tall enough to hold it: a full-page capture would
    paint the sticky Run bar halfway down the form."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def expected_text(prompt: str, seed: int, tokens: int) -> str:
    from sandbox.demo_models import text_tokens

    return "".join(text_tokens(prompt, seed, tokens))


def stream_length(page: Page) -> int:
    return page.evaluate("document.querySelector('#stream')?.textContent.length ?? -1")


def final_text(page: Page) -> str:
    expect(page.locator("#status .badge")).to_have_text("Succeeded", timeout=30_000)
    expect(page.locator("#rendered")).to_be_visible()
    return json.loads(page.locator("#raw-text").text_content())


def run_text(page: Page, prompt: str, tokens: int, delay_ms: int, seed: int = 7) -> None:
    page.goto("/models/sandbox/text/")
    page.locator("#field-prompt").fill(prompt)
    page.locator("#field-max_tokens").fill(str(tokens))
    page.locator("#field-token_delay_ms").fill(str(delay_ms))
    page.locator("#field-seed").fill(str(seed))
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))


# ---------------------------------------------------------------------------- tests


def test_the_catalogue_lists_the_sandbox_models(page: Page) -> None:
    for ref in ("sandbox/text", "sandbox/image", "sandbox/slow", "sandbox/fail"):
        expect(page.get_by_text(ref, exact=True)).to_be_visible()
    shot(page, "catalogue")

    page.get_by_role("link", name=re.compile("^Sandbox text")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("^Sandbox text"))
    shot(page, "model-form")
    page.locator("#field-prompt").fill("Write a haiku")
    page.get_by_role("tab", name="API").click()
    snippet = page.locator("#api-snippet")
    expect(snippet).to_contain_text("client.async_run(")
    expect(snippet).to_contain_text('"prompt": "Write a haiku"')
    shot(page, "model-api")


def is_snippet(request: Request) -> bool:
    return request.url.endswith("/snippet/")


def test_the_api_snippet_is_redrawn_by_the_server_as_the_form_changes(page: Page) -> None:
    page.goto("/models/sandbox/image/")
    snippet = page.locator("#api-snippet")
    prompt = page.locator("#field-prompt")
    # Every text the snippet shows, in order (to see that a late answer never lands).
    page.evaluate(
        """() => {
          const code = document.getElementById("api-snippet");
          window.snippetTexts = [];
          new MutationObserver(() => snippetTexts.push(code.textContent))
            .observe(code, { childList: true, characterData: true, subtree: true });
        }"""
    )
    # The first paint is the server's: the form's defaults are left out.
    expect(snippet).to_contain_text('"sandbox/image",\n        input={},')

    prompt.fill("a lighthouse")
    page.locator("#field-width").fill("640")
    expect(snippet).to_contain_text('"prompt": "a lighthouse"')
    expect(snippet).to_contain_text('"width": 640')

    page.locator("#field-width").fill("512")  # the model's default again
    page.locator("#field-height").fill("5000")  # over the maximum: not valid yet
    page.locator("#field-output_format").select_option("png")
    expect(snippet).to_contain_text('"output_format": "png"')
    expect(snippet).not_to_contain_text('"width"')
    expect(snippet).not_to_contain_text('"height"')

    # A picked file shows by its name; only the name goes to the server.
    with page.expect_request(is_snippet) as asked:
        page.locator("#field-image").set_input_files(
            {"name": "fox.png", "mimeType": "image/png", "buffer": b"\x89PNG" + b"x" * 4096}
        )
    expect(snippet).to_contain_text('"image": open("fox.png", "rb")')
    body = asked.value.post_data or ""
    assert "file-name=image%3Afox.png" in body
    assert "xxxx" not in body and "eHh4" not in body and len(body) < 1000

    # An answer that arrives after a newer one is dropped; a failed one leaves the snippet.
    held: list[Route] = []
    page.route("**/snippet/", lambda route: held.append(route) if not held else route.continue_())
    with page.expect_request(is_snippet):
        prompt.fill("stale words")
    prompt.fill("fresh words")
    expect(snippet).to_contain_text('"prompt": "fresh words"')
    with page.expect_event("requestfinished", is_snippet):
        held[0].continue_()
    page.unroute("**/snippet/")
    page.route("**/snippet/", lambda route: route.abort())
    with page.expect_event("requestfailed", is_snippet):
        prompt.fill("lost words")
    expect(snippet).to_contain_text('"prompt": "fresh words"')
    page.unroute("**/snippet/")
    page.locator("#field-num_outputs").fill("3")
    expect(snippet).to_contain_text('"num_outputs": 3')
    expect(snippet).to_contain_text('"prompt": "lost words"')
    assert not any("stale words" in text for text in page.evaluate("window.snippetTexts"))


def test_text_streams_token_by_token_and_finishes_as_markdown(page: Page) -> None:
    prompt = "Tell me about lighthouses"
    run_text(page, prompt, tokens=150, delay_ms=25)

    page.wait_for_function("document.querySelector('#stream')?.textContent.length > 20")
    first = stream_length(page)
    page.wait_for_function(f"document.querySelector('#stream')?.textContent.length > {first + 20}")
    expect(page.locator("#status .badge")).to_have_text("Processing")
    shot(page, "live-mid-stream")

    assert final_text(page) == expected_text(prompt, 7, 150)
    expect(page.locator(".step-succeeded")).to_be_visible()
    expect(page.locator('[data-metric="total_time"]')).not_to_have_text("—")
    expect(page.locator("#run-again")).to_be_visible()
    shot(page, "live-done-text")


def test_a_reload_mid_stream_still_ends_with_the_full_text(page: Page) -> None:
    prompt = "A long story about harbors"
    run_text(page, prompt, tokens=200, delay_ms=25)
    page.wait_for_function("document.querySelector('#stream')?.textContent.length > 30")

    page.reload()
    page.wait_for_function("document.querySelector('#stream')?.textContent.length > 60")
    # And a dropped connection: the socket reconnects and resyncs.
    page.evaluate("window.dispatchEvent(new Event('offline'))")

    assert final_text(page) == expected_text(prompt, 7, 200)


def test_images_show_inline_with_downloads(page: Page) -> None:
    page.goto("/models/sandbox/image/")
    page.locator("#field-prompt").fill("a fox in the snow")
    page.locator("#field-num_outputs").fill("2")
    page.locator("#field-width").fill("320")
    page.locator("#field-height").fill("240")
    page.locator("#field-output_format").select_option("png")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))

    images = page.locator('#gallery img[src*="/files/"]')
    expect(images).to_have_count(2, timeout=30_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#gallery img')]"
        ".every(i => i.complete && i.naturalWidth === 320)"
    )
    expect(page.get_by_role("link", name="Download").first).to_have_attribute(
        "href", re.compile(r"download=1")
    )
    expect(page.locator("#status .badge")).to_have_text("Succeeded")
    shot(page, "live-image-result")


def test_slow_shows_a_moving_progress_bar_and_can_be_canceled(page: Page) -> None:
    page.goto("/models/sandbox/slow/")
    page.locator("#field-seconds").fill("30")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))

    expect(page.locator("#progress-row")).to_be_visible()
    page.wait_for_function("document.querySelector('#progress').value > 0")
    before = page.evaluate("document.querySelector('#progress').value")
    page.wait_for_function(f"document.querySelector('#progress').value > {before}")
    expect(page.locator("#logs")).to_contain_text("/30")
    shot(page, "live-progress")

    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#status .badge")).to_have_text(re.compile("Canceling…|Canceled"))
    expect(page.locator("#status .badge")).to_have_text("Canceled", timeout=20_000)
    expect(page.locator("#cancel-form")).to_have_count(0)


def test_a_failing_model_shows_its_error(page: Page) -> None:
    page.goto("/models/sandbox/fail/")
    page.locator("#field-step_delay_ms").fill("50")
    page.get_by_role("button", name="Run").click()

    expect(page.locator("#status .badge")).to_have_text("Failed", timeout=30_000)
    expect(page.get_by_role("alert")).to_contain_text("Sandbox model failed on purpose")
    shot(page, "live-failed")


def test_submitting_without_the_prompt_shows_a_field_error(page: Page) -> None:
    page.goto("/models/sandbox/text/")
    page.locator("#field-max_tokens").fill("99999")
    page.get_by_role("button", name="Run").click()

    expect(page.locator("#field-prompt-error")).to_have_text("This field is required.")
    expect(page.locator("#field-max_tokens-error")).to_contain_text("at most 4096")
    expect(page.locator("#field-prompt")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-summary")).to_be_focused()
    assert re.search(r"/models/sandbox/text/$", page.url)
    shot(page, "model-form-errors")


def test_history_lists_runs_and_updates_a_status_live(
    browser: Browser, console: Console, page: Page
) -> None:
    page.goto("/predictions/")
    expect(page.locator("tr[data-prediction]").first).to_be_visible()
    # The feed socket is open before a run starts elsewhere.
    expect(page.locator("body")).to_have_attribute("data-feed", "open")

    other = page.context.new_page()
    other.goto("/models/sandbox/slow/")
    other.locator("#field-seconds").fill("2")
    other.get_by_role("button", name="Run").click()
    other.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))
    prediction_id = other.url.rstrip("/").rsplit("/", 1)[-1]
    other.close()

    row = page.locator(f'tr[data-prediction="{prediction_id}"]')
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator(".badge")).to_have_text("Succeeded", timeout=20_000)
    assert prediction_id in page.locator("tr[data-prediction]").first.get_attribute(
        "data-prediction"
    )
    shot(page, "history")


def test_run_again_starts_a_new_prediction_over_the_websocket(page: Page) -> None:
    run_text(page, "Quick one", tokens=10, delay_ms=0)
    final_text(page)
    first = page.url

    page.get_by_role("button", name="Run again").click()

    page.wait_for_url(lambda url: url != first and "/predictions/" in url)
    assert final_text(page) == expected_text("Quick one", 7, 10)
    expect(page.locator("#status .badge")).to_have_text("Succeeded")
    # The new run links back to the one it repeats.
    parent_link = page.get_by_text("Re-run of").get_by_role("link")
    expect(parent_link).to_have_attribute("href", urlsplit(first).path)


# ---------------------------------------------------------------------------- mocked sockets
# The page's websockets answered by the test (Playwright's route_web_socket), for what a
# real run does not produce on demand: logs cut at awkward places, remote output URLs, a
# connection that drops.


def add_prediction(console: Console, status: str) -> str:
    """A prediction of the member's that nothing runs (the reconciler waits out a lease)."""
    env = server_env(console.var_dir, TEST_TOKEN, {"PREDICTION_EXECUTOR": "inline"})
    code = (
        "from django.contrib.auth.models import User; "
        "from predictions.models import CatalogModel, Prediction; "
        "m = CatalogModel.objects.get(owner='sandbox', name='text'); "
        "p = Prediction.objects.create(owner=User.objects.get(username='member'), model=m, "
        f"model_ref=m.ref, status='{status}', input={{'prompt': 'mocked'}}); print(p.pk)"
    )
    return manage(env, "shell", "-c", code).split()[-1]  # after the shell's own notes


class MockedPredictionSocket:
    """Answers the live page's socket as its consumer would: a snapshot (seq 1), then the
    events the test sends, each with the fragments the server's own LiveView draws for it."""

    def __init__(self, page: Page, prediction_id: str, logs: str) -> None:
        created = datetime(2025, 1, 1, tzinfo=UTC)
        prediction = Prediction(
            pk=uuid.UUID(prediction_id),
            model_ref="sandbox/text",
            status="processing",
            input={"prompt": "mocked"},
            logs=logs,
            created_at=created,
            started_at=created + timedelta(seconds=1),
            event_seq=1,
        )
        self.view = LiveView(prediction, [])
        self.snapshot = {
            "type": "snapshot",
            "seq": 1,
            "finished": False,
            "prediction": {"status": "processing", "logs": logs},
            "fragments": self.view.render(),
        }
        self.sockets: list[WebSocketRoute] = []
        page.route_web_socket(re.compile(rf"/ws/predictions/{prediction_id}/$"), self.answer)

    def answer(self, ws: WebSocketRoute) -> None:
        self.sockets.append(ws)
        ws.send(json.dumps(self.snapshot))

    def send(self, event: dict[str, Any]) -> None:
        (ws,) = self.sockets
        fragments = self.view.apply(event)
        ws.send(json.dumps({**event, "fragments": fragments} if fragments else event))


def test_live_logs_append_and_read_as_a_terminal_would(console: Console, page: Page) -> None:
    prediction_id = add_prediction(console, "processing")
    socket = MockedPredictionSocket(page, prediction_id, "start\n")
    page.goto(f"/predictions/{prediction_id}/")
    page.wait_for_function("document.querySelector('#logs').textContent === 'start\\n'")

    logs = "start\n"
    # A CRLF cut in two, tqdm redrawing its line, plain lines (appended, not redrawn).
    chunks = ["a\r", "\nb", "\n 10%|#| 1/10\r 20%|##| 2/10", "\nplain line\n", "more\n"]
    for seq, chunk in enumerate(chunks, start=2):
        if chunk == "\nplain line\n":
            page.evaluate("window.firstLogNode = document.querySelector('#logs').firstChild")
        socket.send({"type": "logs", "seq": seq, "text": chunk})
        logs += chunk
        page.wait_for_function(
            "shown => document.querySelector('#logs').textContent === shown",
            arg=visible_logs(logs),
        )
    assert page.evaluate("document.querySelector('#logs').firstChild === window.firstLogNode")
    assert page.evaluate("document.querySelector('#logs').childNodes.length") == 3


def test_live_output_shows_only_our_own_copies(console: Console, page: Page) -> None:
    prediction_id = add_prediction(console, "processing")
    socket = MockedPredictionSocket(page, prediction_id, "")
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if "remote.invalid" in r.url else None)
    page.goto(f"/predictions/{prediction_id}/")
    page.wait_for_function("document.querySelector('#status .badge').dataset.status")

    url = "https://remote.invalid/out-0.mp3"
    socket.send({"type": "output", "seq": 2, "output": [url]})
    pending = page.locator("#gallery figure.pending")
    expect(pending).to_contain_text("saving a copy…")
    expect(page.locator("#gallery :is(img, audio, video)")).to_have_count(0)

    # The server says which types play inline: audio/x-m4a is not one, so a download.
    own = f"/predictions/{prediction_id}/files/0/"
    archived = {
        "position": 0,
        "url": own,
        "content_type": "audio/x-m4a",
        "size": 9,
        "name": "a.m4a",
    }
    socket.send({"type": "files", "seq": 3, "files": [archived]})
    expect(pending).to_have_count(0)
    expect(page.locator("#gallery .file-chip")).to_have_text("a.m4a")
    expect(page.get_by_role("link", name="Download")).to_have_attribute("href", own + "?download=1")
    expect(page.locator("#gallery :is(img, audio, video)")).to_have_count(0)
    assert remote == []


def test_run_again_sends_once_even_if_the_connection_drops(console: Console, page: Page) -> None:
    prediction_id = add_prediction(console, "succeeded")
    submits: list[dict[str, Any]] = []

    def drop_after_submit(ws: WebSocketRoute) -> None:
        def received(message: str | bytes) -> None:
            submits.append(json.loads(message))
            ws.close()  # before answering: did the run start? The page cannot know.

        ws.on_message(received)

    page.route_web_socket(re.compile(r"/ws/predictions/$"), drop_after_submit)
    page.goto(f"/predictions/{prediction_id}/")

    page.get_by_role("button", name="Run again").click()

    expect(page.locator("#action-error")).to_contain_text("connection dropped")
    expect(page.get_by_role("button", name="Run again")).to_be_enabled()
    assert [m["type"] for m in submits] == ["submit"]


# --bg in static/css/console.css, light and under prefers-color-scheme: dark.
LIGHT_BACKGROUND = "rgb(246, 246, 248)"
DARK_BACKGROUND = "rgb(14, 14, 18)"


def background(page: Page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_it_fits_a_phone_in_dark_mode(browser: Browser, console: Console) -> None:
    phone = login(
        browser,
        console,
        viewport={"width": 390, "height": 844},
        color_scheme="dark",
        is_mobile=True,
    )
    try:
        # Dark mode is the page's own: its background follows the colour scheme.
        assert background(phone) == DARK_BACKGROUND
        phone.emulate_media(color_scheme="light")
        assert background(phone) == LIGHT_BACKGROUND
        phone.emulate_media(color_scheme="dark")
        assert background(phone) == DARK_BACKGROUND
        shot(phone, "phone-catalogue")
        phone.goto("/models/sandbox/image/")
        shot(phone, "phone-model-form")
        phone.goto("/predictions/")
        shot(phone, "phone-history")
        phone.locator("tr[data-prediction] .row-link").first.click()
        shot(phone, "phone-live")
        overflow = phone.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert not overflow, "the page scrolls sideways on a phone"
    finally:
        phone.context.close()


def test_a_static_path_that_climbs_out_is_refused_not_an_error(console: Console) -> None:
    for path in ("/static/%2e%2e/manage.py", "/static/%2e%2e/%2e%2e/etc/passwd"):
        response = httpx.get(console.url + path, timeout=10)
        assert response.status_code in (400, 404), (path, response.status_code)
    # Static files still need no login: the login page is styled.
    assert httpx.get(console.url + "/static/css/console.css", timeout=10).status_code == 200
