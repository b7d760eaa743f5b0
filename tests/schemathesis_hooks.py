"""schemathesis hooks for tests/sandbox/test_sandbox_schema.py (loaded through SCHEMATHESIS_HOOKS).

The spec's example create names `replicate/hello-world`, which the sandbox does not have;
its example input ({"text": "Alice"}) suits the community echo model, so the example is
sent with an echo version instead and reaches a real 201 that schemathesis then checks.
Generated versions are left as they are (the dictionary in the config adds real ones).
"""

import os
from typing import Any

import schemathesis

SPEC_EXAMPLE_MODEL = "replicate/hello-world"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if isinstance(body, dict) and str(body.get("version", "")).startswith(SPEC_EXAMPLE_MODEL):
        case.body = {**body, "version": os.environ["SANDBOX_EXAMPLE_VERSION"]}
