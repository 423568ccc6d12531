"""`fssgui predict EPISODE --model NAME [--checkpoint PATH] [--device cpu|cuda] --out DIR`.

Writes ``DIR/logits.npy`` (float32 ``[2, H, W]`` background/foreground logits at the query image's
size; no resampling when the query is already at the model's input size) and ``DIR/prediction.png``
(the model's official predicted foreground at the query's size, 0/255: the argmax of those logits,
or DMTNet's K-shot vote)."""
from __future__ import annotations

from ..episode import load_episode
from ..imaging import foreground_iou
from ..io import save_npy_atomic, save_png_atomic
from .common import add_model_arguments, load_model_from_args, output_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="segment an episode's query")
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    episode = load_episode(args.episode)
    from ..pipeline import EpisodeRun  # torch: imported when the command runs, not when `fssgui` parses

    result = EpisodeRun(load_model_from_args(args), episode).predicted()
    out = output_dir(args.out)
    save_npy_atomic(out / "logits.npy", result.logits)
    save_png_atomic(out / "prediction.png", result.mask)
    line = f"foreground {result.mask.mean() * 100:.1f}% of the query"
    if episode.query_mask is not None:
        line += f", IoU with ground truth {foreground_iou(result.mask, episode.query_mask):.3f}"
    print(f"{out / 'logits.npy'}: {line}")
    return 0
