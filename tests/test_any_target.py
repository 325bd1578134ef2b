"""Issue 13: the envelope and profile forms real batch APIs need, each against a small fixture."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from conformance._client import Session, Target, is_credential_header
from conformance._profile import loads as loads_profile

HERE = __import__("pathlib").Path(__file__).resolve().parent / "foreign"

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


# -- item fields at any depth: a bare name is /name; an unusable form is refused with exit 2 -------

NESTED = """version: 1
target:
  base_url: http://target.test
classes: [CORE]
endpoints:
  batch: {method: POST, path: /batch}
items:
  id_field: {id_field}
  valid: [{{entry: {{key: {{}}}}, qty: 1}}]
"""


def test_item_id_at_any_depth_and_bare_name_is_a_pointer():
    from conformance.checks import ItemFactory, mixed_batch  # noqa: F401

    nested = loads_profile(NESTED.replace("{id_field}", "/entry/key/value").replace("{{", "{").replace("}}", "}"),
                           env={})
    f = ItemFactory(nested, "run")
    item = f.valid(1)[0]
    assert item["entry"]["key"]["value"] == f.id_of(item) and item["qty"] == 1
    assert f.id_field == "entry" and f.id_pointer == "/entry/key/value"
    again = f.valid(1)[0]
    assert f.id_of(again) != f.id_of(item)  # the template is copied deeply: ids never leak between items
    bare = loads_profile(NESTED.replace("{id_field}", "ref").replace("{{", "{").replace("}}", "}"), env={})
    g = ItemFactory(bare, "run")
    one = g.valid(1)[0]
    assert g.id_pointer == "/ref" and g.id_of(one) == one["ref"]


@pytest.mark.parametrize("value, why", [
    ("entry/key", "did you mean /entry/key"),
    ("entry.key", "a dotted path is not a pointer"),
    ('"#/entry/key"', "URI fragment"),
    ("/entry//key", "empty member name"),
    ("/entry/", "empty member name"),
    ("/a~2b", "~0"),
    ('""', "whole document"),
])
def test_unusable_item_field_is_refused_naming_key_and_line(value, why, tmp_path):
    from conformance._profile import ProfileError

    text = NESTED.replace("{id_field}", value).replace("{{", "{").replace("}}", "}")
    with pytest.raises(ProfileError, match=rf"items\.id_field \(line 8\): .*{re.escape(why)}"):
        loads_profile(text, env={})
    path = tmp_path / "p.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", "--profile", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "items.id_field (line 8)" in proc.stderr + proc.stdout


def test_unusable_envelope_pointer_is_refused():
    from conformance._profile import ProfileError

    text = NESTED.replace("{id_field}", "id").replace("{{", "{").replace("}}", "}") + "envelope:\n  result_id: Entry/Id\n"
    with pytest.raises(ProfileError, match=r"envelope\.result_id \(line 11\): 'Entry/Id'"):
        loads_profile(text, env={})


# -- verdicts found wrong on real targets: regression tests against small fixtures ----------------

def _tally(bugs: frozenset[str] = frozenset(), rules: list[str] | None = None, envelope: dict | None = None):
    import conformance
    from conformance import ASGIThreadTransport, load_profile
    from conformance._profile import from_data
    from foreign.tally_rpc import create_app

    profile = load_profile(HERE / "tally_rpc.yaml")
    if envelope:
        profile = from_data({**profile.data, "envelope": {**profile.data["envelope"], **envelope}}, "tally variant")
    transport = ASGIThreadTransport(create_app(bugs))
    try:
        return {r.id: r for r in conformance.run(profile, transport=transport, rules=rules).rules}
    finally:
        transport.close()


def test_mixed_batch_refused_as_a_whole_fails_the_per_item_rules_not_error():
    got = _tally(frozenset({"refuses_whole_batch"}), rules=["HTTP-01", "CORE-02"])
    for rid in ("HTTP-01", "CORE-02"):
        assert got[rid].verdict.value == "FAIL", (rid, got[rid].verdict, got[rid].reason)
    assert "refused as a whole" in got["CORE-02"].reason


def test_duplicate_ids_answered_per_item_pass_only_where_declared():
    declared = _tally(frozenset({"duplicates_per_item"}), ["CORE-07"], {"duplicate_ids": "per_item"})
    assert declared["CORE-07"].verdict.value == "PASS", declared["CORE-07"].reason
    undeclared = _tally(frozenset({"duplicates_per_item"}), ["CORE-07"])
    assert undeclared["CORE-07"].verdict.value == "FAIL" and "per_item" in undeclared["CORE-07"].reason


def _empty_batch_gets_an_empty_object(app):
    """A 2xx whose result list is absent for an empty batch (absent means empty, as the schema says)."""
    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            body, more = b"", True
            while more:
                msg = await receive()
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and doc.get("operations") == []:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
                await send({"type": "http.response.body", "body": b"{}"})
                return
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()
            return await app(scope, replay, send)
        return await app(scope, receive, send)
    return wrapped


def test_size05_passes_a_2xx_whose_result_list_is_absent(tmp_path):
    from conftest import run_kit
    from reference_server import create_app

    report = run_kit(_empty_batch_gets_an_empty_object(create_app(str(tmp_path / "ref.db"))), rules=["SIZE-05"])
    got = {r.id: r for r in report.rules}["SIZE-05"]
    assert got.verdict.value == "PASS", got.reason


# -- failure-only results: a list of failures naming their index, a map of failures keyed by table --

def _beacon(bugs: frozenset[str] = frozenset(), rules: list[str] | None = None, envelope: dict | None = None):
    import conformance
    from conformance import ASGIThreadTransport, load_profile
    from conformance._profile import from_data
    from foreign.beacon_events import create_app

    profile = load_profile(HERE / "beacon_events.yaml")
    env = {k: v for k, v in profile.data["envelope"].items() if k != "results"}
    profile = from_data({**profile.data, "envelope": {**env, **(envelope or {})}}, "beacon variant")
    transport = ASGIThreadTransport(create_app(bugs))
    try:
        return {r.id: r for r in conformance.run(profile, transport=transport, rules=rules).rules}
    finally:
        transport.close()


FAILURES_BY_INDEX = {"results_mode": "failures_only", "results_error": "/failures", "result_index": "/index"}


def test_failure_only_list_correlated_by_index_passes_and_catches_its_defects():
    got = _beacon(frozenset({"failures_index"}), envelope=FAILURES_BY_INDEX)
    bad = {k: (r.verdict.value, r.reason) for k, r in got.items() if r.verdict.value not in ("PASS", "SKIP")}
    assert not bad, bad
    assert "failure-only" in got["CORE-02"].reason  # what could not be observed is said
    assert got["CORE-09"].verdict.value == "PASS" and "indexes" in got["CORE-09"].reason
    # failures listed in any order still name their items: legal in this dialect
    reordered = _beacon(frozenset({"failures_index", "reversed_entries"}), ["CORE-02", "CORE-09", "HTTP-03"],
                        FAILURES_BY_INDEX)
    assert all(r.verdict.value == "PASS" for k, r in reordered.items() if k in ("CORE-02", "CORE-09", "HTTP-03"))
    for bug, rule in (("drops_entry", "CORE-02"), ("invents_entry", "CORE-02"), ("fake_ok", "HTTP-03"),
                      ("wrong_failed_count", "CORE-08"), ("drops_entry", "CORE-09"), ("invents_entry", "CORE-09")):
        caught = _beacon(frozenset({"failures_index", bug}), [rule], FAILURES_BY_INDEX)[rule]
        assert caught.verdict.value == "FAIL", (bug, rule, caught.verdict.value, caught.reason)


def test_failure_only_answer_without_the_dialect_declared_is_not_read_as_success():
    """The same answer, read with the full-list mapping, has no result list: the preflight says so."""
    got = _beacon(frozenset({"failures_index"}), ["CORE-02"], {"results": "/entries"})
    assert got["CORE-02"].verdict.value == "ERROR"


# -- a read that is not GET path/{id}; the single endpoint's resource pointer ---------------------

READ_TEMPLATE = """
version: 1
target: {base_url: "http://kv.test"}
endpoints:
  batch: {method: POST, path: /, headers: {X-Amz-Target: DynamoDB_20120810.BatchWriteItem}}
  single: {method: POST, path: /, headers: {X-Amz-Target: DynamoDB_20120810.PutItem}, resource: /Attributes}
  read:
    method: POST
    path: /
    headers: {X-Amz-Target: DynamoDB_20120810.GetItem, X-Trace: "get-{id}"}
    query: {consistent: "true", k: "{id}"}
    body: {TableName: t, Key: {pk: {S: "{id}"}}, Tags: ["{id}-x", 3]}
    resource: /Item
    not_found: [404]
