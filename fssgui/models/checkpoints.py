"""Safe checkpoint reading and strict, explained loading, shared by every model.

Checkpoints are untrusted files. :func:`read_state_dict` never unpickles code: ``.pt``/``.pth``
files go through ``torch.load(weights_only=True)`` and ``.safetensors`` through safetensors;
anything else is refused with a :class:`~fssgui.errors.CheckpointError` naming the file.

:func:`load_checkpoint_into` maps the file's entries onto the model and refuses to load
anything partial. In order, it tries:

1. **by name** (after removing a ``module.`` prefix from DDP/DataParallel training, and
   unwrapping ``{"state_dict": ...}`` / ``{"model": ...}`` dicts);
2. **by position** (what the official DCAMA ``test.py`` does: it zips the file's key order with
   the model's), but only when the counts agree and *every* shape matches in order; the log says
   so.

Weights with NaN or infinite values, or of an integer/bool/complex type where the model holds
floating-point weights, are refused naming the tensors (:func:`check_finite_weights`,
:func:`check_weight_types`).

Buffers that the model computes deterministically (BatchNorm ``num_batches_tracked``, and what
a model lists in its ``computed_buffer_patterns`` attribute, such as DCAMA's positional-encoding
tables or Swin's ``relative_position_index``/``attn_mask``) may be absent from the file: the
constructed values are kept and the log says which. A missing learned parameter or BatchNorm
statistic, an unexpected key or a shape mismatch is an error that names the keys (the first few
and the counts).
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

LogFn = Optional[Callable[[str], None]]
#: torch's remark on a file's pickle protocol says nothing the error (if any) does not
warnings.filterwarnings("ignore", message="Detected pickle protocol", module=r"torch\.")

#: wrapper keys under which training scripts commonly store the state dict
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")
#: buffers every model may rebuild (regular expressions matched against the full key)
DEFAULT_COMPUTED_BUFFERS = (r"(^|\.)num_batches_tracked$",)
_SHOW = 5  # how many names an error message lists


class PickledCodeError(CheckpointError):
    """The file needs more than plain tensors to unpickle (it would run code from the file).

    Every loader refuses it; ScaleProtoSeg catches it to hand the file to its restricted
    unpickler (:mod:`fssgui.models.safe_pickle`), which reads official whole-model pickles
    without executing them."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint_into` did."""

    path: str
    mode: str  # "by name" or "by position"
    loaded: int  # entries copied from the file
    rebuilt: list[str] = field(default_factory=list)  # computed buffers kept from the constructor


def _log(log: LogFn, message: str) -> None:
    if log is not None:
        log(message)


def _first(names: list[str], show: int = _SHOW) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def _torch_load(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PickledCodeError(
            f"{path}: refused to load: the file needs more than plain tensors to unpickle "
            f"(it would run code from the file; only weights-only checkpoints are accepted). "
            f"Re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as "
            f".safetensors. Detail: {first_line}"
        ) from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint file ({type(exc).__name__})") from None
    except RuntimeError as exc:
        text = str(exc)
        if "zip" in text.lower() or "central directory" in text.lower() or "failed finding" in text.lower():
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint file ({text.splitlines()[0]})") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({text.splitlines()[0]})") from None
    except Exception as exc:  # noqa: BLE001 - damaged pickles raise KeyError, IndexError, struct.error...
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {detail})") from None


def _safetensors_load(path: Path) -> dict[str, Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise CheckpointError(f"{path}: not a readable .safetensors file ({type(exc).__name__}: {exc})") from None


def _unwrap(obj: object, path: Path) -> Mapping[str, object]:
    """Find the state dict inside what the file holds (plain, or under a wrapper key)."""
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path}: not a state dict (the file holds a {type(obj).__name__})")
        if any(isinstance(v, Tensor) for v in obj.values()):
            return obj
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    keys = list(obj.keys()) if isinstance(obj, Mapping) else []
    raise CheckpointError(
        f"{path}: no tensors found (top-level keys: {_first([str(k) for k in keys]) or 'none'}; "
        f"expected a state dict, possibly under one of {', '.join(WRAPPER_KEYS)})"
    )


