"""The sandbox's demo models, with Cog-style OpenAPI schemas.

Official models (owner `sandbox`, ``is_official: true``: Replicate runs their latest version
through ``POST /v1/models/{owner}/{name}/predictions``):

- ``sandbox/text``  streams made-up text token by token (iterator output, streams);
- ``sandbox/image`` draws PNG/JPEG/WebP pictures of the prompt with Pillow (file URLs,
  no stream: like most image models, it has no ``urls.stream``);
- ``sandbox/slow``  waits ``seconds``, logging a tqdm progress line each second (streams
  its logs and, at the end, its one output);
- ``sandbox/fail``  logs a few lines, yields a little output, then fails (streams).

A community model (``is_official: false``: like most of Replicate, it runs only by version,
and the model-level endpoint answers 404):

- ``sandbox-community/echo`` answers at once with its input text, prefixed with the
  version that ran (``"echo v3: hello"``); three versions whose schemas differ.

Outputs are deterministic for a given seed; without a seed, one is derived from the
prompt, so the same input always gives the same output. Each official model has two versions with
stable ids (sha256 of "<owner>/<name>:<label>"); the first listed is the latest.
"""

import asyncio
import base64
import hashlib
import io
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from sandbox.runner import fetch_input
from sandbox.store import outputs

if TYPE_CHECKING:
    from sandbox.store import Prediction

Predict = Callable[["Prediction", dict[str, Any]], Awaitable[None]]

# Each fake denoising step of sandbox/image takes this long.
IMAGE_STEP_SECONDS = 0.05

# output_format value -> (Pillow format, content type)
IMAGE_FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}


# Schemas ------------------------------------------------------------------------------


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def prop(name: str, kind: str, order: int, description: str, **extra: Any) -> dict:
    """One Input property as Cog writes it."""
    schema = {"type": kind, "title": _title(name), "x-order": order, "description": description}
    schema.update(extra)
    return schema


def enum_prop(name: str, order: int, description: str, default: str) -> dict:
    """An enum input, the way Cog writes it: a $ref to a sibling schema named after it."""
    return {
        "allOf": [{"$ref": f"#/components/schemas/{name}"}],
        "default": default,
        "x-order": order,
        "description": description,
    }


def _response(schema: dict, description: str = "Successful Response") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _cog_paths() -> dict:
    """The HTTP paths every Cog container describes (part of the schema Replicate serves)."""
    validation = _response({"$ref": "#/components/schemas/HTTPValidationError"}, "Validation Error")
    prefer = {"in": "header", "name": "prefer", "required": False}
    prefer["schema"] = {"type": "string", "title": "Prefer"}
    prediction_id = {"in": "path", "name": "prediction_id", "required": True}
    prediction_id["schema"] = {"type": "string", "title": "Prediction ID"}
    request = {"$ref": "#/components/schemas/PredictionRequest"}
    response = _response({"$ref": "#/components/schemas/PredictionResponse"})
    return {
        "/": {
            "get": {
                "summary": "Root",
                "operationId": "root__get",
                "responses": {"200": _response({"title": "Response Root  Get"})},
            }
        },
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": _response({"title": "Response Healthcheck Health Check Get"})},
            }
        },
        "/predictions": {
            "post": {
                "summary": "Predict",
                "description": "Run a single prediction on the model",
                "operationId": "predict_predictions_post",
                "parameters": [prefer],
                "requestBody": {"content": {"application/json": {"schema": request}}},
                "responses": {"200": response, "422": validation},
            }
        },
        "/predictions/{prediction_id}": {
            "put": {
                "summary": "Predict Idempotent",
                "description": "Run a single prediction on the model (idempotent creation).",
                "operationId": "predict_idempotent_predictions__prediction_id__put",
                "parameters": [prediction_id, prefer],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"allOf": [request], "title": "Prediction Request"}
                        }
                    },
                },
                "responses": {"200": response, "422": validation},
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "description": "Cancel a running prediction",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [prediction_id],
                "responses": {
                    "200": _response(
                        {"title": "Response Cancel Predictions  Prediction Id  Cancel Post"}
                    ),
                    "422": validation,
                },
            }
        },
        "/shutdown": {
            "post": {
                "summary": "Start Shutdown",
                "operationId": "start_shutdown_shutdown_post",
                "responses": {"200": _response({"title": "Response Start Shutdown Shutdown Post"})},
            }
        },
    }


