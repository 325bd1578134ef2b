"""Waivers (SPEC §5): accepted deviations with a reason and an expiry date."""
from __future__ import annotations

import datetime as _dt
import fnmatch
from pathlib import Path
from typing import Any

import yaml

from ._model import RunReport, Verdict


class WaiverError(Exception):
    pass


def _parse(entries: Any, source: str) -> list[dict[str, Any]]:
    if isinstance(entries, dict) and "waivers" in entries:
        entries = entries["waivers"]
    if not isinstance(entries, list):
        raise WaiverError(f"{source}: a waivers file is a list of {{rule, reason, expires}} entries")
    out = []
    for i, e in enumerate(entries):
        where = f"{source}: entry {i + 1}"
        if not isinstance(e, dict):
            raise WaiverError(f"{where}: expected a mapping with rule, reason, expires")
        unknown = set(e) - {"rule", "reason", "expires", "target"}
        if unknown:
            raise WaiverError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("rule", "reason", "expires"):
            if not e.get(key):
                raise WaiverError(f"{where}: '{key}' is required")
        expires = e["expires"]
        if isinstance(expires, str):
            try:
                expires = _dt.date.fromisoformat(expires)
            except ValueError:
                raise WaiverError(f"{where}: expires must be a date (YYYY-MM-DD), got {expires!r}") from None
        if isinstance(expires, _dt.datetime):
            expires = expires.date()
        if not isinstance(expires, _dt.date):
            raise WaiverError(f"{where}: expires must be a date (YYYY-MM-DD)")
        out.append({"rule": str(e["rule"]).upper(), "reason": str(e["reason"]),
                    "expires": expires.isoformat(), "target": e.get("target")})
    return out


def load(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WaiverError(f"{p}: no such waivers file") from None
    except yaml.YAMLError as exc:
        raise WaiverError(f"{p}: not valid YAML: {exc}") from None
    return _parse(data or [], str(p))


def apply(report: RunReport, waivers: list[dict[str, Any]], *, source: str | None = None,
          today: _dt.date | None = None) -> None:
    today = today or _dt.date.today()
    by_id = {r.id: r for r in report.rules}
    for w in _parse(waivers, source or "waivers"):
        rule = by_id.get(w["rule"])
        if rule is None:
            report.notes.append(f"Waiver for unknown rule {w['rule']} ignored.")
            continue
        if w.get("target") and not fnmatch.fnmatch(report.target, w["target"]):
            continue
        expired = _dt.date.fromisoformat(w["expires"]) < today
        info = dict(w)
        if rule.verdict in (Verdict.FAIL, Verdict.WARN):
            if expired:
                info["status"] = "expired"
                rule.waiver = info
                msg = f"Waiver for {rule.id} expired on {w['expires']}; the {rule.verdict.value} counts again."
                rule.reason = f"{rule.reason} [{msg}]".strip()
                report.notes.append(msg)
            else:
                info["status"] = "active"
                info["waived_verdict"] = rule.verdict.value
                rule.waiver = info
                rule.reason = f"waived until {w['expires']}: {w['reason']} (was {rule.verdict.value}: {rule.reason})"
                rule.verdict = Verdict.WAIVED
        else:
            info["status"] = "stale"
            rule.waiver = info
            report.notes.append(
                f"Waiver for {rule.id} is stale: the rule is {rule.verdict.value} now; remove the waiver."
            )
