"""/api/openapi.json describes the gateway with Replicate's own OpenAPI, cut to what it serves."""

import json

import schemathesis
from django.test import Client

from predictions.openapi import SERVED


def test_the_gateway_spec_lists_only_what_it_serves_and_points_here(client: Client) -> None:
    answer = client.get("/api/openapi.json")  # no login: programs read it

    assert answer.status_code == 200 and answer["Content-Type"] == "application/json"
    spec = answer.json()
    assert spec["servers"] == [{"url": "http://testserver/api/v1"}]
    assert {
        path: sorted(m for m in item if m != "parameters") for path, item in spec["paths"].items()
    } == {path: sorted(methods) for path, methods in SERVED.items()}
    text = json.dumps(spec)
    assert "api.replicate.com/v1" not in text and "http://testserver/api/v1/predictions" in text
    assert "deployments" not in spec["paths"] and "Training" not in spec["components"]["schemas"]
    # Every reference resolves, and the document loads as OpenAPI.
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        _, _, kind, name = ref.split("/", 3)
        assert name in spec["components"][kind], ref
    operations = list(schemathesis.openapi.from_dict(spec).get_all_operations())
    assert len(operations) == sum(len(methods) for methods in SERVED.values())


def test_the_spec_answers_only_get(client: Client) -> None:
    assert client.post("/api/openapi.json").status_code == 405
