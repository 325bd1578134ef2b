"""`batchspec init --from-openapi FILE_OR_URL`: draft a profile from the target's OpenAPI document.

Everything read from the document goes through the one OpenAPI reader (`_openapi`). What the
document shows is guessed (batch endpoints, `maxItems`, idempotency headers, 202 answers, error
and summary shapes) and every guess carries a `# guess:` comment saying where it came from. What no
document shows (invalid items with their codes, classes, a second credential) may be stated in a
top-level `x-batch` extension (docs/openapi-draft.md); what is neither guessed nor stated is left as
a commented `TODO`, and the classes that need it are not declared.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from . import _openapi

PROFILE_KEYS = ("target", "classes", "endpoints", "limits", "items", "idempotency", "dependencies", "async",
                "envelope", "perf", "openapi_file")
LIMIT_KEYS = ("max_items", "max_bytes", "atomic_max_items", "async_max_items")


class DraftError(Exception):
    """The document cannot be read or holds no batch endpoint (a usage error: exit 2)."""


# -- reading the document -------------------------------------------------------

def read_document(source: str) -> tuple[dict[str, Any], str | None]:
    """The document and, for a URL, the URL it came from."""
    if source.startswith(("http://", "https://")):
        import httpx

        try:
            resp = httpx.get(source, timeout=10, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise DraftError(f"cannot fetch {source}: {type(exc).__name__}: {exc}") from None
        if not 200 <= resp.status_code < 300:
            raise DraftError(f"{source} answered {resp.status_code}")
        text, url = resp.text, source
    else:
        try:
            text, url = Path(source).read_text(encoding="utf-8"), None
        except OSError as exc:
            raise DraftError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            raise DraftError(f"{source} is neither JSON nor YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise DraftError(f"{source} is not an OpenAPI document (no paths)")
    return doc, url


# -- guessing ---------------------------------------------------------------------

def _ops(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in (doc.get("paths") or {}).items():
        if isinstance(item, dict):
            for method, op in item.items():
                if method in ("get", "post", "put", "patch", "delete") and isinstance(op, dict):
                    out.append((method.upper(), path, op))
    return out


def _statuses(op: dict[str, Any]) -> set[str]:
    return {str(k) for k in (op.get("responses") or {})}


def _items_array(doc: dict[str, Any], schema: Any) -> tuple[str, Any] | None:
    """(pointer, array schema) of the request's list of items: the body itself or an array member."""
    node = _openapi.deref(doc, schema)
    if not isinstance(node, dict):
        return None
    if node.get("type") == "array" or "items" in node:
        return "", node
    for name in sorted(_openapi.property_names(doc, node)):
        sub = _openapi.at_pointer(doc, node, "/" + name)
        if isinstance(sub, dict) and (sub.get("type") == "array" or "items" in sub):
            item = _openapi.deref(doc, sub.get("items"))
            if isinstance(item, dict) and (item.get("type") == "object" or "properties" in item or "allOf" in item):
                return "/" + name, sub
    return None


def _response_schema(doc: dict[str, Any], op: dict[str, Any], status: str) -> Any:
    resp = _openapi.deref(doc, (op.get("responses") or {}).get(status) or {})
    for media, spec in ((resp.get("content") or {}) if isinstance(resp, dict) else {}).items():
        if "json" in media and isinstance(spec, dict):
            return spec.get("schema")
    return None


def _find_array(doc: dict[str, Any], schema: Any, depth: int = 0) -> str | None:
    """Pointer of the first array member of a response schema (through oneOf/anyOf/allOf/$defs refs)."""
    node = _openapi.deref(doc, schema)
    if depth > 6 or not isinstance(node, dict):
        return None
    for name in sorted(_openapi.property_names(doc, node)):
        sub = _openapi.at_pointer(doc, node, "/" + name)
        if isinstance(sub, dict) and (sub.get("type") == "array" or "items" in sub):
            return "/" + name
    for key in ("oneOf", "anyOf", "allOf"):
        for alt in node.get(key) or []:
            found = _find_array(doc, alt, depth + 1)
            if found:
                return found
    return None


