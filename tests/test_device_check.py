"""``bench/device_check.sh`` (the one-shot GPU check) run the way CI can: ``--device cpu --quick``,
so that the script, and every benchmark script and option it calls, cannot rot before a GPU is
lent. Slow-ish (about a minute of CPU: one Python process per step)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.sh"


def _run(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, OUT=str(out), FSSGUI_PYTHON=sys.executable, OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=1200)


def test_quick_cpu_check_runs_every_step(tmp_path):
    done = _run(tmp_path, "--device", "cpu", "--quick")
    summary = (tmp_path / "summary.txt").read_text()
    assert done.returncode == 0, summary + done.stderr[-2000:]
    statuses = [line for line in summary.splitlines() if line.startswith(("ok ", "FAIL", "NOT RUN"))]
    assert statuses and all(line.startswith("ok ") for line in statuses), summary
    names = " | ".join(statuses)
    for step in ("environment", "fssgui self-test", "forward --amp", "affex fp32 matcher-effnet",
                 "causal fp32 matcher-effnet K=1", "out-of-memory recovery", "demo screenshot", "start-up breakdown"):
        assert step in names, f"{step!r} missing from the summary:\n{summary}"
    # the figures are in the summary, the full output in the log, the screenshot next to them
    for figure in ("self-test passed", "ratio batched/sequential", "affex R=100%", "oom check passed",
                   "median phase durations", "screenshot saved"):
        assert figure in summary, f"{figure!r} missing from the summary:\n{summary}"
    assert "0 failed, 0 not run" in summary
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert (tmp_path / "environment.txt").read_text().startswith("python ")
    assert len((tmp_path / "device_check.log").read_text()) > len(summary) // 2


def test_a_failing_step_fails_the_check(tmp_path):
    """A device that is not there fails the environment step, and the script exits 1 (the rest is
    cut by a one-second budget and listed as not run)."""
    done = _run(tmp_path, "--device", "cuda:99", "--quick", DEVICE_CHECK_BUDGET_S="1")
    summary = (tmp_path / "summary.txt").read_text()
    assert done.returncode == 1, summary
    assert "FAIL environment" in summary
    assert "NOT RUN fssgui self-test (time budget" in summary
    assert "1 failed" in summary
