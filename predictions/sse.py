"""The gateway's server-sent events: a prediction's `urls.stream`, as Replicate serves it.

As on Replicate, the stream URL is a capability: unguessable, one per prediction, and
readable without the API key (Replicate's JavaScript client reads it that way). Ours is
the prediction id signed with the project's secret key, so nothing is stored for it.
"""

import uuid

from django.core import signing
from django.urls import reverse

_SIGNER = signing.Signer(salt="predictions.sse.stream")


def stream_url(prediction_id: uuid.UUID | str) -> str:
    """The path of the prediction's event stream (the caller makes it absolute)."""
    token = _SIGNER.sign(str(prediction_id)).replace(":", ".")
    return reverse("api:stream", args=[token])


def streamed_prediction(token: str) -> uuid.UUID | None:
    """The prediction a stream token names, or None if it is not one of ours."""
    try:
        return uuid.UUID(_SIGNER.unsign(token.replace(".", ":")))
    except (signing.BadSignature, ValueError):
        return None