items:
  id_field: /PutRequest/Item/pk/S
  valid: [{PutRequest: {Item: {n: {N: "1"}}}}]
envelope:
  content_type: application/x-amz-json-1.0
"""


def test_read_template_puts_the_id_anywhere_and_reads_the_resource_at_its_pointer():
    seen: list[httpx.Request] = []
    stored = {"a/1": {"pk": {"S": "a/1"}, "n": {"N": "1"}}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        key = json.loads(request.content)["Key"]["pk"]["S"]
        if key == "gone":
            return httpx.Response(404, json={"__type": "ResourceNotFoundException"})
        return httpx.Response(200, json={"Item": stored[key]} if key in stored else {})

    target = Target(Session(loads_profile(READ_TEMPLATE, env={}), httpx.MockTransport(handler)), [])
    assert target.read_json("a/1") == stored["a/1"]  # the resource at /Item, not the whole answer
    req = seen[-1]
    assert req.method == "POST" and req.url.path == "/"
    assert json.loads(req.content) == {"TableName": "t", "Key": {"pk": {"S": "a/1"}}, "Tags": ["a/1-x", 3]}
    assert req.headers["X-Amz-Target"] == "DynamoDB_20120810.GetItem" and req.headers["X-Trace"] == "get-a/1"
    assert req.url.params["k"] == "a/1" and req.url.params["consistent"] == "true"
    assert req.headers["content-type"] == "application/x-amz-json-1.0"
    assert target.exists("a/1")
    assert not target.exists("b")  # 200 {}: no Item is not found
    assert target.read_json("b") is None
    assert not target.exists("gone")  # a declared not-found status
    single = httpx.Response(200, json={"Attributes": {"n": 1}, "ConsumedCapacity": {}})
    assert target.resource_of("single", single) == {"n": 1}


def test_read_path_template_keeps_working_and_an_undeclared_status_is_a_setup_error():
    from conformance._client import SetupError

    profile = loads_profile(READ_TEMPLATE.replace("""  read:
    method: POST
    path: /""", """  read:
    method: GET
    path: "/items/{id}\"""").replace("    body: {TableName: t, Key: {pk: {S: \"{id}\"}}, Tags: [\"{id}-x\", 3]}\n", "")
                            .replace("    resource: /Item\n", "").replace("    not_found: [404]\n", ""), env={})
    answers = {"/items/x": httpx.Response(200, json={"pk": "x"}), "/items/y": httpx.Response(410),
               "/items/z": httpx.Response(500)}
    target = Target(Session(profile, httpx.MockTransport(lambda r: answers[r.url.path])), [])
    assert target.read_json("x") == {"pk": "x"} and not target.exists("y")  # default not-found: 404, 410
    with pytest.raises(SetupError):
        target.exists("z")


