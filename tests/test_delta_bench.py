"""bench/delta_bench.py (issue 13's delta decision rests on its numbers): it starts, refuses
options that give no pair to compare, and (slow: trains a few steps with torch) a tiny run
prints every table with a delta that decodes to sane ratios."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "delta_bench.py"


def run(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help() -> None:
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "--interval" in r.stdout and "--pairs-every" in r.stdout


@pytest.mark.parametrize("args", [["--steps", "10", "--interval", "10"],
                                  ["--pairs-every", "0"], ["--pairs-every", "x"]])
def test_bad_options(args: list[str], tmp_path: Path) -> None:
    r = run(*args, "--out", str(tmp_path))
    assert r.returncode == 2
    assert "error:" in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # refused before training


@pytest.mark.slow
def test_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    r = run("--steps", "4", "--interval", "2", "--pairs-every", "1,2", "--out", str(tmp_path),
            timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("fp32", "bf16", "fp32+adamw"):
        assert f"== {name}, every 2 steps (1 pairs) ==" in r.stdout
    assert "(no pairs 4 steps apart)" in r.stdout
    rows = [line for line in r.stdout.splitlines() if line.startswith("2 -> 4 ")]
    assert len(rows) == 3
    for row in rows:
        plain, delta, ratio = (float(x) for x in re.split(r"\s+", row)[5:8])
        assert 0 < plain <= 1 and 0 < delta <= 1
        assert ratio == pytest.approx(delta / plain, abs=0.002)