def _enum_schema(name: str, values: list[str]) -> dict:
    return {"enum": values, "type": "string", "title": name, "description": "An enumeration."}


def _cog_components() -> dict:
    """The schemas Cog adds next to Input and Output."""
    statuses = ["starting", "processing", "succeeded", "canceled", "failed"]
    events = ["start", "output", "logs", "completed"]
    timestamp = {"type": "string", "format": "date-time"}
    return {
        "Status": _enum_schema("Status", statuses),
        "WebhookEvent": _enum_schema("WebhookEvent", events),
        "ValidationError": {
            "type": "object",
            "title": "ValidationError",
            "required": ["loc", "msg", "type"],
            "properties": {
                "loc": {
                    "type": "array",
                    "title": "Location",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": {"type": "string", "title": "Message"},
                "type": {"type": "string", "title": "Error Type"},
            },
        },
        "HTTPValidationError": {
            "type": "object",
            "title": "HTTPValidationError",
            "properties": {
                "detail": {
                    "type": "array",
                    "title": "Detail",
                    "items": {"$ref": "#/components/schemas/ValidationError"},
                }
            },
        },
        "PredictionRequest": {
            "type": "object",
            "title": "PredictionRequest",
            "properties": {
                "id": {"type": "string", "title": "Id"},
                "input": {"$ref": "#/components/schemas/Input"},
                "webhook": {
                    "type": "string",
                    "title": "Webhook",
                    "format": "uri",
                    "maxLength": 65536,
                    "minLength": 1,
                },
                "created_at": {**timestamp, "title": "Created At"},
                "output_file_prefix": {"type": "string", "title": "Output File Prefix"},
                "webhook_events_filter": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/WebhookEvent"},
                    "default": events,
                },
            },
        },
        "PredictionResponse": {
            "type": "object",
            "title": "PredictionResponse",
            "properties": {
                "id": {"type": "string", "title": "Id"},
                "logs": {"type": "string", "title": "Logs", "default": ""},
                "error": {"type": "string", "title": "Error"},
                "input": {"$ref": "#/components/schemas/Input"},
                "output": {"$ref": "#/components/schemas/Output"},
                "status": {"$ref": "#/components/schemas/Status"},
                "metrics": {"type": "object", "title": "Metrics"},
                "version": {"type": "string", "title": "Version"},
                "created_at": {**timestamp, "title": "Created At"},
                "started_at": {**timestamp, "title": "Started At"},
                "completed_at": {**timestamp, "title": "Completed At"},
            },
        },
    }


def cog_schema(
    properties: dict, output: dict, required: Sequence[str] = (), enums: dict | None = None
) -> dict:
    """A whole `openapi_schema` as Replicate serves it for a Cog model version."""
    input_schema: dict[str, Any] = {"type": "object", "title": "Input"}
    if required:
        input_schema["required"] = list(required)
    input_schema["properties"] = properties
    schemas = {"Input": input_schema, "Output": {**output, "title": "Output"}}
    for name, values in (enums or {}).items():
        schemas[name] = _enum_schema(name, values)
    schemas.update(_cog_components())
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": _cog_paths(),
        "components": {"schemas": schemas},
    }


# Models -------------------------------------------------------------------------------


@dataclass
class Version:
    label: str
    model_ref: str
    created_at: str
    cog_version: str
    openapi_schema: dict
    predict: Predict

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.model_ref}:{self.label}".encode()).hexdigest()

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "cog_version": self.cog_version,
            "openapi_schema": self.openapi_schema,
        }


