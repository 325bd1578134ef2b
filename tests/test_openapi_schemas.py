"""The one OpenAPI reader's schema walk (`conformance._openapi`): it knows which keys of a schema hold
subschemas, which hold maps of name to subschema, and which hold data. An annotation keyword
(`title`, `description`, `example`, `default`, ...) is dropped only where it is a keyword: a
property *named* `title` is a member of the instance, and `enum`, `const` and `examples` values are
data, kept as written. Real APIs have items with a `title` or `description` field; a reader that
drops them compares (PAR-03) against a schema the document never stated."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from conformance import Verdict
from conformance import _openapi as openapi
from conftest import run_kit

# An item schema of the kind real APIs publish: members named like annotation keywords, required,
# and nothing else allowed.
ITEM = {
    "type": "object",
    "title": "An item",
    "description": "What an item is",
    "required": ["title", "description", "amount"],
    "additionalProperties": False,
    "properties": {
        "title": {"$ref": "#/components/schemas/Title"},
        "description": {"type": "string", "description": "the item's description", "maxLength": 500},
        "example": {"type": "boolean", "default": False},
        "default": {"type": "integer", "examples": [1]},
        "deprecated": {"type": "boolean", "deprecated": True},
        "examples": {"type": "array", "items": {"type": "string", "title": "one example"}},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
        "kind": {"enum": [{"title": "a", "description": "first"}, {"title": "b"}]},
        "tag": {"const": {"title": "fixed", "$ref": "#/components/schemas/Title"}},
    },
    "patternProperties": {"^title$": {"type": "string"}, "^x-": {"description": "vendor"}},
    "dependentSchemas": {"description": {"required": ["title"], "title": "dependent"}},
}

DOC = {
    "openapi": "3.1.0",
    "info": {"title": "items", "version": "1"},
    "paths": {
        "/orders": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Item"}}}}, "responses": {"201": {"description": "ok"}}}},
        "/orders/batch": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/BatchRequest"}}}}, "responses": {"200": {"description": "ok"}}}},
    },
    "components": {"schemas": {
        "Title": {"type": "string", "title": "Title", "description": "the item's title", "maxLength": 200,
                  "example": "a title"},
        "Item": ITEM,
        "BatchRequest": {"type": "object", "properties": {
            # The item schema written out by hand (not the same $ref): PAR-03 compares the two.
            "operations": {"type": "array", "items": copy.deepcopy(ITEM)},
            "atomic": {"type": "boolean"}}},
    }},
}


def test_properties_named_like_annotations_are_kept():
    item = openapi.resolved(DOC, {"$ref": "#/components/schemas/Item"})
    assert set(item["properties"]) == set(ITEM["properties"])
    assert item["required"] == ["title", "description", "amount"]
    assert item["additionalProperties"] is False
    # The $ref is inlined and the annotations *of* each property schema are dropped.
    assert item["properties"]["title"] == {"type": "string", "maxLength": 200}
    assert item["properties"]["description"] == {"type": "string", "maxLength": 500}
    assert item["properties"]["example"] == {"type": "boolean"}
    assert item["properties"]["default"] == {"type": "integer"}
    assert item["properties"]["deprecated"] == {"type": "boolean"}
    assert item["properties"]["examples"] == {"type": "array", "items": {"type": "string"}}
    # The schema's own annotations are dropped.
    assert "title" not in {k for k in item if k != "properties"} and "description" not in item


def test_the_schema_is_what_a_validator_means():
    """The resolved schema accepts a valid item and refuses one without its `title`, as the document says."""
    from jsonschema import Draft202012Validator

    item = openapi.resolved(DOC, {"$ref": "#/components/schemas/Item"})
    valid = {"title": "t", "description": "d", "amount": 1, "kind": {"title": "b"},
             "tag": {"title": "fixed", "$ref": "#/components/schemas/Title"}}
    assert not list(Draft202012Validator(item).iter_errors(valid))
    missing = {k: v for k, v in valid.items() if k != "title"}
    # `required`, and dependentSchemas' `description` entry's own `required`
    assert [e.validator for e in Draft202012Validator(item).iter_errors(missing)] == ["required", "required"]


def test_maps_of_schemas_keep_their_names_and_data_is_left_as_written():
    item = openapi.resolved(DOC, {"$ref": "#/components/schemas/Item"})
    assert item["patternProperties"] == {"^title$": {"type": "string"}, "^x-": {}}
    assert item["dependentSchemas"] == {"description": {"required": ["title"]}}
    # enum and const are data: no key dropped, no $ref followed.
    assert item["properties"]["kind"] == {"enum": [{"title": "a", "description": "first"}, {"title": "b"}]}
    assert item["properties"]["tag"] == {"const": {"title": "fixed", "$ref": "#/components/schemas/Title"}}


def test_defs_and_definitions_keep_their_names_where_walked():
    doc = {"components": {"schemas": {"A": {"type": "object", "properties": {
        "definitions": {"type": "string", "title": "x"}, "$defs": {"type": "integer"}}}}}}
    a = openapi.resolved(doc, {"$ref": "#/components/schemas/A"})
    assert a == {"type": "object", "properties": {"definitions": {"type": "string"}, "$defs": {"type": "integer"}}}


def test_every_subschema_position_is_walked():
    doc = {"components": {"schemas": {"S": {"type": "string", "title": "S"}}}}
    ref = {"$ref": "#/components/schemas/S", "description": "a sibling annotation"}
    schema = {"allOf": [ref], "anyOf": [ref], "oneOf": [ref], "not": ref, "if": ref, "then": ref, "else": ref,
              "items": ref, "prefixItems": [ref], "contains": ref, "additionalProperties": ref,
              "propertyNames": ref, "unevaluatedProperties": ref, "unevaluatedItems": ref,
              "dependencies": {"a": ref, "b": ["a"]}, "default": {"title": "data"},
              "examples": [{"title": "data"}]}
    out = openapi.resolved(doc, schema)
    s = {"type": "string"}
    assert out == {"allOf": [s], "anyOf": [s], "oneOf": [s], "not": s, "if": s, "then": s, "else": s,
                   "items": s, "prefixItems": [s], "contains": s, "additionalProperties": s,
                   "propertyNames": s, "unevaluatedProperties": s, "unevaluatedItems": s,
                   "dependencies": {"a": s, "b": ["a"]}}
    # draft 4 to 2019-09 (OpenAPI 3.0, Swagger 2): `items` as an array of schemas
    assert openapi.resolved(doc, {"items": [ref, ref], "additionalItems": ref}) == {"items": [s, s],
                                                                                     "additionalItems": s}


def _visited(schema: dict[str, Any]) -> list[Any]:
    seen: list[Any] = []
    openapi.map_subschemas(schema, lambda sub: seen.append(sub) or sub)
    return seen


_DRAFTS = ("DRAFT4", "DRAFT6", "DRAFT7", "DRAFT201909", "DRAFT202012")


@pytest.mark.parametrize("draft", _DRAFTS)
def test_the_walk_visits_every_subschema_referencing_knows(draft):
    """The keyword tables agree with referencing's (the library jsonschema resolves `$ref`s with):
    every subschema it finds in a schema that uses every keyword, the walk visits too."""
    import referencing.jsonschema

    spec = getattr(referencing.jsonschema, draft)
    keywords = openapi.SUBSCHEMA | openapi.SUBSCHEMA_ARRAY | openapi.SUBSCHEMA_MAP
    for items_as_array in (False, True) if draft != "DRAFT202012" else (False,):  # an array: drafts 4 to 2019-09
        schema: dict[str, Any] = {}
        for key in sorted(keywords):
            if key in openapi.SUBSCHEMA_MAP:
                schema[key] = {"name": {"$comment": key}}
            elif key in openapi.SUBSCHEMA_ARRAY and (key != "items" or items_as_array):
                schema[key] = [{"$comment": key}, {"$comment": key + " again"}]
            else:
                schema[key] = {"$comment": key}
        theirs = {id(sub) for sub in spec.subresources_of(schema)}
        ours = {id(sub) for sub in _visited(schema)}
        assert theirs and theirs <= ours, [s for s in spec.subresources_of(schema) if id(s) not in ours]


def test_every_keyword_the_walk_knows_is_one_referencing_knows():
    import referencing.jsonschema

    specs = [getattr(referencing.jsonschema, d) for d in _DRAFTS]
    for key in openapi.SUBSCHEMA | openapi.SUBSCHEMA_ARRAY | openapi.SUBSCHEMA_MAP:
        marker = {"$comment": key}
        shapes = [{key: {"name": marker}}] if key in openapi.SUBSCHEMA_MAP else \
            [{key: marker}, {key: [marker]}]
        assert any(sub is marker for spec in specs for shape in shapes for sub in spec.subresources_of(shape)), key


# PAR-03 through the public path: the kit run against the reference server with `openapi_file`.

def _par03(app: Any, tmp_path, doc: dict[str, Any]):
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    report = run_kit(app, rules=["PAR-03"], overrides={"openapi_file": str(path)})
    (check,) = [c for r in report.rules if r.id == "PAR-03" for c in r.checks]
    return check


def _item(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["components"]["schemas"]["BatchRequest"]["properties"]["operations"]["items"]


def test_par03_the_same_item_schema_written_out_by_hand_passes(reference_app, tmp_path):
    check = _par03(reference_app, tmp_path, DOC)
    assert check.verdict == Verdict.PASS, check.reason


@pytest.mark.parametrize("change", [
    pytest.param(lambda item: item["properties"].update(title={"type": "integer"}), id="title-retyped"),
    pytest.param(lambda item: item["properties"]["description"].update(maxLength=50), id="description-shorter"),
    pytest.param(lambda item: item["properties"].pop("example"), id="example-member-dropped"),
    pytest.param(lambda item: item["properties"]["kind"]["enum"][1].update(title="c"), id="enum-value-differs"),
    pytest.param(lambda item: item["patternProperties"].update({"^title$": {"type": "number"}}),
                 id="pattern-property-differs"),
])
def test_par03_a_difference_in_a_member_named_like_an_annotation_warns(reference_app, tmp_path, change):
    doc = copy.deepcopy(DOC)
    change(_item(doc))
    check = _par03(reference_app, tmp_path, doc)
    assert check.verdict == Verdict.WARN, (check.verdict, check.reason)


def test_par03_annotations_alone_do_not_differ(reference_app, tmp_path):
    doc = copy.deepcopy(DOC)
    item = _item(doc)
    item["title"] = "A batch item"
    item["properties"]["description"]["description"] = "worded differently"
    item["properties"]["amount"]["examples"] = [12.5]
    item["properties"]["title"] = {"$ref": "#/components/schemas/Title", "description": "the title, again"}
    check = _par03(reference_app, tmp_path, doc)
    assert check.verdict == Verdict.PASS, check.reason
