"""Hyper-parameters of the two methods, with the papers' defaults.

`SPConfig` holds the settings of the superpixel method (Kanezaki, ICASSP 2018) and
`STConfig` those of the feature-similarity + spatial-continuity method (Kim, Kanezaki &
Tanaka, IEEE TIP 2020). Both validate their values on construction and read and write TOML
or YAML files. This module imports neither torch nor napari.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

__all__ = [
    "SPConfig",
    "STConfig",
    "Config",
    "ConfigError",
    "config_for_method",
    "load_config",
    "PRESETS",
    "preset_path",
    "load_preset",
]

#: Shipped presets: "paper" (the publications' defaults) and "seed" (the seed project's values).
PRESETS = ("paper", "seed")

OPTIMIZERS = ("sgd", "adam", "asgd")
SUPERPIXELS = ("slic", "felzenszwalb")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class _BaseConfig:
    """Settings shared by both methods (network, optimiser, stop rule, reference mode)."""

    #: Number of feature channels C (also the largest possible number of segments).
    n_channels: int = 100
    #: Number of 3x3 convolution blocks M (each Conv -> ReLU -> BatchNorm).
    n_conv: int = 2
    #: Maximum number of training iterations (one SGD update each).
    max_iter: int = 1000
    #: Stop once the number of distinct labels is at most this value.
    min_labels: int = 3
    #: Optional early stop (0 = off, the papers): stop once the labels have been stable for
    #: this many consecutive iterations (same label count, few pixels changing label).
    plateau_iter: int = 0
    #: Plateau stop: largest fraction of pixels that may change label in a stable iteration.
    plateau_tol: float = 0.01
    #: Learning rate.
    lr: float = 0.1
    #: Momentum of SGD (ignored by Adam and ASGD).
    momentum: float = 0.9
    #: Optimiser: "sgd" (papers), "adam" or "asgd".
    optimizer: Literal["sgd", "adam", "asgd"] = "sgd"
    #: L2 weight decay (papers: 0; the seed project used 0.02 with SGD).
    weight_decay: float = 0.0
    #: Reference mode: side length images are resized to before training (0 keeps their size).
    ref_size: int = 224
    #: Reference mode: number of images per batch.
    batch_size: int = 1
    #: Reference mode: passes over the reference images.
    n_epochs: int = 1
    #: Reference mode: consecutive SGD updates on each batch.
    max_update: int = 1000
    #: Warm start: model file (`Segmenter.save`, or a bare state dict) whose weights
    #: training starts from; "" starts from fresh weights (the papers).
    checkpoint: str = ""
    #: Preprocessing: pixels cut off the bottom (seed: 65 for its SEM information bar).
    crop_bottom: int = 0
    #: Preprocessing: resize height and width to the nearest multiple of this (seed: 32;
    #: 0 keeps the size). Labels are resized back with nearest neighbour.
    resize_multiple: int = 0
    #: Preprocessing: CLAHE on the lightness (L of Lab; grey: the image itself).
    clahe: bool = False
    #: CLAHE clip limit in OpenCV's units (seed: 2); skimage's clip_limit = clahe_clip / 256.
    clahe_clip: float = 2.0
    #: CLAHE tile grid: tiles per axis (seed: 8, i.e. 8x8 tiles).
    clahe_tiles: int = 8
    #: Augmentation: a random CLAHE (clip 2-9, grid 3-9) at every training iteration.
    augment_clahe: bool = False
    #: Preprocessing: median filter of this odd size (seed: 5; 0 = off).
    median_blur: int = 0

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self._validate()

    # -- validation ---------------------------------------------------------------------
    def _validate(self) -> None:
        _check_int(self, "n_channels", low=2)
        _check_int(self, "n_conv", low=1)
        _check_int(self, "max_iter", low=1)
        _check_int(self, "min_labels", low=1)
        _check_int(self, "plateau_iter", low=0)
        _check_float(self, "plateau_tol", low=0.0, high=1.0)
        _check_float(self, "lr", low=0.0, low_inclusive=False)
        _check_float(self, "momentum", low=0.0, high=1.0, high_inclusive=False)
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_float(self, "weight_decay", low=0.0)
        _check_int(self, "ref_size", low=0)
        if 0 < self.ref_size < 8:
            raise ConfigError(f"ref_size must be 0 (no resizing) or >= 8, got {self.ref_size}.")
        _check_int(self, "batch_size", low=1)
        _check_int(self, "n_epochs", low=1)
        _check_int(self, "max_update", low=1)
        if not isinstance(self.checkpoint, str):
            raise ConfigError(
                f"checkpoint must be a path (a string; \"\" for none), got {self.checkpoint!r}."
            )
        _check_int(self, "crop_bottom", low=0)
        _check_int(self, "resize_multiple", low=0)
        _check_bool(self, "clahe")
        _check_float(self, "clahe_clip", low=0.0, low_inclusive=False)
        _check_int(self, "clahe_tiles", low=1)
        _check_bool(self, "augment_clahe")
        _check_int(self, "median_blur", low=0)
        if self.median_blur == 1 or (self.median_blur and self.median_blur % 2 == 0):
            raise ConfigError(
                f"median_blur must be 0 (off) or an odd size >= 3 (seed: 5), got "
                f"{self.median_blur}."
            )
        if self.min_labels > self.n_channels:
            raise ConfigError(
                f"min_labels={self.min_labels} is larger than n_channels={self.n_channels}: "
                "the network can never produce more labels than channels; lower min_labels "
                "or raise n_channels."
            )

    # -- conversion ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dictionary, with the method name first.

        Returns
        -------
        dict
            ``{"method": "sp" | "st", <field>: <value>, ...}``.
        """
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Build a configuration from a dictionary, rejecting unknown keys.

        Parameters
        ----------
        values : dict
            Field names and values; an optional ``"method"`` key must match this class.

        Returns
        -------
        SPConfig or STConfig
        """
        values = dict(values)
        method = values.pop("method", cls.method)
        if method != cls.method:
            raise ConfigError(
                f"these settings are for method {method!r}, not {cls.method!r}: "
                f"use {config_for_method(method).__name__} (or load_config) instead."
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.method.upper()} setting(s) {', '.join(unknown)}; "
                f"valid keys are: {', '.join(sorted(known))}."
            )
        return cls(**values)

    def replace(self, **changes: Any) -> "Config":
        """Return a copy with some fields changed (validated like the constructor).

        Parameters
        ----------
        **changes
            New values by field name; unknown names raise `ConfigError`.
        """
        return type(self).from_dict({**dataclasses.asdict(self), **changes})

    # -- files --------------------------------------------------------------------------
    def to_file(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the settings to a ``.toml``, ``.yaml`` or ``.yml`` file.

        Parameters
        ----------
        path : str or Path
            Destination; the suffix chooses the format.
        overwrite : bool
            Replace an existing file. Without it an existing file raises `FileExistsError`.

        Returns
        -------
        Path
            The path written.
        """
        path = Path(path)
        fmt = _format_of(path)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path} already exists; choose another name or pass overwrite=True."
            )
        data = self.to_dict()
        if fmt == "toml":
            import tomli_w

            text = tomli_w.dumps(data)
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        """Read settings written by `to_file` (or by hand) from TOML or YAML.

        Parameters
        ----------
        path : str or Path
            A ``.toml``, ``.yaml`` or ``.yml`` file.

        Returns
        -------
        SPConfig or STConfig
        """
        data = _read_mapping(Path(path))
        return cls.from_dict(data)


