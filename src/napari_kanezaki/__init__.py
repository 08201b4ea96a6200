"""Unsupervised image segmentation by backpropagation (Kanezaki 2018; Kim, Kanezaki & Tanaka 2020).

The public names load lazily, so importing the package (as napari does at start-up) does
not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SPConfig": "config",
    "STConfig": "config",
    "ConfigError": "config",
    "load_config": "config",
    "ImageError": "images",
    "ImageSource": "images",
    "NormalizedImage": "images",
    "segment_iter": "stacks",
    "SegmentationResult": "stacks",
    "STACK_MODES": "stacks",
    "Segmenter": "segmenter",
    "TrainingState": "segmenter",
    "segment": "api",
    "available_devices": "devices",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .api import segment
    from .config import ConfigError, SPConfig, STConfig, load_config
    from .devices import available_devices
    from .images import ImageError, ImageSource, NormalizedImage
    from .stacks import STACK_MODES, SegmentationResult, segment_iter
    from .segmenter import Segmenter, TrainingState


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
