"""The UI in a real browser: Playwright drives Debian's Chromium against a real console.

One daphne process per module serves the console and the built-in sandbox (inline
executor, SQLite in a temporary VAR_DIR), seeded with `setup_console` like `make run`.
Screenshots go to artifacts/screenshots/ for a designer's eye.

Every wait is on a condition (Playwright's expect / wait_for_function), never a sleep.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import need_service
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def run_console() -> Iterator[Console]:
    """The console as `make run` starts it: runserver (daphne's), which also serves static."""
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
    log = Path(var_dir) / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"console exited early:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/static/css/console.css", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"console did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)
        yield Console(url=url, var_dir=var_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if os.environ.get("KEEP_CONSOLE_LOG"):
            print(log.read_text()[-8000:])
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    need_service("Chromium", Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt install chromium)")
    with run_console() as running:
        yield running


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator["object"]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def login(browser: object, console: Console, username: str = "member", **options: object) -> object:
    context = browser.new_context(base_url=console.url, **options)  # type: ignore[attr-defined]
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(console.url + "/")
    return page


@pytest.fixture
def page(browser: object, console: Console) -> Iterator[object]:
    page = login(browser, console, viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))  # type: ignore[attr-defined]
    page.on(  # type: ignore[attr-defined]
        "response",
        # Pages may answer 400 on purpose (a form with errors); their resources may not.
        lambda r: errors.append(f"{r.status} {r.url}")
        if r.status >= 400 and r.request.resource_type != "document"
        else None,
    )
    yield page
    page.context.close()  # type: ignore[attr-defined]
    assert errors == [], "JavaScript errors on the page"


def shot(page: object, name: str) -> None:
    """The whole page, as a viewport tall enough to hold it: a full-page capture would
    paint the sticky Run bar halfway down the form."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size  # type: ignore[attr-defined]
    height = page.evaluate("document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})  # type: ignore[attr-defined]
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))  # type: ignore[attr-defined]
    page.set_viewport_size(size)  # type: ignore[attr-defined]


def expected_text(prompt: str, seed: int, tokens: int) -> str:
    from sandbox.demo_models import text_tokens

    return "".join(text_tokens(prompt, seed, tokens))


def stream_length(page: object) -> int:
    return page.evaluate("document.querySelector('#stream')?.textContent.length ?? -1")  # type: ignore[attr-defined]


def final_text(page: object) -> str:
    from playwright.sync_api import expect

    expect(page.locator("#status .badge")).to_have_text("Succeeded", timeout=30_000)  # type: ignore[attr-defined]
    expect(page.locator("#rendered")).to_be_visible()  # type: ignore[attr-defined]
    return json.loads(page.locator("#raw-text").text_content())  # type: ignore[attr-defined]


def run_text(page: object, prompt: str, tokens: int, delay_ms: int, seed: int = 7) -> None:
    page.goto("/models/sandbox/text/")  # type: ignore[attr-defined]
    page.locator("#field-prompt").fill(prompt)  # type: ignore[attr-defined]
    page.locator("#field-max_tokens").fill(str(tokens))  # type: ignore[attr-defined]
    page.locator("#field-token_delay_ms").fill(str(delay_ms))  # type: ignore[attr-defined]
    page.locator("#field-seed").fill(str(seed))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- tests


def test_the_catalogue_lists_the_sandbox_models(page: object) -> None:
    from playwright.sync_api import expect

    for ref in ("sandbox/text", "sandbox/image", "sandbox/slow", "sandbox/fail"):
        expect(page.get_by_text(ref, exact=True)).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "catalogue")

    page.get_by_role("link", name=re.compile("^Sandbox text")).click()  # type: ignore[attr-defined]
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("^Sandbox text"))  # type: ignore[attr-defined]
    shot(page, "model-form")
    page.locator("#field-prompt").fill("Write a haiku")  # type: ignore[attr-defined]
    page.get_by_role("tab", name="API").click()  # type: ignore[attr-defined]
    snippet = page.locator("#api-snippet")  # type: ignore[attr-defined]
    expect(snippet).to_contain_text("replicate.async_run(")
    expect(snippet).to_contain_text('"prompt": "Write a haiku"')
    shot(page, "model-api")


def test_text_streams_token_by_token_and_finishes_as_markdown(page: object) -> None:
    from playwright.sync_api import expect

    prompt = "Tell me about lighthouses"
    run_text(page, prompt, tokens=150, delay_ms=25)

    page.wait_for_function("document.querySelector('#stream')?.textContent.length > 20")  # type: ignore[attr-defined]
    first = stream_length(page)
    page.wait_for_function(  # type: ignore[attr-defined]
        f"document.querySelector('#stream')?.textContent.length > {first + 20}"
    )
    expect(page.locator("#status .badge")).to_have_text("Processing")  # type: ignore[attr-defined]
    shot(page, "live-mid-stream")

    assert final_text(page) == expected_text(prompt, 7, 150)
    expect(page.locator(".step-succeeded")).to_be_visible()  # type: ignore[attr-defined]
    expect(page.locator('[data-metric="total_time"]')).not_to_have_text("—")  # type: ignore[attr-defined]
    expect(page.locator("#run-again")).to_be_visible()  # type: ignore[attr-defined]
    shot(page, "live-done-text")


def test_a_reload_mid_stream_still_ends_with_the_full_text(page: object) -> None:
    prompt = "A long story about harbors"
    run_text(page, prompt, tokens=200, delay_ms=25)
    page.wait_for_function("document.querySelector('#stream')?.textContent.length > 30")  # type: ignore[attr-defined]

    page.reload()  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#stream')?.textContent.length > 60")  # type: ignore[attr-defined]
    # And a dropped connection: the socket reconnects and resyncs.
    page.evaluate("window.dispatchEvent(new Event('offline'))")  # type: ignore[attr-defined]

    assert final_text(page) == expected_text(prompt, 7, 200)


def test_images_show_inline_with_downloads(page: object) -> None:
    from playwright.sync_api import expect

    page.goto("/models/sandbox/image/")  # type: ignore[attr-defined]
    page.locator("#field-prompt").fill("a fox in the snow")  # type: ignore[attr-defined]
    page.locator("#field-num_outputs").fill("2")  # type: ignore[attr-defined]
    page.locator("#field-width").fill("320")  # type: ignore[attr-defined]
    page.locator("#field-height").fill("240")  # type: ignore[attr-defined]
    page.locator("#field-output_format").select_option("png")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))  # type: ignore[attr-defined]

    images = page.locator('#gallery img[src*="/files/"]')  # type: ignore[attr-defined]
    expect(images).to_have_count(2, timeout=30_000)
    page.wait_for_function(  # type: ignore[attr-defined]
        "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth === 320)"
    )
    expect(page.get_by_role("link", name="Download").first).to_have_attribute("href", re.compile(r"download=1"))  # type: ignore[attr-defined]
    expect(page.locator("#status .badge")).to_have_text("Succeeded")  # type: ignore[attr-defined]
    shot(page, "live-image-result")


def test_slow_shows_a_moving_progress_bar_and_can_be_canceled(page: object) -> None:
    from playwright.sync_api import expect

    page.goto("/models/sandbox/slow/")  # type: ignore[attr-defined]
    page.locator("#field-seconds").fill("30")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))  # type: ignore[attr-defined]

    expect(page.locator("#progress-row")).to_be_visible()  # type: ignore[attr-defined]
    page.wait_for_function("document.querySelector('#progress').value > 0")  # type: ignore[attr-defined]
    before = page.evaluate("document.querySelector('#progress').value")  # type: ignore[attr-defined]
    page.wait_for_function(f"document.querySelector('#progress').value > {before}")  # type: ignore[attr-defined]
    expect(page.locator("#logs")).to_contain_text("/30")  # type: ignore[attr-defined]
    shot(page, "live-progress")

    page.get_by_role("button", name="Cancel").click()  # type: ignore[attr-defined]
    expect(page.locator("#status .badge")).to_have_text(re.compile("Canceling…|Canceled"))  # type: ignore[attr-defined]
    expect(page.locator("#status .badge")).to_have_text("Canceled", timeout=20_000)  # type: ignore[attr-defined]
    expect(page.locator("#cancel-form")).to_have_count(0)  # type: ignore[attr-defined]


def test_a_failing_model_shows_its_error(page: object) -> None:
    from playwright.sync_api import expect

    page.goto("/models/sandbox/fail/")  # type: ignore[attr-defined]
    page.locator("#field-step_delay_ms").fill("50")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]

    expect(page.locator("#status .badge")).to_have_text("Failed", timeout=30_000)  # type: ignore[attr-defined]
    expect(page.get_by_role("alert")).to_contain_text("Sandbox model failed on purpose")  # type: ignore[attr-defined]
    shot(page, "live-failed")


def test_submitting_without_the_prompt_shows_a_field_error(page: object) -> None:
    from playwright.sync_api import expect

    page.goto("/models/sandbox/text/")  # type: ignore[attr-defined]
    page.locator("#field-max_tokens").fill("99999")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]

    expect(page.locator("#field-prompt-error")).to_have_text("This field is required.")  # type: ignore[attr-defined]
    expect(page.locator("#field-max_tokens-error")).to_contain_text("at most 4096")  # type: ignore[attr-defined]
    expect(page.locator("#field-prompt")).to_have_attribute("aria-invalid", "true")  # type: ignore[attr-defined]
    expect(page.locator("#error-summary")).to_be_focused()  # type: ignore[attr-defined]
    assert re.search(r"/models/sandbox/text/$", page.url)  # type: ignore[attr-defined]
    shot(page, "model-form-errors")


def test_history_lists_runs_and_updates_a_status_live(browser: object, console: Console, page: object) -> None:
    from playwright.sync_api import expect

    page.goto("/predictions/")  # type: ignore[attr-defined]
    expect(page.locator("tr[data-prediction]").first).to_be_visible()  # type: ignore[attr-defined]
    # The feed socket is open before a run starts elsewhere.
    expect(page.locator("body")).to_have_attribute("data-feed", "open")  # type: ignore[attr-defined]

    other = page.context.new_page()  # type: ignore[attr-defined]
    other.goto("/models/sandbox/slow/")
    other.locator("#field-seconds").fill("2")
    other.get_by_role("button", name="Run").click()
    other.wait_for_url(re.compile(r"/predictions/[0-9a-f-]{36}/$"))
    prediction_id = other.url.rstrip("/").rsplit("/", 1)[-1]
    other.close()

    row = page.locator(f'tr[data-prediction="{prediction_id}"]')  # type: ignore[attr-defined]
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator(".badge")).to_have_text("Succeeded", timeout=20_000)
    assert prediction_id in page.locator("tr[data-prediction]").first.get_attribute("data-prediction")  # type: ignore[attr-defined]
    shot(page, "history")


def test_run_again_starts_a_new_prediction_over_the_websocket(page: object) -> None:
    from playwright.sync_api import expect

    run_text(page, "Quick one", tokens=10, delay_ms=0)
    final_text(page)
    first = page.url  # type: ignore[attr-defined]

    page.get_by_role("button", name="Run again").click()  # type: ignore[attr-defined]

    page.wait_for_url(lambda url: url != first and "/predictions/" in url)  # type: ignore[attr-defined]
    assert final_text(page) == expected_text("Quick one", 7, 10)
    expect(page.locator("#status .badge")).to_have_text("Succeeded")  # type: ignore[attr-defined]


def test_it_fits_a_phone_in_dark_mode(browser: object, console: Console) -> None:
    phone = login(
        browser, console, viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    try:
        shot(phone, "phone-catalogue")
        phone.goto("/models/sandbox/image/")  # type: ignore[attr-defined]
        shot(phone, "phone-model-form")
        phone.goto("/predictions/")  # type: ignore[attr-defined]
        shot(phone, "phone-history")
        phone.locator("tr[data-prediction] .row-link").first.click()  # type: ignore[attr-defined]
        shot(phone, "phone-live")
        overflow = phone.evaluate("document.documentElement.scrollWidth > window.innerWidth")  # type: ignore[attr-defined]
        assert not overflow, "the page scrolls sideways on a phone"
    finally:
        phone.context.close()  # type: ignore[attr-defined]
