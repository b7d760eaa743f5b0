"""The sandbox's answers conform to Replicate's OpenAPI description, checked by schemathesis.

schemathesis (pinned in requirements-dev.txt) generates requests for each operation from
the spec in predictions/replicate-openapi.json (Replicate's own, as published) and sends
them to a real sandbox process. Data it cannot invent is seeded first: a prediction, a file,
and the ids of demo models and versions, so operations answer with real objects, not 404s.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.demo_models import MODELS
from tests.sandbox_server import ROOT

SPEC = ROOT / "predictions" / "replicate-openapi.json"
OPERATIONS = (
    r"^(account\.get|models\..+|predictions\..+|files\..+|webhooks\.default\.secret\.get"
    r"|deployments\.predictions\.create)$"
)
CHECKS = "not_a_server_error,response_schema_conformance"


def seed(sandbox_url: str, token: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=sandbox_url, headers=headers, timeout=30) as http:
        echo = MODELS["sandbox-community/echo"].latest_version.id
        prediction = http.post(
            "/v1/predictions",
            json={"version": echo, "input": {"text": "seed"}},
            headers={"Prefer": "wait=5"},
        )
        prediction.raise_for_status()
        uploaded = http.post("/v1/files", files={"content": ("seed.txt", b"seed", "text/plain")})
        uploaded.raise_for_status()
    return {"prediction": prediction.json()["id"], "file": uploaded.json()["id"]}


def config(seeded: dict[str, str]) -> str:
    # sandbox/fail by name: official, and quick whatever it is sent (it ignores the spec's
    # example input, fails within half a second and costs no CPU, unlike the image model).
    quick = MODELS["sandbox/fail"]
    versions = [quick.latest_version.id] + [
        version.id for version in MODELS["sandbox-community/echo"].versions
    ]
    parameters = {
        # Real models, and a deployment named like one (the sandbox runs its latest version).
        "path.model_owner": quick.owner,
        "path.model_name": quick.name,
        "path.deployment_owner": quick.owner,
        "path.deployment_name": quick.name,
        "path.version_id": quick.latest_version.id,
        "path.prediction_id": seeded["prediction"],
        "path.file_id": seeded["file"],
        # Sync mode holds a create open until it finishes: keep that short.
        "header.Prefer": "wait=1",
    }
    lines = ["[parameters]"]
    lines += [f"{json.dumps(key)} = {json.dumps(value)}" for key, value in parameters.items()]
    lines += [
        '"body.version" = { dictionary = "versions" }',
        "",
        "[dictionaries]",
        f"versions = {{ values = {json.dumps(versions)} }}",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_the_sandbox_conforms_to_replicate_s_openapi_description(
    sandbox_url: str, sandbox_token: str, tmp_path: Path
):
    seeded = seed(sandbox_url, sandbox_token)
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(seeded))
    # No rate limits for this token: schemathesis sends thousands of requests a minute.
    token = f"{sandbox_token}:create_limit=0,read_limit=0"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--no-color",
            "--config-file",
            str(config_file),
            "run",
            str(SPEC),
            "--url",
            f"{sandbox_url}/v1",
            "--header",
            f"Authorization: Bearer {token}",
            "--include-operation-id-regex",
            OPERATIONS,
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--seed",
            "9",
            "--request-timeout",
            "20",
            # One worker: hypothesis parses lambdas with `ast`, which CPython 3.11 does not
            # do safely from several threads at once ("AST constructor recursion depth").
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "SANDBOX_EXAMPLE_VERSION": MODELS["sandbox-community/echo"].latest_version.id,
        },
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated and generated[1] == generated[2], output[-3000:]
    print(generated[0])  # the closing note quotes it
    # The creates were reached, not only rejected: each kind made real predictions.
    made = created_since(sandbox_url, sandbox_token, seeded["prediction"])
    assert any(p.get("deployment") for p in made)
    assert any(p["model"] == "sandbox/fail" and not p.get("deployment") for p in made)
    assert any(p["model"] == "sandbox-community/echo" for p in made)


def created_since(sandbox_url: str, token: str, seed_id: str) -> list[dict]:
    """Predictions newer than the seeded one, newest first."""
    headers = {"Authorization": f"Bearer {token}"}
    found: list[dict] = []
    url: str | None = f"{sandbox_url}/v1/predictions"
    with httpx.Client(headers=headers, timeout=30) as http:
        while url:
            page = http.get(url).json()
            for prediction in page["results"]:
                if prediction["id"] == seed_id:
                    return found
                found.append(prediction)
            url = page["next"]
    return found
