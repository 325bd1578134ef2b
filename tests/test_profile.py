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
