"""Profiles: validation errors name the field and line; ${ENV} interpolation; the bundled ones load."""
from __future__ import annotations

import pytest

from conformance import ProfileError, bundled_profile, loads_profile
from conformance._profile import bundled_text

MINIMAL = """\
target:
  base_url: http://127.0.0.1:8000
endpoints:
  batch: {path: /orders/batch}
items:
  valid: [{amount: 1, currency: USD}]
"""


def test_bundled_reference_profile_loads_with_defaults():
    p = bundled_profile()
    assert p.get("limits.max_items") == 1000
    assert p.envelope["results"] == "/results"
    assert p.classes[0] == "CORE"


def test_starter_profile_is_valid():
    p = loads_profile(bundled_text("starter"), env={})
    assert p.base_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (MINIMAL.replace("target:", "tagret:"), "unknown key 'tagret'; did you mean 'target'?"),
        (MINIMAL.replace("  base_url:", "  timout: 3\n  base_url:"), "target.timout (line 2): unknown key 'timout'"),
        (MINIMAL.replace("{path: /orders/batch}", "{path: /orders/batch, metod: POST}"), "endpoints.batch.metod (line 4)"),
        (MINIMAL.replace("http://127.0.0.1:8000", "ftp://x"), "target.base_url (line 2)"),
        (MINIMAL + "classes: [CORE, NOPE]\n", "classes[1] (line 7)"),
        (MINIMAL + "limits: {max_items: lots}\n", "limits.max_items (line 7)"),
        ("target: [", "not valid YAML"),
        ("- just a list\n", "a profile is a YAML mapping"),
    ],
)
def test_errors_name_the_field_and_line(text, needle):
    with pytest.raises(ProfileError) as exc:
        loads_profile(text, "p.yaml", env={})
    assert needle in str(exc.value)
    assert str(exc.value).startswith("p.yaml")


def test_env_interpolation_and_defaults():
    text = MINIMAL.replace("  base_url: http://127.0.0.1:8000",
                           "  base_url: ${URL:-http://127.0.0.1:1}\n  headers: {Authorization: \"Bearer ${TOKEN}\"}")
    p = loads_profile(text, env={"TOKEN": "s3cret-token"})
    assert p.base_url == "http://127.0.0.1:1"
    assert p.target["headers"]["Authorization"] == "Bearer s3cret-token"
    assert "Bearer s3cret-token" in p.secrets()
    with pytest.raises(ProfileError, match=r"target.headers.Authorization \(line 3\): environment variable TOKEN is not set"):
        loads_profile(text, env={})


def test_a_password_in_the_base_url_is_a_secret():
    p = loads_profile(MINIMAL.replace("http://127.0.0.1:8000", "http://user:pa55word-x@127.0.0.1:8000"), env={})
    assert "pa55word-x" in p.secrets()


# -- failure-only results and the read template: unusable combinations are refused, naming key and line --

FOREIGN = MINIMAL + """envelope:
  results_mode: failures_only
  results_error: /Failed
"""


@pytest.mark.parametrize(("text", "needle"), [
    (FOREIGN.replace("  results_error: /Failed\n", ""),
     "envelope.results_mode (line 8): failures_only needs envelope.results_error"),
    (FOREIGN + "  results_ok: /Successful\n", "envelope.results_ok (line 10): a failure-only answer has no list"),
    (FOREIGN + "  correlation: position\n", "envelope.correlation (line 10): position correlation of a failure-only"),
    (FOREIGN + "  results_error_x: 1\n", "unknown key 'results_error_x'"),
    (FOREIGN + "  failures_form: id_map\n  correlation: position\n  result_index: /i\n",
     "envelope.failures_form (line 10): id_map keys the failures by the item id"),
    (FOREIGN + "  failures_form: tree\n", "envelope.failures_form (line 10)"),
    (FOREIGN + "  result_index: index/n\n", "envelope.result_index (line 10): 'index/n'"),
    (FOREIGN + "  result_index: /index\n", "envelope.result_index (line 10): result_index correlates"),
    (MINIMAL + "envelope:\n  results_error: /Failed\n", "envelope.results_error (line 8): a failure list alone needs"),
    (MINIMAL + "envelope:\n  failures_form: map\n", "envelope.failures_form (line 8): failures_form is read only"),
    (MINIMAL.replace("  batch: {path: /orders/batch}", "  batch: {path: /orders/batch}\n  read: {method: POST, path: /get,"
                     " body: {Key: k}}"), "endpoints.read (line 5): the item id appears nowhere"),
    (MINIMAL.replace("  batch: {path: /orders/batch}", "  batch: {path: /orders/batch}\n  read: {path: \"/o/{id}\","
                     " resource: Item/x}"), "endpoints.read.resource (line 5): 'Item/x'"),
    (MINIMAL.replace("  batch: {path: /orders/batch}", "  batch: {path: /orders/batch}\n  delete: {method: POST, path: /del,"
                     " body: {Key: k}}"), "endpoints.delete (line 5): the item id appears nowhere in the delete"),
    (MINIMAL.replace("  batch: {path: /orders/batch}", "  batch: {path: /orders/batch}\n  read: {path: \"/o/{id}\","
                     " not_found: [200000]}"), "endpoints.read.not_found[0] (line 5)"),
    (MINIMAL.replace("  batch: {path: /orders/batch}", "  batch: {path: /orders/batch}\n  single: {path: /o,"
                     " resource: \"#/item\"}"), "endpoints.single.resource (line 5): '#/item'"),
])
def test_failure_only_and_read_template_errors_name_key_and_line(text, needle):
    with pytest.raises(ProfileError) as exc:
        loads_profile(text, "p.yaml", env={})
    assert needle in str(exc.value), str(exc.value)


def test_failure_only_and_read_template_profiles_load():
    p = loads_profile(FOREIGN + "  failures_form: map\n  result_id: /PutRequest/Item/pk/S\n", env={})
    assert p.envelope["results_mode"] == "failures_only" and p.envelope["failures_form"] == "map"
    q = loads_profile(MINIMAL.replace("  batch: {path: /orders/batch}", """  batch: {path: /orders/batch}
  read:
    method: POST
    path: /
    headers: {X-Amz-Target: DynamoDB_20120810.GetItem}
    body: {TableName: t, Key: {pk: {S: "{id}"}}}
    resource: /Item
    not_found: [404]"""), env={})
    assert q.get("endpoints.read.resource") == "/Item"
    assert loads_profile(MINIMAL, env={}).envelope["results_mode"] == "all"


def test_a_failure_only_profile_error_exits_2_naming_key_and_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "p.yaml"
    path.write_text(FOREIGN + "  results_ok: /Successful\n")
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", "--profile", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "envelope.results_ok (line 10)" in proc.stderr and "Traceback" not in proc.stderr
