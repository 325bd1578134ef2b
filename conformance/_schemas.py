"""Loading the JSON Schemas of `schemas/` and validating documents against them."""
from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_BASE = "https://batchspec.dev/schemas/"


def schemas_dir() -> Any:
    """The schema folder: the checkout's `schemas/`, else the wheel's data package.

    The checkout wins because an editable install also leaves a copy in site-packages, which goes
    stale as soon as a schema is edited."""
    checkout = Path(__file__).resolve().parent.parent / "schemas"
    if checkout.joinpath("batch-request.schema.json").is_file():
        return checkout
    try:
        files = importlib.resources.files("batchspec_schemas")
        if files.joinpath("batch-request.schema.json").is_file():
            return files
    except (ModuleNotFoundError, TypeError):
        pass
    return checkout


@functools.lru_cache(maxsize=None)
def load_all() -> dict[str, dict[str, Any]]:
    """Every schema by file name (e.g. `profile.schema.json`)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in schemas_dir().iterdir():
        if entry.name.endswith(".schema.json"):
            out[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
    return out


@functools.lru_cache(maxsize=None)
def registry() -> Registry:
    resources = []
    for name, schema in load_all().items():
        res = Resource.from_contents(schema, default_specification=DRAFT202012)
        resources.append((schema.get("$id", SCHEMA_BASE + name), res))
        resources.append((SCHEMA_BASE + name, res))
    return Registry().with_resources(resources)


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_all()[name]
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry(), format_checker=cls.FORMAT_CHECKER)


def errors(name: str, document: Any) -> list[str]:
    """Human-readable validation errors of `document` against schema `name`, best first."""
    out = []
    for err in sorted(validator(name).iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = "/" + "/".join(str(p) for p in err.absolute_path)
        out.append(f"{where}: {err.message}")
    return out
