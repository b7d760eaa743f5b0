"""The sandbox's pieces on their own: validation, demo model helpers, store, faults, limits."""

import base64
import hashlib

import pytest
from replicate.prediction import Prediction as ClientPrediction

from sandbox import ratelimit, runner
from sandbox.demo_models import IMAGE, TEXT, text_tokens, tqdm_line
from sandbox.faults import Faults, FaultSpecError, parse
from sandbox.store import Prediction, PredictionStore, StoredFile, files, outputs
from sandbox.validation import validate_input, with_defaults

IMAGE_SCHEMA = IMAGE.latest_version.openapi_schema
TEXT_SCHEMA = TEXT.latest_version.openapi_schema


def fields(problems: list[dict]) -> list[tuple[str, str]]:
    return [(p["type"], p["field"]) for p in problems]


def test_valid_input_has_no_problems():
    assert validate_input(TEXT_SCHEMA, {"prompt": "hi", "max_tokens": 5, "temperature": 1}) == []


def test_a_whole_float_counts_as_an_integer_and_is_handed_over_as_one():
    data = {"prompt": "hi", "max_tokens": 5.0}

    assert validate_input(TEXT_SCHEMA, data) == []
    assert with_defaults(TEXT_SCHEMA, data)["max_tokens"] == 5


def test_a_boolean_is_not_an_integer():
    problems = validate_input(TEXT_SCHEMA, {"prompt": "hi", "max_tokens": True})

    assert fields(problems) == [("invalid_type", "input.max_tokens")]


def test_unknown_keys_and_nulls_for_optional_fields_are_ignored():
    assert validate_input(TEXT_SCHEMA, {"prompt": "hi", "seed": None, "colour": "red"}) == []


def test_a_null_required_field_is_missing():
    assert fields(validate_input(TEXT_SCHEMA, {"prompt": None})) == [("required", "input")]


def test_input_must_be_an_object():
    assert fields(validate_input(TEXT_SCHEMA, ["prompt"])) == [("invalid_type", "input")]


def test_enums_are_checked_through_their_reference():
    assert validate_input(IMAGE_SCHEMA, {"prompt": "p", "output_format": "png"}) == []
    problems = validate_input(IMAGE_SCHEMA, {"prompt": "p", "output_format": "bmp"})
    assert fields(problems) == [("enum", "input.output_format")]


@pytest.mark.parametrize(
    ("uri", "valid"),
    [
        ("https://example.com/a.png", True),
        ("http://127.0.0.1:8000/sandbox/v1/files/abc", True),
        ("data:image/png;base64,AAAA", True),
        ("ftp://example.com/a.png", False),
        ("not a url", False),
    ],
)
def test_uri_inputs_accept_http_and_data_uris(uri: str, valid: bool):
    problems = validate_input(IMAGE_SCHEMA, {"prompt": "p", "image": uri})

    assert (problems == []) is valid


def test_defaults_fill_in_what_was_not_given():
    values = with_defaults(IMAGE_SCHEMA, {"prompt": "p", "width": 128})

    assert values["width"] == 128
    assert values["height"] == 512
    assert values["output_format"] == "webp"
    assert "seed" not in values


@pytest.mark.parametrize("count", [1, 2, 17, 500])
def test_text_has_exactly_the_asked_number_of_tokens(count: int):
    tokens = text_tokens("prompt", 1, count)

    assert len(tokens) == count
    assert all(tokens)
    assert tokens == text_tokens("prompt", 1, count)


def test_text_tokens_never_look_like_file_urls_to_the_client():
    tokens = text_tokens("see https://example.com and data:stuff", 1, 2000)

    # The client turns any output string starting so into a FileOutput.
    assert not any(token.startswith(("https:", "data:")) for token in tokens)


def test_progress_lines_parse_as_the_client_expects():
    logs = "\n".join(tqdm_line(i, 7, i * 0.5, 2.0) for i in range(1, 4))

    progress = ClientPrediction.Progress.parse(logs)

    assert (progress.current, progress.total) == (3, 7)
    assert progress.percentage == 0.43


