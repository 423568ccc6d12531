"""Model registry: one entry per model, built by small builder functions (torchvision style).

Every model is here, whatever its task: few-shot segmentation models (``task="fss"``: the
workspace, ``predict``/``explain``/``causal``/``report``/``evaluate``/``train``) and ScaleProtoSeg's
semantic segmentation models (``task="semseg"``: the Prototypes tab and ``fssgui protos``).
:func:`build_model` builds a model of the task its caller asks for and refuses the others with a
one-line message, so a ScaleProtoSeg name given to ``fssgui predict`` fails cleanly.

The built-in entries are declared in :mod:`.catalogue` (registered on first use) with their
builders named by :func:`lazy` references, so listing the models imports no model code and no
torch (the window lists them before torch is imported); a model's module is imported when it is
built. Tests and plug-ins may :func:`register` entries with plain callables.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import ModelError
from .normalisation import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

    from .base import FSSModel


#: the tasks a model entry can have
TASK_FSS = "fss"  # few-shot segmentation: episodes (query + K annotated supports)
TASK_SEMSEG = "semseg"  # semantic segmentation of one image (ScaleProtoSeg)
TASK_LABELS = {TASK_FSS: "few-shot segmentation", TASK_SEMSEG: "semantic segmentation"}
#: where a model of each task is used (for messages and ``fssgui models``)
TASK_USES = {
    TASK_FSS: "the workspace, predict, explain, causal, report, evaluate, train",
    TASK_SEMSEG: "fssgui protos and the Prototypes tab",
}


@dataclass(frozen=True)
class LazyCallable:
    """``module:attribute``, imported when first called, called with bound leading arguments and
    keywords (see :func:`lazy`)."""

    target: str  # "fssgui.models.dcama:DCAMA"
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def resolve(self) -> Callable[..., Any]:
        """The callable itself (imports its module)."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*self.args, *args, **{**dict(self.kwargs), **kwargs})


def lazy(target: str, *args: Any, **kwargs: Any) -> LazyCallable:
    """A registry builder, loader or trainer named by ``"module:attribute"`` (imported when
    called), with ``args`` and ``kwargs`` bound: ``lazy("fssgui.models.dcama:DCAMA", "resnet50")``."""
    return LazyCallable(target, tuple(args), tuple(sorted(kwargs.items())))


def resolve_callable(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function behind a :func:`lazy` reference (imports its module), or ``function`` itself."""
    return function.resolve() if isinstance(function, LazyCallable) else function


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., Any]  # -> an untrained model (an FSSModel for task "fss")
    input_size: int  # FSS: the square input side; semseg: the dataset's default size (0: the image's own)
    needs_checkpoint: bool
    description: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN  # on 0..1 RGB
    std: tuple[float, float, float] = IMAGENET_STD
    checkpoint_format: str = ""  # human-readable: which files and key names it expects
    matching: bool = True  # exposes matching scores for AffEx
    task: str = TASK_FSS  # TASK_FSS or TASK_SEMSEG
    #: ``loader(checkpoint, device=, log=) -> model`` for a family with its own checkpoint reader
    #: (ScaleProtoSeg: official whole pickled modules through the restricted unpickler); None: the
    #: builder's model gets the weights through :func:`~fssgui.models.checkpoints.load_checkpoint_into`
    loader: Optional[Callable[..., Any]] = field(default=None, compare=False)
    extra: dict = field(default_factory=dict, hash=False, compare=False)


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def _load_builtin_models() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from .catalogue import builtin_entries

    for entry in builtin_entries():
        register(entry)


def list_models(task: Optional[str] = None) -> list[ModelEntry]:
    """Every registered model, or only those of ``task`` (``TASK_FSS``, ``TASK_SEMSEG``)."""
    _load_builtin_models()
    return [e for e in _REGISTRY.values() if task is None or e.task == task]


def get_entry(name: str) -> ModelEntry:
    _load_builtin_models()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ModelError(f"unknown model {name!r} (known: {known})") from None


DEFAULT_MODEL = "matcher-lite2"


def build_model(
    name: str,
    checkpoint: Optional[str | Path] = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    task: str = TASK_FSS,
) -> FSSModel:
    """Build a registered model of ``task``, load its checkpoint (if any), move it to ``device``,
    eval mode. A model of another task is refused with a one-line :class:`ModelError`."""
    entry = get_entry(name)
    if entry.task != task:
        raise ModelError(f"model {name!r} is a {TASK_LABELS[entry.task]} model (for {TASK_USES[entry.task]}), "
                         f"not a {TASK_LABELS[task]} one")
    if entry.needs_checkpoint and checkpoint is None:
        raise ModelError(f"model {name!r} needs a checkpoint file (--checkpoint PATH)")
    if entry.loader is not None and checkpoint is not None:
        model = entry.loader(checkpoint, device=device, log=log)
        model.entry = entry
        return model.to(device).eval()
    trained = _training_config(name, checkpoint, log)
    if trained is None:
        model = entry.builder()
    else:
        # a checkpoint written by `fssgui train`: rebuild the model as it was trained (its input
        # size and builder options), or its weights would not fit / would run at another size
        size, options = trained
        model = entry.builder(size, None, **options)
        entry = dataclasses.replace(entry, input_size=size)
    model.entry = entry
    if checkpoint is not None:
        from .checkpoints import load_checkpoint_into

        load_checkpoint_into(model, checkpoint, log=log)
    return model.to(device).eval()


TRAINING_CONFIG = "config.json"
TRAINING_FORMAT = "fssgui-train-1"


def _training_config(name: str, checkpoint, log) -> Optional[tuple[int, dict]]:
    """``(input_size, builder options)`` from the ``config.json`` that ``fssgui train`` writes
    beside its checkpoints, when there is one for this model; otherwise None."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).with_name(TRAINING_CONFIG)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        if log:
            log(f"{path}: not readable as JSON; not using it as a training configuration")
        return None
    if not isinstance(data, dict) or data.get("format") != TRAINING_FORMAT or data.get("model") != name:
        return None
    size = data.get("input_size")
    options = (data.get("config") or {}).get("model_options") or {}
    if not isinstance(size, int) or size <= 0 or not isinstance(options, dict):
        raise ModelError(f"{path}: training configuration without a valid input_size/model_options")
    if log:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
        log(f"{path}: building {name} as it was trained: input size {size}" + (f", {shown}" if shown else ""))
    return size, dict(options)


def resolve_device(requested: str | None, log: Callable[[str], None] | None = None) -> torch.device:
    """'cuda'/'cpu'/None(auto). Says so when CUDA was asked for but is missing (never silent)."""
    import torch

    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("CUDA was requested but is not available on this machine (use --device cpu)")
        return torch.device(requested)
    if requested == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {requested!r} (use cpu or cuda)")
