"""The profile's `setup:` requests: sent once, in order, before the preflight.

Real batch APIs write into something that must exist first (an SQS queue, a CouchDB database).
The kit creates it through the target's own API, as a client would, and a setup request that is
not answered as declared stops the run with the preflight's ERROR: never a run of meaningless
verdicts against a target that was not ready.
"""
from __future__ import annotations

import json
from typing import Any

from ._client import Target


def run_setup(target: Target) -> str | None:
    """Send every setup request; None when all were answered as expected, else the reason."""
    steps: list[dict[str, Any]] = list(target.profile.get("setup") or [])
    for n, step in enumerate(steps, 1):
        method = step.get("method", "POST")
        headers = dict(step.get("headers") or {})
        content = None
        if "body" in step:
            content = json.dumps(step["body"], ensure_ascii=False).encode("utf-8")
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = target.envelope.content_type
        resp = target.request(method, step["path"], content=content, headers=headers,
                              note=f"setup request {n} of {len(steps)}")
        wanted = step.get("expect")
        done = resp.status_code in wanted if wanted else 200 <= resp.status_code < 300
        if not done:
            return (f"setup request {n} ({method} {step['path']}) got {resp.status_code}"
                    f" (expected {wanted or '2xx'}); check the profile's setup list")
    return None