def _strip_prefix(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return state, ""


def read_checkpoint_file(path: str | Path) -> object:
    """What a checkpoint file holds, read safely: ``torch.load(weights_only=True)`` for
    ``torch.save`` files, safetensors for ``.safetensors`` (a dict of tensors).

    Raises :class:`CheckpointError` (naming the file) for a missing, empty, truncated or foreign
    file, and its subclass :class:`PickledCodeError` for a file that would run code to unpickle.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (truncated download?)")
    with path.open("rb") as fh:
        head = fh.read(16)
    # safetensors: 8-byte little-endian header length, then a JSON header
    if path.suffix.lower() == ".safetensors" or head[8:9] == b"{":
        return _safetensors_load(path)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (expected a torch.save zip archive or a .safetensors file)"
        )
    return _torch_load(path)


def state_dict_from(obj: object, path: str | Path, log: LogFn = None) -> dict[str, Tensor]:
    """The state dict inside ``obj`` (what :func:`read_checkpoint_file` returned): unwrapped from
    ``{"state_dict": ...}``-style wrappers, non-tensor entries dropped, a ``module.`` prefix removed."""
    path = Path(path)
    raw = _unwrap(obj, path)
    state = {str(k): v for k, v in raw.items() if isinstance(v, Tensor)}
    dropped = [str(k) for k, v in raw.items() if not isinstance(v, Tensor)]
    if dropped:
        _log(log, f"{path.name}: ignored {len(dropped)} non-tensor entries ({_first(dropped)})")
    state, prefix = _strip_prefix(state)
    if prefix:
        _log(log, f"{path.name}: removed the '{prefix}' prefix from {len(state)} keys")
    return state


def read_state_dict(path: str | Path, log: LogFn = None) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, keys without a ``module.`` prefix.

    Accepts ``.pt``/``.pth``/``.bin``/``.ckpt`` files saved with ``torch.save`` (a state dict, or a
    dict wrapping one under ``state_dict``/``model``/...) and ``.safetensors`` files. Never
    unpickles code. Non-tensor entries next to the tensors (an epoch number...) are dropped.
    Raises :class:`CheckpointError` (naming the file) for a missing, truncated, unsafe or
    unrecognised file, and for NaN or infinite weights (naming the tensors).
    """
    state = state_dict_from(read_checkpoint_file(path), path, log)
    check_finite_weights(state, path)
    return state


def check_finite_weights(state: Mapping[str, Tensor], path: str | Path) -> None:
    """Refuse NaN or infinite weights (a diverged training run: the model would predict garbage,
    often an all-background mask), naming the file and the tensors."""
    broken = [k for k, v in state.items()
              if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{path}: non-finite weights (NaN or Inf) in {len(broken)} tensors: {_first(broken)}")


def check_weight_types(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], path: str | Path) -> None:
    """Refuse a tensor that is not floating point (integer, bool, complex) where the model's
    state dict ``expected`` holds floating-point weights (loading would silently cast it)."""
    wrong = [f"{k} ({str(v.dtype).replace('torch.', '')})" for k, v in state.items()
             if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensors are not floating point where the model's weights "
                              f"are: {_first(wrong, 3)}")


def _computed_patterns(model: nn.Module) -> list[re.Pattern[str]]:
    extra = tuple(getattr(model, "computed_buffer_patterns", ()) or ())
    return [re.compile(p) for p in DEFAULT_COMPUTED_BUFFERS + extra]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _checkpoint_target(model: nn.Module) -> nn.Module:
    """The module whose state dict the checkpoint holds (``model.checkpoint_module()`` if defined)."""
    getter = getattr(model, "checkpoint_module", None)
    return getter() if callable(getter) else model


def load_checkpoint_into(model: nn.Module, path: str | Path, log: LogFn = None) -> LoadReport:
    """Load ``path`` into ``model`` strictly (see the module docstring). Returns a report."""
    path = Path(path)
    state = state_dict_from(read_checkpoint_file(path), path, log)  # checked below, once mapped
    target = _checkpoint_target(model)
    expected = target.state_dict()
    patterns = _computed_patterns(model)

    def computed(key: str) -> bool:
        return any(p.search(key) for p in patterns)

    mapped, mode = _map_by_name(state, expected, computed)
    if mapped is None:
        mapped = _map_by_position(state, expected, computed)
        if mapped is None:
            raise CheckpointError(_mismatch_message(path, state, expected, computed))
        mode = "by position"
        _log(
            log,
            f"{path.name}: key names differ from the model's; loaded {len(mapped)} entries by position "
            f"(every shape matches in order, as the official DCAMA test loader does)",
        )
    check_finite_weights(mapped, path)
    check_weight_types(mapped, expected, path)
    rebuilt = [k for k in expected if k not in mapped]
    result = target.load_state_dict(mapped, strict=False)
    if result.unexpected_keys or not set(result.missing_keys) <= set(rebuilt):  # pragma: no cover - guarded above
        raise CheckpointError(f"{path}: internal key mapping error ({result})")
    if rebuilt:
        _log(
            log,
            f"{path.name}: {len(rebuilt)} computed buffers were not in the file and were rebuilt "
            f"({_first(rebuilt)})",
        )
    _log(log, f"{path.name}: loaded {len(mapped)} entries {mode}")
    return LoadReport(str(path), mode, len(mapped), rebuilt)


def _map_by_name(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], computed: Callable[[str], bool]
) -> tuple[Optional[dict[str, Tensor]], str]:
    missing = [k for k in expected if k not in state and not computed(k)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        return None, ""
    bad = [k for k in state if _shape(state[k]) != _shape(expected[k])]
    if bad:
        return None, ""
    return dict(state), "by name"


def _map_by_position(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], computed: Callable[[str], bool]
) -> Optional[dict[str, Tensor]]:
    file_items = list(state.items())
    candidates = [list(expected.keys()), [k for k in expected if not computed(k)]]
    for model_keys in candidates:
        if len(model_keys) != len(file_items):
            continue
        if all(_shape(v) == _shape(expected[k]) for k, (_, v) in zip(model_keys, file_items)):
            return {k: v for k, (_, v) in zip(model_keys, file_items)}
    return None


