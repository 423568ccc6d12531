"""Shared pieces of the ``fssgui evaluate`` tests (test_evaluate.py, test_evaluate_distributed.py).

* ``matcher-effnet-small``: the built-in matcher at a 96-pixel input, registered on import (the
  same network and code as ``matcher-effnet``; 16x fewer pixels keep the tests short on 2 cores).
* Running this file as a script runs the ``fssgui`` CLI with that model registered, so that
  subprocesses (``torchrun``, a run killed mid-way) can use it:
  ``torchrun --standalone --nproc-per-node 2 tests/evaluate_testkit.py evaluate ...``.
* :func:`reference_run`: one single-process evaluation on a generated ``folders`` dataset, made
  once per test session and shared by both test files (memoised in this module).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # running as a script from anywhere
    sys.path.insert(0, str(REPO))

if str(HERE) not in sys.path:  # testkit, when run as a script from elsewhere
    sys.path.insert(0, str(HERE))
from testkit import register_at_size  # noqa: E402

SMALL_MODEL = "matcher-effnet-small"
SMALL_SIZE = 96


def register_small_model() -> str:
    return register_at_size("matcher-effnet", SMALL_MODEL, SMALL_SIZE, "matcher-effnet at a 96-pixel input (tests)")


register_small_model()

#: the evaluation every test compares with: 3 episodes (uneven over 2 ranks), 2 methods, 2 metrics
METHODS = ("affex", "random")
METRICS = ("iauc-miou", "dauc-conf")
EPISODES = 3
STEPS = 2


def make_dataset(root: Path) -> Path:
    sys.path.insert(0, str(HERE))
    from synthetic_fss import make_synthetic_fss

    return make_synthetic_fss(root, n_classes=3, images_per_class=3, size=48, seed=3)


def evaluate_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", SMALL_MODEL, "--data", str(data), "--layout", "folders",
            "--episodes", str(EPISODES), "--shots", "1", "--methods", ",".join(METHODS),
            "--metrics", ",".join(METRICS), "--steps", str(STEPS), "--seed", "5", "--device", "cpu",
            "--no-progress", "--out", str(out), *extra]


_REFERENCE: dict = {}


def reference_run(tmp_root: Path) -> dict:
    """The dataset and the uninterrupted single-process run (computed once per session)."""
    if "out" not in _REFERENCE:
        from fssgui.cli import main

        data = make_dataset(tmp_root / "data")
        out = tmp_root / "single"
        assert main(evaluate_args(data, out)) == 0
        _REFERENCE.update(data=data, out=out)
    return dict(_REFERENCE)


def read_results(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(r["episode"], r["method"]): r for r in rows}


def table_values(out: Path) -> dict:
    return json.loads((out / "table.json").read_text())["values_x100"]


def torchrun(nproc: int, args: list[str], timeout: float = 400):
    """``torchrun --standalone --nproc-per-node N`` of the ``fssgui`` CLI (this file as the script)."""
    import subprocess

    launcher = Path(sys.executable).with_name("torchrun")
    command = [str(launcher)] if launcher.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    command += ["--standalone", "--nproc-per-node", str(nproc), str(HERE / "evaluate_testkit.py"), *args]
    return subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


if __name__ == "__main__":
    from fssgui.cli import main

    sys.exit(main())
