"""`batchspec diff OLD.json NEW.json`: what changed between two runs, fit for a pull-request comment.

Verdicts are ranked by how bad they are for conformance:
    PASS, INFO (a MAY: reported only)  0
    WARN                               1
    FAIL, WAIVED (an accepted FAIL)    2
    ERROR                              3
SKIP and PENDING were not evaluated and have no rank. A rule *regressed* when its new rank is
higher than its old one, or when a rule not evaluated before (SKIP, PENDING, absent) now WARNs,
FAILs or ERRORs; it *improved* when its rank went down; any other change of verdict (FAIL <->
WAIVED, PASS <-> INFO, anything -> SKIP/PENDING, newly PASSing) is *changed*. Exit 1 on a regression.

A MUST rule that PASSed and is no longer evaluated (SKIP, PENDING or absent: a class dropped from the
profile, a narrower --class/--rule) is *lost coverage*: the gate no longer proves what it proved. It
counts as a regression unless the caller allows it (`batchspec diff --allow-lost-coverage`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RANK = {"PASS": 0, "INFO": 0, "WARN": 1, "FAIL": 2, "WAIVED": 2, "ERROR": 3}
VERDICTS = ("PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED")
SUPPORTED_MAJOR = "1"
EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


class DiffInputError(Exception):
    """An input is not a usable report (exit 2)."""


def _kind(old: str | None, new: str | None) -> str | None:
    if old == new:
        return None
    if new is None:
        return "changed"  # the rule left the report
    old_rank, new_rank = RANK.get(old or ""), RANK.get(new)
    if new_rank is None:
        return "changed"  # no longer evaluated: never good news, never a regression
    if old_rank is None:
        return "regressed" if new_rank > 0 else "changed"
    if new_rank > old_rank:
        return "regressed"
    if new_rank < old_rank:
        return "improved"
    return "changed"


def _lost(o: dict[str, Any] | None, n: dict[str, Any] | None) -> bool:
    ref = o or {}
    return (str(ref.get("level") or "").startswith("MUST") and ref.get("verdict") == "PASS"
            and (n is None or n.get("verdict") in ("SKIP", "PENDING")))


def compare(old: dict[str, Any], new: dict[str, Any], allow_lost_coverage: bool = False) -> dict[str, Any]:
    """Compare two report.json documents; pure (no I/O)."""
    old_rules = {r["id"]: r for r in old.get("rules", [])}
    new_rules = {r["id"]: r for r in new.get("rules", [])}
    out: dict[str, list[dict[str, Any]]] = {"regressed": [], "improved": [], "changed": [], "lost": []}
    ids = list(new_rules) + [i for i in old_rules if i not in new_rules]
    for rid in ids:
        o, n = old_rules.get(rid), new_rules.get(rid)
        ov, nv = (o or {}).get("verdict"), (n or {}).get("verdict")
        kind = "lost" if _lost(o, n) else _kind(ov, nv)
        if kind is None:
            continue
        ref = n or o or {}
        out[kind].append({
            "id": rid, "class": ref.get("class"), "level": ref.get("level"), "title": ref.get("title", ""),
            "old": ov, "new": nv, "reason": (n or {}).get("reason", "") if n else "not in the new report",
        })
    notes = []
    for key, label in (("target", "target"), ("profile", "profile")):
        if old.get(key) != new.get(key):
            notes.append(f"The reports are for different {label}s: {old.get(key)!r} vs {new.get(key)!r}.")
    if bool(old.get("strict")) != bool(new.get("strict")):
        notes.append("One run was --strict and the other was not: SHOULD rules are judged differently.")
    counts = {v: [(old.get("summary") or {}).get("counts", {}).get(v, 0),
                  (new.get("summary") or {}).get("counts", {}).get(v, 0)] for v in VERDICTS}
    return {
        "old": _meta(old), "new": _meta(new),
        "regressed": out["regressed"], "improved": out["improved"], "changed": out["changed"],
        "lost_coverage": out["lost"], "lost_coverage_allowed": allow_lost_coverage,
        "counts": counts, "notes": notes,
        "regression": bool(out["regressed"]) or (bool(out["lost"]) and not allow_lost_coverage),
    }


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("target", "profile", "started_at", "schema_version")} | {
        "exit_code": (doc.get("summary") or {}).get("exit_code")}


def check_report(doc: Any, name: str) -> dict[str, Any]:
    """Enough of schemas/report.schema.json to compare safely; newer minor versions are welcome."""
    if not isinstance(doc, dict) or "schema_version" not in doc or not isinstance(doc.get("rules"), list):
        raise DiffInputError(f"{name}: not a batchspec report (no schema_version and rules)")
    version = str(doc["schema_version"])
    if version.split(".")[0] != SUPPORTED_MAJOR:
        raise DiffInputError(f"{name}: report schema_version {version} is not supported (this batchspec reads 1.x)")
    for i, r in enumerate(doc["rules"]):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str) or r.get("verdict") not in VERDICTS:
            raise DiffInputError(f"{name}: rules[{i}] is not a rule with an id and a known verdict")
    return doc


def load_report(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DiffInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffInputError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise DiffInputError(f"{path}: not JSON ({exc})") from None
    return check_report(doc, path)


# -- rendering ---------------------------------------------------------------

def _cell(text: Any) -> str:
    return str(text if text is not None else "—").replace("|", "\\|").replace("\n", " ")


def render_markdown(d: dict[str, Any]) -> str:
    reg, imp, chg = d["regressed"], d["improved"], d["changed"]
    lost = d.get("lost_coverage") or []
    head = ("❌ **{} regression{}**".format(len(reg), "s" if len(reg) != 1 else "") if reg
            else "❌ **lost coverage**" if d["regression"] else "✅ **no regression**")
    if lost:
        head += f" · {len(lost)} MUST rule{'s' if len(lost) != 1 else ''} no longer checked" + (
            " (allowed)" if d.get("lost_coverage_allowed") else "")
    lines = ["### batchspec diff", "",
             f"{head} · {len(imp)} improved · {len(chg)} other change{'s' if len(chg) != 1 else ''}", "",
             f"_old_: `{d['old']['target']}` started {d['old']['started_at']} (exit {d['old']['exit_code']}) · "
             f"_new_: `{d['new']['target']}` started {d['new']['started_at']} (exit {d['new']['exit_code']})", ""]
    for note in d["notes"]:
        lines += [f"> {note}", ""]

    def table(rows: list[dict[str, Any]], with_reason: bool) -> list[str]:
        out = ["| rule | level | old | new | title |" + (" reason |" if with_reason else ""),
               "|---|---|---|---|---|" + ("---|" if with_reason else "")]
        for r in rows:
            out.append(f"| {r['id']} | {_cell(r['level'])} | {_cell(r['old'])} | **{_cell(r['new'])}** | "
                       f"{_cell(r['title'])} |" + (f" {_cell(r['reason'][:200])} |" if with_reason else ""))
        return out + [""]

    if reg:
        lines += ["#### Regressions", ""] + table(reg, True)
    if lost:
        lines += ["#### Lost coverage" + (" (allowed by --allow-lost-coverage)" if d.get("lost_coverage_allowed")
                                          else ": MUST rules that passed and are no longer checked"), ""]
        lines += table(lost, True)
    for label, rows in (("Improved", imp), ("Other changes", chg)):
        if rows:
            lines += [f"<details><summary>{label} ({len(rows)})</summary>", ""] + table(rows, False) + ["</details>", ""]
    changed_counts = {v: c for v, c in d["counts"].items() if c[0] != c[1]}
    if changed_counts:
        lines += ["| verdict | " + " | ".join(changed_counts) + " |", "|---|" + "---:|" * len(changed_counts),
                  "| old → new | " + " | ".join(f"{a} → {b}" for a, b in changed_counts.values()) + " |", ""]
    return "\n".join(lines) + "\n"


def render_text(d: dict[str, Any]) -> str:
    lines = [f"old: {d['old']['target']} ({d['old']['started_at']})", f"new: {d['new']['target']} ({d['new']['started_at']})"]
    lines += [f"note: {n}" for n in d["notes"]]
    for kind, label in (("regressed", "regressed"), ("lost_coverage", "lost"), ("improved", "improved"),
                        ("changed", "changed")):
        for r in d.get(kind) or []:
            lines.append(f"{label:<9} {r['id']:<9} {r['old'] or '-':>7} -> {r['new'] or '-':<7} {r['title']}")
    lost = len(d.get("lost_coverage") or [])
    lines.append(f"{len(d['regressed'])} regressed, {len(d['improved'])} improved, {len(d['changed'])} changed"
                 + (f", {lost} lost coverage" + (" (allowed)" if d.get("lost_coverage_allowed") else "")
                    if lost else ""))
    return "\n".join(lines) + "\n"


def render(d: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    if fmt == "text":
        return render_text(d)
    return render_markdown(d)


def diff_command(args: Any) -> int:
    """The `batchspec diff` subcommand: exit 0 no regression, 1 a regression, 2 bad input."""
    try:
        old, new = load_report(args.old), load_report(args.new)
    except DiffInputError as exc:
        print(f"batchspec diff: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = compare(old, new, allow_lost_coverage=bool(getattr(args, "allow_lost_coverage", False)))
    sys.stdout.write(render(result, getattr(args, "format", "md") or "md"))
    return EXIT_REGRESSION if result["regression"] else EXIT_OK
