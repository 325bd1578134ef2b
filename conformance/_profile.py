"""Profiles (SPEC §3): YAML describing a target, validated, with ${ENV} interpolation."""
from __future__ import annotations

import copy
import difflib
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import _schemas
from ._envelope import CANONICAL, pointer_problem

PROFILE_SCHEMA = "profile.schema.json"
# libyaml when present: profiles are parsed at every run, and the kit's own tests run hundreds.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MISSING = object()

# The canonical shape of SPEC §2 is the envelope's default; it is defined once, in _envelope.
ENVELOPE_DEFAULTS: dict[str, Any] = CANONICAL
TARGET_DEFAULTS: dict[str, Any] = {
    "headers": {},
    "timeout": 10.0,
    "verify_tls": True,
    "ca_bundle": None,
    "pace": 0,
    "retry_after_max": 3,
    "max_retry_wait": 10.0,
    "redact": [],
}


class ProfileError(Exception):
    """A profile that cannot be used; the message names the field and, where known, the line."""


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """JSON path of every mapping key and sequence entry -> 1-based line in the YAML text."""
    lines: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _interpolate(node: Any, env: Mapping[str, str], path: tuple[Any, ...], where: dict) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, env, path + (k,), where) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, path + (i,), where) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            line = where.get(path)
            raise ProfileError(
                f"{_dotted(path)}"
                + (f" (line {line})" if line else "")
                + f": environment variable {name} is not set"
            )

        return _ENV.sub(sub, node)
    return node


def _schema_message(err: Any, lines: dict, schema: dict) -> str:
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        if extra:
            key = extra[0]
            line = lines.get(path + (key,))
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            where = _dotted(path + (key,))
            return (
                f"{where}" + (f" (line {line})" if line else "")
                + f": unknown key '{key}'"
                + (f"; did you mean '{hint[0]}'?" if hint else f"; allowed here: {', '.join(sorted(allowed))}")
            )
    line = lines.get(path)
    return f"{_dotted(path)}" + (f" (line {line})" if line else "") + f": {err.message}"


def _merge(defaults: dict, given: dict | None) -> dict:
    out = copy.deepcopy(defaults)
    for k, v in (given or {}).items():
        out[k] = v
    return out


@dataclass
class Profile:
    """A validated profile, defaults applied. `data` is plain JSON-like data."""

    data: dict[str, Any]
    source: str = "<memory>"
    overrides: dict[str, Any] = field(default_factory=dict)

    # -- access -------------------------------------------------------------
    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node or node[part] is None:
                return default
            node = node[part]
        return node

    @property
    def id_field(self) -> str | None:
        """items.id_field as written (a pointer or a bare name); None: items carry no id."""
        return (self.data.get("items") or {}).get("id_field", "id")

    def has(self, dotted: str) -> bool:
        return self.get(dotted, _MISSING) is not _MISSING

    def require(self, *dotted: str) -> None:
        """Skip the calling check when the profile does not declare what it needs."""
        import pytest

        for d in dotted:
            if not self.has(d):
                pytest.skip(f"profile declares no {d}")

    @property
    def base_url(self) -> str:
        return str(self.data["target"]["base_url"]).rstrip("/")

    @property
    def classes(self) -> list[str]:
        declared = list(self.data.get("classes") or [])
        if self.instances[1:] and "FLEET" not in declared:
            declared.append("FLEET")  # FLEET is declared by listing target.instances (SPEC §4)
        return ["CORE"] + [c for c in declared if c != "CORE"]

    @property
    def instances(self) -> list[str]:
        """Base URLs of every instance of the service: the base URL first, then ``target.instances``."""
        return [self.base_url] + [str(u).rstrip("/") for u in (self.target.get("instances") or [])]

    @property
    def envelope(self) -> dict[str, Any]:
        return self.data["envelope"]

    @property
    def target(self) -> dict[str, Any]:
        return self.data["target"]

    def with_base_url(self, url: str) -> "Profile":
        data = copy.deepcopy(self.data)
        data["target"]["base_url"] = url.rstrip("/")
        return Profile(data, self.source, dict(self.overrides, base_url=url))

    def secrets(self) -> list[str]:
        """The values that must never appear in a report or a log: credential headers (by name:
        Authorization, Cookie, X-API-Key, any *token*/*secret*/*key*/*password*/*session*/*signature*
        header), the second credential, headers the profile marks secret (`target.redact`), and a
        password in the base URL. Operation headers (X-Amz-Target, a vendor Content-Type) are not
        secrets: a curl replay must run as printed."""
        from urllib.parse import urlsplit

        from ._client import is_credential_header

        marked = {h.lower() for h in (self.target.get("redact") or [])}
        out = []
        for url in self.instances:
            password = urlsplit(url).password
            if password:
                out.append(password)
        out.extend(v for v in (self.target.get("second_credential") or {}).values() if isinstance(v, str) and v)
        blocks = [self.target.get("headers") or {}]
        blocks += [((ep or {}).get("headers") or {}) for ep in (self.data.get("endpoints") or {}).values()]
        for block in blocks:
            out.extend(v for k, v in block.items()
                       if isinstance(v, str) and v and (is_credential_header(k) or k.lower() in marked))
        return [s for s in out if len(s) >= 4]


