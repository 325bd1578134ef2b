"""Issue 13: the envelope and profile forms real batch APIs need, each against a small fixture."""
from __future__ import annotations

import json

import httpx

from conformance._client import Session, Target, is_credential_header
from conformance._profile import loads as loads_profile

PROFILE = """
version: 1
target:
  base_url: http://target.test
  headers: {Authorization: "AWS4-HMAC-SHA256 Credential=abc/x, Signature=s1gn4ture", X-Tenant: acme-prod}
  redact: [X-Tenant]
classes: [CORE]
endpoints:
  batch: {method: POST, path: /, headers: {X-Amz-Target: Kinesis_20131202.PutRecords, X-Amz-Security-Token: tok-99999}}
items:
  id_field: Id
  valid: [{Data: "eA=="}]
envelope:
  content_type: application/x-amz-json-1.1
  request_items: /Records
"""


def test_operation_headers_are_not_secrets_only_credentials_and_marked_ones():
    profile = loads_profile(PROFILE, env={})
    secrets = profile.secrets()
    assert "Kinesis_20131202.PutRecords" not in secrets
    assert "tok-99999" in secrets and "acme-prod" in secrets
    assert any("s1gn4ture" in s for s in secrets)
    assert is_credential_header("X-Amz-Security-Token") and not is_credential_header("X-Amz-Target")

    evidence: list = []
    target = Target(Session(profile, httpx.MockTransport(lambda r: httpx.Response(200, json={"Records": []}))),
                    evidence)
    target.batch([{"Id": "a", "Data": "eA=="}])
    (ex,) = evidence
    assert ex.request_headers["X-Amz-Target"] == "Kinesis_20131202.PutRecords"
    assert ex.request_headers["X-Amz-Security-Token"] == "<redacted>"
    assert ex.request_headers["X-Tenant"] == "<redacted>"
    # the replay runs as printed: the operation header is literal, credentials come from the environment
    assert "'X-Amz-Target: Kinesis_20131202.PutRecords'" in ex.curl
    assert '"X-Amz-Security-Token: $BATCHSPEC_X_AMZ_SECURITY_TOKEN"' in ex.curl
    assert "s1gn4ture" not in json.dumps(ex.to_dict())
