"""Replicate's JavaScript client (npm `replicate`, pinned in tests/js/package-lock.json)
works unchanged against the sandbox, as the Python client does.

The scenarios live in tests/js/scenarios.mjs; each test runs one with Node against the
shared sandbox process and checks what it saw. `npm ci` installs the pinned client once.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox.demo_models import MODELS, text_tokens
from tests.conftest import need_service

JS_DIR = Path(__file__).parent / "js"
pytestmark = pytest.mark.processes  # each test runs Replicate's JavaScript client in Node


@pytest.fixture(scope="session")
def js_client() -> Path:
    """tests/js with its node_modules installed from the lockfile (again when it changed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    need_service("Node.js", bool(node and npm), "node and npm are not on PATH")
    lock, installed = JS_DIR / "package-lock.json", JS_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=JS_DIR,
            check=True,
            timeout=300,
        )
    return JS_DIR


def run_scenario(js_client: Path, sandbox_url: str, token: str, name: str) -> Any:
    versions = {
        ref: {"latest": model.latest_version.id, **{v.label: v.id for v in model.versions}}
        for ref, model in MODELS.items()
    }
    result = subprocess.run(
        ["node", "scenarios.mjs", name],
        cwd=js_client,
        env={
            **os.environ,
            "SANDBOX_URL": sandbox_url,
            "SANDBOX_TOKEN": token,
            "SANDBOX_VERSIONS": json.dumps(versions),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def scenario(js_client: Path, sandbox_url: str, sandbox_token: str) -> Any:
    return lambda name: run_scenario(js_client, sandbox_url, sandbox_token, name)


def test_run_by_name_gives_an_official_model_s_output(scenario: Any):
    seen = scenario("run-official-by-name")

    assert "".join(seen["output"]) == "".join(text_tokens("hello from js", 7, 8))


def test_run_by_version_runs_that_version_of_a_community_model(scenario: Any):
    assert scenario("run-community-by-version") == {"output": "echo v1: hi"}


def test_run_by_name_of_a_community_model_is_404_as_on_replicate(scenario: Any):
    assert scenario("run-community-by-name-is-404")["status"] == 404


def test_run_returns_image_urls_that_download(scenario: Any):
    seen = scenario("run-image")

    assert len(seen["urls"]) == 1
    assert seen["contentType"] == "image/png"
    assert seen["size"] > 100


def test_stream_reads_the_capability_url_without_a_token(scenario: Any):
    seen = scenario("stream")

    assert seen["text"] == "".join(text_tokens("streamed from js", 3, 12))
    assert "done" in seen["events"]


def test_files_create_keeps_the_metadata(scenario: Any):
    seen = scenario("files-create-with-metadata")

    assert seen["metadata"] == {"purpose": "js test", "n": 1}
    assert seen["fetchedMetadata"] == seen["metadata"]
    assert seen["size"] == len("hello file")
    assert seen["listed"] is True


def test_predictions_create_get_cancel_and_list(scenario: Any):
    seen = scenario("predictions-create-get-cancel-list")

    assert seen["createdStatus"] in ("starting", "processing")
    assert seen["canceledStatus"] == "canceled"
    assert seen["listed"] is True


def test_predictions_create_by_model_runs_the_latest_version(scenario: Any):
    seen = scenario("predictions-create-by-model")

    assert seen == {
        "status": "succeeded",
        "output": "Done.",
        "version": MODELS["sandbox/slow"].latest_version.id,
    }


def test_models_get_versions_and_paginated_list(scenario: Any):
    seen = scenario("models-get-and-versions")
    echo = MODELS["sandbox-community/echo"]

    assert seen["isOfficial"] is False
    assert seen["latest"] == echo.latest_version.id
    assert seen["versions"] == [v.id for v in echo.versions]
    assert seen["versionId"] == echo.versions[1].id
    assert seen["allModels"] == sorted(MODELS)
    assert seen["defaultExample"] == "echo v3: hello hello"


def test_deployment_predictions_and_wait(scenario: Any):
    assert scenario("wait-and-deployment") == {"status": "succeeded", "deployment": "sandbox/slow"}