@dataclass
class DemoModel:
    owner: str
    name: str
    description: str
    streams: bool  # has urls.stream
    iterator: bool  # output is a list that grows item by item
    title: str = ""
    versions: list[Version] = field(default_factory=list)  # latest first
    run_count: int = 0
    # Official models run by owner/name alone; community ones need a version.
    is_official: bool = True
    created_at: str = "2024-04-01T12:00:00.000000Z"
    # The input of `default_example`, and a function giving that example's (output, error).
    example_input: dict[str, Any] = field(default_factory=dict)
    example: "Callable[[DemoModel, str], tuple[Any, str | None]] | None" = None

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def latest_version(self) -> Version:
        return self.versions[0]

    def version(self, version_id: str) -> Version | None:
        return next((v for v in self.versions if v.id == version_id), None)

    def web_url(self, base_url: str) -> str:
        return f"{base_url}m/{self.ref}"

    def example_id(self) -> str:
        """A stable prediction id for the default example (26 base32 characters)."""
        digest = hashlib.sha256(f"{self.ref}:example".encode()).digest()
        return base64.b32encode(digest).decode().lower()[:26]

    def default_example(self, base_url: str) -> dict | None:
        """A finished example prediction, shaped like any other (as Replicate shows one)."""
        if self.example is None:
            return None
        output, error = self.example(self, base_url)
        version = self.latest_version
        example_id = self.example_id()
        return {
            "id": example_id,
            "model": self.ref,
            "version": version.id,
            "input": dict(self.example_input),
            "logs": "",
            "output": output,
            "data_removed": False,
            "error": error,
            "status": "failed" if error else "succeeded",
            "source": "web",
            "created_at": version.created_at,
            "started_at": version.created_at,
            "completed_at": version.created_at,
            "urls": {
                "get": f"{base_url}v1/predictions/{example_id}",
                "cancel": f"{base_url}v1/predictions/{example_id}/cancel",
                "web": f"{base_url}p/{example_id}",
            },
            "metrics": {"predict_time": 0.1, "total_time": 0.1},
        }

    def as_json(self, base_url: str) -> dict:
        return {
            # As on Replicate: the model's web page (replicate.com/<owner>/<name>).
            "url": self.web_url(base_url),
            "owner": self.owner,
            "name": self.name,
            "description": self.description,
            "visibility": "public",
            "is_official": self.is_official,
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "weights_url": None,
            "run_count": self.run_count,
            "cover_image_url": None,
            "created_at": self.created_at,
            "default_example": self.default_example(base_url),
            "latest_version": self.latest_version.as_json(),
        }