def test_par01_compares_the_single_resource_at_its_pointer():
    """tally_rpc's single endpoint answers {"item": ...}: with endpoints.single.resource PAR-01 compares
    the item; without it, the whole answer, which is not the batch's data."""
    import conformance
    from conformance import ASGIThreadTransport, load_profile
    from conformance._profile import from_data
    from foreign.tally_rpc import create_app

    base = load_profile(HERE / "tally_rpc.yaml")
    assert base.get("endpoints.single.resource") == "/item"
    whole = from_data({**base.data, "endpoints": {**base.data["endpoints"],
                                                  "single": {"method": "POST", "path": "/rpc/items"}}}, "tally variant")
    for profile, verdict in ((base, "PASS"), (whole, "FAIL")):
        transport = ASGIThreadTransport(create_app())
        try:
            got = {r.id: r for r in conformance.run(profile, transport=transport, rules=["PAR-01"]).rules}["PAR-01"]
        finally:
            transport.close()
        assert got.verdict.value == verdict, (verdict, got.reason)


def test_single_endpoint_takes_the_declared_part_of_a_batch_item():
    profile = loads_profile(READ_TEMPLATE.replace(
        "resource: /Attributes}", "resource: /Attributes, item: /PutRequest, body: {TableName: t}}"), env={})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    target = Target(Session(profile, httpx.MockTransport(handler)), [])
    target.single({"PutRequest": {"Item": {"pk": {"S": "a"}, "n": {"N": "1"}}}})
    assert json.loads(seen[-1].content) == {"TableName": "t", "Item": {"pk": {"S": "a"}, "n": {"N": "1"}}}
    assert seen[-1].headers["X-Amz-Target"] == "DynamoDB_20120810.PutItem"


def test_delete_is_a_template_like_read():
    profile = loads_profile(READ_TEMPLATE.replace("  read:\n", """  delete:
    method: POST
    path: /
    headers: {X-Amz-Target: DynamoDB_20120810.DeleteItem}
    body: {TableName: t, Key: {pk: {S: "{id}"}}}
  read:
"""), env={})
    seen: list[httpx.Request] = []
    target = Target(Session(profile, httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, json={}))), [])
    target.for_item("delete", "a b")
    assert json.loads(seen[-1].content) == {"TableName": "t", "Key": {"pk": {"S": "a b"}}}
    assert seen[-1].headers["X-Amz-Target"] == "DynamoDB_20120810.DeleteItem"


FAILURES_BY_KEY = {"results_mode": "failures_only", "results_error": "/errors", "failures_form": "id_map",
                   "error": "", "error_code": "/code", "error_message": "/message",
                   "error_retryable": "/data/retryable"}


def test_failure_only_map_keyed_by_item_id_passes_and_catches_its_defects():
    got = _tally(frozenset({"failures_by_key"}), envelope=FAILURES_BY_KEY)
    bad = {k: (r.verdict.value, r.reason) for k, r in got.items() if r.verdict.value not in ("PASS", "SKIP")}
    assert not bad, bad
    declared = _tally(frozenset({"failures_by_key", "duplicates_per_item"}), ["CORE-07"],
                      {**FAILURES_BY_KEY, "duplicate_ids": "per_item"})
    assert declared["CORE-07"].verdict.value == "PASS", declared["CORE-07"].reason
    for bug, rule in (("drops_result", "CORE-02"), ("invents_result", "CORE-02"), ("fake_ok", "HTTP-03"),
                      ("phantom_reads", "PART-02")):
        caught = _tally(frozenset({"failures_by_key", bug}), [rule], FAILURES_BY_KEY)[rule]
        assert caught.verdict.value == "FAIL", (bug, rule, caught.verdict.value, caught.reason)
