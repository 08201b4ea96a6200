"""Model files: the weights with the full configuration, loaded without executing code.

A model file is a `torch.save` of a plain dictionary (format tag, configuration, seed, input
layout, scribbled classes, state dict) read back with ``weights_only=True``: no pickled
code runs, whoever wrote the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from napari_kanezaki.core.config import Config, ConfigError

__all__ = ["MODEL_FORMAT", "write_model", "read_model", "read_weights", "load_weights"]

MODEL_FORMAT = "napari-kanezaki-model/1"


def write_model(
    path: str | Path,
    model: torch.nn.Module,
    config: Config,
    *,
    seed: int,
    spacing: tuple[float, ...] | None,
    keep_ids: tuple[int, ...],
    overwrite: bool = False,
) -> Path:
    """Write a model file.

    Parameters
    ----------
    path : str or Path
        Destination (conventionally ``.pt``).
    model : KanezakiNet
        The trained network.
    config : SPConfig or STConfig
        Its configuration, stored whole.
    seed : int
        Seed of the run.
    spacing : tuple of float or None
        Voxel size the model was trained with.
    keep_ids : tuple of int
        Scribbled classes, kept as ids in predictions.
    overwrite : bool
        Replace an existing file; otherwise an existing file raises `FileExistsError`.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True.")
    payload = {
        "format": MODEL_FORMAT,
        "config": config.to_dict(),
        "seed": seed,
        "in_channels": model.in_channels,
        "spatial_dims": model.spatial_dims,
        "spacing": None if spacing is None else list(spacing),
        "keep_ids": list(keep_ids),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    return path


def read_model(path: str | Path) -> dict[str, Any]:
    """Read a file written by `write_model`.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict
        ``format``, ``config`` (a dict), ``seed``, ``in_channels``, ``spatial_dims``,
        ``spacing``, ``keep_ids`` and ``state_dict``.

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing file, or one that is not a model file of this package.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a napari-kanezaki model file (or is damaged): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path} is not a napari-kanezaki model file: it was not written by "
            "Segmenter.save. A bare state dict can be loaded with torch.load and "
            "Segmenter.model.load_state_dict after a run."
        )
    return payload


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a warm-start checkpoint: a model file or a bare state dict.

    Parameters
    ----------
    path : str or Path
        ``config.checkpoint``.

    Returns
    -------
    dict
        Parameter and buffer tensors by name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; fix the path or set checkpoint = \"\" "
            "to start from fresh weights."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be read as a model file: {exc}") from exc
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        payload = payload["state_dict"]
    return payload


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path,
                 config: Config) -> None:
    """Load `weights` into `model`, or say why they do not fit (`ConfigError`)."""
    try:
        model.load_state_dict(weights)
    except Exception as exc:
        raise ConfigError(
            f"checkpoint {source} does not fit this network ({model.in_channels} input "
            f"channel(s), n_channels={config.n_channels}, n_conv={config.n_conv}): {exc}. "
            "Use the checkpoint's n_channels/n_conv or another checkpoint."
        ) from exc
