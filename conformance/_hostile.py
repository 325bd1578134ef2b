"""The ROB-02 hostile corpus (conformance/corpus/hostile.yaml): load it, build each case's bytes, send raw cases.

The corpus is data so that a reviewer can read every hostile input and the answer the kit expects
of it without reading code. Bodies are built through the profile's envelope and its valid item
templates, with fresh run-prefixed ids, so the same corpus runs against any target.
"""
from __future__ import annotations

import base64
import copy
import importlib.resources
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

EXPECTATIONS = {"4xx", "4xx-or-item-error", "processed", "4xx-or-processed", "clean", "clean-or-coerced",
                "4xx-or-close"}
_MARK = "\u0000bs-fragment-{}\u0000"  # a string no generated value contains: replaced by raw bytes


@dataclass
class HostileCase:
    name: str
    tests: str
    expect: str
    body: dict[str, Any]
    raw_mode: str | None = None
    """`lying_length` or `half_body`: sent through Target.raw (the corpus key is `socket`)."""


@dataclass
class BuiltBody:
    """The bytes of one case, and what the kit must look for in the answer."""

    content: bytes
    items: list[Any]
    """The items as a client would see them (raw fragments as None), for position correlation."""
    hostile: list[dict[str, Any]] = field(default_factory=list)
    """The hostile items that carry an id: {"id", "item" (as decoded, or None), "readable" (id usable in a URL),
    and for a wrong scalar "loose": the pointer of the member a lenient server may coerce (not compared)}."""
    unidentified: int = 0
    """Hostile items that carry no id (null, scalars, nested arrays)."""


def load_corpus() -> list[HostileCase]:
    text = importlib.resources.files("conformance").joinpath("corpus/hostile.yaml").read_text(encoding="utf-8")
    doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~7x faster
    cases = [HostileCase(c["name"], c["tests"], c["expect"], c["body"], c.get("socket")) for c in doc["cases"]]
    for c in cases:
        if c.expect not in EXPECTATIONS:
            raise ValueError(f"hostile corpus: case {c.name} has unknown expect {c.expect!r}")
    return cases


