"""Unsupervised image segmentation by backpropagation (Kanezaki 2018; Kim, Kanezaki & Tanaka 2020).

The public names load lazily, so importing the package (as napari does at start-up) does
not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SPConfig": "core.config",
    "STConfig": "core.config",
    "ConfigError": "core.config",
    "load_config": "core.config",
    "ImageError": "imaging.images",
    "ImageSource": "imaging.sources",
    "NormalizedImage": "imaging.images",
    "segment_iter": "workflows.stacks",
    "predict_iter": "workflows.stacks",
    "SegmentationResult": "workflows.results",
    "STACK_MODES": "workflows.stacks",
    "Segmenter": "core.segmenter",
    "TrainingState": "core.segmenter",
    "segment": "workflows.api",
    "available_devices": "core.devices",
    "to_objects": "imaging.objects",
    "consensus_objects": "imaging.objects",
    "enhance_membranes": "imaging.membranes",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .core.config import ConfigError, SPConfig, STConfig, load_config
    from .core.devices import available_devices
    from .core.segmenter import Segmenter, TrainingState
    from .imaging.images import ImageError, NormalizedImage
    from .imaging.membranes import enhance_membranes
    from .imaging.objects import consensus_objects, to_objects
    from .imaging.sources import ImageSource
    from .workflows.api import segment
    from .workflows.results import SegmentationResult
    from .workflows.stacks import STACK_MODES, predict_iter, segment_iter


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