def mismatch_summary(state: Mapping[str, Tensor], expected: Mapping[str, Tensor],
                     computed: Callable[[str], bool] = lambda key: False) -> str:
    """``"2 shape mismatches: k (file [..], model [..]); 1 missing keys: ...; ..."``: what keeps
    ``state`` (a file's tensors) from loading strictly into a model whose state dict is
    ``expected`` (keys for which ``computed`` is true may be missing). Empty when nothing does."""
    missing = [k for k in expected if k not in state and not computed(k)]
    unexpected = [k for k in state if k not in expected]
    bad = [
        f"{k} (file {list(_shape(state[k]))}, model {list(_shape(expected[k]))})"
        for k in state
        if k in expected and _shape(state[k]) != _shape(expected[k])
    ]
    parts = []
    if bad:
        parts.append(f"{len(bad)} shape mismatches: {_first(bad, 3)}")
    if missing:
        parts.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    return "; ".join(parts)


def _mismatch_message(
    path: Path, state: Mapping[str, Tensor], expected: Mapping[str, Tensor], computed: Callable[[str], bool]
) -> str:
    return (
        f"{path}: checkpoint does not match the model ({len(state)} entries in the file, "
        f"{len(expected)} in the model; positional mapping impossible): " + mismatch_summary(state, expected, computed)
    )
