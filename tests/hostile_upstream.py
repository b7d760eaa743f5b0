"""A hostile Replicate for tests: real HTTP, answers shaped like Replicate's, content not.

The sandbox's demo models are well behaved; real models are not bound to be. This server
speaks just enough of the API for the official client (create, get, cancel; no stream, so
the console polls), and what each prediction returns is chosen by its `prompt` (see `scenarios`):
NUL characters and lone surrogates in output, logs and errors, output nested too deep,
HTML and SVG files, and a create whose answer is lost. Fixture: ``hostile_upstream`` is
its base URL (give it to an ApiToken).
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HTML = b"<!doctype html><script>document.title='pwned'</script><h1>hi</h1>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def scenarios(base: str) -> dict[str, dict[str, Any]]:
    """What each prompt's prediction ends as (its final GET)."""
    return {
        "nul-text": {
            "status": "succeeded",
            "output": ["Hello\x00", " world\ud800", "!"],
            "logs": "step\x00 1\nstep \udfff2\n",
        },
        "nul-error": {
            "status": "failed",
            "output": None,
            "logs": "about to fail\x00\n",
            "error": "broke\x00 at \ud800 here",
        },
        "deep": {"status": "succeeded", "output": nested(200), "logs": ""},
        # json.dumps writes these as the bare words NaN and Infinity, as some servers do.
        "not-finite": {"status": "succeeded", "output": {"score": math.nan, "max": math.inf}},
        "files": {
            "status": "succeeded",
            "output": [f"{base}/delivery/page.html", f"{base}/delivery/picture.svg"],
            "logs": "",
        },
        # The create is carried out, but its answer never arrives (the connection drops).
        "lost-create": {"status": "succeeded", "output": "made once", "logs": ""},
        "markup": {
            "status": "succeeded",
            "output": "<script>alert('out')</script><img src=x onerror=alert(1)>",
            "logs": "<b>bold</b>\n",
        },
    }


class HostileUpstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.predictions: dict[str, dict[str, Any]] = {}
        self.reads: dict[str, int] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def create(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        with self.lock:
            pid = f"hostile{next(self.ids):06d}"
        prediction = {
            "id": pid,
            "model": model,
            "version": body.get("version") or "hostile-version",
            "status": "starting",
            "input": body.get("input") or {},
            "output": None,
            "logs": "",
            "error": None,
            "metrics": {},
            "created_at": now,
            "started_at": None,
            "completed_at": None,
            "data_removed": False,
            "urls": {
                "get": f"{self.base}/v1/predictions/{pid}",
                "cancel": f"{self.base}/v1/predictions/{pid}/cancel",
            },
        }
        self.predictions[pid] = prediction
        self.reads[pid] = 0
        return prediction

    def read(self, pid: str) -> dict[str, Any]:
        """starting → processing (part of the logs) → the scenario's end."""
        prediction = self.predictions[pid]
        self.reads[pid] += 1
        if prediction["status"] in {"succeeded", "failed", "canceled"}:
            return prediction
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        end = scenarios(self.base).get(str(prediction["input"].get("prompt")))
        if end is None or self.reads[pid] == 1:
            prediction.update(status="processing", started_at=now)
            prediction["logs"] = (end or {}).get("logs", "")[:5]
        else:
            prediction.update(end, completed_at=now, metrics={"predict_time": 0.1})
        return prediction


class Handler(BaseHTTPRequestHandler):
    server: HostileUpstream

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        # json.dumps writes NUL as \u0000 and a lone surrogate as \ud800: valid JSON text.
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # http.server's names
        parts = self.path.strip("/").split("/")
        if parts == ["v1", "predictions"]:
            newest_first = sorted(self.server.predictions.values(), key=lambda p: p["id"])[::-1]
            self.answer(200, {"next": None, "previous": None, "results": newest_first})
            return
        if parts[:2] == ["v1", "predictions"] and len(parts) == 3:
            if parts[2] in self.server.predictions:
                self.answer(200, self.server.read(parts[2]))
                return
        elif self.path == "/delivery/page.html":
            self.answer(200, HTML, "text/html")
            return
        elif self.path == "/delivery/picture.svg":
            self.answer(200, SVG, "image/svg+xml")
            return
        self.answer(404, {"title": "Not found", "detail": "Not found.", "status": 404})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        parts = self.path.strip("/").split("/")
        if parts == ["v1", "predictions"] or (
            parts[:2] == ["v1", "models"] and parts[4:] == ["predictions"]
        ):
            model = "hostile/model" if len(parts) == 2 else f"{parts[2]}/{parts[3]}"
            prediction = self.server.create(body, model)
            if prediction["input"].get("prompt") == "lost-create":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.answer(201, prediction)
        elif parts[:2] == ["v1", "predictions"] and parts[3:] == ["cancel"]:
            prediction = self.server.predictions[parts[2]]
            if prediction["status"] not in {"succeeded", "failed"}:
                prediction["status"] = "canceled"
            self.answer(200, prediction)
        else:
            self.answer(404, {"title": "Not found", "detail": "Not found.", "status": 404})


@pytest.fixture(scope="session")
def hostile_upstream() -> Iterator[str]:
    server = HostileUpstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.base
    server.shutdown()