@dataclass(frozen=True)
class SPConfig(_BaseConfig):
    """Settings of the superpixel-refined method (Kanezaki, ICASSP 2018).

    Every field has the paper's default. Superpixels are computed once before training;
    at every iteration each superpixel takes the majority label of the network's argmax.

    Parameters
    ----------
    n_channels, n_conv, max_iter, min_labels, lr, momentum, optimizer, weight_decay
        Network, optimiser and stop rule (see the field comments).
    superpixel : {"slic", "felzenszwalb"}
        Superpixel algorithm (paper: SLIC).
    n_segments, compactness : int, float
        SLIC parameters (paper: 10000 and 100; other SLIC arguments at scikit-image's
        defaults).
    scale, sigma, min_size : float, float, int
        Felzenszwalb parameters (seed project: 10, 0.8, 10).
    ref_size, batch_size, n_epochs, max_update
        Reference-image mode (`Segmenter.fit`).
    """

    superpixel: Literal["slic", "felzenszwalb"] = "slic"
    n_segments: int = 10000
    compactness: float = 100.0
    scale: float = 10.0
    sigma: float = 0.8
    min_size: int = 10

    method: ClassVar[str] = "sp"

    def _validate(self) -> None:
        super()._validate()
        _check_choice(self, "superpixel", SUPERPIXELS)
        _check_int(self, "n_segments", low=1)
        _check_float(self, "compactness", low=0.0, low_inclusive=False)
        _check_float(self, "scale", low=0.0, low_inclusive=False)
        _check_float(self, "sigma", low=0.0)
        _check_int(self, "min_size", low=0)


