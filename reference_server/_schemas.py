"""Load the wire schemas: the ``batchspec_schemas`` data package in a wheel, else ``schemas/`` of the checkout."""
from __future__ import annotations

import importlib.resources
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

ID_PREFIX = "https://batchspec.dev/schemas/"
_CHECKOUT_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _schema_root() -> Any:
    """The directory holding the schema files (a Traversable).

    A checkout's `schemas/` wins: an editable install also leaves a copy in site-packages, which
    goes stale as soon as a schema is edited."""
    if _CHECKOUT_DIR.joinpath("order.schema.json").is_file():
        return _CHECKOUT_DIR
    try:
        root = importlib.resources.files("batchspec_schemas")
        if root.joinpath("order.schema.json").is_file():
            return root
    except Exception:  # not installed as a wheel (a checkout), or an unreadable namespace package
        pass
    return _CHECKOUT_DIR


@lru_cache(maxsize=None)
def load_schema(filename: str) -> dict[str, Any]:
    """Return the parsed schema ``filename`` (e.g. ``"order.schema.json"``)."""
    text = _schema_root().joinpath(filename).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_names() -> list[str]:
    """File names of every schema shipped (``*.schema.json``), sorted."""
    return sorted(p.name for p in _schema_root().iterdir() if p.name.endswith(".schema.json"))


def schemas_by_id() -> dict[str, dict[str, Any]]:
    """Every schema keyed by its ``$id`` (for resolving cross-file ``$ref``)."""
    out: dict[str, dict[str, Any]] = {}
    for name in schema_names():
        schema = load_schema(name)
        out[schema.get("$id", ID_PREFIX + name)] = schema
    return out
