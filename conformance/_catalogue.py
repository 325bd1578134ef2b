"""The rule catalogue: one data file that drives checks, reports and docs."""
from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class Rule:
    id: str
    cls: str
    level: str
    title: str
    rationale: str
    seed: str
    pending: bool = False
    # SPEC 4b: when a SKIP counts as met for a level: {"when": {...conditions}, "because": "..."}, or None.
    not_applicable: dict[str, Any] | None = None

    @property
    def requirement(self) -> str:
        return f"{self.id} {self.level}: {self.title}"


@dataclass(frozen=True)
class RuleClass:
    id: str
    name: str
    description: str
    always_on: bool


@dataclass(frozen=True)
class Level:
    """A conformance level (SPEC 4b): `classes` are all the classes it needs, its own and those below."""

    level: int
    name: str
    adds: tuple[str, ...]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    rules: tuple[Rule, ...]
    classes: tuple[RuleClass, ...]
    levels: tuple[Level, ...] = ()
    version: str = ""

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def __contains__(self, rule_id: object) -> bool:
        return any(r.id == rule_id for r in self.rules)

    def by_class(self, cls: str) -> list[Rule]:
        return [r for r in self.rules if r.cls == cls]

    @property
    def class_ids(self) -> list[str]:
        return [c.id for c in self.classes]


def raw() -> dict[str, Any]:
    text = importlib.resources.files("conformance").joinpath("catalogue.yaml").read_text("utf-8")
    # libyaml when present: the pure-Python parser takes ~0.2 s of every run for this file
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=1)
def load() -> Catalogue:
    data = raw()
    rules = tuple(
        Rule(
            id=r["id"],
            cls=r["class"],
            level=r["level"],
            title=r["title"],
            rationale=r.get("rationale", ""),
            seed=r.get("seed", ""),
            pending=bool(r.get("pending", False)),
            not_applicable=r.get("not_applicable"),
        )
        for r in data["rules"]
    )
    classes = tuple(
        RuleClass(c["id"], c.get("name", c["id"]), c.get("description", ""), bool(c.get("always_on")))
        for c in data["classes"]
    )
    levels: list[Level] = []
    below: tuple[str, ...] = ()
    for lv in sorted(data.get("levels") or [], key=lambda x: x["level"]):
        below = below + tuple(lv["classes"])
        levels.append(Level(int(lv["level"]), lv["name"], tuple(lv["classes"]), below))
    return Catalogue(rules, classes, tuple(levels), str(data.get("version", "")))


def violation_verdict(level: str, strict: bool) -> str:
    """What a violated rule of this level is: MUST -> FAIL, SHOULD -> WARN (FAIL if strict), MAY -> INFO."""
    if level.startswith("MUST"):
        return "FAIL"
    if level == "SHOULD":
        return "FAIL" if strict else "WARN"
    return "INFO"
