"""`batchspec matrix REPORT.json ... -o DIR`: a compatibility matrix of implementations.

In the style of web-platform implementation reports: one column per implementation (a report.json),
one row per rule grouped by class, each cell the rule's verdict there, and on top each
implementation's conformance level. Written as matrix.html (self-contained: inline CSS, no script,
no fetch) and matrix.md. Reports judged against different catalogue versions are refused (exit 2,
naming the versions and the rules that differ) unless `--allow-mixed`, which shows the difference.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Sequence

from ._diff import DiffInputError, load_report

__all__ = ["MatrixError", "build_matrix", "render_matrix_html", "render_matrix_md", "write_matrix"]

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


def _names(docs: list[dict[str, Any]], paths: Sequence[str], names: Sequence[str] | None) -> list[str]:
    if names:
        if len(names) != len(docs):
            raise MatrixError(f"--name was given {len(names)} time(s) for {len(docs)} report(s)")
        return list(names)
    out: list[str] = []
    for d, p in zip(docs, paths):
        n = str(d.get("target") or p)
        out.append(n if n not in out else f"{n} ({p})")
    return out


def build_matrix(paths: Sequence[str], names: Sequence[str] | None = None, allow_mixed: bool = False) -> dict[str, Any]:
    if not paths:
        raise MatrixError("no report given")
    docs = []
    for p in paths:
        try:
            docs.append(load_report(p))
        except DiffInputError as exc:
            raise MatrixError(str(exc)) from None
    cols = _names(docs, paths, names)
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
    impls = []
    for d, name, v, p in zip(docs, cols, versions, paths):
        conf = d.get("conformance") or {}
        s = d.get("summary") or {}
        impls.append({"name": name, "path": str(p), "target": d.get("target"), "started_at": d.get("started_at"),
                      "tool": (d.get("tool") or {}).get("version"), "catalogue": v,
                      "level": conf.get("reached") if conf else None, "level_name": conf.get("name") if conf else None,
                      "of": conf.get("of", 4) if conf else 4,
                      "classes_declared": d.get("classes_declared") or [],
                      "must": f"{s.get('must_passed', 0)}/{s.get('must_evaluated', 0)}",
                      "exit_code": s.get("exit_code")})
    return {"implementations": impls, "classes": classes, "catalogue_versions": sorted(set(versions)),
            "difference": difference}


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
         "PASS with skipped checks or unobserved states (hover for the detail)</p>"]
    if m["difference"]:
        p.append("<div class='diff'><b>The reports were judged against different rule catalogues.</b><ul>"
                 + "".join(f"<li>{_e(x)}</li>" for x in m["difference"]) + "</ul></div>")
    p.append("<table id='matrix'><thead><tr><th>rule</th><th>level</th>"
             + "".join(f"<th title='{_e(i['path'])}'>{_e(i['name'])}</th>" for i in impls) + "</tr></thead><tbody>")
    p.append("<tr><th colspan='2'>conformance level</th>"
             + "".join(f"<td class='c lvl L{i['level'] or 0}'>{_e(_level_text(i))}</td>" for i in impls) + "</tr>")
    for label, key in (("MUST rules passed", "must"), ("exit code", "exit_code"), ("run", "started_at"),
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


def render_matrix_md(m: dict[str, Any]) -> str:
    impls = m["implementations"]
    out = ["# batchspec compatibility matrix", "",
           f"{len(impls)} implementation(s), rule catalogue {', '.join(m['catalogue_versions'])}. Each cell is the "
           "rule's verdict in that implementation's report.json; `*` marks a PASS with skipped checks or "
           "unobserved states.", ""]
    if m["difference"]:
        out += ["**The reports were judged against different rule catalogues:**", ""]
        out += [f"- {_md(x)}" for x in m["difference"]] + [""]
    out += ["| rule | level | " + " | ".join(_md(i["name"]) for i in impls) + " |",
            "|---|---|" + "---|" * len(impls),
            "| **conformance level** | | " + " | ".join(f"**{_md(_level_text(i))}**" for i in impls) + " |",
            "| MUST rules passed | | " + " | ".join(_md(i["must"]) for i in impls) + " |",
            "| run | | " + " | ".join(_md(i["started_at"]) for i in impls) + " |"]
    for cls, rows in m["classes"].items():
        out.append(f"| **{_md(cls)}** | | " + " | ".join(_md(_class_score(rows, k)) for k in range(len(impls))) + " |")
        for r in rows:
            cells = ["absent" if c is None else c["verdict"] + ("\\*" if c["partial"] else "") for c in r["cells"]]
            out.append(f"| {r['id']} | {r['level']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_matrix(paths: Sequence[str], directory: str | Path, names: Sequence[str] | None = None,
                 allow_mixed: bool = False) -> list[Path]:
    m = build_matrix(paths, names, allow_mixed)
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        out = [d / "matrix.html", d / "matrix.md"]
        out[0].write_text(render_matrix_html(m), encoding="utf-8")
        out[1].write_text(render_matrix_md(m), encoding="utf-8")
    except OSError as exc:
        raise MatrixError(f"cannot write the matrix to {d}: {exc}") from None
    return out
