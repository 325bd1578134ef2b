"""The target's OpenAPI document: the one reader every check uses (SIZE-04, PAR-03, ATOM-05, ROB-01).

`openapi_file` is resolved against the profile's folder; operations are found by path template
(`{id}` matches `{order_id}`), also below the path of the document's first server URL.

Only local `$ref`s (`#/...`) are followed: the kit never fetches anything but the target.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

from ._envelope import pointer_get

# Keywords `resolved` drops where they are keywords of a schema (never a property of that name):
# annotations, and what only serves `$ref`s once those are inlined.
ANNOTATIONS = {"title", "description", "examples", "example", "$comment", "deprecated", "readOnly",
               "writeOnly", "default", "$defs", "definitions", "$id", "$schema", "$anchor"}

# What the value of each JSON Schema keyword holds, over drafts 4 to 2020-12 (Swagger 2's, OpenAPI
# 3.0's and 3.1's Schema Objects): one subschema; an array of subschemas; a map of names (properties,
# patterns, definitions) to subschemas. `items` is a subschema or (drafts 4 to 2019-09) an array of
# them; a `dependencies` entry is a subschema or an array of property names. Any other keyword's value
# is data (`enum`, `const`, `default`, `examples`, `required`, ...), never walked. The same keywords
# referencing's `subresources_of` knows (tests/test_openapi_schemas.py holds the two together).
SUBSCHEMA = frozenset({"additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if",
                       "items", "not", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties"})
SUBSCHEMA_ARRAY = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
SUBSCHEMA_MAP = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs", "definitions",
                           "dependencies"})


def load(target: Any, profile: Any) -> tuple[dict[str, Any] | None, str]:
    """The document and where it came from; (None, reason) when the profile names none or it is unusable."""
    path = profile.get("openapi_file")
    if path:
        p = Path(path)
        if not p.is_absolute() and profile.source and Path(profile.source).exists():
            p = Path(profile.source).resolve().parent / p
        try:
            text = p.read_text(encoding="utf-8")
            doc = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            return None, f"openapi_file {path} cannot be read: {exc}"
        return (doc, f"openapi_file {path}") if isinstance(doc, dict) else (None, f"openapi_file {path} is not a document")
    if not profile.get("endpoints.openapi"):
        return None, "profile declares neither endpoints.openapi nor openapi_file"
    resp = target.call("openapi", note="the target's OpenAPI document")
    if not 200 <= resp.status_code < 300:
        return None, f"endpoints.openapi answered {resp.status_code}"
    try:
        doc = resp.json()
    except ValueError:
        try:
            doc = yaml.safe_load(resp.text)
        except yaml.YAMLError:
            return None, "endpoints.openapi answered neither JSON nor YAML"
    return (doc, "endpoints.openapi") if isinstance(doc, dict) else (None, "endpoints.openapi is not a document")


def deref(doc: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> Any:
    """Follow a local `$ref` chain at the top of `node` (siblings of `$ref` are merged over it)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
        ref = node["$ref"]
        if ref in seen:
            return node
        seen = seen | {ref}
        target = pointer_get(doc, ref[1:], None)
        if not isinstance(target, dict):
            return node
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **siblings} if siblings else target
    return node


