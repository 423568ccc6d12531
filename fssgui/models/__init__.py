"""Model adapters and their registry. Imports no Qt, and no torch until a model is built (the
registry and its catalogue are torch-free; the model modules import torch)."""
from .registry import ModelEntry, build_model, get_entry, list_models, register, resolve_device  # noqa: F401