# Item fields: a bare member name (= /name) or a JSON Pointer into the item, never empty.
_ITEM_FIELDS = (("items", "id_field"), ("idempotency", "item_field"), ("dependencies", "field"),
                ("dependencies", "reference_field"))
# Envelope pointers: "" is the whole document (a bare array, a whole result).
_ENVELOPE_POINTERS = ("request_items", "results", "results_ok", "results_error", "result_id", "result_status",
                      "data", "error", "error_code", "error_message", "error_present", "result_http_status",
                      "error_retryable", "error_sender_fault", "result_retry_after", "batch_status",
                      "batch_error_code", "batch_error_message", "result_index")


def _check_pointers(data: dict[str, Any], source: str, lines: dict) -> None:
    """Refuse, naming the key and its line, a field the kit could only read as a literal member name."""
    found: list[tuple[tuple[Any, ...], str, bool]] = []
    for path in _ITEM_FIELDS:
        value = (data.get(path[0]) or {}).get(path[1]) if isinstance(data.get(path[0]), dict) else None
        if isinstance(value, str):
            found.append((path, value, False))
    for i, value in enumerate((data.get("items") or {}).get("server_fields") or []):
        if isinstance(value, str):
            found.append((("items", "server_fields", i), value, False))
    env = data.get("envelope") if isinstance(data.get("envelope"), dict) else {}
    for key in _ENVELOPE_POINTERS:
        values = env.get(key)
        for i, value in enumerate(values if isinstance(values, list) else [values]):
            if isinstance(value, str):
                found.append((("envelope", key) + ((i,) if isinstance(values, list) else ()), value,
                              key not in ("result_id",)))
    for name, value in (env.get("summary") or {}).items() if isinstance(env.get("summary"), dict) else []:
        if isinstance(value, str):
            found.append((("envelope", "summary", name), value, False))
    id_field = (data.get("items") or {}).get("id_field", "id") if isinstance(data.get("items"), dict) else "id"
    if id_field is None and env.get("correlation") != "position":
        line = lines.get(("items", "id_field"))
        raise ProfileError(f"{source}: items.id_field" + (f" (line {line})" if line else "")
                           + ": null (items carry no id) needs envelope.correlation: position")
    for name in ("read", "single"):
        ep = (data.get("endpoints") or {}).get(name) if isinstance(data.get("endpoints"), dict) else None
        if isinstance(ep, dict) and isinstance(ep.get("resource"), str):
            found.append((("endpoints", name, "resource"), ep["resource"], True))
        if isinstance(ep, dict) and isinstance(ep.get("item"), str):
            found.append((("endpoints", name, "item"), ep["item"], False))
    for path, value, empty_ok in found:
        problem = pointer_problem(value, empty_ok=empty_ok)
        if problem:
            line = lines.get(path)
            raise ProfileError(f"{source}: {_dotted(path)}" + (f" (line {line})" if line else "")
                               + f": {value!r} is neither a member name nor a JSON Pointer the kit can use: {problem}")


def _refuse(source: str, lines: dict, path: tuple[Any, ...], message: str) -> ProfileError:
    line = lines.get(path)
    return ProfileError(f"{source}: {_dotted(path)}" + (f" (line {line})" if line else "") + f": {message}")


