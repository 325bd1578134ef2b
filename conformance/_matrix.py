"""`batchspec matrix REPORT.json ... -o DIR`: a compatibility matrix of implementations.

In the style of web-platform implementation reports: one column per implementation (a report.json),
one row per rule grouped by class, each cell the rule's verdict there, and on top each
implementation's conformance level. Written as matrix.html (self-contained: inline CSS, no script,
no fetch) and matrix.md. Reports judged against different catalogue versions are refused (exit 2,
naming the versions and the rules that differ) unless `--allow-mixed`, which shows the difference.

`--keep DIR` also writes each report reduced to what a matrix reads (`reduce_report`: verdicts, reasons,
levels; no evidence), a valid report.json of a few KB to keep in a repository and rebuild the matrix
from; `--into FILE` writes the Markdown matrix between the `<!-- batchspec matrix -->` and
`<!-- /batchspec matrix -->` lines of FILE (docs/compatibility.md is made this way).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any, Sequence

from ._diff import DiffInputError, load_report

__all__ = ["MatrixError", "build_matrix", "keep_reports", "reduce_report", "render_matrix_html", "render_matrix_md",
           "update_section", "write_matrix"]

SECTION_BEGIN = "<!-- batchspec matrix -->"
SECTION_END = "<!-- /batchspec matrix -->"

VERDICT_ORDER = ("PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED")


class MatrixError(Exception):
    """The inputs cannot make one matrix (exit 2)."""


def _version(doc: dict[str, Any]) -> str:
    return str((doc.get("catalogue") or {}).get("version") or f"unknown (report schema {doc.get('schema_version')})")


def _rule_sig(r: dict[str, Any]) -> tuple[str, str, str]:
    return (r.get("class", ""), r.get("level", ""), r.get("title", ""))


def catalogue_difference(docs: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Rules that are not the same in every report: missing somewhere, or another level or title."""
    out = []
    rules = [{r["id"]: r for r in d["rules"]} for d in docs]
    ids = list(dict.fromkeys(i for rs in rules for i in rs))
    for rid in ids:
        missing = [n for n, rs in zip(names, rules) if rid not in rs]
        if missing:
            out.append(f"{rid} is not in {', '.join(missing)}")
            continue
        sigs = {_rule_sig(rs[rid]) for rs in rules}
        if len(sigs) > 1:
            out.append(f"{rid} differs: " + "; ".join(f"{n}: {rs[rid].get('level')} {rs[rid].get('title')!r}"
                                                      for n, rs in zip(names, rules)))
    return out


def profile_name(doc: dict[str, Any]) -> str:
    """A report's profile as a short name: `conformance/profiles/sqs-moto.yaml` -> `sqs-moto`."""
    return Path(str(doc.get("profile") or "report")).stem or "report"


def _names(docs: list[dict[str, Any]], paths: Sequence[str], names: Sequence[str] | None,
           names_from: str = "target") -> list[str]:
    if names:
        if len(names) != len(docs):
            raise MatrixError(f"--name was given {len(names)} time(s) for {len(docs)} report(s)")
        return list(names)
    out: list[str] = []
    for d, p in zip(docs, paths):
        n = profile_name(d) if names_from == "profile" else str(d.get("target") or p)
        out.append(n if n not in out else f"{n} ({p})")
    return out


def reduce_report(doc: dict[str, Any]) -> dict[str, Any]:
    """What a matrix reads of a report.json, and nothing else: still a valid report.json (the schema's
    required members), a few KB instead of 100+, and without the run's exchanges (no evidence).
    Levels are the report's own (conformance._levels at run time)."""
    conf = doc.get("conformance") or {}
    nxt = conf.get("next")
    s = doc.get("summary") or {}
    return {
        "schema_version": doc.get("schema_version"),
        "tool": doc.get("tool"),
        "target": doc.get("target"),
        "profile": doc.get("profile"),
        "started_at": doc.get("started_at"),
        "finished_at": doc.get("finished_at"),
        "strict": doc.get("strict", False),
        "classes_declared": doc.get("classes_declared") or [],
        "catalogue": doc.get("catalogue") or {},
        "summary": {k: s[k] for k in ("counts", "total", "exit_code", "must_evaluated", "must_passed", "level")
                    if k in s},
        "conformance": {**{k: conf[k] for k in ("reached", "name", "of") if k in conf},
                        "next": None if not nxt else {
                            "level": nxt.get("level"), "name": nxt.get("name"),
                            "blockers": [{k: b[k] for k in ("rule", "class", "verdict", "reason") if k in b}
                                         for b in nxt.get("blockers") or []]}} if conf else {},
        # evidence: [] (the schema requires the member): the exchanges stay in the run's own report dir
        "rules": [{**{k: r[k] for k in ("id", "class", "level", "title", "verdict", "label", "partial", "reason")
                      if k in r}, "evidence": []}
                  for r in doc.get("rules") or []],
    }


