"""Sample data contributions: images that segment in seconds on a CPU."""

from __future__ import annotations

from typing import Any

from napari_kanezaki.imaging.samples import immunohistochemistry, noisy_regions

__all__ = ["immunohistochemistry_sample", "noisy_regions_sample"]

LayerDataTuple = tuple[Any, dict[str, Any], str]


def immunohistochemistry_sample() -> list[LayerDataTuple]:
    """A 256 x 256 RGB crop of scikit-image's immunohistochemistry image."""
    return [(immunohistochemistry(), {"name": "immunohistochemistry", "rgb": True}, "image")]


def noisy_regions_sample() -> list[LayerDataTuple]:
    """A synthetic 96 x 96 RGB image of three noisy regions, with its ground truth."""
    image, truth = noisy_regions()
    return [
        (image, {"name": "noisy regions", "rgb": True}, "image"),
        (truth, {"name": "noisy regions truth", "visible": False}, "labels"),
    ]
