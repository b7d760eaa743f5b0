"""/api/openapi.json: the gateway described by Replicate's own OpenAPI document
(predictions/replicate-openapi.json, as Replicate publishes it), cut to the operations the
gateway serves and pointed at this console."""

import copy
import functools
import json
from pathlib import Path
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

REPLICATE_SPEC = Path(__file__).with_name("replicate-openapi.json")
REPLICATE_BASE = "https://api.replicate.com/v1"

# What the gateway serves: path → methods (Replicate's paths, relative to /v1).
SERVED = {
    "/account": ["get"],
    "/models": ["get"],
    "/models/{model_owner}/{model_name}": ["get"],
    "/models/{model_owner}/{model_name}/predictions": ["post"],
    "/models/{model_owner}/{model_name}/versions": ["get"],
    "/models/{model_owner}/{model_name}/versions/{version_id}": ["get"],
    "/predictions": ["get", "post"],
    "/predictions/{prediction_id}": ["get"],
    "/predictions/{prediction_id}/cancel": ["post"],
    "/files": ["get", "post"],
    "/files/{file_id}": ["get", "delete"],
    "/files/{file_id}/download": ["get"],
    "/webhooks/default/secret": ["get"],
}


@functools.cache
def _replicate_spec() -> dict[str, Any]:
    return json.loads(REPLICATE_SPEC.read_text())


def gateway_spec(api_base: str) -> dict[str, Any]:
    """The gateway's OpenAPI document, for a gateway at `api_base` (…/api/v1)."""
    source = _replicate_spec()
    paths = {}
    for path, methods in SERVED.items():
        item = source["paths"][path]
        paths[path] = {key: item[key] for key in item if key in methods or key == "parameters"}
    described = {"paths": paths, "components": _components_used(paths, source["components"])}
    # Replicate's examples call api.replicate.com: these call this console.
    described = json.loads(json.dumps(described).replace(REPLICATE_BASE, api_base))
    spec = {
        "openapi": source["openapi"],
        "info": {
            "title": "Replicate console gateway",
            "version": source["info"]["version"],
            "description": (
                "Replicate's HTTP API, served by this console: use Replicate's own clients "
                "with a personal key from /account/keys/ and this server as the base URL. "
                "Predictions run through the console: its catalogue, quotas and history."
            ),
        },
        "servers": [{"url": api_base}],
        "security": source["security"],
        **described,
    }
    scheme = spec["components"].setdefault("securitySchemes", {})
    scheme["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "A personal API key from this console's /account/keys/ page.",
    }
    return spec


def _components_used(paths: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The components the paths refer to, and those they refer to, transitively."""
    used: dict[str, dict[str, Any]] = {}
    pending = [paths]
    while pending:
        for ref in _refs(pending.pop()):
            _, _, kind, name = ref.split("/", 3)  # "#/components/<kind>/<name>"
            if name not in used.setdefault(kind, {}):
                used[kind][name] = copy.deepcopy(components[kind][name])
                pending.append(used[kind][name])
    return used


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


@login_not_required
@require_GET
def openapi_json(request: HttpRequest) -> JsonResponse:
    api_base = request.build_absolute_uri("/api/v1").rstrip("/")
    return JsonResponse(gateway_spec(api_base), json_dumps_params={"indent": 1})
