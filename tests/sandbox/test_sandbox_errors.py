"""Error answers of the sandbox: statuses, titles, problem+json bodies, rate limits."""

import uuid
from collections.abc import Callable

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

TEXT_PATH = "/v1/models/sandbox/text/predictions"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_request_without_a_token_is_unauthenticated(sandbox_url: str):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{sandbox_url}/v1/account")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass an authentication token",
        "status": 401,
    }


async def test_a_wrong_token_is_unauthenticated(sandbox_url: str):
    client = replicate.Client(api_token="r8_wrong", base_url=sandbox_url)

    with pytest.raises(ReplicateError) as error:
        await client.async_run("sandbox/text", input={"prompt": "hi"})

    assert error.value.status == 401
    assert error.value.title == "Unauthenticated"
    assert error.value.detail == "You did not pass a valid authentication token"


async def test_faults_on_an_unknown_token_do_not_authenticate(sandbox_url: str):
    client = replicate.Client(api_token="r8_wrong:latency=1", base_url=sandbox_url)

    with pytest.raises(ReplicateError) as error:
        await client.accounts.async_current()

    assert error.value.status == 401


async def test_the_older_token_scheme_is_accepted(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{sandbox_url}/v1/account", headers={"Authorization": f"Token {sandbox_token}"}
        )

    assert response.status_code == 200


async def test_an_unknown_prediction_is_not_found(
    sandbox_client: Callable[..., replicate.Client],
):
    with pytest.raises(ReplicateError) as error:
        await sandbox_client().predictions.async_get("doesnotexist")

    assert error.value.status == 404
    assert error.value.detail == "The requested resource could not be found"


async def test_an_unknown_model_is_not_found(sandbox_client: Callable[..., replicate.Client]):
    client = sandbox_client()

    with pytest.raises(ReplicateError) as by_get:
        await client.models.async_get("sandbox/nope")
    with pytest.raises(ReplicateError) as by_run:
        await client.async_run("sandbox/nope", input={})

    assert by_get.value.status == by_run.value.status == 404


async def test_an_unknown_path_is_a_json_404(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{sandbox_url}/v1/nothing/here", headers=auth(sandbox_token))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_wrong_method_is_405(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.delete(f"{sandbox_url}/v1/account", headers=auth(sandbox_token))

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


@pytest.mark.parametrize(
    ("text_input", "expected"),
    [
        ({}, {"type": "required", "field": "input", "description": "prompt is required"}),
        (
            {"prompt": "hi", "max_tokens": "many"},
            {
                "type": "invalid_type",
                "field": "input.max_tokens",
                "description": "Invalid type. Expected: integer, given: string",
            },
        ),
        (
            {"prompt": "hi", "max_tokens": 0},
            {
                "type": "number_gte",
                "field": "input.max_tokens",
                "description": "Must be greater than or equal to 1",
            },
        ),
        (
            {"prompt": "hi", "max_tokens": 5000},
            {
                "type": "number_lte",
                "field": "input.max_tokens",
                "description": "Must be less than or equal to 4096",
            },
        ),
    ],
)
async def test_invalid_input_is_422_with_invalid_fields(
    sandbox_url: str, sandbox_token: str, text_input: dict, expected: dict
):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}{TEXT_PATH}", json={"input": text_input}, headers=auth(sandbox_token)
        )

    body = response.json()
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert body["title"] == "Input validation failed"
    assert body["invalid_fields"] == [expected]
    assert body["detail"] == f"- {expected['field']}: {expected['description']}\n"


async def test_an_enum_input_outside_its_values_is_422(sandbox_url: str, sandbox_token: str):
    image_input = {"prompt": "p", "output_format": "gif"}

    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/v1/models/sandbox/image/predictions",
            json={"input": image_input},
            headers=auth(sandbox_token),
        )

    assert response.status_code == 422
    assert response.json()["invalid_fields"] == [
        {
            "type": "enum",
            "field": "input.output_format",
            "description": 'output_format must be one of the following: "webp", "jpg", "png"',
        }
    ]


async def test_the_client_reports_validation_errors_with_the_api_title(
    sandbox_client: Callable[..., replicate.Client],
):
    with pytest.raises(ReplicateError) as error:
        await sandbox_client().async_run("sandbox/text", input={"prompt": "hi", "seed": 1.5})

    assert error.value.status == 422
    assert error.value.title == "Input validation failed"
    assert error.value.detail == ("- input.seed: Invalid type. Expected: integer, given: number\n")


async def test_a_webhook_that_is_not_a_url_is_422(sandbox_url: str, sandbox_token: str):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}{TEXT_PATH}",
            json={"input": {"prompt": "p"}, "webhook": "not a url"},
            headers=auth(sandbox_token),
        )

    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "webhook"


async def test_an_unknown_version_is_422(sandbox_client: Callable[..., replicate.Client]):
    client = sandbox_client()

    for version in ("0" * 64, "sandbox/nope", "sandbox/text:" + "0" * 64):
        with pytest.raises(ReplicateError) as error:
            await client.predictions.async_create(version=version, input={"prompt": "p"})
        assert error.value.status == 422
        assert error.value.title == "Invalid version or not permitted"


async def test_over_the_create_limit_is_429_with_retry_after(
    sandbox_url: str, sandbox_token: str, sandbox_client: Callable[..., replicate.Client]
):
    faults = f"create_limit=2,scope={uuid.uuid4().hex}"
    client = sandbox_client(faults)
    slow = {"seconds": 1}
    for _ in range(2):
        await client.models.predictions.async_create(model="sandbox/slow", input=slow)

    with pytest.raises(ReplicateError) as by_client:
        await client.models.predictions.async_create(model="sandbox/slow", input=slow)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{sandbox_url}/v1/models/sandbox/slow/predictions",
            json={"input": slow},
            headers=auth(f"{sandbox_token}:{faults}"),
        )

    assert by_client.value.status == 429
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["Retry-After"] == str(response.json()["retry_after"])
    assert response.json()["retry_after"] >= 1
    assert response.json()["detail"].startswith("Request was throttled.")


async def test_responses_carry_rate_limit_headers(sandbox_url: str, sandbox_token: str):
    token = f"{sandbox_token}:scope={uuid.uuid4().hex}"
    async with httpx.AsyncClient() as http:
        first = await http.get(f"{sandbox_url}/v1/account", headers=auth(token))
        second = await http.get(f"{sandbox_url}/v1/account", headers=auth(token))
        created = await http.post(
            f"{sandbox_url}{TEXT_PATH}",
            json={"input": {"prompt": "p", "max_tokens": 1}},
            headers=auth(token),
        )

    assert first.headers["ratelimit-remaining"] == "2999"
    assert second.headers["ratelimit-remaining"] == "2998"
    assert created.headers["ratelimit-remaining"] == "599"
    assert created.headers["ratelimit-reset"] == "1"
