"""Every wire schema in ``schemas/`` is a valid draft 2020-12 schema, its cross-file refs resolve,
and its examples under ``schemas/examples/<stem>/{valid,invalid}/*.json`` behave as labelled.

Table-driven: any schema or example another engineer adds is picked up automatically.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
ID_PREFIX = "https://batchspec.dev/schemas/"

SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.json"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _registry() -> Registry:
    resources = []
    for path in SCHEMA_FILES:
        schema = _load(path)
        resources.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


def _examples() -> list[Any]:
    cases = []
    for stem_dir in sorted((SCHEMA_DIR / "examples").glob("*")):
        if not stem_dir.is_dir():
            continue
        for kind in ("valid", "invalid"):
            for path in sorted((stem_dir / kind).glob("*.json")):
                cases.append(pytest.param(stem_dir.name, kind, path, id=f"{stem_dir.name}/{kind}/{path.stem}"))
    return cases


def test_there_are_schemas() -> None:
    names = {p.name for p in SCHEMA_FILES}
    for required in ("order.schema.json", "batch-item.schema.json", "batch-request.schema.json",
                     "result.schema.json", "batch-response.schema.json", "error.schema.json",
                     "job.schema.json"):
        assert required in names


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_schema_is_valid_against_its_metaschema(path: Path) -> None:
    schema = _load(path)
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    assert schema.get("$id") == ID_PREFIX + path.name
    validator_for(schema).check_schema(schema)


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.append(ref)
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_every_ref_resolves(path: Path) -> None:
    schema = _load(path)
    resolver = _registry().resolver(base_uri=schema["$id"])
    for ref in _refs(schema):
        resolver.lookup(ref)  # raises on an unresolvable reference


def test_every_schema_has_examples() -> None:
    stems = {p.name[: -len(".schema.json")] for p in SCHEMA_FILES if p.name.endswith(".schema.json")}
    ours = {"order", "batch-item", "batch-request", "result", "batch-response", "error", "job"}
    for stem in ours & stems:
        assert list((SCHEMA_DIR / "examples" / stem / "valid").glob("*.json")), stem
        assert list((SCHEMA_DIR / "examples" / stem / "invalid").glob("*.json")), stem


@pytest.mark.parametrize(("stem", "kind", "path"), _examples())
def test_example(stem: str, kind: str, path: Path) -> None:
    schema_path = SCHEMA_DIR / f"{stem}.schema.json"
    assert schema_path.exists(), f"example directory {stem!r} has no schemas/{stem}.schema.json"
    schema = _load(schema_path)
    cls = validator_for(schema)
    validator = cls(schema, registry=_registry())
    errors = list(validator.iter_errors(_load(path)))
    if kind == "valid":
        assert not errors, [e.message for e in errors]
    else:
        assert errors, f"{path} should be invalid against {schema_path.name}"