def _check_results_mode(data: dict[str, Any], source: str, lines: dict) -> None:
    """The failure-only form (results_mode: failures_only) and the keys it needs or excludes."""
    env = data.get("envelope") if isinstance(data.get("envelope"), dict) else {}
    failures_only = env.get("results_mode") == "failures_only"
    position = env.get("correlation") == "position"
    if failures_only:
        if env.get("results_error") is None:
            raise _refuse(source, lines, ("envelope", "results_mode"), "failures_only needs envelope.results_error: "
                          "the JSON Pointer of the failure list (or, with failures_form: map, of the map of lists)")
        if env.get("results_ok") is not None:
            raise _refuse(source, lines, ("envelope", "results_ok"), "a failure-only answer has no list of "
                          "successes: with results_mode: failures_only an item absent from results_error succeeded")
        if position and env.get("failures_form") == "id_map":
            raise _refuse(source, lines, ("envelope", "failures_form"), "id_map keys the failures by the item id: "
                          "it needs envelope.correlation: id")
        if position and env.get("result_index") is None:
            raise _refuse(source, lines, ("envelope", "correlation"), "position correlation of a failure-only "
                          "answer needs envelope.result_index: the pointer, inside a failure entry, of the index "
                          "(0-based) of the item it answers")
    else:
        if env.get("results_error") is not None and env.get("results_ok") is None:
            raise _refuse(source, lines, ("envelope", "results_error"), "a failure list alone needs "
                          "results_mode: failures_only (an absent item succeeded), or results_ok beside it "
                          "(separate success and failure lists)")
        for key in ("failures_form", "result_index"):
            if env.get(key) is not None and not (key == "failures_form" and env[key] == "list"):
                raise _refuse(source, lines, ("envelope", key), f"{key} is read only with results_mode: failures_only")
    if env.get("result_index") is not None and not position:
        raise _refuse(source, lines, ("envelope", "result_index"), "result_index correlates failures by the "
                      "item's index: it needs envelope.correlation: position")


def _check_read(data: dict[str, Any], source: str, lines: dict) -> None:
    """endpoints.read and endpoints.delete are templates: the id must appear in each somewhere (path,
    body, headers or query)."""
    import json

    for name in ("read", "delete"):
        ep = (data.get("endpoints") or {}).get(name) if isinstance(data.get("endpoints"), dict) else None
        if not isinstance(ep, dict):
            continue
        places = [ep.get("path") or "", json.dumps(ep.get("body")), json.dumps(ep.get("headers")),
                  json.dumps(ep.get("query"))]
        if not any("{id}" in p for p in places):
            raise _refuse(source, lines, ("endpoints", name), f"the item id appears nowhere in the {name} template: "
                          "put {id} in its path, in a string of its body (Key: {pk: {S: \"{id}\"}}), a header or "
                          "a query value")


def from_data(data: dict[str, Any], source: str = "<memory>", lines: dict | None = None) -> Profile:
    lines = lines or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a YAML mapping, got {type(data).__name__}")
    schema = _schemas.load_all()[PROFILE_SCHEMA]
    errs = sorted(_schemas.validator(PROFILE_SCHEMA).iter_errors(data), key=lambda e: e.path)
    if errs:
        # The most specific error first: it is the one a user can act on.
        best = max(errs, key=lambda e: len(e.absolute_path))
        raise ProfileError(f"{source}: {_schema_message(best, lines, schema)}")
    _check_pointers(data, source, lines)
    _check_results_mode(data, source, lines)
    _check_read(data, source, lines)
    data = copy.deepcopy(data)
    data["target"] = _merge(TARGET_DEFAULTS, data.get("target"))
    env = _merge(ENVELOPE_DEFAULTS, data.get("envelope"))
    data["envelope"] = env
    data.setdefault("items", {})
    data["items"].setdefault("id_field", "id")
    data.setdefault("classes", ["CORE"])
    _check_instances(data, source, lines)
    return Profile(data, source)


def _check_instances(data: dict[str, Any], source: str, lines: dict) -> None:
    """``target.instances``: other base URLs of the same service, each once, none the base URL itself."""
    listed = data["target"].get("instances") or []
    where = lines.get(("target", "instances"))
    at = f" (line {where})" if where else ""
    base = str(data["target"]["base_url"]).rstrip("/")
    seen = {base: "target.base_url"}
    for i, url in enumerate(listed):
        key = str(url).rstrip("/")
        if key in seen:
            raise ProfileError(f"{source}{at}: target.instances[{i}] {url!r} repeats {seen[key]}; list each "
                               "other instance of the service once (the base URL is the first instance)")
        seen[key] = f"target.instances[{i}]"
    if "FLEET" in (data.get("classes") or []) and not listed:
        raise ProfileError(f"{source}: classes lists FLEET but target.instances is missing; FLEET is declared "
                           "by listing the base URLs of the other instances of the service in target.instances")


def loads(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Profile:
    env = os.environ if env is None else env
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ProfileError(f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines = _line_map(text)
    try:
        data = _interpolate(raw, env, (), lines)
    except ProfileError as exc:
        raise ProfileError(f"{source}: {exc}") from None
    return from_data(data, source, lines)


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Profile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{p}: no such profile file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{p}: cannot read the profile: {exc}") from None
    return loads(text, str(p), env)


def bundled_text(name: str = "reference") -> str:
    return importlib.resources.files("conformance").joinpath(f"profiles/{name}.yaml").read_text("utf-8")


def bundled(name: str = "reference", env: Mapping[str, str] | None = None) -> Profile:
    return loads(bundled_text(name), f"bundled {name} profile", env)