class _Fragments:
    """Raw byte fragments spliced into an otherwise ordinary JSON document."""

    def __init__(self, max_bytes: int | None):
        self.parts: list[bytes] = []
        self.max_bytes = max_bytes

    def text(self, spec: dict[str, Any], fresh_id: Any) -> bytes:
        if "json" in spec:
            value = spec["json"]
            if spec.get("prefixed") and isinstance(value, str):
                value = fresh_id() + value
            return json.dumps(value, ensure_ascii=False).encode("utf-8")
        if "raw" in spec:
            out = str(spec["raw"]).encode("utf-8")
        elif "base64" in spec:
            out = base64.b64decode(spec["base64"])
        elif "nest" in spec:
            n = spec["nest"]
            out = (n["open"] * n["depth"] + n.get("inner", "") + n["close"] * n["depth"]).encode("utf-8")
        elif "repeat" in spec:
            r = spec["repeat"]
            size = int(r["bytes"])
            if r.get("within_limit") and self.max_bytes:
                size = min(size, self.max_bytes - 4096)  # room for the envelope and a valid item
            unit = str(r["text"]).encode("utf-8")
            out = (unit * (size // len(unit) + 1))[:size]
        else:
            raise ValueError(f"hostile corpus: unknown fragment {spec!r}")
        if spec.get("prefixed"):
            out = fresh_id().encode("utf-8") + out
        if spec.get("quoted"):
            out = b'"' + out + b'"'
        return out

    def mark(self, raw: bytes) -> str:
        self.parts.append(raw)
        return _MARK.format(len(self.parts) - 1)


def _field(name: str, template: dict[str, Any], id_field: str) -> str:
    if name == "$id":
        return id_field
    others = [k for k in template if k != id_field]
    if name == "$number":
        nums = [k for k in others if isinstance(template[k], (int, float)) and not isinstance(template[k], bool)]
        return (nums or others or [id_field])[0]
    if name == "$field":
        return (others or [id_field])[0]
    return name


def _decode(raw: bytes) -> Any:
    """What a lenient parser would make of the bytes (None when nothing can)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None


MAX_URL_ID_BYTES = 2000  # longer ids cannot go in a read URL (servers refuse long request lines)


def _readable(value: Any) -> bool:
    """Whether the id can be read back through a URL."""
    if not isinstance(value, str):
        return False
    try:
        return len(value.encode("utf-8")) <= MAX_URL_ID_BYTES
    except UnicodeEncodeError:
        return False


WRONG_TYPES: list[Any] = [{"bs_wrong_type": True}, [1, 2]]  # no lenient coercion turns these into a scalar
# Scalars of another JSON type than the template's value (corpus part `wrong_scalars`): null, true and
# false, a string that is no number, a number. The templates are valid items, so their values' types
# are the types the target wants, with or without an OpenAPI document: a number member gets a string
# (`float("bs-not-a-number")` raises), a string member a number, every member null and both booleans.
NOT_A_NUMBER = "bs-not-a-number"
WRONG_SCALARS: list[Any] = [None, True, False, NOT_A_NUMBER, 12345]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def wrong_scalars(value: Any) -> list[Any]:
    """The scalars of WRONG_SCALARS whose JSON type differs from `value`'s."""
    return [w for w in WRONG_SCALARS if _json_type(w) != _json_type(value)]


def _members(template: dict[str, Any], id_pointer: str | None) -> list[tuple[str, Any]]:
    """(pointer, value) of each member a wrong type goes into: every top-level member but the one
    holding the id and, where the id is nested (`/Put/Item/key/S`), every scalar leaf under that
    member (`/Put/Item/qty/N`): a DynamoDB-shaped item has no other top-level member."""
    tokens = _tokens(id_pointer) if id_pointer else []
    out = [("/" + _escape(k), v) for k, v in template.items() if not tokens or k != tokens[0]]
    if len(tokens) > 1 and isinstance(template.get(tokens[0]), dict):
        def leaves(node: dict[str, Any], path: list[str]) -> None:
            for k, v in node.items():
                if isinstance(v, dict) and v:
                    leaves(v, path + [k])
                elif path + [k] != tokens:
                    out.append(("/" + "/".join(_escape(t) for t in path + [k]), v))
        leaves(template[tokens[0]], [tokens[0]])
    return out


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]] if pointer.startswith("/") \
        else [pointer]


def _set(item: dict[str, Any], pointer: str, value: Any) -> None:
    tokens = _tokens(pointer)
    node = item
    for t in tokens[:-1]:
        node = node[t]
    node[tokens[-1]] = value


def without_member(item: Any, pointer: str) -> Any:
    """A copy of `item` without the member at `pointer`, and without the objects that removal leaves
    empty (`/Put/Item/qty/N` takes `qty` with it): what an ok wrong-scalar item must read back as."""
    out = copy.deepcopy(item)
    tokens = _tokens(pointer)
    path: list[dict[str, Any]] = []
    node = out
    for t in tokens[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(t), dict):
            return out
        path.append(node)
        node = node[t]
    if isinstance(node, dict):
        node.pop(tokens[-1], None)
    for parent, t in zip(reversed(path), reversed(tokens[:-1])):
        if parent[t]:
            break
        del parent[t]
    return out


