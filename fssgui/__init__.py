"""fssgui: diagnose few-shot semantic segmentation models (AffEx, causal metrics, prototypes)."""

__version__ = "0.1.0"
