"""`fssgui evaluate` under torchrun: 2 processes with the gloo backend on the CPU give the same
results and table as one process; a setup error on the ranks ends every rank (no hang)."""
from __future__ import annotations

import json
import shutil

import pytest

from evaluate_testkit import (
    EPISODES,
    METHODS,
    evaluate_args,
    read_results,
    reference_run,
    table_values,
    torchrun,
)

pytestmark = pytest.mark.slow  # several processes (minutes on a CPU)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp() / "evaluate")


def test_two_gloo_processes_equal_one_process(reference, tmp_path):
    out = tmp_path / "two_ranks"
    done = torchrun(2, evaluate_args(reference["data"], out))
    assert done.returncode == 0, done.stderr[-3000:]
    # each rank wrote its round-robin share: positions 0, 2 -> rank 0; position 1 -> rank 1
    episodes = [int(line.split(",")[0]) for line in (out / "episodes.csv").read_text().splitlines()[1:]]
    assert len(episodes) == EPISODES
    for rank, expected in ((0, episodes[0::2]), (1, episodes[1::2])):
        rows = [json.loads(line) for line in (out / "results" / f"rank-{rank:03d}.jsonl").read_text().splitlines()]
        assert sorted({r["episode"] for r in rows}) == sorted(expected)
        assert {r["rank"] for r in rows} == {rank}
        assert len(rows) == len(expected) * len(METHODS)
    # merged: no duplicates, no gaps, same numbers and the same table as the single process
    merged_lines = (out / "results.jsonl").read_text().splitlines()
    assert len(merged_lines) == EPISODES * len(METHODS)
    two, one = read_results(out), read_results(reference["out"])
    assert set(two) == set(one)
    for key, row in one.items():
        assert two[key]["values"] == pytest.approx(row["values"], abs=1e-6), key
        assert two[key]["explainer_seed"] == row["explainer_seed"]
    for method in METHODS:
        assert table_values(out)[method] == pytest.approx(table_values(reference["out"])[method], abs=1e-4)
    assert (out / "table.md").read_text() == (reference["out"] / "table.md").read_text()
    assert "| affex |" in done.stdout  # rank 0 printed the table, once
    assert done.stdout.count("| affex |") == 1
    # every episode's prediction row, from both ranks, merged in episode order with the same numbers
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (reference["out"] / "predictions.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in predictions] == episodes and {r["rank"] for r in predictions} == {0, 1}
    for two_row, one_row in zip(predictions, single):
        assert two_row["values"] == pytest.approx(one_row["values"], abs=1e-6)
    from fssgui.triage.results import open_results  # what the dataset panel opens

    assert open_results(out).predicted_count == EPISODES

    # a finished run resumed with another world size computes nothing and writes the same table
    again = tmp_path / "one_rank_again"
    shutil.copytree(out, again)
    (again / "table.md").unlink()
    done = torchrun(1, evaluate_args(reference["data"], again))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{EPISODES * len(METHODS)} already in" in done.stderr
    assert (again / "table.md").read_text() == (out / "table.md").read_text()


def test_setup_error_ends_every_rank(reference, tmp_path):
    done = torchrun(2, evaluate_args(tmp_path / "no_such_dataset", tmp_path / "out"), timeout=300)
    assert done.returncode != 0
    assert "dataset folder not found" in done.stderr
    assert not (tmp_path / "out" / "results").exists()
