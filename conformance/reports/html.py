"""report.html: one self-contained page for reviewers.

No network fetches at all (inline CSS and JS, a data: favicon, and a Content-Security-Policy that
forbids anything else), readable from a file:// URL without a server. Rendered from the report.json
dict, so the page and the contract never disagree. A reviewer reaches a failing rule's evidence in
at most two clicks: the findings list at the top links to each flagged rule, which opens with its
evidence. `report.html#CORE-02` opens rule CORE-02.
"""
from __future__ import annotations

import html
import json
import re
from typing import Any

from .._model import RunReport
from ._svg import chart
from .json_report import report_dict

VERDICTS = ("PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED")
FLAGGED = ("FAIL", "ERROR", "WARN", "WAIVED")
MAX_EXCHANGES_PER_CHECK = 12
# Pages with few findings open them up front; a long list stays folded behind the findings links.
OPEN_FINDINGS_UP_TO = 6

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'")

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:20px}
header code{color:#ffe082}main{padding:8px 24px 40px;max-width:1280px}
h2{margin:22px 0 8px;font-size:17px}h4{margin:12px 0 4px;font-size:13px}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;min-width:46px}td.n a{color:inherit;text-decoration:none;display:block}
td.n a:hover{text-decoration:underline}
.v{display:inline-block;font-weight:600;border-radius:3px;padding:0 6px;color:#fff;font-size:12px;min-width:62px;text-align:center}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.WARN{background:#e65100}.INFO{background:#0277bd}
.ERROR{background:#6a1b9a}.SKIP{background:#78909c}.PENDING{background:#9e9e9e}.WAIVED{background:#5d4037}
.figure{display:flex;gap:28px;align-items:center;flex-wrap:wrap;background:#fff;border:1px solid #dde1e7;padding:12px 16px}
.fig{font-size:34px;font-weight:700}.muted{color:#5b6878}
.bar{display:inline-block;width:120px;height:10px;background:#e4e7ec;border-radius:5px;overflow:hidden;vertical-align:middle}
.bar>span{display:block;height:100%;background:#2e7d32}
.exit0{background:#2e7d32}.exit1,.exit2,.exit3{background:#c62828}
.filters{margin:10px 0;display:flex;gap:12px;flex-wrap:wrap;align-items:center}
.filters label{white-space:nowrap}button{font:inherit;padding:2px 10px;cursor:pointer}
details.rule{background:#fff;border:1px solid #dde1e7;margin:4px 0;padding:4px 10px}
details.rule>summary{cursor:pointer;list-style-position:outside}
details.rule[open]{border-color:#9aa5b4}details.rule:target{outline:2px solid #1565c0}
.title{font-weight:600}.reason{color:#5b6878;font-size:13px}
.check{border-left:3px solid #dde1e7;padding:2px 0 2px 10px;margin:10px 0}
.check.FAILc{border-color:#c62828}.check.WARNc{border-color:#e65100}.check.ERRORc{border-color:#6a1b9a}
.ex{border:1px solid #e4e7ec;border-radius:4px;margin:8px 0;padding:6px 8px;background:#fbfcfd}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}@media (max-width:900px){.grid{grid-template-columns:1fr}}
pre{background:#f0f2f5;padding:6px 8px;margin:4px 0;overflow:auto;white-space:pre-wrap;word-break:break-all;max-height:360px;font-size:12px}
.ev{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:6px 0}
.ev code{white-space:pre-wrap;word-break:break-all}
.waiver{background:#efebe9;border:1px solid #bcaaa4;padding:4px 8px;margin:6px 0}
ul.findings{padding-left:20px;margin:6px 0}ul.findings li{margin:2px 0}
.hidden{display:none}
.partial{color:#8d6e00;font-size:12px}.more{color:#1565c0;cursor:help}
.fig.good{color:#2e7d32}.fig.bad{color:#c62828}.fig.warn{color:#e65100}.fig.none{color:#5b6878}
.fig.L0{color:#c62828}.fig.L1{color:#ef6c00}.fig.L2{color:#9e9d24}.fig.L3{color:#2e7d32}.fig.L4{color:#1b5e20}
button.copy{font-size:11px;padding:0 8px;margin-left:8px}.charts{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
svg.chart{background:#fff;border:1px solid #e4e7ec;max-width:100%;height:auto}
.measures{display:flex;flex-wrap:wrap;gap:16px}.measure{background:#fff;border:1px solid #dde1e7;padding:6px 8px}
code{background:#eef1f5;border-radius:3px;padding:0 3px;font-size:12px}header code{background:none}.lvok td{background:#f1f8f1}.lvno td{background:#fff}
ul.blockers{margin:0;padding-left:18px}
"""

_JS = """
(function(){
  'use strict';
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input[data-verdict]'));
  var cls = document.getElementById('cls');
  var rules = Array.prototype.slice.call(document.querySelectorAll('details.rule'));
  var shown = document.getElementById('shown');
  var q = document.getElementById('q');
  var texts = rules.map(function(el){return el.textContent.toLowerCase();});
  function apply(){
    var want = boxes.filter(function(b){return b.checked;}).map(function(b){return b.dataset.verdict;});
    var c = cls.value, n = 0, words = q.value.toLowerCase().split(/\\s+/).filter(Boolean);
    rules.forEach(function(el, i){
      var show = want.indexOf(el.dataset.verdict) >= 0 && (!c || el.dataset.cls === c) &&
        words.every(function(w){return texts[i].indexOf(w) >= 0;});
      el.classList.toggle('hidden', !show); if (show) n++;
    });
    shown.textContent = n + ' of ' + rules.length + ' rules shown';
  }
  function only(verdict, klass){
    boxes.forEach(function(b){b.checked = !verdict || b.dataset.verdict === verdict;});
    cls.value = klass || ''; q.value = ''; apply();
    document.getElementById('rules').scrollIntoView();
  }
  function openHash(){
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id ? document.getElementById(id) : null;
    if (!el || !el.classList.contains('rule')) return;
    if (el.classList.contains('hidden')) only('', '');
    el.open = true; el.scrollIntoView();
  }
  boxes.forEach(function(b){b.addEventListener('change', apply);});
  cls.addEventListener('change', apply);
  q.addEventListener('input', apply);
  function copied(btn, ok){ btn.textContent = ok ? 'copied' : 'select + Ctrl+C';
    setTimeout(function(){btn.textContent = 'copy';}, 1500); }
  document.querySelectorAll('button.copy').forEach(function(btn){
    btn.addEventListener('click', function(e){
      e.preventDefault(); e.stopPropagation();
      var pre = btn.parentNode.nextElementSibling, text = pre ? pre.textContent : '';
      function fallback(){
        var ta = document.createElement('textarea'); ta.value = text; ta.setAttribute('readonly', '');
        ta.style.position = 'fixed'; ta.style.opacity = '0'; document.body.appendChild(ta); ta.select();
        var ok = false; try { ok = document.execCommand('copy'); } catch (err) { ok = false; }
        document.body.removeChild(ta); btn.dataset.copied = text; copied(btn, ok);
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function(){btn.dataset.copied = text; copied(btn, true);}, fallback);
      } else { fallback(); }
    });
  });
  document.querySelectorAll('[data-only]').forEach(function(a){
    a.addEventListener('click', function(e){e.preventDefault(); only(a.dataset.only, a.dataset.cls);});
  });
  document.getElementById('expand').addEventListener('click', function(){rules.forEach(function(d){if(!d.classList.contains('hidden')) d.open = true;});});
  document.getElementById('collapse').addEventListener('click', function(){rules.forEach(function(d){d.open = false;});});
  document.getElementById('reset').addEventListener('click', function(){only('', '');});
  window.addEventListener('hashchange', openHash);
  apply(); openHash();
})();
"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


_CODE_SPAN = re.compile(r"`([^`\n]+)`")


def _md(x: object) -> str:
    """Escaped text with markdown code spans (`x`) rendered as code, as the catalogue writes titles."""
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", _e(x))


def _words(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` characters, cut at a word boundary (never mid-word); True if cut."""
    if len(text) <= limit:
        return text, False
    cut = text[:limit]
    if text[limit:limit + 1] not in (" ", ""):
        cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return cut.rstrip(" ,;:"), True


def _short(text: str, limit: int) -> str:
    """A reason shortened for a summary line; the full text is in the expanded rule."""
    cut, was_cut = _words(text or "", limit)
    return _md(cut) + (" <span class='more' title='the full text is in the expanded rule'>…</span>" if was_cut else "")


def _moving(sr: dict[str, Any]) -> bool:
    """A series worth a picture on top: bars, or a line with more than one reading."""
    return sr.get("kind") == "bar" or len({p[0] for p in sr.get("points") or []}) > 1


def _charts(r: dict[str, Any], only_moving: bool = False) -> str:
    svgs = [chart(sr) for c in r.get("checks") or [] for sr in c.get("series") or []
            if not only_moving or _moving(sr)]
    svgs = [x for x in svgs if x]
    return f"<div class='charts'>{''.join(svgs)}</div>" if svgs else ""


def _pretty(body: str | None) -> str:
    """JSON bodies indented for reading; anything else (truncated, not JSON) verbatim."""
    if not body:
        return ""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # hostile evidence (ROB-02 deep nesting) is shown as sent
        return body


def _headers(h: dict[str, Any] | None) -> str:
    return "\n".join(f"{k}: {v}" for k, v in (h or {}).items())


def _pct(passed: int, evaluated: int) -> tuple[str, float]:
    if not evaluated:
        return "n/a", 0.0
    return f"{100 * passed / evaluated:.0f}%", 100 * passed / evaluated


def _exchange(i: int, ex: dict[str, Any]) -> str:
    req, resp = ex["request"], ex.get("response")
    status = str(resp["status"]) if resp else f"no response ({ex.get('error') or 'no detail'})"
    took = f" · {ex['elapsed_ms']} ms" if ex.get("elapsed_ms") is not None else ""
    note = f"<div class='muted'>{_e(ex['note'])}</div>" if ex.get("note") else ""
    req_text = f"{req['method']} {req['url']}\n{_headers(req.get('headers'))}"
    if req.get("body"):
        req_text += "\n\n" + _pretty(req["body"])
    resp_text = (f"{resp['status']}\n{_headers(resp.get('headers'))}" + ("\n\n" + _pretty(resp.get("body"))
                 if resp.get("body") else "")) if resp else (ex.get("error") or "no response")
    return (f"<div class='ex'><b>Exchange {i}</b>: <code>{_e(req['method'])} {_e(req['url'])}</code> → "
            f"<b>{_e(status)}</b>{took}{note}"
            f"<div class='grid'><div><h4>Request</h4><pre>{_e(req_text)}</pre></div>"
            f"<div><h4>Response</h4><pre>{_e(resp_text)}</pre></div></div>"
            f"<h4>Replay with curl <button type='button' class='copy' title='copy the curl command'>copy</button>"
            f"</h4><pre class='curl'>{_e(ex.get('curl'))}</pre></div>")


def _qualifier(r: dict[str, Any]) -> str:
    """What a bare verdict hides (skipped checks, unobserved states), right beside it."""
    label = r.get("label") or r["verdict"]
    q = label[len(r["verdict"]):].strip()
    return f" <span class='partial'>{_e(q)}</span>" if q else ""


def _beyond_label(r: dict[str, Any]) -> str:
    """The reason without what the label beside it already says (a partial PASS's reason starts with it)."""
    q = (r.get("label") or "")[len(r["verdict"]):].strip()[1:-1]
    reason = r.get("reason") or ""
    return reason[len(q):].lstrip("; ") if q and reason.startswith(q) else reason


def _levels(conf: dict[str, Any]) -> str:
    if not conf:
        return ""
    from .._levels import headline

    rows = []
    for lv in conf.get("levels", []):
        b = lv["blockers"]
        items = "".join(
            (f"<li><a href='#{_e(x['rule'])}'>{_e(x['rule'])}</a> <span class='v {_e(x['verdict'])}'>{_e(x['verdict'])}</span>"
             f" <span class='reason'>{_md(x['reason'])}</span></li>") if x.get("rule")
            else f"<li><b>{_e(x['reason'])}</b></li>"
            for x in b)
        rows.append(f"<tr class='{'lvok' if lv['reached'] else 'lvno'}'><td class='n'>{lv['level']}</td><td>{_e(lv['name'])}</td>"
                    f"<td>{_e(', '.join(lv['adds']))}</td><td>{'✔ reached' if lv['reached'] else '✘ not reached'}</td>"
                    f"<td>{'<ul class=blockers>' + items + '</ul>' if items else '·'}</td></tr>")
    return (f"<h3 id='levels'>Conformance level</h3><p id='level-headline'>{_e(headline(conf))}</p>"
            "<table id='level-table'><tr><th>level</th><th>name</th><th>adds classes</th><th>state</th>"
            "<th>blocked by</th></tr>" + "".join(rows) + "</table>")


def _rule(r: dict[str, Any], open_: bool) -> str:
    v = r["verdict"]
    out = [f"<details class='rule' id='{_e(r['id'])}' data-verdict='{v}' data-cls='{_e(r['class'])}'"
           f"{' open' if open_ else ''}><summary><span class='v {v}'>{v}</span> <b>{_e(r['id'])}</b> "
           f"<span class='muted'>{_e(r['level'])}</span> <span class='title'>{_md(r['title'])}</span>"
           f"{_qualifier(r)}<div class='reason'>{_short(_beyond_label(r), 220)}</div></summary>"]
    out.append(f"<p><b>Rule:</b> {_e(r['id'])} {_e(r['level'])}: {_md(r['title'])}</p>"
               f"<p class='muted'><b>Why:</b> {_e(r.get('rationale'))}<br><b>Seed section:</b> {_e(r.get('seed'))}</p>"
               f"<p><b>Verdict:</b> <span class='v {v}'>{v}</span> {_md(r['reason'])}</p>")
    out.append(_charts(r))
    es = r.get("evidence_summary")
    if es and not r.get("evidence") and es.get("exchanges"):
        out.append(f"<p class='muted'>{es['exchanges']} exchange(s): "
                   + ", ".join(f"{_e(k)} ×{n}" for k, n in es.get("requests", {}).items())
                   + " · statuses " + ", ".join(f"{_e(k)} ×{n}" for k, n in es.get("statuses", {}).items())
                   + " (kept in exchanges.har; in report.json with <code>--evidence all</code>)</p>")
    w = r.get("waiver")
    if w:
        out.append(f"<div class='waiver'><b>Waiver ({_e(w.get('status'))})</b>: {_e(w.get('reason'))} · expires "
                   f"{_e(w.get('expires'))}{' · target ' + _e(w['target']) if w.get('target') else ''}"
                   f"{' · ' + _e(w['detail']) if w.get('detail') else ''}</div>")
    if r.get("checks"):
        out.append("<table><tr><th>check</th><th>verdict</th><th>reason</th></tr>" + "".join(
            f"<tr><td><code>{_e(c['name'])}</code></td><td><span class='v {c['verdict']}'>{c['verdict']}</span></td>"
            f"<td>{_md(c.get('reason'))}{''.join('<div class=partial>not observed: ' + _e(n) + '</div>' for n in c.get('observed') or [])}"
            f"</td></tr>" for c in r["checks"]) + "</table>")
    if v in FLAGGED or v == "INFO":
        by_check: dict[str, list[dict[str, Any]]] = {}
        for ex in r.get("evidence") or []:
            by_check.setdefault(ex.get("check") or "", []).append(ex)
        decided = "FAIL" if v == "WAIVED" else v
        for c in [c for c in r.get("checks", []) if c["verdict"] == decided] or [{"name": "", "verdict": v}]:
            exs = by_check.get(c["name"], [])
            out.append(f"<div class='check {c['verdict']}c'><div><b>Evidence</b> of <code>{_e(c['name'])}</code>"
                       f" ({len(exs)} exchange{'s' if len(exs) != 1 else ''})</div>")
            if c.get("reason"):
                out.append(f"<p>{_e(c['reason'])}</p>")
            if c.get("expected") is not None or c.get("seen") is not None:
                out.append(f"<div class='ev'><b>expected</b><code>{_e(c.get('expected'))}</code>"
                           f"<b>seen</b><code>{_e(c.get('seen'))}</code></div>")
            for i, ex in enumerate(exs[:MAX_EXCHANGES_PER_CHECK], 1):
                out.append(_exchange(i, ex))
            if len(exs) > MAX_EXCHANGES_PER_CHECK:
                out.append(f"<p class='muted'>{len(exs) - MAX_EXCHANGES_PER_CHECK} more exchanges in report.json</p>")
            out.append("</div>")
        if r.get("evidence_omitted"):
            out.append(f"<p class='muted'>{r['evidence_omitted']} further exchanges were not kept in the report.</p>")
    out.append("</details>")
    return "".join(out)


def load_baseline(path: str) -> dict[str, Any]:
    """An earlier report.json to compare with; ValueError with one clear line if it is not one."""
    from .._diff import DiffInputError, load_report

    try:
        return load_report(path)
    except DiffInputError as exc:
        raise ValueError(f"--baseline {exc}") from None


def _baseline(d: dict[str, Any]) -> str:
    path = (d.get("settings") or {}).get("baseline")
    if not path:
        return ""
    try:
        old = load_baseline(path)
    except ValueError as exc:
        return f"<h3 id='changes'>Changes since the baseline</h3><p class='muted'>{_e(exc)}</p>"
    from .._diff import compare

    c = compare(old, d)
    ol, nl = (old.get("conformance") or {}).get("reached"), (d.get("conformance") or {}).get("reached")
    head = (f"<p>Baseline <code>{_e(path)}</code> ({_e(old.get('started_at'))}): "
            f"{len(c['regressed'])} regressed, {len(c['improved'])} improved, {len(c['changed'])} otherwise changed"
            + (f"; level {_e(ol if ol is not None else 'n/a')} → {_e(nl)}" if ol != nl else f"; level unchanged ({_e(nl)})")
            + "</p>")
    rows = "".join(
        f"<tr class='{kind}'><td>{kind}</td><td><a href='#{_e(x['id'])}'>{_e(x['id'])}</a></td>"
        f"<td><span class='v {_e(x['old'])}'>{_e(x['old'] or '—')}</span> → <span class='v {_e(x['new'])}'>"
        f"{_e(x['new'] or '—')}</span></td><td class='reason'>{_e(x['reason'])}</td></tr>"
        for kind in ("regressed", "improved", "changed") for x in c[kind])
    notes = "".join(f"<p class='muted'>{_e(n)}</p>" for n in c["notes"])
    table = (f"<table id='changes-table'><tr><th>change</th><th>rule</th><th>verdict</th><th>reason</th></tr>{rows}</table>"
             if rows else "<p class='muted'>No rule changed its verdict.</p>")
    return f"<h3 id='changes'>Changes since the baseline</h3>{head}{notes}{table}"


def _partial_note(d: dict[str, Any]) -> str:
    part = [r for r in d["rules"] if r["verdict"] == "PASS" and r.get("partial")]
    if not part:
        return ""
    return (f"<div class='partial' id='partial-note'>{len(part)} PASS rule{'s' if len(part) != 1 else ''} rest on "
            "fewer checks or states than the rule covers: " + ", ".join(
                f"<a href='#{_e(r['id'])}' title='{_e(r.get('label'))}'>{_e(r['id'])}</a>" for r in part) + "</div>")


def _tone(d: dict[str, Any]) -> str:
    """The headline's colour: red when the run fails, amber when only SHOULDs are flagged, green otherwise."""
    s = d["summary"]
    if s.get("exit_code", 0) != 0:
        return "bad"
    if s["counts"].get("WARN") or s["counts"].get("WAIVED") or s.get("must_passed", 0) < s.get("must_evaluated", 0):
        return "warn"
    return "good" if s.get("must_evaluated") else "none"


def _measurements(d: dict[str, Any]) -> str:
    items = []
    for r in d["rules"]:
        svgs = _charts(r, only_moving=True)  # single readings are in the rule's own section
        if svgs:
            items.append(f"<div class='measure'><a href='#{_e(r['id'])}'>{_e(r['id'])}</a> "
                         f"<span class='v {r['verdict']}'>{r['verdict']}</span>{svgs}</div>")
    return ("<h3 id='measurements'>Measurements</h3><div class='measures'>" + "".join(items) + "</div>") if items else ""


def _level_name(conf: dict[str, Any]) -> str:
    return str(conf.get("name")) if conf.get("reached") else "no level reached"


def _level_short(conf: dict[str, Any]) -> str:
    if not conf:
        return "level n/a"
    return f"Level {conf.get('reached', 0)}/{conf.get('of', 4)}"


def render_html_dict(d: dict[str, Any]) -> str:
    s = d["summary"]
    counts = s["counts"]
    pct, width = _pct(s.get("must_passed", 0), s.get("must_evaluated", 0))
    classes = list(dict.fromkeys(r["class"] for r in d["rules"]))
    by_class = s.get("by_class") or {}
    flagged = [r for r in d["rules"] if r["verdict"] in FLAGGED]
    exit_code = s.get("exit_code", 0)
    p = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>",
        f"<title>batchspec report: {_e(d['target'])}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>batchspec report</h1><div>target <code>{_e(d['target'])}</code> · profile "
        f"<code>{_e(d['profile'])}</code></div><div class='muted' style='color:#c5cbd6'>started {_e(d['started_at'])}"
        f" · {_e(d.get('duration_s'))} s · batchspec {_e(d.get('tool', {}).get('version'))} · report schema "
        f"{_e(d['schema_version'])}{' · strict' if d.get('strict') else ''} · classes declared: "
        f"{_e(', '.join(d.get('classes_declared') or []))}</div></header><main>",
        "<section id='summary'><h2>Summary</h2>"
        + (f"<p class='interrupted'><span class='v ERROR'>INTERRUPTED</span> {_e(d['interrupted']['message'])} "
           f"({_e(d['interrupted']['signal'])}): this report is incomplete; the rules not reached are SKIP.</p>"
           if d.get("interrupted") else "")
        + (f"<p class='interrupted' id='target-stopped'><span class='v ERROR'>TARGET STOPPED</span> "
           f"{_e(d['target_stopped']['message'])}</p>" if d.get("target_stopped") else "")
        + "<div class='figure'>"
        f"<div><div class='fig {_tone(d)}' id='headline'>{pct}</div><div class='muted'>MUST compliance: {s.get('must_passed', 0)} of "
        f"{s.get('must_evaluated', 0)} evaluated MUST rules pass</div>"
        f"<span class='bar'><span style='width:{width:.0f}%'></span></span></div>",
        f"<div id='level'><div class='fig lvl L{(d.get('conformance') or {}).get('reached', 0)}'>{_e(_level_short(d.get('conformance') or {}))}</div><div class='muted'>"
        f"{_e(_level_name(d.get('conformance') or {}))} · conformance level (SPEC 4b)</div></div>",
        f"<div><span class='v exit{exit_code}'>exit code {exit_code}</span><div class='muted'>"
        + ("every MUST of the declared classes passed" if exit_code == 0 else "a rule failed" if exit_code == 1
           else "interrupted" if exit_code in (130, 143) else "the target could not be checked") + "</div></div>",
        "<div>" + " ".join(f"<a href='#rules' data-only='{v}' title='show only {v}'><span class='v {v}'>{v} "
                           f"{counts.get(v, 0)}</span></a>" for v in VERDICTS if counts.get(v)) + _partial_note(d)
        + "</div></div>",
        "<h3>Per class</h3><table id='classes'><tr><th>class</th><th>MUST compliance</th>"
        + "".join(f"<th>{v}</th>" for v in VERDICTS) + "</tr>",
    ]
    for cls in classes:
        c = by_class.get(cls) or {"counts": {}, "must_evaluated": 0, "must_passed": 0}
        cp, cw = _pct(c["must_passed"], c["must_evaluated"])
        fig = (f"<span class='bar'><span style='width:{cw:.0f}%'></span></span> {cp} ({c['must_passed']}/"
               f"{c['must_evaluated']})" if c["must_evaluated"] else "<span class='muted'>not evaluated</span>")
        cells = "".join(
            f"<td class='n'><a href='#rules' data-only='{v}' data-cls='{_e(cls)}'>{c['counts'].get(v)}</a></td>"
            if c["counts"].get(v) else "<td class='n muted'>·</td>" for v in VERDICTS)
        p.append(f"<tr><td><a href='#rules' data-only='' data-cls='{_e(cls)}'>{_e(cls)}</a></td><td>{fig}</td>{cells}</tr>")
    p.append("<tr><th>all</th><th></th>" + "".join(f"<th class='n'>{counts.get(v, 0)}</th>" for v in VERDICTS)
             + "</tr></table>")
    p.append(_levels(d.get("conformance") or {}))
    p.append(_baseline(d))
    p.append(_measurements(d))
    pre = d.get("preflight") or {}
    if pre and not pre.get("ok", True):
        p.append(f"<h3>Preflight failed</h3><p><span class='v ERROR'>ERROR</span> {_e(pre.get('reason'))}</p>")
        for i, ex in enumerate(pre.get("evidence") or [], 1):
            p.append(_exchange(i, ex))
    p.append(f"<h3 id='findings'>Findings ({len(flagged)})</h3>")
    if flagged:
        p.append("<ul class='findings'>" + "".join(
            f"<li><span class='v {r['verdict']}'>{r['verdict']}</span> <a href='#{_e(r['id'])}'>{_e(r['id'])}</a> "
            f"{_e(r['level'])}: {_md(r['title'])} <span class='reason'>— {_short(r['reason'], 160)}</span></li>"
            for r in flagged) + "</ul>")
    else:
        p.append("<p class='muted'>No FAIL, ERROR, WARN or WAIVED rule.</p>")
    if d.get("notes"):
        p.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in d["notes"]) + "</ul>")
    if d.get("waivers"):
        p.append("<h3>Waivers</h3><table><tr><th>rule</th><th>status</th><th>expires</th><th>reason</th><th>detail</th></tr>"
                 + "".join(f"<tr><td><a href='#{_e(w['rule'])}'>{_e(w['rule'])}</a></td><td>{_e(w.get('status'))}</td>"
                           f"<td>{_e(w.get('expires'))}</td><td>{_e(w.get('reason'))}</td><td>{_e(w.get('detail'))}</td></tr>"
                           for w in d["waivers"]) + "</table>")
    p.append("</section><section id='rules'><h2>Rules</h2><div class='filters'><span>verdict:</span>")
    for v in VERDICTS:
        p.append(f"<label><input type='checkbox' data-verdict='{v}' checked> {v}</label>")
    p.append("<label>class <select id='cls'><option value=''>all</option>"
             + "".join(f"<option value='{_e(c)}'>{_e(c)}</option>" for c in classes) + "</select></label>"
             "<label>search <input type='search' id='q' placeholder='id, title, reason, URL…' size='28'></label>"
             "<button type='button' id='reset'>show all</button><button type='button' id='expand'>expand</button>"
             "<button type='button' id='collapse'>collapse</button><span id='shown' class='muted'></span></div>")
    open_flagged = len(flagged) <= OPEN_FINDINGS_UP_TO
    for r in d["rules"]:
        p.append(_rule(r, open_flagged and r["verdict"] in FLAGGED))
    p.append(f"</section></main><script>{_JS}</script></body></html>")
    return "\n".join(p) + "\n"


def render_html(report: RunReport) -> str:
    return render_html_dict(report_dict(report))
