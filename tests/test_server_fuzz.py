"""The reference server answers generated bodies with anything but a 5xx (hypothesis, in-process)."""
from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance import ASGIThreadTransport

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
# Items near the real shape, so generation reaches validation, dependencies and storage, not only parsing.
item_values = st.fixed_dictionaries(
    {"id": st.text(max_size=12) | st.integers()},
    optional={"amount": st.integers(-5, 10**12) | st.floats(allow_nan=False) | st.text(max_size=5),
              "currency": st.sampled_from(["USD", "EUR", "GBP", "XXX", ""]) | json_values,
              "note": st.text(max_size=20) | json_values,
              "parent_id": st.text(max_size=12) | json_values,
              "depends_on": st.lists(st.text(max_size=12), max_size=3) | json_values,
              "idempotency_key": st.text(max_size=12) | json_values},
)
batch_bodies = st.fixed_dictionaries({"operations": st.lists(item_values | json_values, max_size=6)},
                                     optional={"atomic": st.booleans() | json_values})


@pytest.fixture(scope="module")
def client():
    from reference_server import create_app

    transport = ASGIThreadTransport(create_app())
    with httpx.Client(transport=transport, base_url="http://reference.test", timeout=10) as c:
        yield c
    transport.close()


def _post(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": "application/json",
                                                        "Authorization": "Bearer fuzz"})


@SETTINGS
@given(body=batch_bodies)
def test_batch_shaped_bodies_never_5xx(client, body):
    resp = _post(client, "/orders/batch", json.dumps(body).encode())
    assert resp.status_code < 500, resp.text


@SETTINGS
@given(body=json_values)
def test_any_json_never_5xx(client, body):
    for path in ("/orders/batch", "/orders"):
        resp = _post(client, path, json.dumps(body).encode())
        assert resp.status_code < 500, resp.text


@SETTINGS
@given(body=st.binary(max_size=200))
def test_any_bytes_never_5xx(client, body):
    resp = _post(client, "/orders/batch", body)
    assert resp.status_code < 500, resp.text
