"""report.html: one self-contained page for reviewers (no network fetches)."""
from __future__ import annotations

import html
import json

from .._model import RunReport
from .json_report import report_dict

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:20px}
main{padding:16px 24px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}
.v{font-weight:600;border-radius:3px;padding:1px 6px;color:#fff;font-size:12px}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.WARN{background:#ef6c00}.INFO{background:#0277bd}
.ERROR{background:#6a1b9a}.SKIP{background:#78909c}.PENDING{background:#9e9e9e}.WAIVED{background:#5d4037}
.filters{margin:12px 0}.filters label{margin-right:10px}details{background:#fff;border:1px solid #dde1e7;margin:6px 0;padding:6px 10px}
pre{background:#f0f2f5;padding:8px;overflow:auto;white-space:pre-wrap;word-break:break-all;max-height:320px}
.muted{color:#607080}.fig{font-size:28px;font-weight:700}
"""

_JS = """
const data = JSON.parse(document.getElementById('report-data').textContent);
function applyFilters(){
  const v=[...document.querySelectorAll('input[data-verdict]')].filter(x=>x.checked).map(x=>x.dataset.verdict);
  const c=document.getElementById('cls').value;
  document.querySelectorAll('tr.rule, details.rule').forEach(el=>{
    const show=v.includes(el.dataset.verdict)&&(!c||el.dataset.cls===c);
    el.style.display=show?'':'none';
  });
}
document.querySelectorAll('input[data-verdict], #cls').forEach(el=>el.addEventListener('change',applyFilters));
function openHash(){const id=location.hash.slice(1);const el=document.getElementById(id);if(el&&el.tagName==='DETAILS'){el.open=true;}}
window.addEventListener('hashchange',openHash);openHash();applyFilters();
"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def render_html(report: RunReport) -> str:
    d = report_dict(report)
    counts = d["summary"]["counts"]
    must_eval, must_pass = d["summary"]["must_evaluated"], d["summary"]["must_passed"]
    pct = f"{(100 * must_pass / must_eval):.0f}%" if must_eval else "n/a"
    verdicts = [v for v in ("PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED")]
    classes = sorted({r["class"] for r in d["rules"]}, key=[r["class"] for r in d["rules"]].index)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>batchspec report — {_e(d['target'])}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>batchspec report</h1><div>target <code>{_e(d['target'])}</code> · profile "
        f"<code>{_e(d['profile'])}</code> · started {_e(d['started_at'])} · {d['duration_s']}s · exit code "
        f"{d['summary']['exit_code']}</div></header><main>",
        f"<section id='summary'><h2>Summary</h2><p><span class='fig'>{pct}</span> of evaluated MUST rules pass "
        f"({must_pass} of {must_eval}).</p>",
        "<table><tr><th>class</th>" + "".join(f"<th>{v}</th>" for v in verdicts) + "</tr>",
    ]
    for cls in classes:
        row = {v: 0 for v in verdicts}
        for r in d["rules"]:
            if r["class"] == cls:
                row[r["verdict"]] += 1
        parts.append(f"<tr><td>{cls}</td>" + "".join(f"<td>{row[v] or ''}</td>" for v in verdicts) + "</tr>")
    parts.append("<tr><th>all</th>" + "".join(f"<th>{counts.get(v, 0)}</th>" for v in verdicts) + "</tr></table>")
    if d["notes"]:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in d["notes"]) + "</ul>")
    if d["preflight"] and not d["preflight"].get("ok", True):
        parts.append(f"<p><span class='v FAIL'>PREFLIGHT</span> {_e(d['preflight'].get('reason'))}</p>")
    parts.append("</section><section id='rules'><h2>Rules</h2><div class='filters'>")
    for v in verdicts:
        parts.append(f"<label><input type='checkbox' data-verdict='{v}' checked> {v}</label>")
    parts.append("<label>class <select id='cls'><option value=''>all</option>"
                 + "".join(f"<option>{c}</option>" for c in classes) + "</select></label></div>")
    parts.append("<table><tr><th>rule</th><th>level</th><th>verdict</th><th>title</th><th>reason</th></tr>")
    for r in d["rules"]:
        link = f"<a href='#{r['id']}'>{r['id']}</a>"
        parts.append(
            f"<tr class='rule' data-verdict='{r['verdict']}' data-cls='{r['class']}'><td>{link}</td>"
            f"<td>{r['level']}</td><td><span class='v {r['verdict']}'>{r['verdict']}</span></td>"
            f"<td>{_e(r['title'])}</td><td>{_e(r['reason'][:240])}</td></tr>"
        )
    parts.append("</table></section><section id='details'><h2>Details</h2>")
    for r in d["rules"]:
        parts.append(
            f"<details class='rule' id='{r['id']}' data-verdict='{r['verdict']}' data-cls='{r['class']}'>"
            f"<summary><span class='v {r['verdict']}'>{r['verdict']}</span> <b>{r['id']}</b> {r['level']}: "
            f"{_e(r['title'])}</summary><p class='muted'>{_e(r['rationale'])} (seed: {_e(r['seed'])})</p>"
            f"<p><b>Reason:</b> {_e(r['reason'])}</p>"
        )
        if r.get("expected") is not None:
            parts.append(f"<p><b>Expected:</b> <code>{_e(r['expected'])}</code></p>")
        if r.get("seen") is not None:
            parts.append(f"<p><b>Seen:</b> <code>{_e(r['seen'])}</code></p>")
        if r["verdict"] in ("FAIL", "WARN", "ERROR", "WAIVED", "INFO"):
            for i, ex in enumerate(r["evidence"][:10], 1):
                req, resp = ex["request"], ex["response"]
                status = resp["status"] if resp else f"no response ({_e(ex['error'])})"
                parts.append(f"<h4>Exchange {i}: {_e(req['method'])} {_e(req['url'])} → {status}</h4>")
                if ex.get("note"):
                    parts.append(f"<p class='muted'>{_e(ex['note'])}</p>")
                parts.append(f"<pre>{_e(json.dumps(req['headers'], indent=1))}\n\n{_e(req['body'] or '')}</pre>")
                if resp:
                    parts.append(f"<pre>{_e(json.dumps(resp['headers'], indent=1))}\n\n{_e(resp['body'] or '')}</pre>")
                parts.append(f"<p>Replay:</p><pre>{_e(ex['curl'])}</pre>")
        parts.append("</details>")
    data = json.dumps({"counts": counts}).replace("</", "<\\/")
    parts.append(f"</section></main><script type='application/json' id='report-data'>{data}</script>"
                 f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)
