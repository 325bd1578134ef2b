"""URLs a target hands out for a job (the 202's status_url and Location) are URI references (RFC 3986
§5, RFC 9110 §10.2.2): the kit resolves them against the URI of the request that returned them, never
joins them onto the profile's base path like an `endpoints.*` template.

Legal variations real APIs use (an API under a path prefix that hands out path-absolute URLs,
relative references, absolute URLs) must pass ASYNC-01..ASYNC-05, with the profile's endpoints.job
template and without it (the kit then polls the status URL the target gave). A status URL on
another host is not followed (SPEC §5: the kit sends nothing anywhere but the target), and the PASS
says it was not observed.
"""
from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

import conformance
from conformance import ASGIThreadTransport, Verdict
from conftest import reference_profile
from mutants._base import Call, Rewrite

JOBS = "/imports/batch"
PREFIX = "/v1"
JUDGED = ["ASYNC-01", "ASYNC-02", "ASYNC-03", "ASYNC-04", "ASYNC-05"]


def _on_202(app: Any, rewrite) -> Any:
    """`rewrite(call, doc)` on every 202 that names a status URL (the async endpoint, Prefer: respond-async)."""
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 202 and isinstance(doc, dict) and isinstance(doc.get("status_url"), str):
            rewrite(call, doc)
            call.set_response_json(doc)
    return Rewrite(app, method="POST", path=lambda p: p in (JOBS, "/orders/batch"), response=fn)


def _under_prefix(app: Any) -> Any:
    """The API served under /v1 only (base URL http://reference.test/v1); anything else is a 404."""
    async def prefixed(scope, receive, send):
        if scope["type"] == "http":
            p = scope["path"]
            if p != PREFIX and not p.startswith(PREFIX + "/"):
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body",
                            "body": orjson.dumps({"error": "not_found", "message": "no such path"})})
                return
            p = p[len(PREFIX):] or "/"
            scope = dict(scope, path=p, raw_path=p.encode())
        await app(scope, receive, send)
    prefixed.router = app.router  # type: ignore[attr-defined]
    return prefixed


def prefix_path_absolute(app: Any) -> Any:
    """Under /v1; status_url and Location are path-absolute: /v1/imports/batch/<id>."""
    def rewrite(call: Call, doc: dict) -> None:
        doc["status_url"] = PREFIX + doc["status_url"]
        call.set_response_header("location", doc["status_url"])
    return _under_prefix(_on_202(app, rewrite))


def absolute_status_url_relative_location(app: Any) -> Any:
    """status_url an absolute URL on the target's host; Location `batch/<id>`, relative to the
    request URI /imports/batch."""
    def rewrite(call: Call, doc: dict) -> None:
        path = doc["status_url"]
        doc["status_url"] = f"http://{call.header('host') or 'reference.test'}{path}"
        call.set_response_header("location", "batch/" + path.rsplit("/", 1)[-1])
    return _on_202(app, rewrite)


def prefix_relative_references(app: Any) -> Any:
    """Under /v1; status_url and Location both `batch/<id>`, relative to /v1/imports/batch."""
    def rewrite(call: Call, doc: dict) -> None:
        doc["status_url"] = "batch/" + doc["status_url"].rsplit("/", 1)[-1]
        call.set_response_header("location", doc["status_url"])
    return _under_prefix(_on_202(app, rewrite))


def status_url_on_another_host(app: Any) -> Any:
    """status_url and Location on an internal host the kit must not call."""
    def rewrite(call: Call, doc: dict) -> None:
        doc["status_url"] = "http://jobs-worker.internal:8080" + doc["status_url"]
        call.set_response_header("location", doc["status_url"])
    return _on_202(app, rewrite)


VARIATIONS = {
    "prefix_path_absolute": (prefix_path_absolute, PREFIX),
    "absolute_status_url_relative_location": (absolute_status_url_relative_location, ""),
    "prefix_relative_references": (prefix_relative_references, PREFIX),
    "reference": (lambda app: app, ""),
}


