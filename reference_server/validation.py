"""Item validation: validators compiled once from the wire schemas, errors mapped to per-item codes.

Codes: ``missing_field`` (a required member is absent), ``unknown_field`` (a member the schema does
not allow), ``invalid_<field>`` for a bad value or type of ``<field>`` (``invalid_amount``,
``invalid_currency``, ``invalid_id``, ...). Every error names its field and is ``retryable: false``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema

from ._schemas import schemas_by_id
from .errors import MISSING_FIELD, UNKNOWN_FIELD, item_error

ItemError = dict[str, Any]


def _compile(schema_id: str) -> Callable[[Any], Any]:
    by_id = schemas_by_id()

    def fetch(uri: str) -> dict[str, Any]:
        if uri in by_id:
            return by_id[uri]
        raise LookupError(f"unknown schema {uri}")  # never fetch anything from the network

    return fastjsonschema.compile(by_id[schema_id], handlers={"https": fetch, "http": fetch},
                                  use_formats=False)


def _field_of(path: list[str]) -> str | None:
    return path[1] if len(path) > 1 else None


def to_item_error(exc: fastjsonschema.JsonSchemaValueException, item: dict[str, Any]) -> ItemError:
    """Map a fastjsonschema failure to ``{"code", "message", "field", "retryable": false}``."""
    path = list(exc.path or [])
    field = _field_of(path)
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    if field is None and exc.rule == "required":
        required = definition.get("required") or []
        missing = next((f for f in required if f not in item), "?")
        return item_error(MISSING_FIELD, f"missing required field '{missing}'", missing)
    if field is None and exc.rule == "additionalProperties":
        allowed = definition.get("properties") or {}
        extra = next((k for k in item if k not in allowed), "?")
        return item_error(UNKNOWN_FIELD,
                          f"unknown field '{extra}' (allowed: {', '.join(allowed)})", extra)
    if field is None:
        return item_error("invalid_item", f"item {exc.message.removeprefix('data ')}")
    message = exc.message.removeprefix("data.")
    if exc.rule == "enum" and isinstance(exc.rule_definition, list):
        message = f"{field} must be one of {', '.join(map(str, exc.rule_definition))}"
    return item_error(f"invalid_{field}", message, field)


class ItemValidator:
    """Validators compiled once (at start-up) from ``order.schema.json`` and ``batch-item.schema.json``."""

    def __init__(self) -> None:
        self._order = _compile("https://batchspec.dev/schemas/order.schema.json")
        self._item = _compile("https://batchspec.dev/schemas/batch-item.schema.json")

    def check_order(self, order: dict[str, Any]) -> ItemError | None:
        """Validate a single-endpoint request; ``None`` when valid."""
        try:
            self._order(order)
        except fastjsonschema.JsonSchemaValueException as exc:
            return to_item_error(exc, order)
        return None

    def check_item(self, item: dict[str, Any]) -> ItemError | None:
        """Validate one batch item; ``None`` when valid."""
        try:
            self._item(item)
        except fastjsonschema.JsonSchemaValueException as exc:
            return to_item_error(exc, item)
        return None
