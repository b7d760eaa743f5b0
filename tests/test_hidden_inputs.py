"""Inputs an admin hides are sent upstream but shown to staff only: not on the prediction's
page, its API snippet, its live events, the model page's recent runs or history's search."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from predictions import events, executors
from predictions.models import CatalogModel, Prediction

SECRET = "the-secret-sauce"
SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
        "system_prompt": {"type": "string", "title": "System Prompt", "x-order": 1},
    },
}


@pytest.fixture
def ran(client: Client, alice: User, monkeypatch: pytest.MonkeyPatch) -> Prediction:
    """alice ran a model whose system prompt an admin set and hid."""

    async def no_runner(prediction_id: object) -> None:
        pass

    monkeypatch.setattr(executors, "submit", no_runner)
    CatalogModel.objects.create(
        owner="acme",
        name="assistant",
        input_schema=SCHEMA,
        hidden_inputs=["system_prompt"],
        default_input={"system_prompt": SECRET},
    )
    client.force_login(alice)
    assert client.post("/models/acme/assistant/", {"prompt": "hello there"}).status_code == 303
    return Prediction.objects.get()


def test_the_hidden_value_is_sent_upstream(ran: Prediction) -> None:
    assert ran.input == {"prompt": "hello there", "system_prompt": SECRET}


def test_members_see_no_hidden_value_anywhere(client: Client, ran: Prediction) -> None:
    pages = [
        f"/predictions/{ran.pk}/",
        f"/predictions/{ran.pk}/rerun/",
        "/models/acme/assistant/",
        "/predictions/",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200
        assert SECRET not in response.content.decode(), url
    assert "hello there" in client.get("/predictions/").content.decode()
    assert "hello there" not in client.get(f"/predictions/?q={SECRET}").content.decode()
    assert "system_prompt" not in events.serialize_prediction(ran)["input"]


def test_staff_see_the_hidden_value(client: Client, ran: Prediction, staff: User) -> None:
    client.force_login(staff)

    assert SECRET in client.get(f"/predictions/{ran.pk}/").content.decode()