def _run(app: Any, prefix: str, *, job_template: bool, rules: list[str]) -> conformance.RunReport:
    prof = reference_profile("http://reference.test" + prefix)
    if not job_template:  # poll the status URL the target gave
        data = copy.deepcopy(prof.data)
        del data["endpoints"]["job"]
        prof = conformance._profile.from_data(data, "reference profile without endpoints.job")
    transport = ASGIThreadTransport(app)
    try:
        return conformance.run(prof, transport=transport, rules=rules)
    finally:
        transport.close()


@pytest.mark.parametrize("job_template", [True, False], ids=["endpoints.job", "status_url"])
@pytest.mark.parametrize("name", list(VARIATIONS))
def test_handed_out_urls_are_resolved_against_the_request(name, job_template, tmp_path):
    from reference_server import create_app

    build, prefix = VARIATIONS[name]
    report = _run(build(create_app(str(tmp_path / "j.db"))), prefix, job_template=job_template,
                  rules=JUDGED + ["ASYNC-07", "ASYNC-12"])
    got = {r.id: r for r in report.rules}
    assert report.preflight.get("ok"), report.preflight
    for rid in JUDGED:
        assert got[rid].verdict == Verdict.PASS, (rid, got[rid].verdict, got[rid].reason)
    for rid in ("ASYNC-07", "ASYNC-12"):  # the unknown id's URL and a re-read are built from the status URL too
        assert got[rid].verdict == Verdict.PASS, (rid, got[rid].verdict, got[rid].reason)
    sent = {ex.url for r in report.rules for c in r.checks for ex in c.evidence}
    assert not [u for u in sent if "/v1/v1/" in u or "/imports/batch/batch/" in u], sorted(sent)[:10]
    if prefix:
        assert all(u.startswith("http://reference.test" + prefix + "/") for u in sent), sorted(sent)[:10]


def test_status_url_on_another_host_is_not_followed_and_says_so(tmp_path):
    from reference_server import create_app

    report = _run(status_url_on_another_host(create_app(str(tmp_path / "j.db"))), "", job_template=True,
                  rules=["ASYNC-01"])
    rule = next(r for r in report.rules if r.id == "ASYNC-01")
    assert rule.verdict == Verdict.PASS, rule.reason
    notes = [n for c in rule.checks for n in c.observed]
    assert len([n for n in notes if "another host" in n]) == 2, notes  # the status URL and the Location
    sent = {ex.url for c in rule.checks for ex in c.evidence}
    assert not [u for u in sent if "internal" in u], sent


def test_handed_out_url_resolution_and_other_instances():
    """RFC 3986 §5 resolution against the creating request's URI; another instance of the service
    (FLEET, Target.on) reads the same job under its own base URL; another host is not followed."""
    from types import SimpleNamespace

    import httpx

    from conformance._jobs import Accepted, Jobs

    prof = reference_profile("http://a.test/v1")

    def jobs_on(base: str) -> Jobs:
        return Jobs(SimpleNamespace(base_url=base, profile=prof), None)  # type: ignore[arg-type]

    resp = httpx.Response(202, request=httpx.Request("POST", "http://a.test/v1/imports/batch?x=1"))
    acc = Accepted(resp, 7, "/v1/imports/batch/7", "batch/7", "http://a.test/v1")
    a, b = jobs_on("http://a.test/v1"), jobs_on("http://b.test/v1")
    assert a.handed_out(acc, acc.status_url) == "http://a.test/v1/imports/batch/7"
    assert a.handed_out(acc, acc.location) == "http://a.test/v1/imports/batch/7"
    assert a.handed_out(acc, "?page=2") == "http://a.test/v1/imports/batch?page=2"
    assert a.handed_out(acc, "//other.test/v1/imports/batch/7") is None
    assert b.handed_out(acc, acc.location) == "http://b.test/v1/imports/batch/7"
    assert b.handed_out(acc, "http://a.test/v1/imports/batch/7?sig=a%2Bb") == "http://b.test/v1/imports/batch/7?sig=a%2Bb"
    assert b.handed_out(acc, "http://c.test/imports/batch/7") is None
    assert a.same_host("batch/7", resp) and not a.same_host("http://c.test/x", resp)