def build(case: HostileCase, items: Any, envelope: Any, max_bytes: int | None) -> BuiltBody:
    """The bytes of `case`, with fresh ids from the `items` factory."""
    frags = _Fragments(max_bytes)
    spec = case.body
    id_field = items.id_field  # the top-level member holding the id
    if "whole" in spec:
        return BuiltBody(frags.text(spec["whole"], items.new_id), [], [], 1)
    parts: list[Any] = []
    shown: list[Any] = []
    hostile: list[dict[str, Any]] = []
    unidentified = 0
    templates = items.templates()
    for part in spec.get("batch") or []:
        if part == "valid":
            item = items.valid(1)[0]
            parts.append(item)
            shown.append(item)
        elif part in ("wrong_types", "wrong_scalars"):
            seen: set[str] = set()
            for tpl in templates:
                for pointer, value in _members(tpl, items.id_pointer):
                    if pointer in seen:
                        continue
                    seen.add(pointer)
                    for wrong in WRONG_TYPES if part == "wrong_types" else wrong_scalars(value):
                        item = items.with_id(tpl)
                        _set(item, pointer, wrong)
                        parts.append(item)
                        shown.append(item)
                        hostile.append({"id": items.id_of(item), "item": item, "readable": True,
                                        **({"loose": pointer} if part == "wrong_scalars" else {})})
        elif isinstance(part, dict) and "long_strings" in part:
            # one item per text member of the templates (the id's member aside: long_string holds it), that
            # member a long string of plain letters: a column narrower than the text (VARCHAR(255), a
            # 64 KiB TEXT) that nothing validates first fails only at the write, often as a 5xx
            members: list[tuple[dict[str, Any], str]] = []
            seen_text: set[str] = set()
            for tpl in templates:
                for pointer, value in _members(tpl, items.id_pointer):
                    if isinstance(value, str) and pointer not in seen_text:
                        seen_text.add(pointer)
                        members.append((tpl, pointer))
            size = int(part["long_strings"])
            if frags.max_bytes and members:  # every item within the byte limit, with room for the envelope
                size = max(256, min(size, (frags.max_bytes - 4096) // (len(members) + 1)))
            for tpl, pointer in members:
                item = items.with_id(tpl)
                _set(item, pointer, "x" * size)
                parts.append(item)
                shown.append(items.set_id({}, items.id_of(item)))
                hostile.append({"id": items.id_of(item), "item": item, "readable": True})
        elif "item" in part:
            parts.append(frags.mark(frags.text(part["item"], items.new_id)))
            shown.append(items.set_id({}, None))
            unidentified += 1
        elif "valid_with" in part:
            tpl = templates[0]
            item: dict[str, Any] = items.with_id(tpl)
            raw_fields: dict[str, bytes] = {}
            for name, fspec in part["valid_with"].items():
                key = _field(name, tpl, id_field)
                raw_fields[key] = frags.text(fspec, items.new_id)
                item[key] = frags.mark(raw_fields[key])
            parts.append(item)
            decoded = {k: (_decode(raw_fields[k]) if k in raw_fields else v) for k, v in item.items()}
            hid = items.id_of(decoded)
            shown.append(items.set_id({}, hid))
            hostile.append({"id": hid, "item": decoded if None not in decoded.values() else None,
                            "readable": _readable(hid)})
        elif "duplicate_key" in part:
            tpl = templates[0]
            key = _field(part["duplicate_key"], tpl, id_field)
            item = items.with_id(tpl)
            # the same member twice: a marked key placed first is replaced by `"key": value, `
            twin = json.dumps(key, ensure_ascii=False) + ": " + json.dumps(item.get(key), ensure_ascii=False) + ", "
            parts.append({frags.mark(twin.encode("utf-8")): None, **item})
            shown.append(items.set_id({}, items.id_of(item)))
            hostile.append({"id": items.id_of(item), "item": item, "readable": True})
        else:
            raise ValueError(f"hostile corpus: case {case.name}: unknown part {part!r}")
    doc = envelope.body(parts)
    content = _splice_keys(frags, doc)
    if "prefix" in spec:
        content = frags.text(spec["prefix"], items.new_id) + content
    return BuiltBody(content, shown, hostile, unidentified)


def _splice_keys(frags: _Fragments, doc: Any) -> bytes:
    """Like `splice`, but a mark used as an object key (`"<mark>": null,`) is replaced as a whole member."""
    out = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    for i, raw in enumerate(frags.parts):
        mark = json.dumps(_MARK.format(i), ensure_ascii=False).encode("utf-8")
        out = out.replace(mark + b": null, ", raw).replace(mark, raw)
    return out
