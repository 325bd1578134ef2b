"""The CLI: exit codes and one clear line on stderr for usage and profile errors, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conformance.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, timeout=120)


def test_misspelt_profile_key_exits_2_naming_it(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("target:\n  base_url: http://127.0.0.1:9\n  timout: 3\nendpoints:\n  batch: {path: /b}\n"
                 "items:\n  valid: [{a: 1}]\n")
    r = run_cli("run", "--profile", str(p), "--report-dir", str(tmp_path / "r"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "timout" in lines[0] and "line 3" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize("args", [
    ["run", "not a url"],
    ["run", "http://127.0.0.1:99999"],
    ["run", "--profile", "/nonexistent/profile.yaml"],
    ["run", "http://127.0.0.1:9", "--class", "NOPE"],
    ["run", "http://127.0.0.1:9", "--rule", "CORE-99"],
])
def test_usage_errors_exit_2_with_one_line(args, capsys, tmp_path):
    code = main(args + ["--report-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("batchspec: ")


def test_rules_lists_the_catalogue(capsys):
    assert main(["rules", "--class", "size"]) == 0
    out = capsys.readouterr().out
    assert "SIZE-01" in out and "CORE-01" not in out


def test_init_writes_a_valid_starter_profile(tmp_path, capsys):
    from conformance import load_profile

    path = tmp_path / "batchspec.yaml"
    assert main(["init", str(path)]) == 0
    assert load_profile(path, env={}).get("endpoints.batch.path")
    assert main(["init", str(path)]) == 2  # never overwrites silently


def test_unreachable_target_exits_3_with_one_line(tmp_path):
    r = run_cli("run", "http://127.0.0.1:9", "--report-dir", str(tmp_path))
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
