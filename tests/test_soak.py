"""``bench/soak.py`` in a short run (two cycles of 8 jobs per phase, the figures meaningless at this length) so
that the soak script, which drives the real window and the pipeline through every kind of job,
cannot rot: every job succeeds, both phases print their summary and the last line has the
promised form. The real figures are in bench/RESULTS.md."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


def test_a_short_soak_runs_every_kind_of_job_through_the_window_and_the_pipeline():
    done = _bench("bench/soak.py", "--jobs", "16", "--from", "4", "--size", "128")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for phase in ("window", "pipeline"):
        summary = out[out.index(f"\n{phase}: 16 jobs in"):]
        for work in ("open (", "predict K=", "explain ", "save episode + report K="):
            assert work in summary, f"{phase}: no {work!r} job in\n{summary}"
        assert re.search(r"rss: [\d.]+ MiB at job 4, [\d.]+ MiB at job 16: growth [+-][\d.]+ MiB", summary), summary
        assert "monotone growth (grew at every count" in summary
    assert "JobHandles alive:" in out  # the window's live job handles are counted
    assert re.fullmatch(r"soak: rss growth -?[\d.]+ MiB over 16 jobs", out.strip().splitlines()[-1]), out[-500:]
