"""`fssgui predict EPISODE --model NAME [--checkpoint PATH] [--device cpu|cuda] --out DIR`.

Writes ``DIR/logits.npy`` (float32 ``[2, H, W]`` background/foreground logits at the query image's
size; no resampling when the query is already at the model's input size) and ``DIR/prediction.png``
(the predicted foreground, 0/255)."""
from __future__ import annotations

import torch

from ..episode import episode_to_tensors, load_episode
from ..imaging import foreground_iou, logits_to_size, save_npy_atomic, save_png_atomic
from ..models.base import check_finite
from .common import add_model_arguments, load_model_from_args, output_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="segment an episode's query")
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)


def predict_episode(model, episode, device) -> "np.ndarray":
    """Logits ``[2, H, W]`` float32 at the query image's size."""
    batch = episode_to_tensors(episode, model.entry).to(device)
    with torch.no_grad():
        prediction = model.predict(batch)
    check_finite(prediction, model.entry.name)
    return logits_to_size(prediction.logits[0], episode.query_size)


def run(args) -> int:
    episode = load_episode(args.episode)
    model, device = load_model_from_args(args)
    logits = predict_episode(model, episode, device)
    out = output_dir(args.out)
    save_npy_atomic(out / "logits.npy", logits)
    mask = logits[1] > logits[0]
    save_png_atomic(out / "prediction.png", mask)
    line = f"foreground {mask.mean() * 100:.1f}% of the query"
    if episode.query_mask is not None:
        line += f", IoU with ground truth {foreground_iou(mask, episode.query_mask):.3f}"
    print(f"{out / 'logits.npy'}: {line}")
    return 0
