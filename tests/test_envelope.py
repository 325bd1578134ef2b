"""The envelope mapping: every shape the profile schema documents is read as the spec's results."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from conformance import _profile
from conformance._envelope import Envelope, is_json_media_type

ROOT = Path(__file__).resolve().parent.parent


def resp(doc, status=200, ctype="application/json") -> httpx.Response:
    return httpx.Response(status, content=json.dumps(doc).encode(), headers={"content-type": ctype})


def test_canonical_defaults():
    env = Envelope()
    assert env.canonical and env.body([{"id": "a"}]) == {"operations": [{"id": "a"}]}
    r = env.results(resp({"results": [{"id": "a", "status": "ok", "data": {"x": 1}},
                                      {"id": "b", "status": "error", "error": {"code": "c", "message": "m"}}]}))
    assert [(x.id, x.ok, x.error_code, x.error_message) for x in r] == [("a", True, None, None), ("b", False, "c", "m")]


def test_split_lists_sqs():
    env = Envelope({"request_items": "/Entries", "request_fields": {"QueueUrl": "q"}, "results_ok": "/Successful",
                    "results_error": "/Failed", "result_id": "/Id", "data": "/MessageId", "error": "",
                    "error_code": "/Code", "error_message": "/Message", "error_sender_fault": "/SenderFault"}, "Id")
    assert env.body([{"Id": "a"}]) == {"QueueUrl": "q", "Entries": [{"Id": "a"}]}
    doc = {"Successful": [{"Id": "a", "MessageId": "m1"}],
           "Failed": [{"Id": "b", "SenderFault": True, "Code": "InvalidParameterValue", "Message": "bad"}]}
    by_id = env.result_map(resp(doc))
    assert by_id["a"].ok is True and by_id["a"].data == "m1" and by_id["a"].error is None
    assert by_id["b"].ok is False and by_id["b"].error_code == "InvalidParameterValue" and by_id["b"].retryable is False
    assert not env.canonical and env.split_results
    assert env.raw_results({"Successful": []}) == []  # an omitted empty list counts as empty
    assert env.raw_results({"Other": []}) is None


def test_error_presence_couchdb():
    env = Envelope({"request_items": "/docs", "results": "", "error_present": "/error", "data": "/rev",
                    "error": "/error", "error_code": "/error", "error_message": "/reason"}, "_id")
    r = env.results(resp([{"ok": True, "id": "a", "rev": "1-x"}, {"id": "b", "error": "conflict", "reason": "r"}], 201))
    assert [(x.id, x.ok, x.data, x.error_code) for x in r] == [("a", True, "1-x", None), ("b", False, None, "conflict")]


def test_position_and_http_status():
    env = Envelope({"request_items": "", "results": "/outcomes", "correlation": "position",
                    "result_http_status": "/http", "data": "/entry", "error": "/problem",
                    "error_code": "/problem/kind", "summary": {"total": "/tally/n"}}, "ref")
    items = [{"ref": "a"}, {"ref": "b"}, {"ref": "c"}]
    assert env.body(items) == items
    doc = {"outcomes": [{"http": 201, "entry": {}}, {"http": 422, "problem": {"kind": "k"}}, {"http": "x"}],
           "tally": {"n": 3}}
    by_id = env.result_map(resp(doc), items)
    assert (by_id["a"].ok, by_id["b"].ok, by_id["c"].ok) == (True, False, None)
    assert by_id["b"].id == "b" and by_id["b"].error_code == "k"
    assert env.summary(resp(doc)) == {"total": 3}


def test_batch_error_code_pattern_and_several_names():
    env = Envelope({"batch_error_code": "/__type", "batch_error_pattern": "#(\\w+)$", "batch_error_message": "/message",
                    "codes": {"batch_too_large": "TooManyEntriesInBatchRequest", "duplicate_id": ["conflict", "dup"]}})
    r = resp({"__type": "com.amazonaws.sqs#TooManyEntriesInBatchRequest", "message": "Maximum 10; you sent 11"}, 400,
             "application/x-amz-json-1.0")
    assert env.error_code(r) == "TooManyEntriesInBatchRequest"
    assert env.has_error_code(r, "batch_too_large") and not env.has_error_code(r, "batch_empty")
    assert env.error_message(r) == "Maximum 10; you sent 11" and env.error_shape(r).startswith("declared")
    assert env.code("duplicate_id") == "conflict" and env.has_error_code(resp({"error": "dup"}), "duplicate_id")
    # The canonical forms are always read too; the canonical envelope reads nothing at /__type.
    assert Envelope().error_codes(resp({"error": "batch_too_large"})) == ["batch_too_large"]
    assert Envelope().error_codes(r) == [] and Envelope().error_message(r) == "Maximum 10; you sent 11"
    assert "batch_too_large" in env.error_codes(resp({"error": "batch_too_large"}))


@pytest.mark.parametrize("ctype, is_json", [("application/json", True), ("application/problem+json", True),
                                            ("application/x-amz-json-1.0", True), ("text/plain", False),
                                            ("application/jsonl", False), ("text/html; charset=utf-8", False)])
def test_json_media_types(ctype, is_json):
    assert is_json_media_type(ctype) is is_json


def test_every_envelope_key_is_documented_in_schema_and_starter():
    schema = json.loads((ROOT / "schemas" / "profile.schema.json").read_text())
    props = schema["$defs"]["envelope"]["properties"]
    starter = (ROOT / "conformance" / "profiles" / "starter.yaml").read_text()
    for key, spec in props.items():
        assert spec.get("description"), f"envelope.{key} has no description in the profile schema"
        assert re.search(rf"^#\s+(#\s+)?{key}:", starter, re.M), f"envelope.{key} missing from starter.yaml"
    assert schema["properties"]["setup"]["description"] and "setup:" in starter


@pytest.mark.parametrize("name", ["sqs-moto", "couchdb-pouchdb"])
def test_bundled_third_party_profiles_validate(name):
    prof = _profile.bundled(name)
    assert prof.get("setup")


# -- failure-only results (envelope.results_mode: failures_only) ---------------------------------

DYNAMO_LIKE = {"request_items": "/RequestItems/t", "results_mode": "failures_only", "results_error": "/UnprocessedItems",
               "failures_form": "map", "result_id": "/PutRequest/Item/pk/S", "error": "", "error_code": "/Code",
               "batch_error_code": "/__type", "batch_error_pattern": "#(\\w+)$"}


def _put(key):
    return {"PutRequest": {"Item": {"pk": {"S": key}, "n": {"N": "1"}}}}


def test_failure_only_map_keyed_by_table_with_nested_item_keys():
    env = Envelope(DYNAMO_LIKE, "/PutRequest/Item/pk/S")
    sent = [_put("a"), _put("b"), _put("c")]
    doc = {"UnprocessedItems": {"t": [{**_put("b"), "Code": "Throttled"}]}}
    by_id = env.result_map(resp(doc), sent)
    assert by_id["b"].ok is False and by_id["b"].error_code == "Throttled" and by_id["b"].extra["map_key"] == "t"
    # absent from the failures: succeeded, by the answer's silence (no entry, no data)
    assert by_id["a"].ok is True and by_id["a"].implied and by_id["a"].raw is None
    assert by_id["c"].ok is True and by_id["c"].position == 2
    assert [r.id for r in env.results(resp(doc))] == ["b"]  # results(): the entries the answer holds
    assert env.failures_only and env.failures_map and not env.split_results and not env.canonical
    # an empty map, or no member at all, is no failure; another form is no result list
    assert env.raw_results({"UnprocessedItems": {}}) == [] and env.raw_results({}) == []
    assert env.raw_results({"UnprocessedItems": [_put("a")]}) is None and env.raw_results("text") is None
    # several map members, each a list (or one entry): all are failures
    two = {"UnprocessedItems": {"t": [_put("a")], "u": _put("c")}}
    assert sorted(r.id for r in env.results(two)) == ["a", "c"]


def test_failure_only_refusal_is_not_read_as_success():
    """A 4xx (or a 2xx carrying a batch-level error code) lists no failure, and means nothing was applied."""
    env = Envelope(DYNAMO_LIKE, "/PutRequest/Item/pk/S")
    sent = [_put("a")]
    refusal = {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": "bad"}
    assert env.result_map(resp(refusal, 400), sent) == {}
    assert env.result_map(refusal, sent) == {}  # the body alone: its error code says it is a refusal
    assert not env.answered(resp({"UnprocessedItems": {}}, 500))
    assert env.result_map(resp({"UnprocessedItems": {}}), sent)["a"].ok is True


def test_failure_only_list_correlated_by_index():
    env = Envelope({"results_mode": "failures_only", "results_error": "/failures", "correlation": "position",
                    "result_index": "/index", "error": "", "error_code": "/code"}, None)
    from conformance._envelope import bind_id

    sent = [{"x": 1}, {"x": 2}, {"x": 3}]
    for i, item in enumerate(sent):
        bind_id(item, f"k{i}")
    doc = {"failures": [{"index": 2, "code": "bad"}, {"index": "0", "code": "bad"}, {"index": 9, "code": "x"}]}
    res = env.results(doc)
    assert [r.extra["index"] for r in res] == [2, 0, 9]
    assert [env.entry_id(r, sent) for r in res] == ["k2", "k0", None]  # 9 names no item: an invented failure
    by_id = env.result_map(doc, sent)
    assert by_id["k0"].ok is False and by_id["k2"].ok is False and by_id["k1"].ok is True and None not in by_id


def test_failure_only_failed_atomic_batch_implies_no_success():
    env = Envelope(DYNAMO_LIKE, "/PutRequest/Item/pk/S")
    doc = {"status": "failed", "UnprocessedItems": {"t": [{**_put("b"), "Code": "bad"}]}}
    by_id = env.result_map(doc, [_put("a"), _put("b")])
    assert "a" not in by_id and by_id["b"].ok is False


def test_failure_only_list_correlated_by_id_sqs_like():
    env = Envelope({"request_items": "/Entries", "results_mode": "failures_only", "results_error": "/Failed",
                    "result_id": "/Id", "error": "", "error_code": "/Code", "error_message": "/Message"}, "Id")
    sent = [{"Id": "a"}, {"Id": "b"}]
    doc = {"Failed": [{"Id": "b", "Code": "InvalidParameterValue", "Message": "DelaySeconds"}]}
    by_id = env.result_map(resp(doc), sent)
    assert by_id["a"].ok is True and by_id["a"].implied
    assert by_id["b"].ok is False and by_id["b"].error_message == "DelaySeconds" and not by_id["b"].implied
    assert env.result_map(resp({}), sent)["b"].ok is True  # Failed left out: no failure
    assert env.raw_results({"Failed": {"b": {}}}) is None  # a map where a list is declared: no result list


def test_failure_only_map_keyed_by_item_id():
    env = Envelope({"results_mode": "failures_only", "results_error": "/errors", "failures_form": "id_map",
                    "error": "", "error_code": "/code", "error_message": "/message"}, "id")
    sent = [{"id": "a"}, {"id": "b"}]
    by_id = env.result_map(resp({"errors": {"b": {"code": "invalid", "message": "qty"}}}), sent)
    assert by_id["b"].ok is False and by_id["b"].error_code == "invalid" and by_id["a"].ok is True
    assert [r.id for r in env.results({"errors": {"zz": {"code": "x"}}})] == ["zz"]  # an id no item had


def test_error_shape_is_the_body_not_its_label():
    # HTTP-05 judges one body SHAPE: a problem body is problem+json whatever its label (a middleware that
    # labels it application/json does not change what a client parses); the label is reported apart.
    env = Envelope()
    problem = {"type": "https://errors.example.com/batch_empty", "title": "batch empty", "status": 400,
               "detail": "no operations", "code": "batch_empty"}
    labelled = resp(problem, 400, "application/problem+json")
    plain = resp(problem, 415, "application/json")
    assert env.error_shape(labelled) == env.error_shape(plain) == "problem+json"
    assert (env.media_label(labelled), env.media_label(plain)) == ("application/problem+json", "application/json")
    # RFC 9457 members are optional: the label still names an object that has none of them.
    assert env.error_shape(resp({"status": 400}, 400, "application/problem+json")) == "problem+json"
    assert env.error_shape(resp({"detail": "too large"}, 413, "application/json")) is None
    assert env.error_shape(resp({"error": "x", "message": "m"}, 400)) == "{error: code, message}"


@pytest.mark.parametrize("body", [
    b'{"a": 1, "b": [1.5, -0.0, 1e16, 5e-324, 1.7976931348623157e308], "c": null, "d": true}',
    b'{"a": 1, "a": 2}',  # duplicate keys: the last wins in both
    b'123456789012345678901234567890', b'-9999999999999999999', b'18446744073709551616',  # past 64 bits
    b'{"id": 12345678901234567890123}', b'[1e400, -1e400]', b'NaN', b'[Infinity, -Infinity]',
    b'"\\ud800"', b'"\\ud83d\\ude00"', b'\xef\xbb\xbf{"bom": 1}', '{"utf16": 1}'.encode("utf-16"),
    '{"é": "ü"}'.encode(), b'  {"spaces": 1}  ', b'"\\u0000"', b'-0', b'1E+2',
    b'', b'{', b'[1,]', b'\xff', b'{"a":1}\x00', b'"\t"', b"[" * 1100 + b"]" * 1100,
])
def test_loads_json_is_json_loads(body):
    """The kit's fast JSON reading (orjson, the stdlib where they could differ) gives what json.loads
    gives, value for value and type for type (a big integer stays an int), or fails as it fails."""
    import json

    from conformance._envelope import loads_json

    def outcome(parse):
        try:
            value = parse(body)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
            return "fails", type(exc).__name__
        try:
            return "reads", repr(value)
        except RecursionError:  # a value too deep to show: compared by its shape's depth instead
            return "reads", "deep"

    assert outcome(loads_json) == outcome(json.loads)