@dataclass(frozen=True)
class STConfig(_BaseConfig):
    """Settings of the similarity + continuity method (Kim, Kanezaki & Tanaka, TIP 2020).

    Every field has the paper's default for single images. The published reference-image
    demo uses ``w_con=5``: ``STConfig(w_con=5)`` reproduces it.

    Parameters
    ----------
    n_channels, n_conv, max_iter, min_labels, lr, momentum, optimizer, weight_decay
        Network, optimiser and stop rule (see the field comments).
    w_sim : float
        Weight of the feature-similarity (cross-entropy to own argmax) loss.
    w_con : float
        Weight of the spatial-continuity (mean absolute difference) loss.
    w_scr : float
        Weight of the scribble cross-entropy loss.
    ref_size, batch_size, n_epochs, max_update
        Reference-image mode (`Segmenter.fit`).
    """

    w_sim: float = 1.0
    w_con: float = 1.0
    w_scr: float = 0.5

    method: ClassVar[str] = "st"

    def _validate(self) -> None:
        super()._validate()
        for name in ("w_sim", "w_con", "w_scr"):
            _check_float(self, name, low=0.0)


Config = Union[SPConfig, STConfig]


def config_for_method(method: str) -> type[SPConfig] | type[STConfig]:
    """Return the configuration class of a method name ("sp" or "st", any case).

    Parameters
    ----------
    method : str
        ``"sp"`` or ``"st"``.

    Returns
    -------
    type
        `SPConfig` or `STConfig`.
    """
    key = str(method).lower()
    if key == "sp":
        return SPConfig
    if key == "st":
        return STConfig
    raise ConfigError(f"unknown method {method!r}; choose 'sp' or 'st'.")


def load_config(path: str | Path) -> Config:
    """Read a configuration file, choosing the class from its ``method`` key.

    Parameters
    ----------
    path : str or Path
        A ``.toml``, ``.yaml`` or ``.yml`` file with a ``method = "sp" | "st"`` entry.

    Returns
    -------
    SPConfig or STConfig
    """
    path = Path(path)
    data = _read_mapping(path)
    if "method" not in data:
        raise ConfigError(
            f"{path} has no 'method' key; add method = \"sp\" or method = \"st\", or read "
            "it with SPConfig.from_file / STConfig.from_file."
        )
    return config_for_method(data["method"]).from_dict(data)


def preset_path(name: str, method: str) -> Path:
    """Return the shipped TOML file of a preset, e.g. ``presets/seed-sp.toml``.

    Parameters
    ----------
    name : {"paper", "seed"}
        ``"paper"``: the publications' defaults (equal to ``SPConfig()`` / ``STConfig()``);
        ``"seed"``: the seed project's values (Felzenszwalb superpixels for SP, SGD weight
        decay 0.02).
    method : {"sp", "st"}
        Method.

    Returns
    -------
    Path
        A commented file holding every setting; copy it to start your own.
    """
    key = str(name).lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    method_key = config_for_method(method).method
    return Path(__file__).with_name("presets") / f"{key}-{method_key}.toml"


def load_preset(name: str, method: str) -> Config:
    """Load a shipped preset (see `preset_path`) as a configuration object.

    Parameters
    ----------
    name : {"paper", "seed"}
        Preset name.
    method : {"sp", "st"}
        Method.

    Returns
    -------
    SPConfig or STConfig
    """
    return load_config(preset_path(name, method))


# -- helpers ------------------------------------------------------------------------------
def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return "toml"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ConfigError(
        f"cannot tell the format of {path.name!r}: use a .toml, .yaml or .yml file name."
    )


def _read_mapping(path: Path) -> dict[str, Any]:
    fmt = _format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if fmt == "toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # parser errors differ between formats
        raise ConfigError(f"{path} is not valid {fmt.upper()}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of setting names to values.")
    return data


def _check_int(cfg: Any, name: str, *, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
        object.__setattr__(cfg, name, value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}.")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}.")


def _check_float(
    cfg: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}.")
    object.__setattr__(cfg, name, value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ConfigError(f"{name} must be {op} {low}, got {value}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ConfigError(f"{name} must be {op} {high}, got {value}.")


def _check_bool(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}.")


def _check_choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if not isinstance(value, str) or value.lower() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    object.__setattr__(cfg, name, value.lower())
