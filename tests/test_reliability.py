"""Kill the processes that run predictions, inject upstream faults: every prediction still
ends correctly, with exactly one upstream create.

Real subprocesses: a daphne console (inline executor), Celery workers on Redis, the sandbox
in its own daphne, all sharing this session's database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.utils import timezone

from predictions.models import CatalogModel, Prediction, WebhookEvent
from tests.engine_helpers import MakeModel, expected_text, upstream_predictions
from tests.waiting import wait_until

if TYPE_CHECKING:
    from tests.console_server import ConsoleServer, Workers

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def row(prediction: Prediction) -> Prediction:
    return Prediction.objects.get(pk=prediction.pk)


def mid_stream(prediction: Prediction) -> bool:
    """Created upstream, some text written, still running: the worst moment to die."""
    current = row(prediction)
    return bool(current.upstream_id and current.text_output and current.is_active)


def finished(prediction: Prediction) -> Prediction | None:
    current = row(prediction)
    return None if current.is_active else current


def creates(sandbox_url: str, sandbox_token: str, prompt: str) -> int:
    listed = upstream_predictions(sandbox_url, sandbox_token)
    return sum(1 for p in listed if p["input"].get("prompt") == prompt)


def new_text_prediction(
    model: CatalogModel, owner: User, tokens: int = 250, **fields: Any
) -> tuple[Prediction, str]:
    prompt = f"survive {uuid.uuid4().hex}"
    prediction = Prediction.objects.create(
        owner=owner,
        model=model,
        model_ref=model.ref,
        input={"prompt": prompt, "seed": 9, "max_tokens": tokens, "token_delay_ms": 12},
        **fields,
    )
    return prediction, expected_text(prompt, 9, tokens)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_restarted_inline_server_resumes_its_predictions_exactly(
    console_servers: Callable[..., ConsoleServer],
    sandbox_model: MakeModel,
    member: User,
    sandbox_url: str,
    sandbox_token: str,
    how: str,
) -> None:
    model = async_to_sync(sandbox_model)("text")
    first = console_servers(webhooks=True)
    prediction, expected = new_text_prediction(model, member)
    # Left "queued" long ago: the server's start-up reconciler picks it up by itself.
    Prediction.objects.filter(pk=prediction.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    wait_until(lambda: mid_stream(prediction))

    first.kill() if how == "SIGKILL" else first.stop()
    interrupted = row(prediction)
    console_servers(first.port, webhooks=True)
    final = wait_until(lambda: finished(prediction))

    assert interrupted.is_active and interrupted.text_output
    assert final.status == "succeeded"
    assert final.text_output == expected == "".join(final.output)
    assert final.upstream_id == interrupted.upstream_id
    assert creates(sandbox_url, sandbox_token, prediction.input["prompt"]) == 1
    # Created with a webhook to PUBLIC_URL: the sandbox's signed "completed" got through.
    wait_until(lambda: WebhookEvent.objects.filter(upstream_id=final.upstream_id).exists())


def test_a_killed_celery_worker_is_replaced_and_the_prediction_completes_exactly(
    celery_workers: Workers,
    sandbox_model: MakeModel,
    member: User,
    sandbox_url: str,
    sandbox_token: str,
) -> None:
    model = async_to_sync(sandbox_model)("text")
    first = celery_workers.start()
    prediction, expected = new_text_prediction(model, member)
    celery_workers.send("predictions.run_prediction", str(prediction.pk))
    wait_until(lambda: mid_stream(prediction))

    first.kill()
    interrupted = row(prediction)
    celery_workers.start()

    def resumed() -> Prediction | None:
        # What celery beat does every few seconds in production.
        celery_workers.send("predictions.reconcile_predictions")
        return finished(prediction)

    final = wait_until(resumed, every=1.0)
    assert interrupted.is_active
    assert final.status == "succeeded"
    assert final.text_output == expected == "".join(final.output)
    assert final.upstream_id == interrupted.upstream_id
    assert creates(sandbox_url, sandbox_token, prediction.input["prompt"]) == 1


def test_upstream_faults_all_end_in_the_right_state_with_a_clear_message(
    celery_workers: Workers, sandbox_model: MakeModel, member: User
) -> None:
    celery_workers.start()
    cases: list[tuple[Prediction, str, str]] = []  # prediction, status, expected text/error

    def case(name: str, faults: str, input: dict[str, Any], **fields: Any) -> Prediction:
        model = async_to_sync(sandbox_model)(name, faults=faults, alias=True, **fields)
        return Prediction.objects.create(
            owner=member, model=model, model_ref=f"sandbox/{name}", input=input
        )

    for faults in ("create_429=2", "read_5xx=3,cut_after=3", "cut_after=6", "latency=150"):
        prompt = f"{faults} {uuid.uuid4().hex}"
        text_input = {"prompt": prompt, "seed": 4, "max_tokens": 40, "token_delay_ms": 5}
        cases.append((case("text", faults, text_input), "succeeded", expected_text(prompt, 4, 40)))
    stuck = case("text", "stuck", {"prompt": "stuck"}, deadline_seconds=2)
    cases.append((stuck, "canceled", "Stopped after 2 seconds: sandbox/text did not finish"))
    failing = case("fail", "", {"message": "Model ran out of crayons", "step_delay_ms": 10})
    cases.append((failing, "failed", "Model ran out of crayons"))
    for prediction, _, _ in cases:
        celery_workers.send("predictions.run_prediction", str(prediction.pk))

    wait_until(lambda: not Prediction.objects.active().exists(), within=45)
    for prediction, status, expected in cases:
        final = row(prediction)
        assert final.status == status, (final.model_ref, final.error)
        if status == "succeeded":
            assert final.text_output == expected
        else:
            assert final.error.startswith(expected)
