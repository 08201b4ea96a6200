"""What the stack workflows yield and return: progress, the result, the stop flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from napari_kanezaki.core.segmenter import Segmenter

__all__ = ["Progress", "SegmentationResult", "StopFlag"]


class StopFlag(Protocol):
    """Anything with ``is_set()``, e.g. a `threading.Event`."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class Progress:
    """Progress of a long computation.

    Attributes
    ----------
    step, total : int
        Steps done and planned (training updates plus tiles or planes).
    text : str
        Human-readable status.
    labels : numpy.ndarray, optional
        A preview label image (training) or None.
    """

    step: int
    total: int
    text: str
    labels: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SegmentationResult:
    """What `segment_iter` returns.

    Attributes
    ----------
    labels : numpy.ndarray or zarr.Array
        int32 labels of the input's spatial shape (0 only where a stopped run never got).
    segmenter : Segmenter or None
        The shared model (``"shared"``, ``"3d"``, single images) or the last plane's.
    stopped : bool
        True if `stop` was set during the run.
    """

    labels: Any
    segmenter: Segmenter | None
    stopped: bool