def _summary(doc: dict[str, Any], schema: Any, depth: int = 0) -> dict[str, str]:
    node = _openapi.deref(doc, schema)
    if depth > 6 or not isinstance(node, dict):
        return {}
    for name in ("summary", "counts", "stats"):
        sub = _openapi.at_pointer(doc, node, "/" + name)
        if isinstance(sub, dict):
            names = _openapi.property_names(doc, sub)
            found = {k: f"/{name}/{k}" for k in ("total", "succeeded", "failed") if k in names}
            if found:
                return found
    for key in ("oneOf", "anyOf", "allOf"):
        for alt in node.get(key) or []:
            found = _summary(doc, alt, depth + 1)
            if found:
                return found
    return {}


def _example(doc: dict[str, Any], schema: Any, variant: int = 0, depth: int = 0) -> Any:
    """A value the schema accepts (first enum value, smallest allowed number, ...)."""
    node = _openapi.deref(doc, schema)
    if depth > 8 or not isinstance(node, dict):
        return "x"
    for key in ("const",):
        if key in node:
            return node[key]
    if node.get("enum"):
        values = node["enum"]
        return values[variant % len(values)]
    if node.get("examples"):
        return node["examples"][0]
    if "example" in node:
        return node["example"]
    for key in ("allOf", "oneOf", "anyOf"):
        if node.get(key) and not node.get("type") and not node.get("properties"):
            return _example(doc, node[key][0], variant, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer") or any(k in node for k in ("minimum", "exclusiveMinimum")):
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        value = low + 1 + variant * 10
        high = node.get("maximum")
        if isinstance(high, (int, float)) and value > high:
            value = high
        return int(value) if kind == "integer" or float(value).is_integer() else value
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object" or node.get("properties"):
        props = node.get("properties") or {}
        return {k: _example(doc, props.get(k, {}), variant, depth + 1) for k in node.get("required") or []}
    fmt = node.get("format")
    text = {"email": "someone@example.com", "date": "2030-01-01", "date-time": "2030-01-01T00:00:00Z",
            "uri": "https://example.com/", "uuid": "00000000-0000-4000-8000-000000000000"}.get(fmt, "batchspec")
    return text[: node["maxLength"]] if isinstance(node.get("maxLength"), int) else text


def _required(doc: dict[str, Any], schema: Any, depth: int = 0) -> list[str]:
    node = _openapi.deref(doc, schema)
    if depth > 6 or not isinstance(node, dict):
        return []
    out = list(node.get("required") or [])
    for sub in node.get("allOf") or []:
        out += _required(doc, sub, depth + 1)
    return list(dict.fromkeys(out))


class Draft:
    """The profile being drafted, with a comment for each value that is a guess or was stated."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.notes: dict[tuple[str, ...], str] = {}
        self.todo: list[str] = []

    def set(self, path: str, value: Any, note: str | None = None) -> None:
        keys = path.split(".")
        node = self.data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        if note:
            self.notes[tuple(keys)] = note

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.data
        for k in path.split("."):
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node


def draft(doc: dict[str, Any], source: str, url: str | None) -> Draft:
    d = Draft()
    ext = doc.get("x-batch") if isinstance(doc.get("x-batch"), dict) else {}
    ops = _ops(doc)

    # -- target
    base = None
    servers = doc.get("servers") or []
    server_url = servers[0].get("url") if servers and isinstance(servers[0], dict) else None
    if url:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        base = (server_url if server_url and server_url.startswith("http") else origin + (server_url or "")).rstrip("/")
        d.set("target.base_url", base, "guess: where the document was fetched from" +
              (" and its servers[0]" if server_url else ""))
    elif server_url and server_url.startswith("http"):
        d.set("target.base_url", server_url.rstrip("/"), "guess: the document's servers[0]")
    else:
        d.set("target.base_url", "http://127.0.0.1:8000", "TODO: where your API listens (the document names no server)")
    schemes = ((doc.get("components") or {}).get("securitySchemes") or {})
    for name, scheme in schemes.items():
        if isinstance(scheme, dict) and scheme.get("type") == "http" and scheme.get("scheme", "").lower() == "bearer":
            d.set("target.headers", {"Authorization": "Bearer ${API_TOKEN}"}, f"guess: securitySchemes.{name} is bearer")
            break
        if isinstance(scheme, dict) and scheme.get("type") == "apiKey" and scheme.get("in") == "header":
            d.set("target.headers", {scheme["name"]: "${API_KEY}"}, f"guess: securitySchemes.{name} is an API key header")
            break
    d.set("target.timeout", 10)

    # -- batch endpoints: POST operations whose body is (or holds) an array of objects
    candidates = []
    for method, path, op in ops:
        if method not in ("POST", "PUT", "PATCH"):
            continue
        arr = _items_array(doc, _openapi.request_schema(doc, op))
        if arr is None:
            continue
        codes = _statuses(op)
        score = ("batch" in path.lower()) * 2 + ("bulk" in path.lower()) * 2
        candidates.append((score, method, path, op, arr, codes))
    candidates.sort(key=lambda c: -c[0])
    sync = next((c for c in candidates if codes_sync(c[5])), None)
    async_ = next((c for c in candidates if "202" in c[5] and not codes_sync(c[5])), None)
    if sync is None and async_ is None:
        raise DraftError(f"{source}: no batch endpoint found (a POST whose body is or holds an array of objects)")
    primary = sync or async_
    _, method, path, op, (items_ptr, arr_schema), _ = primary
    if sync:
        d.set("endpoints.batch", {"method": method, "path": path},
              "guess: its request body holds an array of objects" + (" and the path says batch" if primary[0] else ""))
    else:
        d.todo.append("endpoints.batch: the document shows only an async (202) batch endpoint; CORE needs a sync one")
        d.set("endpoints.batch", {"method": method, "path": path}, "TODO: only an async (202) batch endpoint was found")
    if items_ptr != "/operations":
        d.set("envelope.request_items", items_ptr, f"guess: the array member of {path}'s request body")
    results = None
    for status in ("200", "207", "201"):
        schema = _response_schema(doc, op, status)
        if schema is not None:
            results = _find_array(doc, schema)
            summary = _summary(doc, schema)
            if summary:
                d.set("envelope.summary", summary, f"guess: the summary member of the {status} answer")
            break
    if results and results != "/results":
        d.set("envelope.results", results, "guess: the array member of the answer")

    # -- limits
    max_items = op.get("x-batch-max-items") or _openapi.array_max_items(doc, arr_schema)
    if isinstance(max_items, int):
        d.set("limits.max_items", max_items, "guess: x-batch-max-items" if op.get("x-batch-max-items")
              else f"guess: maxItems of {items_ptr or 'the body'}")
    max_bytes = op.get("x-batch-max-bytes")
    if isinstance(max_bytes, int):
        d.set("limits.max_bytes", max_bytes, "guess: x-batch-max-bytes of the batch operation")

    # -- the item: templates from its schema (the kit fills the id)
    item_schema = _openapi.array_items(doc, arr_schema)
    item_props = _openapi.property_names(doc, item_schema)
    id_field = "id" if "id" in item_props else next((p for p in sorted(item_props) if p.endswith("_id") and "parent" not in p), "id")
    if id_field != "id":
        d.set("items.id_field", id_field, "guess: the item's id-like member")
    required = [r for r in _required(doc, item_schema) if r != id_field]
    templates = []
    for variant in (0, 1):
        t = {}
        for name in required:
            t[name] = _example(doc, _openapi.at_pointer(doc, item_schema, "/" + name), variant)
        templates.append(t)
    if templates[0] == templates[1]:
        templates = templates[:1]
    d.set("items.valid", templates, "guess: the item schema's required members with allowed values; check them")

    # -- single, read
    parent = path.rsplit("/", 1)[0] or "/"
    single = next(((m, p) for m, p, o in ops if m == "POST" and p == parent and p != path), None)
    if single:
        d.set("endpoints.single", {"method": single[0], "path": single[1]}, "guess: POST on the batch path's parent")
    read = next(((m, p) for m, p, o in ops if m == "GET" and p.startswith(parent.rstrip("/") + "/{") and p.count("/") == parent.rstrip("/").count("/") + 1), None)
    if read:
        d.set("endpoints.read", {"method": "GET", "path": re.sub(r"\{[^}]+\}$", "{id}", read[1])},
              "guess: GET on the parent path with an id")
        stored = _response_schema(doc, dict(next(o for m, p, o in ops if (m, p) == read)), "200")
        server = sorted(_openapi.property_names(doc, stored) - item_props) if stored else []
        if server:
            d.set("items.server_fields", server, "guess: members of the read answer the item does not send")
            if "version" in server:
                d.set("items.effect_counter", "/version", "guess: a server-side version counts applications")
    else:
        d.todo.append("endpoints.read: no GET of one resource found; the kit verifies effects through it")

    # -- atomic
    atomic_ext = op.get("x-batch-atomic") if isinstance(op.get("x-batch-atomic"), dict) else None
    req_names = _openapi.request_property_names(doc, op)
    atomic_field = (atomic_ext or {}).get("field") or next((n for n in ("atomic", "all_or_nothing", "transactional") if n in req_names), None)
    if atomic_field and sync:
        d.set("endpoints.atomic", {"method": method, "path": path, "body": {atomic_field: True}},
              "guess: x-batch-atomic.field" if atomic_ext else f"guess: the request's `{atomic_field}` member")
        if isinstance((atomic_ext or {}).get("max_items"), int):
            d.set("limits.atomic_max_items", atomic_ext["max_items"], "guess: x-batch-atomic.max_items")

    # -- async: a 202 answer, and its job resource
    if async_:
        _, am, ap, aop, (_, aarr), _ = async_
        d.set("endpoints.async", {"method": am, "path": ap}, "guess: its answer is 202")
        amax = aop.get("x-batch-max-items") or _openapi.array_max_items(doc, aarr)
        if isinstance(amax, int):
            d.set("limits.async_max_items", amax, "guess: x-batch-max-items / maxItems of the async operation")
        job = next((p for m, p, o in ops if m == "GET" and p.startswith(ap.rstrip("/") + "/{")), None)
        if job:
            d.set("endpoints.job", {"method": "GET", "path": re.sub(r"\{[^}]+\}$", "{job_id}", job)},
                  "guess: GET on the async path with an id")
            cancel = next((p for m, p, o in ops if m == "DELETE" and p == job), None)
            if cancel:
                d.set("endpoints.cancel", {"method": "DELETE", "path": re.sub(r"\{[^}]+\}$", "{job_id}", cancel)},
                      "guess: DELETE of the job")

    # -- idempotency
    for param in op.get("parameters") or []:
        param = _openapi.deref(doc, param)
        if isinstance(param, dict) and param.get("in") == "header" and "idempot" in str(param.get("name", "")).lower():
            d.set("idempotency.header", param["name"], "guess: a header parameter of the batch operation")
            break
    item_key = next((p for p in sorted(item_props) if "idempot" in p.lower()), None)
    if item_key:
        d.set("idempotency.item_field", item_key, "guess: an idempotency member of the item")

    # -- dependencies
    dep = next((p for p in sorted(item_props) if "depend" in p.lower()), None)
    if dep:
        d.set("dependencies.field", dep, "guess: the item's dependency member")
        ref = next((p for p in sorted(item_props) if p.startswith("parent")), None)
        if ref:
            d.set("dependencies.reference_field", ref, "guess: the item's parent member")

    # -- openapi
    if url:
        d.set("endpoints.openapi", {"method": "GET", "path": urlsplit(url).path}, "the document this draft was made from")
    else:
        d.set("openapi_file", str(Path(source).resolve()), "the document this draft was made from")

    # -- what x-batch states wins over every guess
    for key, value in ext.items():
        if key in LIMIT_KEYS:
            d.set(f"limits.{key}", value, "stated by x-batch")
        elif key == "idempotency_retention_seconds" and d.get("idempotency.header"):
            d.set("idempotency.retention_seconds", value, "stated by x-batch")
        elif key in PROFILE_KEYS:
            _merge(d, key, value)

    # -- classes: those whose needs are met
    if "classes" not in ext:
        classes = ["CORE", "HTTP"]
        why = {"CORE": "always", "HTTP": "always"}
        if d.get("limits.max_items"):
            classes.append("SIZE"); why["SIZE"] = "limits.max_items"
        if d.get("idempotency.header") or d.get("idempotency.item_field"):
            classes.append("IDEM"); why["IDEM"] = "idempotency"
        if d.get("endpoints.async") and d.get("endpoints.job"):
            classes.append("ASYNC"); why["ASYNC"] = "endpoints.async + endpoints.job"
        if d.get("endpoints.atomic"):
            classes.append("ATOM"); why["ATOM"] = "endpoints.atomic"
        if d.get("dependencies.field"):
            classes.append("ORD"); why["ORD"] = "dependencies"
        if d.get("items.invalid"):
            classes.append("PART"); why["PART"] = "items.invalid"
            if d.get("endpoints.single"):
                classes.append("PAR"); why["PAR"] = "endpoints.single + items.invalid"
        else:
            d.todo.append("items.invalid (an invalid item with the error code the API gives it): PART and PAR "
                          "need it; state it in x-batch.items.invalid or add it here, then add the classes")
        d.set("classes", classes, "guess: the classes whose needs were found (" +
              ", ".join(f"{c}: {w}" for c, w in why.items() if w != "always") + "); ROB and PERF stress the "
              "target: add them yourself")
    return d


def codes_sync(codes: set[str]) -> bool:
    return any(c in codes for c in ("200", "201", "207"))


def _merge(d: Draft, key: str, value: Any, prefix: str = "") -> None:
    path = f"{prefix}{key}"
    if isinstance(value, dict):
        for k, v in value.items():
            _merge(d, k, v, path + ".")
    else:
        d.set(path, value, "stated by x-batch")


# -- rendering ------------------------------------------------------------------------

def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip().removesuffix("\n...")


def render(d: Draft, source: str, path: str) -> str:
    lines = [f"# batchspec profile drafted from the OpenAPI document {source}",
             f"# by `batchspec init --from-openapi`. Every value marked `guess:` was read from the document;",
             "# check each one, then:",
             f"#   batchspec run --profile {path}",
             "# Keys: schemas/profile.schema.json. ${VAR} takes an environment variable.", "version: 1"]

    def emit(node: dict[str, Any], keys: tuple[str, ...], indent: int) -> None:
        for k, v in node.items():
            here = keys + (k,)
            note = d.notes.get(here)
            pad = "  " * indent
            block = isinstance(v, dict) and v and (
                any(here + (c,) in d.notes for c in v) or any(isinstance(x, dict) for x in v.values()))
            if block:
                lines.append(f"{pad}{k}:" + (f"  # {note}" if note else ""))
                emit(v, here, indent + 1)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}" + (f"  # {note}" if note else ""))

    emit(d.data, (), 0)
    for todo in d.todo:
        lines.append(f"# TODO: {todo}")
    lines.append("# second_credential (under target:): a second client's headers, for the credential-scoping rules.")
    return "\n".join(lines) + "\n"


def draft_profile_text(source: str, path: str) -> str:
    doc, url = read_document(source)
    d = draft(doc, source, url)
    return render(d, source, path)