def test_the_store_evicts_the_oldest_finished_predictions_only():
    store = PredictionStore(limit=3)
    running = Prediction(model=TEXT, version=TEXT.latest_version, input={}, base_url="/")
    store.add(running)
    finished = []
    for _ in range(4):
        prediction = Prediction(model=TEXT, version=TEXT.latest_version, input={}, base_url="/")
        prediction.finish("succeeded")
        store.add(prediction)
        finished.append(prediction)

    assert len(store) == 3
    assert store.get(running.id) is running
    assert [store.get(p.id) for p in finished] == [None, None, finished[2], finished[3]]


def test_fault_specs_parse_and_the_header_wins():
    token = parse("latency=200,create_429=2,stuck")
    header = parse("latency=5,cut_after=3")

    merged = token.merged(header)

    assert merged == Faults(latency=5, create_429=2, cut_after=3, stuck=True)


@pytest.mark.parametrize("spec", ["explode", "latency", "latency=fast", "read_5xx=-1", "stuck=1"])
def test_malformed_fault_specs_are_rejected(spec: str):
    with pytest.raises(FaultSpecError):
        parse(spec)


def test_the_rate_limit_allows_a_burst_then_asks_to_retry_later():
    verdicts = [ratelimit.take("unit-test-key", "create", 3) for _ in range(4)]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts[:3]] == [2, 1, 0]
    assert verdicts[3].retry_after >= 1


def test_a_zero_rate_limit_means_unlimited():
    assert all(ratelimit.take("unit-test-unlimited", "create", 0).allowed for _ in range(1000))


ROOT = "http://127.0.0.1:8000/sandbox/"


@pytest.fixture
def image_prediction() -> Prediction:
    return Prediction(model=IMAGE, version=IMAGE.latest_version, input={}, base_url=ROOT)


async def test_init_images_come_from_data_uris_and_the_sandbox_s_own_urls(
    image_prediction: Prediction,
):
    uploaded = StoredFile(name="a.png", content_type="image/png", content=b"upload", metadata={})
    files.add(uploaded)
    outputs.put("p-units", "out-0.png", "image/png", b"output")
    data_uri = "data:image/png;base64," + base64.b64encode(b"inline").decode()

    fetched = [
        await runner.fetch_input(image_prediction, uri)
        for uri in (
            data_uri,
            f"{ROOT}v1/files/{uploaded.id}",
            f"{ROOT}v1/files/{uploaded.id}/download",
            f"{ROOT}delivery/p-units/out-0.png",
        )
    ]

    assert fetched == [b"inline", b"upload", b"upload", b"output"]


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/missing.png",
        "http://127.0.0.1:8001/sandbox/delivery/p-units/out-0.png",  # another port
        "http://localhost:8000/sandbox/delivery/p-units/out-0.png",  # another host
        "http://127.0.0.1:8000/elsewhere/delivery/p-units/out-0.png",  # not under the root
        f"{ROOT}v1/predictions",
        "file:///etc/passwd",
    ],
)
async def test_any_other_url_is_refused_without_fetching_it(image_prediction: Prediction, uri: str):
    outputs.put("p-units", "out-0.png", "image/png", b"output")

    with pytest.raises(ValueError, match="cannot fetch"):
        await runner.fetch_input(image_prediction, uri)


async def test_an_oversized_data_uri_is_refused_before_decoding(
    image_prediction: Prediction, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(runner, "MAX_INPUT_BYTES", 6)
    uri = "data:text/plain;base64," + base64.b64encode(b"x" * 9).decode()

    with pytest.raises(ValueError, match="larger than 6 bytes"):
        await runner.fetch_input(image_prediction, uri)


def test_a_stored_file_s_checksums_are_computed_once_at_upload():
    stored = StoredFile(name="a.txt", content_type="text/plain", content=b"abc", metadata={})
    stored.content = b"changed"  # as_json reports what was uploaded, without hashing again

    described = stored.as_json(ROOT)

    assert described["checksums"] == {
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "md5": hashlib.md5(b"abc").hexdigest(),
    }
    assert described["etag"] == described["checksums"]["md5"]
