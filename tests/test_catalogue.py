"""The catalogue is the single source: every rule of the spec, each either checked or pending."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import conformance.suites
from conformance import _catalogue, _schemas

SPEC = Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"


def checked_rules() -> dict[str, list[str]]:
    """Rule id -> the checks marked with it, found by importing every suite module."""
    out: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(conformance.suites.__path__):
        if not info.name.startswith("test_"):
            continue
        mod = importlib.import_module(f"conformance.suites.{info.name}")
        for name, fn in vars(mod).items():
            if not name.startswith("test_") or not callable(fn):
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "rule":
                    out.setdefault(mark.args[0], []).append(f"{info.name}::{name}")
    return out


def test_catalogue_validates_against_its_schema():
    assert _schemas.errors("catalogue.schema.json", _catalogue.raw()) == []


def test_every_rule_is_checked_or_pending_never_both():
    cat = _catalogue.load()
    checks = checked_rules()
    unknown = sorted(set(checks) - {r.id for r in cat.rules})
    assert not unknown, f"checks marked with rules the catalogue does not have: {unknown}"
    neither = [r.id for r in cat.rules if not r.pending and r.id not in checks]
    both = [r.id for r in cat.rules if r.pending and r.id in checks]
    assert not neither, f"rules with no check that are not marked pending: {neither}"
    assert not both, f"rules marked pending although a check exists (remove the flag): {both}"


def test_every_check_quotes_its_rule():
    cat = _catalogue.load()
    for info in pkgutil.iter_modules(conformance.suites.__path__):
        if not info.name.startswith("test_"):
            continue
        mod = importlib.import_module(f"conformance.suites.{info.name}")
        for name, fn in vars(mod).items():
            for mark in getattr(fn, "pytestmark", []) if name.startswith("test_") else []:
                if mark.name == "rule":
                    rule = cat.get(mark.args[0])
                    doc = (fn.__doc__ or "").strip()
                    assert doc.startswith(f"{rule.id} {rule.level}"), f"{info.name}::{name} must quote {rule.id}"


@pytest.mark.skipif(not SPEC.exists(), reason="../shared/SPEC.md is not beside this checkout")
def test_catalogue_matches_the_spec():
    spec = {}
    for line in SPEC.read_text().splitlines():
        m = re.match(r"^- ([A-Z]+-[0-9]{2}) (MUST NOT|MUST|SHOULD|MAY): (.*)$", line)
        if m:
            spec[m.group(1)] = (m.group(2), m.group(3))
    cat = _catalogue.load()
    assert [r.id for r in cat.rules] == list(spec)
    for r in cat.rules:
        assert (r.level, r.title) == spec[r.id], r.id


def test_pending_rules_report_pending_never_pass():
    from conformance._engine import RunContext
    from conformance import bundled_profile

    ctx = RunContext(profile=bundled_profile())
    ctx.preflight = {"ok": True}
    report = ctx.build_report()
    for r in report.rules:
        rule = _catalogue.load().get(r.id)
        if rule.pending and ctx.declared(rule):
            assert r.verdict.value == "PENDING"
        elif rule.pending:
            assert r.verdict.value == "SKIP", "a pending rule of an undeclared class is SKIP, never PASS"
        else:
            assert r.verdict.value != "PASS", "a rule whose checks did not run must not PASS"
