"""Few-shot segmentation datasets (folders, PASCAL-5i, COCO-20i) and episode sampling. No Qt."""
from .datasets import (  # noqa: F401
    LAYOUTS,
    DatasetError,
    EpisodeData,
    EpisodeSpec,
    FSSDataset,
    Sample,
    open_dataset,
)
