"""junit.xml for CI: one testcase per rule, grouped in one testsuite per class."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from .._model import RunReport, Verdict


def _evidence_text(rule) -> str:
    lines = [f"{rule.id} {rule.level}: {rule.title}", f"verdict: {rule.verdict.value}", f"reason: {rule.reason}"]
    d = rule.deciding_check
    if d and d.expected is not None:
        lines.append(f"expected: {d.expected}")
    if d and d.seen is not None:
        lines.append(f"seen: {d.seen}")
    for ex in rule.evidence[:6]:
        status = ex.status if ex.status is not None else (ex.error or "no response")
        lines.append(f"> {ex.method} {ex.url} -> {status}")
        lines.append(f"  replay: {ex.curl}")
    return "\n".join(lines)


def render_junit(report: RunReport) -> str:
    root = ET.Element("testsuites", name="batchspec", tests=str(len(report.rules)))
    classes: dict[str, list] = {}
    for r in report.rules:
        classes.setdefault(r.cls, []).append(r)
    tf = te = ts = 0
    for cls, rules in classes.items():
        suite = ET.SubElement(root, "testsuite", name=f"batchspec.{cls}", tests=str(len(rules)))
        f = e = s = 0
        for r in rules:
            secs = sum(c.duration_s for c in r.checks)
            case = ET.SubElement(suite, "testcase", classname=f"batchspec.{cls}", name=f"{r.id} {r.title}",
                                 time=f"{secs:.3f}")
            if r.verdict == Verdict.FAIL:
                f += 1
                el = ET.SubElement(case, "failure", message=r.reason[:500], type=f"{r.level} violated")
                el.text = _evidence_text(r)
            elif r.verdict == Verdict.ERROR:
                e += 1
                el = ET.SubElement(case, "error", message=r.reason[:500], type="ERROR")
                el.text = _evidence_text(r)
            elif r.verdict in (Verdict.SKIP, Verdict.PENDING, Verdict.WAIVED):
                s += 1
                ET.SubElement(case, "skipped", message=f"{r.verdict.value}: {r.reason}"[:500])
            elif r.verdict in (Verdict.WARN, Verdict.INFO):
                out = ET.SubElement(case, "system-out")
                out.text = _evidence_text(r)
        suite.set("failures", str(f))
        suite.set("errors", str(e))
        suite.set("skipped", str(s))
        tf, te, ts = tf + f, te + e, ts + s
    root.set("failures", str(tf))
    root.set("errors", str(te))
    root.set("skipped", str(ts))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
