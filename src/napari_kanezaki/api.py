"""One-call segmentation for scripts and the command line."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import Config, ConfigError, config_for_method

__all__ = ["segment"]

_RUNTIME_OPTIONS = ("seed", "device", "precision", "channel_axis")


def segment(
    image: np.ndarray,
    method: str = "st",
    scribbles: np.ndarray | None = None,
    config: Config | None = None,
    **options: Any,
) -> np.ndarray:
    """Segment an image without labels: train a fresh network on it and return its labels.

    Parameters
    ----------
    image : array_like
        2-D grey ``(H, W)``, RGB ``(H, W, 3)``, or multichannel with ``channel_axis``.
        uint8 is scaled by 1/255 as in the papers; other dtypes by robust percentiles.
    method : {"st", "sp"}
        ``"st"``: similarity + continuity loss (TIP 2020), the only one that takes
        scribbles; ``"sp"``: superpixel refinement (ICASSP 2018).
    scribbles : array_like, optional
        Label image, 0 = not scribbled, k = class k; scribbled classes keep their ids.
    config : SPConfig or STConfig, optional
        Base settings (default: the paper's). Must match `method`.
    **options
        Any configuration field by name (e.g. ``max_iter=200``, ``n_segments=4000``),
        plus ``seed`` (default 0), ``device`` (default ``"auto"``), ``precision``
        (default ``"auto"``) and ``channel_axis``.

    Returns
    -------
    numpy.ndarray
        int32 labels 1..K of the image's spatial shape, largest segment first.

    Examples
    --------
    >>> labels = segment(image, method="sp", max_iter=200, seed=1)
    """
    from .segmenter import Segmenter

    config_class = config_for_method(method)
    if config is None:
        config = config_class()
    elif not isinstance(config, config_class):
        raise ConfigError(
            f"config is a {type(config).__name__} but method={method!r}; pass a "
            f"{config_class.__name__} or change method."
        )
    runtime = {k: options.pop(k) for k in _RUNTIME_OPTIONS if k in options}
    if options:
        config = config.replace(**options)
    segmenter = Segmenter(
        config,
        device=runtime.get("device", "auto"),
        seed=runtime.get("seed", 0),
        precision=runtime.get("precision", "auto"),
    )
    channel_axis = runtime.get("channel_axis")
    for _ in segmenter.run(image, scribbles, channel_axis=channel_axis):
        pass
    return segmenter.predict(image, channel_axis=channel_axis)
