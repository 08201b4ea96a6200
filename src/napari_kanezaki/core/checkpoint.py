"""Model files: the weights with the full configuration, loaded without executing code.

A model file is a `torch.save` of a plain dictionary (format tag, configuration, seed, input
layout, scribbled classes, state dict) read back with ``weights_only=True``: no pickled
code runs, whoever wrote the file.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from napari_kanezaki.core.config import Config, ConfigError
from napari_kanezaki.imaging.io import refuse_existing

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
    membranes: dict[str, Any] | None = None,
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
    membranes : dict, optional
        The membrane filter its inputs went through (`imaging.membranes.membrane_filter`),
        applied again by `workflows.stacks.predict_iter`; None: the intensity.
    overwrite : bool
        Replace an existing file; otherwise an existing file raises `FileExistsError`.

    Returns
    -------
    Path
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    payload = {
        "format": MODEL_FORMAT,
        "config": config.to_dict(),
        "seed": seed,
        "in_channels": model.in_channels,
        "spatial_dims": model.spatial_dims,
        "spacing": None if spacing is None else list(spacing),
        "keep_ids": list(keep_ids),
        "membranes": None if membranes is None else dict(membranes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    return path


def _load(path: str | Path, what: str) -> Any:
    """`torch.load` with ``weights_only``, every failure as a message naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give the model file (.pt) inside it.")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for users
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a refused object: damaged
            raise ValueError(
                f"{what} {path} is not a readable model file (damaged, or not written by "
                "torch.save)."
            ) from exc
        raise ValueError(
            f"{what} {path} holds Python objects other than tensors and plain values; it "
            "is refused because loading it could run code. Only files written by "
            "Segmenter.save (or bare state dicts) are read."
        ) from exc
    except Exception as exc:  # damaged or not a torch file: zip, EOF, magic number errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{what} {path} is not a readable model file (damaged, or not written by "
            f"torch.save): {reason}"
        ) from exc


#: Entries of a model file and the types they must have.
_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "seed": int, "in_channels": int, "keep_ids": list, "state_dict": dict,
    "spatial_dims": int, "spacing": (list, type(None)), "membranes": (dict, type(None)),
}


def read_model(path: str | Path) -> dict[str, Any]:
    """Read and check a file written by `write_model` (the one place model files are read).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict
        ``format``, ``config`` (a dict), ``seed``, ``in_channels``, ``spatial_dims``,
        ``spacing``, ``keep_ids``, ``membranes`` (None in files from before it) and
        ``state_dict``.

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing file, a folder, a damaged file, a file that is not a model file of
        this package or one with missing or mistyped entries; the message says which.
    """
    payload = _load(path, "model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path} is not a napari-kanezaki model file: it was not written by "
            "Segmenter.save. A bare state dict can be loaded with torch.load and "
            "Segmenter.model.load_state_dict after a run."
        )
    payload.setdefault("spatial_dims", 2)
    payload.setdefault("spacing", None)
    payload.setdefault("membranes", None)
    for key, kind in _ENTRIES.items():
        if key not in payload:
            raise ValueError(
                f"model file {path} has no {key!r} entry: it is damaged or was written by an "
                "incompatible version; train and save the model again."
            )
        if isinstance(payload[key], bool) or not isinstance(payload[key], kind):
            raise ValueError(
                f"model file {path}: entry {key!r} is a {type(payload[key]).__name__}, not "
                "what Segmenter.save writes; the file is damaged."
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
    payload = _load(path, "checkpoint")
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        payload = payload.get("state_dict")
    if not isinstance(payload, dict):
        raise ValueError(
            f"checkpoint {path} holds no state dict; give a file written by Segmenter.save "
            "or torch.save(model.state_dict())."
        )
    return payload


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path,
                 config: Config) -> None:
    """Load `weights` into `model`, or say why they do not fit (`ConfigError`)."""
    try:
        model.load_state_dict(weights)
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        reason = next((line.strip() for line in detail[1:] if line.strip()), detail[0]
                      if detail else type(exc).__name__).rstrip(".")
        raise ConfigError(
            f"the weights in {source} do not fit this network ({model.in_channels} input "
            f"channel(s), n_channels={config.n_channels}, n_conv={config.n_conv}): "
            f"{reason}. Use the n_channels/n_conv the weights were trained with, or "
            "other weights."
        ) from exc
