"""junit.xml for CI: one testcase per rule, grouped in one testsuite per class.

FAIL -> <failure>, ERROR -> <error>, SKIP/PENDING/WAIVED -> <skipped> (a WAIVED rule's message
carries the waiver's reason), WARN/INFO -> a passing testcase whose <system-out> holds the finding.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .._model import RuleResult, RunReport, Verdict
from .json_report import deciding, deciding_checks


def _msg(text: str, limit: int = 500) -> str:
    """A message attribute cut at a word boundary (the full text is in the element's body)."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"

# XML 1.0 cannot carry most control characters, not even escaped; hostile-input evidence has them.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: object) -> str:
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if text is None else str(text))


def _evidence_text(rule: RuleResult) -> str:
    lines = [f"{rule.id} {rule.level}: {rule.title}", f"verdict: {rule.verdict.value}", f"reason: {rule.reason}"]
    d = deciding(rule)
    if d and d.expected is not None:
        lines.append(f"expected: {d.expected}")
    if d and d.seen is not None:
        lines.append(f"seen: {d.seen}")
    exchanges = [ex for c in deciding_checks(rule) for ex in c.evidence]
    for ex in exchanges[:6]:
        status = ex.status if ex.status is not None else (ex.error or "no response")
        lines.append(f"> {ex.method} {ex.url} -> {status}")
        lines.append(f"  replay: {ex.curl}")
    if len(exchanges) > 6:
        lines.append(f"({len(exchanges) - 6} more exchanges in report.json)")
    return _x("\n".join(lines))


def render_junit(report: RunReport) -> str:
    root = ET.Element("testsuites", name="batchspec", tests=str(len(report.rules)))
    from .._levels import headline

    level = str((report.conformance or {}).get("reached", 0))
    conformance = _x(headline(report.conformance)) if report.conformance else ""
    classes: dict[str, list[RuleResult]] = {}
    for r in report.rules:
        classes.setdefault(r.cls, []).append(r)
    tf = te = ts = 0
    total_time = 0.0
    for cls, rules in classes.items():
        suite = ET.SubElement(root, "testsuite", name=f"batchspec.{cls}", tests=str(len(rules)),
                              timestamp=_x(report.started_at))
        if conformance:
            # The JUnit schema allows properties per testsuite (first child), not on testsuites.
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="batchspec.level", value=level)
            ET.SubElement(props, "property", name="batchspec.conformance", value=conformance)
        f = e = s = 0
        suite_time = 0.0
        for r in rules:
            secs = sum(c.duration_s for c in r.checks)
            suite_time += secs
            case = ET.SubElement(suite, "testcase", classname=f"batchspec.{cls}", name=_x(f"{r.id} {r.title}"),
                                 time=f"{secs:.3f}")
            if r.verdict == Verdict.FAIL:
                f += 1
                el = ET.SubElement(case, "failure", message=_x(_msg(r.reason)), type=f"{r.level} violated")
                el.text = _evidence_text(r)
            elif r.verdict == Verdict.ERROR:
                e += 1
                el = ET.SubElement(case, "error", message=_x(_msg(r.reason)), type="ERROR")
                el.text = _evidence_text(r)
            elif r.verdict in (Verdict.SKIP, Verdict.PENDING, Verdict.WAIVED):
                s += 1
                ET.SubElement(case, "skipped", message=_x(_msg(f"{r.verdict.value}: {r.reason}")))
            elif r.verdict in (Verdict.WARN, Verdict.INFO):
                out = ET.SubElement(case, "system-out")
                out.text = _evidence_text(r)
            elif r.verdict == Verdict.PASS and r.partial:
                # A skipped check or an unobserved state must not vanish inside a green testcase.
                out = ET.SubElement(case, "system-out")
                out.text = _x(f"{r.id}: {r.label()}")
        suite.set("failures", str(f))
        suite.set("errors", str(e))
        suite.set("skipped", str(s))
        suite.set("time", f"{suite_time:.3f}")
        tf, te, ts = tf + f, te + e, ts + s
        total_time += suite_time
    halted = getattr(report, "interrupted", None)
    if halted:
        # Every CI's JUnit view shows an error testcase; the attribute is for tools that read it.
        root.set("interrupted", _x(halted["message"]))
        suite = ET.SubElement(root, "testsuite", name="batchspec.run", tests="1", failures="0", errors="1",
                              skipped="0", time="0.000", timestamp=_x(report.started_at))
        case = ET.SubElement(suite, "testcase", classname="batchspec.run", name="run completed", time="0.000")
        ET.SubElement(case, "error", message=_x(f"{halted['message']} ({halted['signal']})"), type="interrupted")
        te += 1
    stopped = getattr(report, "target_stopped", None)
    if stopped:
        # The one statement of a target that stopped answering, where a CI's JUnit view shows it.
        root.set("target_stopped", _x(stopped["message"]))
        suite = ET.SubElement(root, "testsuite", name="batchspec.target", tests="1", failures="0", errors="1",
                              skipped="0", time="0.000", timestamp=_x(report.started_at))
        case = ET.SubElement(suite, "testcase", classname="batchspec.target", name="target kept answering",
                             time="0.000")
        ET.SubElement(case, "error", message=_x(stopped["message"]), type="target_stopped")
        te += 1
    root.set("failures", str(tf))
    root.set("errors", str(te))
    root.set("skipped", str(ts))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