def keep_reports(paths: Sequence[str], directory: str | Path) -> list[Path]:
    """Write each report, reduced (reduce_report), to DIR/<profile name>.json."""
    d = Path(directory)
    out = []
    try:
        d.mkdir(parents=True, exist_ok=True)
        for p in paths:
            try:
                doc = load_report(p)
            except DiffInputError as exc:
                raise MatrixError(str(exc)) from None
            path = d / f"{profile_name(doc)}.json"
            path.write_text(_dump(reduce_report(doc)), encoding="utf-8")
            out.append(path)
    except OSError as exc:
        raise MatrixError(f"cannot keep the reports in {d}: {exc}") from None
    return out


def _dump(doc: dict[str, Any]) -> str:
    """Indented JSON with one rule per line: small, and a changed verdict is a one-line diff."""
    head = json.dumps({k: v for k, v in doc.items() if k != "rules"}, indent=1, sort_keys=True, ensure_ascii=False)
    rules = ",\n".join("  " + json.dumps(r, sort_keys=True, ensure_ascii=False) for r in doc["rules"])
    return head[:-2] + ',\n "rules": [\n' + rules + "\n ]\n}\n"


def update_section(path: str | Path, markdown: str) -> Path:
    """Put `markdown` between the SECTION_BEGIN and SECTION_END lines of the file at `path`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError(f"cannot read {p}: {exc}") from None
    begin, end = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if begin < 0 or end < begin:
        raise MatrixError(f"{p} has no section to fill: put the lines {SECTION_BEGIN} and {SECTION_END} where the "
                          "matrix goes")
    new = text[:begin] + SECTION_BEGIN + "\n" + markdown.rstrip("\n") + "\n" + text[end:]
    try:
        p.write_text(new, encoding="utf-8")
    except OSError as exc:
        raise MatrixError(f"cannot write {p}: {exc}") from None
    return p


def build_matrix(paths: Sequence[str], names: Sequence[str] | None = None, allow_mixed: bool = False,
                 names_from: str = "target") -> dict[str, Any]:
    if not paths:
        raise MatrixError("no report given")
    docs = []
    for p in paths:
        try:
            docs.append(load_report(p))
        except DiffInputError as exc:
            raise MatrixError(str(exc)) from None
    cols = _names(docs, paths, names, names_from)
    versions = [_version(d) for d in docs]
    difference = catalogue_difference(docs, cols) if len(set(versions)) > 1 else []
    if len(set(versions)) > 1 and not allow_mixed:
        listed = ", ".join(f"{p}: {v}" for p, v in zip(paths, versions))
        diff = f"; {len(difference)} rule(s) differ, e.g. {difference[0]}" if difference else "; the rules are the same"
        raise MatrixError(f"the reports were judged against different rule catalogues ({listed}){diff}. Rerun them "
                          "with one batchspec version, or pass --allow-mixed to show them side by side with the difference")
    # Rows: the first report's rule order, then rules only later reports have.
    order: dict[str, dict[str, Any]] = {}
    for d in docs:
        for r in d["rules"]:
            order.setdefault(r["id"], r)
    classes: dict[str, list[dict[str, Any]]] = {}
    for rid, r in order.items():
        cells = []
        for d in docs:
            mine = next((x for x in d["rules"] if x["id"] == rid), None)
            cells.append(None if mine is None else {"verdict": mine["verdict"], "label": mine.get("label") or mine["verdict"],
                                                    "reason": mine.get("reason", ""), "partial": bool(mine.get("partial"))})
        classes.setdefault(r.get("class", "?"), []).append(
            {"id": rid, "level": r.get("level", ""), "title": r.get("title", ""), "cells": cells})
    # A class no implementation declares is SKIP everywhere: named once instead of a block of SKIP rows.
    declared = {c for d in docs for c in d.get("classes_declared") or []}
    undeclared = [c for c in classes if declared and c not in declared]
    for c in undeclared:
        del classes[c]
    impls = []
    for d, name, v, p in zip(docs, cols, versions, paths):
        conf = d.get("conformance") or {}
        s = d.get("summary") or {}
        impls.append({"name": name, "path": str(p), "target": d.get("target"), "started_at": d.get("started_at"),
                      "tool": (d.get("tool") or {}).get("version"), "catalogue": v,
                      "level": conf.get("reached") if conf else None, "level_name": conf.get("name") if conf else None,
                      "next": _blockers(conf.get("next")) if conf else "",
                      "of": conf.get("of", 4) if conf else 4,
                      "classes_declared": d.get("classes_declared") or [],
                      "must": f"{s.get('must_passed', 0)}/{s.get('must_evaluated', 0)}",
                      "exit_code": s.get("exit_code")})
    return {"implementations": impls, "classes": classes, "catalogue_versions": sorted(set(versions)),
            "difference": difference, "undeclared": undeclared}


def _undeclared_note(m: dict[str, Any]) -> str:
    gone = m.get("undeclared") or []
    return f" Classes no implementation declares (not shown): {', '.join(gone)}." if gone else ""


def _blockers(nxt: dict[str, Any] | None) -> str:
    """`Level 1 (Batch basics): CORE-07 FAIL, class HTTP not declared`; "" at the top level."""
    if not nxt:
        return ""
    names = [f"{b['rule']} {b.get('verdict', '')}".strip() if b.get("rule") else f"class {b.get('class')} not declared"
             for b in nxt.get("blockers") or []]
    return f"Level {nxt.get('level')} ({nxt.get('name')}): " + ", ".join(names)


# -- rendering --------------------------------------------------------------------------------------

def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _md_code(x: object) -> str:
    """Escaped text with markdown code spans rendered as code (catalogue titles use them)."""
    return re.sub(r"`([^`\n]+)`", lambda m: f"<code>{m.group(1)}</code>", _e(x))


def _level_text(i: dict[str, Any]) -> str:
    if i["level"] is None:
        return "n/a (report older than levels)"
    return f"Level {i['level']}/{i['of']}" + (f" ({i['level_name']})" if i["level"] else "")


def _class_score(rows: list[dict[str, Any]], k: int) -> str:
    must = [r for r in rows if r["level"].startswith("MUST") and r["cells"][k]
            and r["cells"][k]["verdict"] not in ("SKIP", "PENDING")]
    ok = sum(1 for r in must if r["cells"][k]["verdict"] == "PASS")
    return f"{ok}/{len(must)} MUST" if must else "not evaluated"


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px;color:#1d2330}
table{border-collapse:collapse}th,td{border:1px solid #dde1e7;padding:3px 8px;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#1d2330;color:#fff}
tr.cls th{background:#eef1f5;text-align:left}td.c{text-align:center;white-space:nowrap}
.v{display:inline-block;font-weight:600;border-radius:3px;padding:0 6px;color:#fff;font-size:12px;min-width:56px;text-align:center}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.WARN{background:#e65100}.INFO{background:#0277bd}
.ERROR{background:#6a1b9a}.SKIP{background:#78909c}.PENDING{background:#9e9e9e}.WAIVED{background:#5d4037}
.NA{background:#fff;color:#5b6878;border:1px dashed #9aa5b4}
.partial{color:#8d6e00;font-weight:700}.muted{color:#5b6878}.lvl{font-size:18px;font-weight:700}
.diff{background:#fff8e1;border:1px solid #ffe082;padding:6px 10px}
td:first-child{min-width:360px;max-width:560px}td.wrap{white-space:normal;font-size:12px;max-width:260px}
code{background:#eef1f5;border-radius:3px;padding:0 3px;font-size:12px}
.L0{color:#c62828}.L1{color:#ef6c00}.L2{color:#9e9d24}.L3{color:#2e7d32}.L4{color:#1b5e20}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_matrix_html(m: dict[str, Any]) -> str:
    impls = m["implementations"]
    p = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
         f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\"><link rel='icon' href='data:,'>",
         f"<title>batchspec compatibility matrix</title><style>{_CSS}</style></head><body>",
         "<h1>batchspec compatibility matrix</h1>",
         f"<p class='muted'>{len(impls)} implementation(s) · rule catalogue {_e(', '.join(m['catalogue_versions']))}"
         " · each cell is the rule's verdict in that implementation's report.json; <span class='partial'>*</span> a "
         f"PASS with skipped checks or unobserved states (hover for the detail){_e(_undeclared_note(m))}</p>"]
    if m["difference"]:
        p.append("<div class='diff'><b>The reports were judged against different rule catalogues.</b><ul>"
                 + "".join(f"<li>{_e(x)}</li>" for x in m["difference"]) + "</ul></div>")
    p.append("<table id='matrix'><thead><tr><th>rule</th><th>level</th>"
             + "".join(f"<th title='{_e(i['path'])}'>{_e(i['name'])}</th>" for i in impls) + "</tr></thead><tbody>")
    p.append("<tr><th colspan='2'>conformance level</th>"
             + "".join(f"<td class='c lvl L{i['level'] or 0}'>{_e(_level_text(i))}</td>" for i in impls) + "</tr>")
    for label, key in (("next level blocked by", "next"), ("MUST rules passed", "must"), ("exit code", "exit_code"), ("run", "started_at"),
                       ("batchspec", "tool"), ("classes declared", "classes_declared")):
        p.append(f"<tr><th colspan='2'>{label}</th>" + "".join(
            f"<td class='c muted{' wrap' if key == 'classes_declared' else ''}'>"
            f"{_e(', '.join(i[key]) if isinstance(i[key], list) else i[key])}</td>" for i in impls)
            + "</tr>")
    for cls, rows in m["classes"].items():
        p.append(f"<tr class='cls' id='{_e(cls)}'><th colspan='2'>{_e(cls)}</th>"
                 + "".join(f"<th class='c muted'>{_e(_class_score(rows, k))}</th>" for k in range(len(impls))) + "</tr>")
        for r in rows:
            cells = []
            for c in r["cells"]:
                if c is None:
                    cells.append("<td class='c'><span class='v NA'>absent</span></td>")
                    continue
                star = "<span class='partial'>*</span>" if c["partial"] else ""
                cells.append(f"<td class='c' title='{_e(c['label'] + ' — ' + c['reason'])}'>"
                             f"<span class='v {_e(c['verdict'])}'>{_e(c['verdict'])}</span>{star}</td>")
            p.append(f"<tr><td><b>{_e(r['id'])}</b> <span class='muted'>{_md_code(r['title'])}</span></td>"
                     f"<td>{_e(r['level'])}</td>{''.join(cells)}</tr>")
    p.append("</tbody></table></body></html>")
    return "\n".join(p) + "\n"


def _md(text: object) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def render_matrix_md(m: dict[str, Any], title: bool = True) -> str:
    impls = m["implementations"]
    out = (["# batchspec compatibility matrix", ""] if title else []) + [
           f"{len(impls)} implementation(s), rule catalogue {', '.join(m['catalogue_versions'])}. Each cell is the "
           "rule's verdict in that implementation's report.json; `*` marks a PASS with skipped checks or "
           "unobserved states." + _undeclared_note(m), ""]
    if m["difference"]:
        out += ["**The reports were judged against different rule catalogues:**", ""]
        out += [f"- {_md(x)}" for x in m["difference"]] + [""]
    out += ["| rule | level | " + " | ".join(_md(i["name"]) for i in impls) + " |",
            "|---|---|" + "---|" * len(impls),
            "| **conformance level** | | " + " | ".join(f"**{_md(_level_text(i))}**" for i in impls) + " |",
            "| next level blocked by | | " + " | ".join(_md(i["next"] or "-") for i in impls) + " |",
            "| MUST rules passed | | " + " | ".join(_md(i["must"]) for i in impls) + " |",
            "| run | | " + " | ".join(_md(i["started_at"]) for i in impls) + " |"]
    for cls, rows in m["classes"].items():
        out.append(f"| **{_md(cls)}** | | " + " | ".join(_md(_class_score(rows, k)) for k in range(len(impls))) + " |")
        for r in rows:
            cells = ["absent" if c is None else c["verdict"] + ("\\*" if c["partial"] else "") for c in r["cells"]]
            out.append(f"| {r['id']} | {r['level']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_matrix(paths: Sequence[str], directory: str | Path | None, names: Sequence[str] | None = None,
                 allow_mixed: bool = False, names_from: str = "target", keep: str | Path | None = None,
                 into: str | Path | None = None) -> list[Path]:
    m = build_matrix(paths, names, allow_mixed, names_from)
    written: list[Path] = []
    if keep:
        written += keep_reports(paths, keep)
    if into:
        written.append(update_section(into, render_matrix_md(m, title=False)))
    if directory is None:
        return written
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        out = [d / "matrix.html", d / "matrix.md"]
        out[0].write_text(render_matrix_html(m), encoding="utf-8")
        out[1].write_text(render_matrix_md(m), encoding="utf-8")
    except OSError as exc:
        raise MatrixError(f"cannot write the matrix to {d}: {exc}") from None
    return written + out
