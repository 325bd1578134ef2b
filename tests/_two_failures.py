"""A reference server with two CORE rules broken (CORE-07 and CORE-08), for report and waiver tests."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from conftest import run_kit
from mutants.core import accepts_duplicates, lying_summary

BROKEN = ("CORE-07", "CORE-08")


def two_failures_app(tmp_path: Path) -> Any:
    from reference_server import create_app

    return lying_summary(accepts_duplicates(create_app(str(tmp_path / "two.db"))))


def run_two_failures(tmp_path: Path, waivers: list[dict[str, Any]] | None = None, report_dir: Path | None = None,
                     **kw: Any):
    return run_kit(two_failures_app(tmp_path), classes=["CORE"], waivers=waivers,
                   report_dir=str(report_dir) if report_dir else None, **kw)


def day(offset: int) -> str:
    """A UTC date `offset` days from today, as waivers write it."""
    return (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=offset)).isoformat()
