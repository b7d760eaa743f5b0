"""Helpers for engine tests: waiting for a prediction, submitting, asking the sandbox."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from predictions import executors
from predictions.models import CatalogModel, Prediction
from tests.waiting import wait_for

MakeModel = Callable[..., Awaitable[CatalogModel]]


async def wait_until_finished(prediction_id: uuid.UUID, within: float = 30.0) -> Prediction:
    async def finished() -> Prediction | None:
        prediction = await Prediction.objects.aget(pk=prediction_id)
        return None if prediction.is_active else prediction

    return await wait_for(finished, within)


async def submit(model: CatalogModel, owner: User, **input: Any) -> Prediction:
    return await executors.start_prediction(
        owner=owner, model=model, input=input, source=Prediction.Source.WEB
    )


def upstream_predictions(sandbox_url: str, sandbox_token: str) -> list[dict[str, Any]]:
    """What the sandbox has been asked to create, newest first (its list endpoint)."""
    response = httpx.get(
        f"{sandbox_url}/v1/predictions",
        headers={"Authorization": f"Bearer {sandbox_token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["results"]


async def creates_for(sandbox_url: str, sandbox_token: str, prompt: str) -> int:
    results = await sync_to_async(upstream_predictions)(sandbox_url, sandbox_token)
    return sum(1 for p in results if p["input"].get("prompt") == prompt)


def expected_text(prompt: str, seed: int, count: int) -> str:
    """What sandbox/text answers: it is deterministic."""
    from sandbox.demo_models import text_tokens

    return "".join(text_tokens(prompt, seed, count))