def map_subschemas(schema: Any, fn: Callable[[Any], Any]) -> Any:
    """A copy of `schema` with `fn` applied to each of its direct subschemas (see SUBSCHEMA,
    SUBSCHEMA_ARRAY, SUBSCHEMA_MAP); names and data (a property named `title`, an `enum` of objects)
    are kept as written. The one walk of schemas in the kit: recurse by calling it from `fn`."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in SUBSCHEMA_ARRAY and isinstance(value, list):
            value = [fn(v) for v in value]
        elif key in SUBSCHEMA and isinstance(value, (dict, bool)):
            value = fn(value)
        elif key in SUBSCHEMA_MAP and isinstance(value, dict):
            value = {name: fn(v) if isinstance(v, (dict, bool)) else v for name, v in value.items()}
        out[key] = value
    return out


def resolved(doc: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """Schema `node` with every local `$ref` inlined and its annotation keywords dropped, in it and
    in every subschema (for structural comparison). Only schema keywords are dropped or followed:
    a property named `title` stays, and `enum`/`const` values are kept as written."""
    if depth > 40:
        return node
    node = deref(doc, node)
    if not isinstance(node, dict):
        return node
    return map_subschemas({k: v for k, v in node.items() if k not in ANNOTATIONS},
                          lambda sub: resolved(doc, sub, depth + 1))


def find(doc: dict[str, Any], method: str, path: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(path item, operation) of `method path`: matched by template (names may differ: `{id}`
    matches `{order_id}`); a full URL counts by its path; a document whose first server URL has a
    path (`/v1`) describes paths below it."""
    if "://" in path:
        path = urlsplit(path).path
    paths = doc.get("paths") or {}
    candidates = [_shape(path)]
    servers = doc.get("servers") or []
    if servers and isinstance(servers[0], dict):
        base = urlsplit(str(servers[0].get("url", ""))).path.rstrip("/")
        if base and path.split("?")[0].startswith(base + "/"):
            candidates.append(_shape(path.split("?")[0][len(base):]))
    for want in candidates:
        for p, item in paths.items():
            if _shape(p) == want and isinstance(item, dict):
                op = item.get(method.lower())
                if isinstance(op, dict):
                    return item, op
    return None


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    """The operation of `method path` (see `find`)."""
    found = find(doc, method, path)
    return found[1] if found else None


def _shape(path: str) -> list[str]:
    return ["{}" if seg.startswith("{") and seg.endswith("}") else seg for seg in path.split("?")[0].strip("/").split("/")]


def property_names(doc: dict[str, Any], schema: Any, depth: int = 0) -> set[str]:
    """Property names of a schema, through local `$ref`s and allOf/oneOf/anyOf."""
    schema = deref(doc, schema)
    if not isinstance(schema, dict) or depth > 8:
        return set()
    names = set((schema.get("properties") or {}).keys())
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(key) or []:
            names |= property_names(doc, sub, depth + 1)
    return names


def request_property_names(doc: dict[str, Any], op: dict[str, Any]) -> set[str]:
    """Property names of the operation's request body, over every media type it declares."""
    body = deref(doc, op.get("requestBody") or {})
    content = body.get("content") or {} if isinstance(body, dict) else {}
    names: set[str] = set()
    for media in content.values():
        if isinstance(media, dict):
            names |= property_names(doc, media.get("schema"))
    return names


def request_schema(doc: dict[str, Any], op: dict[str, Any]) -> Any:
    body = deref(doc, op.get("requestBody") or {})
    content = body.get("content") or {} if isinstance(body, dict) else {}
    for media, spec in content.items():
        m = media.split(";")[0].strip().lower()
        if (m == "application/json" or m.endswith("+json")) and isinstance(spec, dict) and "schema" in spec:
            return spec["schema"]
    return None


def at_pointer(doc: dict[str, Any], schema: Any, pointer: str) -> Any:
    """The subschema a JSON Pointer into the instance reaches (through `properties`, `allOf`)."""
    node = deref(doc, schema)
    for raw in [t for t in pointer.lstrip("/").split("/") if t] if pointer else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        node = _property(doc, node, token)
        if node is None:
            return None
    return node


def _property(doc: dict[str, Any], node: Any, name: str) -> Any:
    node = deref(doc, node)
    if not isinstance(node, dict):
        return None
    props = node.get("properties") or {}
    if name in props:
        return deref(doc, props[name])
    for sub in node.get("allOf") or []:
        found = _property(doc, sub, name)
        if found is not None:
            return found
    return None


def array_items(doc: dict[str, Any], schema: Any) -> Any:
    node = deref(doc, schema)
    if isinstance(node, dict):
        if "items" in node:
            return node["items"]
        for sub in node.get("allOf") or []:
            found = array_items(doc, sub)
            if found is not None:
                return found
    return None


def array_max_items(doc: dict[str, Any], schema: Any) -> int | None:
    node = deref(doc, schema)
    if not isinstance(node, dict):
        return None
    found = node.get("maxItems")
    if isinstance(found, int) and not isinstance(found, bool):
        return found
    for sub in node.get("allOf") or []:
        m = array_max_items(doc, sub)
        if m is not None:
            return m
    return None