def derive_seed(prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") % 2**31


def tqdm_line(done: int, total: int, elapsed: float, per_second: float) -> str:
    """A progress line like tqdm prints; the client's Prediction.progress parses these."""
    filled = 10 * done / total
    full = int(filled)
    bar = "█" * full
    if full < 10:
        bar += " ▏▎▍▌▋▊▉"[int((filled - full) * 8)]
    bar = bar.ljust(10)
    remaining = (total - done) / per_second if per_second else 0

    def clock(seconds: float) -> str:
        return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"

    rate = f"{per_second:.2f}it/s" if per_second >= 1 else f"{1 / per_second:.2f}s/it"
    return (
        f"{round(100 * done / total):3d}%|{bar}| {done}/{total} "
        f"[{clock(elapsed)}<{clock(remaining)}, {rate}]"
    )


# sandbox/text

VOCABULARY = (
    "the",
    "a",
    "of",
    "sandbox",
    "model",
    "token",
    "river",
    "garden",
    "lantern",
    "quiet",
    "bright",
    "machine",
    "answer",
    "question",
    "stream",
    "signal",
    "orbit",
    "meadow",
    "harbor",
    "copper",
    "velvet",
    "thunder",
    "whisper",
    "library",
    "compass",
    "window",
    "morning",
    "ocean",
    "ember",
    "glacier",
    "paper",
    "engine",
    "little",
    "distant",
    "gentle",
    "café",
    "naïve",
    "über",
    "Zürich",
    "façade",
    "smörgåsbord",
    "jalapeño",
    "résumé",
    "piñata",
    "déjà-vu",
    "東京",
    "日本語",
    "привет",
    "мир",
    "γειά",
    "Ωmega",
    "∑",
    "∞",
    "→",
    "🙂",
    "🚀",
    "🌊",
    "—",
    "…",
)


def text_tokens(prompt: str, seed: int, count: int) -> list[str]:
    """Exactly `count` tokens of made-up prose, ` word` style, from (prompt, seed).

    Sentences end with punctuation, and some paragraphs break with newlines inside a token,
    so clients see multi-line stream events.
    """
    rng = random.Random(f"sandbox/text:{seed}:{prompt}")
    vocabulary = list(VOCABULARY) + re.findall(r"[^\W_]+", prompt)[:32]
    tokens = []
    sentence_start = line_start = True
    for _ in range(count):
        word = rng.choice(vocabulary)
        if sentence_start:
            word = word[:1].upper() + word[1:]
        token = word if line_start else " " + word
        sentence_start = line_start = False
        roll = rng.random()
        if roll < 0.10:
            token += rng.choice(".!?")
            sentence_start = True
            if rng.random() < 0.5:
                token += rng.choice(["\n", "\n\n"])
                line_start = True
        elif roll < 0.16:
            token += rng.choice([",", ";", ":"])
        tokens.append(token)
    return tokens


async def predict_text(prediction: "Prediction", inputs: dict[str, Any]) -> None:
    seed = inputs.get("seed")
    if seed is None:
        seed = derive_seed(inputs["prompt"])
    prediction.log(f"Using seed: {seed}")
    tokens = text_tokens(inputs["prompt"], seed, inputs["max_tokens"])
    delay = inputs.get("token_delay_ms", 20) / 1000
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_token_at = None
    for index, token in enumerate(tokens):
        if delay:
            # Keep to an absolute schedule so sleep overheads do not add up.
            await asyncio.sleep(max(0.0, started + index * delay - loop.time()))
        elif index % 64 == 63:
            await asyncio.sleep(0)  # let others run during a long, instant answer
        prediction.add_output(token)
        if first_token_at is None:
            first_token_at = loop.time()
    elapsed = loop.time() - started
    prediction.log(f"Generated {len(tokens)} tokens in {elapsed:.2f}s")
    prediction.metrics.update(
        {
            "input_token_count": len(inputs["prompt"].split()),
            "output_token_count": len(tokens),
            "time_to_first_token": round((first_token_at or loop.time()) - started, 6),
            "tokens_per_second": round(len(tokens) / elapsed, 3) if elapsed else None,
        }
    )


TEXT_INPUT = {
    "prompt": prop("prompt", "string", 0, "Text to continue. Same prompt and seed, same words."),
    "max_tokens": prop(
        "max_tokens",
        "integer",
        1,
        "Exactly how many tokens to generate.",
        default=128,
        minimum=1,
        maximum=4096,
    ),
    "temperature": prop(
        "temperature",
        "number",
        2,
        "Accepted and validated, like a real model's; it changes nothing here.",
        default=0.7,
        minimum=0,
        maximum=5,
    ),
    "seed": prop("seed", "integer", 3, "Random seed. Leave blank to derive one from the prompt."),
    "token_delay_ms": prop(
        "token_delay_ms",
        "integer",
        4,
        "Pause between tokens in milliseconds (20 ms is 50 tokens per second).",
        default=20,
        minimum=0,
        maximum=1000,
    ),
}
TEXT_OUTPUT = {
    "type": "array",
    "items": {"type": "string"},
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}

TEXT = DemoModel(
    owner="sandbox",
    name="text",
    title="Sandbox text (streams)",
    description="Streams made-up text, token by token (a stand-in for a language model).",
    streams=True,
    iterator=True,
)
TEXT.versions = [
    Version(
        "v2",
        TEXT.ref,
        "2025-03-04T10:00:00.000000Z",
        "0.13.7",
        cog_schema(TEXT_INPUT, TEXT_OUTPUT, required=["prompt"]),
        predict_text,
    ),
    Version(
        "v1",
        TEXT.ref,
        "2024-06-12T09:30:00.000000Z",
        "0.9.9",
        cog_schema(
            {k: v for k, v in TEXT_INPUT.items() if k != "token_delay_ms"},
            TEXT_OUTPUT,
            required=["prompt"],
        ),
        predict_text,
    ),
]


# sandbox/image


def _wrap(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
) -> str:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def render_image(
    prompt: str,
    width: int,
    height: int,
    seed: int,
    image_format: str,
    init_image: bytes | None = None,
    strength: float = 0.8,
) -> bytes:
    """A gradient in seed-chosen colours with the prompt written on it."""
    rng = random.Random(f"sandbox/image:{seed}:{prompt}")
    first = tuple(rng.randrange(256) for _ in range(3))
    second = tuple(rng.randrange(256) for _ in range(3))
    mask = Image.linear_gradient("L").rotate(rng.choice([0, 90, 180, 270])).resize((width, height))
    picture = Image.composite(
        Image.new("RGB", (width, height), first), Image.new("RGB", (width, height), second), mask
    )
    if init_image is not None:
        with Image.open(io.BytesIO(init_image)) as source:
            base = source.convert("RGB").resize((width, height))
        picture = Image.blend(base, picture, strength)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(10, min(width, height) // 14))
    margin = max(4, width // 20)
    text = _wrap(draw, prompt, font, width - 2 * margin)
    draw.multiline_text(
        (margin, margin), text, font=font, fill="white", stroke_width=2, stroke_fill="black"
    )
    out = io.BytesIO()
    picture.save(out, format=IMAGE_FORMATS[image_format][0])
    return out.getvalue()


async def predict_image(prediction: "Prediction", inputs: dict[str, Any]) -> None:
    seed = inputs.get("seed")
    if seed is None:
        seed = derive_seed(inputs["prompt"])
    prediction.log(f"Using seed: {seed}")
    init_image = None
    if inputs.get("image"):
        init_image = await fetch_input(prediction, inputs["image"])
        prediction.log(f"Loaded init image ({len(init_image)} bytes)")
    steps = inputs["num_inference_steps"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in range(1, steps + 1):
        await asyncio.sleep(max(0.0, started + step * IMAGE_STEP_SECONDS - loop.time()))
        elapsed = loop.time() - started
        prediction.log(tqdm_line(step, steps, elapsed, step / elapsed))
    image_format = inputs.get("output_format", "png")
    content_type = IMAGE_FORMATS[image_format][1]
    urls = []
    for index in range(inputs["num_outputs"]):
        content = await asyncio.to_thread(
            render_image,
            inputs["prompt"],
            inputs["width"],
            inputs["height"],
            seed + index,
            image_format,
            init_image,
            inputs.get("prompt_strength", 0.8),
        )
        filename = f"out-{index}.{image_format}"
        outputs.put(prediction.id, filename, content_type, content)
        urls.append(f"{prediction.base_url}delivery/{prediction.id}/{filename}")
    prediction.metrics["image_count"] = len(urls)
    prediction.set_output(urls)
    if inputs.get("fail_after_output"):
        raise RuntimeError("Failed on purpose after making the images")


IMAGE_INPUT = {
    "prompt": prop("prompt", "string", 0, "What to draw. The words are written on the picture."),
    "image": prop(
        "image",
        "string",
        1,
        "Optional init image (a data: URI, or the URL of a file uploaded to or made by "
        "this sandbox), blended under the drawing.",
        format="uri",
    ),
    "width": prop(
        "width", "integer", 2, "Width of output image", default=512, minimum=64, maximum=1024
    ),
    "height": prop(
        "height", "integer", 3, "Height of output image", default=512, minimum=64, maximum=1024
    ),
    "num_outputs": prop(
        "num_outputs", "integer", 4, "Number of images to output.", default=1, minimum=1, maximum=4
    ),
    "num_inference_steps": prop(
        "num_inference_steps",
        "integer",
        5,
        "Number of denoising steps (each takes 50 ms and logs a progress line).",
        default=4,
        minimum=1,
        maximum=50,
    ),
    "guidance_scale": prop(
        "guidance_scale",
        "number",
        6,
        "Scale for classifier-free guidance (accepted, no effect).",
        default=7.5,
        minimum=1,
        maximum=20,
    ),
    "prompt_strength": prop(
        "prompt_strength",
        "number",
        7,
        "How much of the drawing covers the init image. 1.0 hides it completely.",
        default=0.8,
        minimum=0,
        maximum=1,
    ),
    "output_format": enum_prop("output_format", 8, "Format of the output images", "webp"),
    "seed": prop("seed", "integer", 9, "Random seed. Leave blank to derive one from the prompt."),
    "disable_safety_checker": prop(
        "disable_safety_checker",
        "boolean",
        10,
        "Disable safety checker for generated images (there is none).",
        default=False,
    ),
    "fail_after_output": prop(
        "fail_after_output",
        "boolean",
        11,
        "Fail once the images are made (a failed run that still has files).",
        default=False,
    ),
}
IMAGE_OUTPUT = {"type": "array", "items": {"type": "string", "format": "uri"}}
IMAGE_V1_INPUT = {
    k: v
    for k, v in IMAGE_INPUT.items()
    if k not in ("image", "output_format", "prompt_strength", "fail_after_output")
}

IMAGE = DemoModel(
    owner="sandbox",
    name="image",
    title="Sandbox image",
    description="Draws the prompt's words on a gradient (a stand-in for an image model).",
    streams=False,
    iterator=False,
)
IMAGE.versions = [
    Version(
        "v2",
        IMAGE.ref,
        "2025-02-18T14:00:00.000000Z",
        "0.13.7",
        cog_schema(
            IMAGE_INPUT,
            IMAGE_OUTPUT,
            required=["prompt"],
            enums={"output_format": ["webp", "jpg", "png"]},
        ),
        predict_image,
    ),
    Version(
        "v1",
        IMAGE.ref,
        "2024-05-02T08:15:00.000000Z",
        "0.9.9",
        cog_schema(IMAGE_V1_INPUT, IMAGE_OUTPUT, required=["prompt"]),
        predict_image,
    ),
]


# sandbox/slow


async def predict_slow(prediction: "Prediction", inputs: dict[str, Any]) -> None:
    total = inputs["seconds"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    prediction.log(f"  0%|          | 0/{total} [00:00<?, ?it/s]")
    for second in range(1, total + 1):
        await asyncio.sleep(max(0.0, started + second - loop.time()))
        prediction.log(tqdm_line(second, total, loop.time() - started, 1.0))
    prediction.set_output(inputs.get("message", f"Waited {total} seconds."))


SLOW_INPUT = {
    "seconds": prop(
        "seconds", "integer", 0, "How long to run, in seconds.", default=10, minimum=1, maximum=600
    ),
    "message": prop("message", "string", 1, "What to return at the end.", default="Done."),
}

SLOW = DemoModel(
    owner="sandbox",
    name="slow",
    title="Sandbox slow job",
    description="Runs for a while, logging progress each second (for long jobs and cancel).",
    streams=True,
    iterator=False,
)
SLOW.versions = [
    Version(
        "v2",
        SLOW.ref,
        "2025-01-20T12:00:00.000000Z",
        "0.13.7",
        cog_schema(SLOW_INPUT, {"type": "string"}),
        predict_slow,
    ),
    Version(
        "v1",
        SLOW.ref,
        "2024-04-01T12:00:00.000000Z",
        "0.9.9",
        cog_schema({"seconds": SLOW_INPUT["seconds"]}, {"type": "string"}),
        predict_slow,
    ),
]


# sandbox/fail


async def predict_fail(prediction: "Prediction", inputs: dict[str, Any]) -> None:
    steps = inputs["steps"]
    delay = inputs.get("step_delay_ms", 100) / 1000
    for step in range(1, steps + 1):
        await asyncio.sleep(delay)
        prediction.log(f"step {step}/{steps}: so far so good")
        prediction.add_output(f"partial {step} ")
    raise RuntimeError(inputs["message"])


FAIL_INPUT = {
    "message": prop(
        "message",
        "string",
        0,
        "The error to fail with.",
        default="Sandbox model failed on purpose",
    ),
    "steps": prop(
        "steps",
        "integer",
        1,
        "Lines to log (and bits of output to yield) before failing.",
        default=3,
        minimum=0,
        maximum=20,
    ),
    "step_delay_ms": prop(
        "step_delay_ms",
        "integer",
        2,
        "Pause before each step, in milliseconds.",
        default=100,
        minimum=0,
        maximum=5000,
    ),
}

FAIL = DemoModel(
    owner="sandbox",
    name="fail",
    title="Sandbox failure",
    description="Logs a few lines, then fails (for error handling).",
    streams=True,
    iterator=True,
)
FAIL.versions = [
    Version(
        "v2",
        FAIL.ref,
        "2025-01-20T12:30:00.000000Z",
        "0.13.7",
        cog_schema(FAIL_INPUT, TEXT_OUTPUT),
        predict_fail,
    ),
    Version(
        "v1",
        FAIL.ref,
        "2024-04-01T12:30:00.000000Z",
        "0.9.9",
        cog_schema({k: v for k, v in FAIL_INPUT.items() if k != "step_delay_ms"}, TEXT_OUTPUT),
        predict_fail,
    ),
]


# sandbox-community/echo: a community model, so it runs only by version.


def echo_output(label: str, inputs: dict[str, Any]) -> str:
    """What a version answers: its label, then the text (repeated, maybe upper-cased)."""
    separator = inputs.get("separator", " ")
    text = separator.join([inputs["text"]] * inputs.get("repeat", 1))
    if inputs.get("uppercase"):
        text = text.upper()
    return f"echo {label}: {text}"


def predict_echo(label: str) -> Predict:
    async def predict(prediction: "Prediction", inputs: dict[str, Any]) -> None:
        prediction.log(f"echo {label} says hello")
        prediction.set_output(echo_output(label, inputs))

    return predict


ECHO_TEXT = prop("text", "string", 0, "What to say back.")
ECHO_SEPARATOR = prop("separator", "string", 2, "Put between repeats.", default=" ")
ECHO = DemoModel(
    owner="sandbox-community",
    name="echo",
    title="Community echo",
    description="Says its input back, naming the version that ran (a community model: "
    "run it by version).",
    streams=False,
    iterator=False,
    is_official=False,
    created_at="2024-03-01T09:00:00.000000Z",
    example_input={"text": "hello"},
)
ECHO.versions = [
    Version(
        "v3",
        ECHO.ref,
        "2025-04-01T09:00:00.000000Z",
        "0.13.7",
        cog_schema(
            {
                "text": ECHO_TEXT,
                "repeat": prop(
                    "repeat", "integer", 1, "How often.", default=2, minimum=1, maximum=10
                ),
                "uppercase": prop("uppercase", "boolean", 3, "Shout it.", default=False),
            },
            {"type": "string"},
            required=["text"],
        ),
        predict_echo("v3"),
    ),
    Version(
        "v2",
        ECHO.ref,
        "2024-09-01T09:00:00.000000Z",
        "0.11.1",
        cog_schema(
            {
                "text": ECHO_TEXT,
                "repeat": prop(
                    "repeat", "integer", 1, "How often.", default=1, minimum=1, maximum=5
                ),
                "separator": ECHO_SEPARATOR,
            },
            {"type": "string"},
            required=["text"],
        ),
        predict_echo("v2"),
    ),
    Version(
        "v1",
        ECHO.ref,
        "2024-03-01T09:00:00.000000Z",
        "0.9.9",
        cog_schema(
            {"text": ECHO_TEXT, "separator": ECHO_SEPARATOR}, {"type": "string"}, required=["text"]
        ),
        predict_echo("v1"),
    ),
]


# Default examples: each model's `default_example` is a real run of its latest version.


def _text_example(model: DemoModel, base_url: str) -> tuple[Any, str | None]:
    prompt = model.example_input["prompt"]
    return text_tokens(prompt, derive_seed(prompt), model.example_input["max_tokens"]), None


def _image_example(model: DemoModel, base_url: str) -> tuple[Any, str | None]:
    example_id, filename = model.example_id(), "out-0.webp"
    if outputs.get(example_id, filename) is None:  # drawn once, again if evicted
        prompt = model.example_input["prompt"]
        content = render_image(prompt, 256, 256, derive_seed(prompt), "webp")
        outputs.put(example_id, filename, "image/webp", content)
    return [f"{base_url}delivery/{example_id}/{filename}"], None


def _slow_example(model: DemoModel, base_url: str) -> tuple[Any, str | None]:
    return SLOW_INPUT["message"]["default"], None


def _fail_example(model: DemoModel, base_url: str) -> tuple[Any, str | None]:
    return ["partial 1 "], model.example_input["message"]


def _echo_example(model: DemoModel, base_url: str) -> tuple[Any, str | None]:
    return echo_output("v3", {"repeat": 2, **model.example_input}), None


TEXT.example_input, TEXT.example = {"prompt": "Once upon a time", "max_tokens": 16}, _text_example
IMAGE.example_input = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256}
IMAGE.example = _image_example
SLOW.example_input, SLOW.example = {"seconds": 1}, _slow_example
FAIL.example_input = {"message": "Sandbox model failed on purpose", "steps": 1}
FAIL.example = _fail_example
ECHO.example = _echo_example

MODELS: dict[str, DemoModel] = {model.ref: model for model in (TEXT, IMAGE, SLOW, FAIL, ECHO)}
_VERSIONS: dict[str, tuple[DemoModel, Version]] = {
    version.id: (model, version) for model in MODELS.values() for version in model.versions
}


def find_model(owner: str, name: str) -> DemoModel | None:
    return MODELS.get(f"{owner}/{name}")


def find_version(version_id: str) -> tuple[DemoModel, Version] | None:
    return _VERSIONS.get(version_id)
