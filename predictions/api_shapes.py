"""Replicate's JSON shapes for the console's predictions: what the gateway answers and what
the webhooks it delivers carry. Absolute URLs start with `base`, the console as the caller
reached it (scheme and host)."""

import re
import uuid
from datetime import datetime
from typing import Any

from django.core import signing
from django.urls import reverse

from .models import Prediction, User

# The console's statuses in Replicate's words: only `queued` differs.
STATUSES: dict[str, str] = {Prediction.Status.QUEUED: "starting"}
# Where the runner points an output at our archived copy (reverse("predictions:file")).
OWN_FILE_PATH = re.compile(r"^/predictions/(?P<pk>[0-9a-f-]{36})/files/(?P<position>\d+)/\Z")

# As on Replicate, `urls.stream` is a capability: unguessable, one per prediction, readable
# without the API key (Replicate's JavaScript client reads it that way). Ours is the
# prediction id signed with the project's secret key, so nothing is stored for it.
_STREAM_SIGNER = signing.Signer(salt="predictions.sse.stream")


def stream_url(prediction_id: uuid.UUID | str) -> str:
    """The path of the prediction's event stream."""
    token = _STREAM_SIGNER.sign(str(prediction_id)).replace(":", ".")
    return reverse("api:stream", args=[token])


def streamed_prediction(token: str) -> uuid.UUID | None:
    """The prediction a stream token names, or None if it is not one of ours."""
    try:
        return uuid.UUID(_STREAM_SIGNER.unsign(token.replace(".", ":")))
    except (signing.BadSignature, ValueError):
        return None


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def public_output(base: str, prediction_id: uuid.UUID, value: Any) -> Any:
    """The output as a program gets it: our archived copies as absolute gateway URLs (the
    same key reads them), and no upstream URL (it expires, and wants our token): a file
    that was not archived reads null."""
    if isinstance(value, str):
        match = OWN_FILE_PATH.match(value)
        if match:
            if match["pk"] != str(prediction_id):
                return None
            return base + reverse("api:file", args=[prediction_id, int(match["position"])])
        return None if value.startswith(("http://", "https://")) else value
    if isinstance(value, list):
        return [public_output(base, prediction_id, item) for item in value]
    if isinstance(value, dict):
        return {k: public_output(base, prediction_id, item) for k, item in value.items()}
    return value


def output_of(prediction: Prediction) -> Any:
    """The output so far. A streaming text model's is its tokens, which the console keeps
    as one text while it runs: as a list of one string, the client joins it the same."""
    if prediction.output is None and prediction.text_output:
        return [prediction.text_output]
    return prediction.output


def prediction_json(base: str, user: User, prediction: Prediction) -> dict[str, Any]:
    pk = prediction.pk
    data: dict[str, Any] = {
        "id": str(pk),
        "model": prediction.model_ref,
        # The client needs a string; an official model run by name learns its version
        # from Replicate's answer.
        "version": prediction.version or "hidden",
        "input": prediction.input_for(user),
        "logs": prediction.logs,
        "output": public_output(base, pk, output_of(prediction)),
        "data_removed": False,
        "error": prediction.error or None,
        "status": STATUSES.get(prediction.status, prediction.status),
        "source": prediction.source,
        "created_at": iso(prediction.created_at),
        "metrics": prediction.metrics or {},
        "urls": {
            "get": base + reverse("api:prediction", args=[pk]),
            "cancel": base + reverse("api:cancel", args=[pk]),
            "stream": base + stream_url(pk),
            "web": base + reverse("predictions:detail", args=[pk]),
        },
    }
    # Left out until set, as Replicate does (the spec types them as strings, not null).
    if prediction.started_at:
        data["started_at"] = iso(prediction.started_at)
    if prediction.completed_at:
        data["completed_at"] = iso(prediction.completed_at)
    return data
