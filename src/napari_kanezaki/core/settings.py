"""One description per setting: help, paper symbol, valid range and widget hint.

Every field of `SPConfig` and `STConfig` is described here once. The configuration
validator (`core.config`), the command line's ``--help`` (`cli.parser`) and the dock
widget's labels, tooltips and ranges (`plugin.parameters`) are all generated from this
table, so the three faces cannot disagree (``tests/test_settings.py`` checks it).

Ranges without an upper limit in the methods are capped at `INT_MAX` (integers) and
`FLOAT_MAX` (floats), so that the widgets, whose spin boxes need a maximum, accept every
value the validator accepts. Pure Python: no torch, Qt or napari.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Setting", "SETTINGS", "INT_MAX", "FLOAT_MAX", "SECTIONS", "ConfigError"]

#: Largest integer setting (the largest value of a 32-bit spin box).
INT_MAX = 2**31 - 1
#: Largest float setting.
FLOAT_MAX = 1e9

#: Where a setting sits in the widget, in display order.
SECTIONS = ("main", "st", "superpixels", "slic", "felzenszwalb", "stop", "optimizer",
            "reference", "preprocessing")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class Setting:
    """Everything the faces say about one configuration field.

    Attributes
    ----------
    name : str
        Field name (`SPConfig` / `STConfig` attribute, TOML key, ``--name`` option).
    kind : type
        ``int``, ``float``, ``bool`` or ``str``.
    label : str
        Plain-language widget label.
    help : str
        One-line explanation: the CLI's help and the widget's tooltip.
    section : str
        Widget section, one of `SECTIONS`.
    symbol : str
        The papers' symbol, where they name one (``""`` otherwise).
    published : str
        The published code's name for it (``""`` where it has none).
    low, high : float, optional
        Valid range; None for a text or boolean setting. See `low_inclusive`.
    low_inclusive, high_inclusive : bool
        Whether the range's ends are valid values.
    choices : tuple of str
        Valid values of a text setting with a fixed set of values (lower case).
    step : float
        Widget step of a number.
    decimals : int
        Decimals a float widget shows (its resolution).
    text : str
        What a text setting holds, for error messages.
    """

    name: str
    kind: type
    label: str
    help: str
    section: str
    symbol: str = ""
    published: str = ""
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    choices: tuple[str, ...] = ()
    step: float = 1
    decimals: int = 0
    text: str = "a text"

    def tooltip(self) -> str:
        """The widget tooltip: the help, then the paper's symbol and the published name."""
        names = [f"paper: {self.symbol}" if self.symbol else "",
                 f"published code: {self.published}" if self.published else "",
                 f"setting: {self.name}"]
        return f"{self.help[0].upper()}{self.help[1:]}. ({'; '.join(n for n in names if n)})"

    def range_text(self) -> str:
        """The valid range in words, e.g. ``"0 < value <= 1e+09"``; ``""`` for text settings."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is None:
            return ""
        low_op = "<=" if self.low_inclusive else "<"
        high_op = "<=" if self.high_inclusive else "<"
        return f"{_num(self.low)} {low_op} value {high_op} {_num(self.high)}"

    def widget_range(self) -> tuple[float, float]:
        """Smallest and largest value a spin box of this setting offers.

        Equal to the valid range for inclusive ends; an exclusive end moves inwards by the
        widget's resolution (one unit for integers, ``10**-decimals`` for floats).
        """
        assert self.low is not None and self.high is not None
        unit = 1 if self.kind is int else 10.0**-self.decimals
        low = self.low if self.low_inclusive else self.low + unit
        high = self.high if self.high_inclusive else self.high - unit
        return (round(low, self.decimals), round(high, self.decimals)) if self.kind is float \
            else (int(low), int(high))

    def check(self, value: Any) -> Any:
        """Return `value` converted to this setting's type, or raise `ConfigError`.

        Integers given as integral floats (``5.0``, as YAML or a spin box may write them)
        become ints; ints become floats for float settings; choices are lower-cased.
        """
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be true or false, got {value!r}.")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{self.name} must be {self.text}, got {value!r}.")
            if self.choices:
                if value.lower() not in self.choices:
                    raise ConfigError(
                        f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}."
                    )
                return value.lower()
            return value
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{self.name} must be an integer, got {value!r}.")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{self.name} must be a number, got {value!r}.")
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{self.name} must be finite, got {value}.")
        assert self.low is not None and self.high is not None
        if value < self.low or (value == self.low and not self.low_inclusive):
            op = ">=" if self.low_inclusive else ">"
            raise ConfigError(f"{self.name} must be {op} {_num(self.low)}, got {value}.")
        if value > self.high or (value == self.high and not self.high_inclusive):
            op = "<=" if self.high_inclusive else "<"
            raise ConfigError(f"{self.name} must be {op} {_num(self.high)}, got {value}.")
        return value


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _int(name: str, label: str, help: str, section: str, low: int, **kw: Any) -> Setting:
    return Setting(name, int, label, help, section, low=low, high=kw.pop("high", INT_MAX), **kw)


def _float(name: str, label: str, help: str, section: str, low: float, decimals: int,
           step: float, **kw: Any) -> Setting:
    return Setting(name, float, label, help, section, low=low, high=kw.pop("high", FLOAT_MAX),
                   decimals=decimals, step=step, **kw)


_TABLE = (
    # -- network and stop rule (both methods) ---------------------------------------------
    _int("n_channels", "max. segments", "feature channels C, the largest possible number of "
         "segments", "main", 2, symbol="q", published="nChannel"),
    _int("n_conv", "conv. layers", "number of 3x3 convolution blocks (Conv, ReLU, BatchNorm)",
         "main", 1, symbol="M", published="nConv"),
    _int("max_iter", "max. iterations", "training iterations, one update each (the budget)",
         "main", 1, symbol="T", published="maxIter"),
    _int("min_labels", "stop at segments", "stop once the number of labels is at most this",
         "main", 1, published="minLabels"),
    _float("lr", "learning rate", "learning rate of the optimizer", "main", 0.0, 6, 0.01,
           low_inclusive=False, published="lr"),
    # -- ST loss weights --------------------------------------------------------------------
    _float("w_sim", "similarity weight", "ST: weight of the feature-similarity loss "
           "(cross-entropy to the network's own labels)", "st", 0.0, 3, 0.1,
           published="stepsize_sim"),
    _float("w_con", "smoothness weight", "ST: weight of the spatial-continuity loss; higher "
           "gives larger, smoother segments", "st", 0.0, 3, 0.1, symbol="μ",
           published="stepsize_con"),
    Setting("painted_only", bool, "painted classes only", "ST with scribbles: every pixel "
            "gets one of the painted classes (off, as the paper: unpainted clusters may "
            "remain)", "st"),
    _float("w_scr", "scribble weight", "ST: weight of the scribble loss (painted pixels)",
           "st", 0.0, 3, 0.1, symbol="ν", published="stepsize_scr"),
    # -- SP superpixels ---------------------------------------------------------------------
    Setting("superpixel", str, "superpixels", "SP: superpixel algorithm, slic or felzenszwalb",
            "superpixels", choices=("slic", "felzenszwalb")),
    _int("n_segments", "superpixel count", "SP, SLIC: number of superpixels (0 = automatic: "
         "one per 15 pixels, at most 10000, the paper's density on BSDS images)", "slic", 0,
         symbol="K", published="num_superpixels"),
    _float("compactness", "compactness", "SP, SLIC: compactness; higher gives squarer "
           "superpixels", "slic", 0.0, 3, 1.0, low_inclusive=False, published="compactness"),
    _float("scale", "scale", "SP, Felzenszwalb: scale; higher gives larger superpixels",
           "felzenszwalb", 0.0, 3, 1.0, low_inclusive=False, published="FZ_SCALE"),
    _float("sigma", "smoothing (sigma)", "SP, Felzenszwalb: Gaussian smoothing before "
           "segmenting", "felzenszwalb", 0.0, 3, 0.1, published="FZ_SIGMA"),
    _int("min_size", "min. superpixel size", "SP, Felzenszwalb: smallest superpixel in "
         "pixels", "felzenszwalb", 0, published="FZ_MIN_SIZE"),
    # -- early stop -------------------------------------------------------------------------
    _int("plateau_iter", "stop when stable for", "optional early stop once the label count "
         "has not changed for this many iterations and they are stable (0 = off, the "
         "papers)", "stop", 0),
    _float("plateau_tol", "stable: pixels changing", "plateau stop: largest fraction of "
           "pixels changing label in the median iteration of the plateau window", "stop",
           0.0, 4, 0.001, high=1.0),
    # -- optimizer --------------------------------------------------------------------------
    Setting("optimizer", str, "optimizer", "optimizer: sgd (papers), adam or asgd",
            "optimizer", choices=("sgd", "adam", "asgd"), published="OPTIMIZER"),
    _float("momentum", "momentum", "SGD momentum (ignored by adam and asgd)", "optimizer",
           0.0, 4, 0.01, high=1.0, high_inclusive=False),
    _float("weight_decay", "weight decay",
           "L2 weight decay, with any optimizer (papers 0, seed 0.02 with sgd)",
           "optimizer", 0.0, 6, 0.001),
    Setting("checkpoint", str, "start from model", "warm start from this model file "
            "('' = fresh weights)", "optimizer", published="CKPT",
            text='a path (a string; "" for none)'),
    # -- reference mode ---------------------------------------------------------------------
    _int("ref_size", "reference size", "reference mode: references resized to this square "
         "size (0 = keep their size; otherwise at least 8)", "reference", 0),
    _int("batch_size", "images per batch", "reference mode: images per batch", "reference",
         1, published="BATCH_SIZE"),
    _int("n_epochs", "epochs", "reference mode: passes over the references", "reference", 1),
    _int("max_update", "updates per batch", "reference mode: consecutive updates on each "
         "batch", "reference", 1, published="MAXUPDATE"),
    # -- preprocessing (the seed's) ---------------------------------------------------------
    _int("crop_bottom", "cut bottom rows", "preprocessing: cut N pixel rows off the bottom "
         "(SEM bar: 65); those rows get label 0", "preprocessing", 0, published="CROP_BAR_SZ"),
    _int("resize_multiple", "resize to multiple of", "preprocessing: resize H and W down to "
         "a multiple of N, as the seed (int(size/N)*N, at least N; seed 32; 0 = off); labels "
         "are resized back", "preprocessing", 0),
    Setting("clahe", bool, "CLAHE", "preprocessing: CLAHE contrast equalisation on the "
            "lightness (L of Lab)", "preprocessing", published="CLAHE"),
    _float("clahe_clip", "CLAHE clip limit", "CLAHE clip limit in OpenCV units (seed 2; "
           "scikit-image's clip_limit = value/256)", "preprocessing", 0.0, 2, 0.5,
           low_inclusive=False),
    _int("clahe_tiles", "CLAHE tiles", "CLAHE tiles per axis (8 = an 8x8 grid)",
         "preprocessing", 1),
    Setting("augment_clahe", bool, "random CLAHE", "augmentation: a random CLAHE every "
            "iteration instead of the fixed one (integer clip 2-9, grid 3-9)", "preprocessing",
            published="DATA_AUGM"),
    _int("median_blur", "median filter", "preprocessing: median filter size, odd (seed 5; "
         "0 = off)", "preprocessing", 0, published="BLUR"),
)

#: Every setting by field name, in display order.
SETTINGS: dict[str, Setting] = {s.name: s for s in _TABLE}
