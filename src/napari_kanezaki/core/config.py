"""Hyper-parameters of the two methods, with the papers' defaults.

`SPConfig` holds the settings of the superpixel method (Kanezaki, ICASSP 2018) and
`STConfig` those of the feature-similarity + spatial-continuity method (Kim, Kanezaki &
Tanaka, IEEE TIP 2020). Both validate their values on construction and read and write TOML
or YAML files. This module imports neither torch nor napari.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from napari_kanezaki.core.settings import SETTINGS, ConfigError
from napari_kanezaki.imaging.io import refuse_existing

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

#: Shipped presets: "interactive" (the papers' method, ending by itself: the command line's
#: and the widgets' default), "paper" (the publications' defaults, the Python API's),
#: "seed" (the seed project's values) and "microscopy" (cells between stained membranes:
#: EM slices with SP, membrane-stained volumes in 3-D with ST; objects with `to_objects`).
PRESETS = ("interactive", "paper", "seed", "microscopy")


@dataclass(frozen=True)
class _BaseConfig:
    """Settings shared by both methods (network, optimiser, stop rule, reference mode).

    Every field is described in `napari_kanezaki.core.settings.SETTINGS` (help, range,
    symbol); the Parameters sections of `SPConfig` and `STConfig` are generated from it.
    """

    n_channels: int = 100
    n_conv: int = 2
    max_iter: int = 1000
    min_labels: int = 3
    plateau_iter: int = 0
    plateau_tol: float = 0.01
    lr: float = 0.1
    momentum: float = 0.9
    optimizer: Literal["sgd", "adam", "asgd"] = "sgd"
    weight_decay: float = 0.0
    ref_size: int = 224
    batch_size: int = 1
    n_epochs: int = 1
    max_update: int = 1000
    checkpoint: str = ""
    crop_bottom: int = 0
    resize_multiple: int = 0
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    augment_clahe: bool = False
    median_blur: int = 0

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self._validate()

    # -- validation ---------------------------------------------------------------------
    def _validate(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, SETTINGS[f.name].check(getattr(self, f.name)))
        if 0 < self.ref_size < 8:
            raise ConfigError(f"ref_size must be 0 (no resizing) or >= 8, got {self.ref_size}.")
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
    def from_dict(cls, values: dict[str, Any]) -> Config:
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

    def replace(self, **changes: Any) -> Config:
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
        refuse_existing(path, overwrite)
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
    def from_file(cls, path: str | Path) -> Config:
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

    SLIC's other arguments are at scikit-image's defaults; the seed project's Felzenszwalb
    values are in the ``seed`` preset.
    """

    superpixel: Literal["slic", "felzenszwalb"] = "slic"
    n_segments: int = 10000
    compactness: float = 100.0
    scale: float = 10.0
    sigma: float = 0.8
    min_size: int = 10

    method: ClassVar[str] = "sp"


@dataclass(frozen=True)
class STConfig(_BaseConfig):
    """Settings of the similarity + continuity method (Kim, Kanezaki & Tanaka, TIP 2020).

    Every field has the paper's default for single images. The published reference-image
    demo uses ``w_con=5``: ``STConfig(w_con=5)`` reproduces it.

    """

    w_sim: float = 1.0
    w_con: float = 1.0
    w_scr: float = 0.5
    painted_only: bool = False

    method: ClassVar[str] = "st"


Config = SPConfig | STConfig


def _document_fields(cls: type) -> None:
    """Append a numpydoc Parameters section, generated from `SETTINGS`, to a docstring."""
    lines = ["", "    Parameters", "    ----------"]
    for f in fields(cls):
        setting = SETTINGS[f.name]
        lines.append(f"    {f.name} : {setting.kind.__name__}, default {f.default!r}")
        lines.append(f"        {setting.tooltip()} Valid: {setting.range_text() or 'any text'}.")
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"


_document_fields(SPConfig)
_document_fields(STConfig)


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
    name : {"interactive", "paper", "seed", "microscopy"}
        ``"interactive"``: the papers' settings with the plateau stop on (and SP's
        superpixel count following the image size), for a person waiting on a result;
        ``"paper"``: the publications' defaults (equal to ``SPConfig()`` / ``STConfig()``);
        ``"seed"``: the seed project's values (Felzenszwalb superpixels for SP, SGD weight
        decay 0.02); ``"microscopy"``: cells between stained membranes, the interactive
        preset with fewer channels, SP on Felzenszwalb superpixels (thin membranes stay
        apart) and, for ST, two labels at least and a 3x3 median per plane (fast enough
        for 3-D volumes); turn its classes into cells with `imaging.objects.to_objects`.
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
    name : {"interactive", "paper", "seed", "microscopy"}
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
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the configuration file (.toml or .yaml).")
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


def preset_text(config: Config, title: str) -> str:
    """Render a configuration as a commented TOML file, as the shipped presets are written.

    The file is a header comment (every line of `title` behind ``# ``), a blank line, then
    ``method = "sp" | "st"`` and one ``key = value  # help`` line per field in the order of
    `SETTINGS`, the comment being the field's help from `SETTINGS` (the one description per
    setting), so a file written by this function can never disagree with the CLI's help or
    the widget's tooltips. `load_config` reads it back (TOML comments are ignored).

    Parameters
    ----------
    config : SPConfig or STConfig
        The values to write.
    title : str
        Header text; may hold several lines (e.g. notes on single values).

    Returns
    -------
    str
        The file's text, ending with a newline.
    """
    import tomli_w

    values = config.to_dict()
    rows = [("method", values["method"],
             "method: sp (superpixel refinement) or st (similarity + continuity)")]
    rows += [(name, values[name], setting.help) for name, setting in SETTINGS.items()
             if name in values]
    assignments = [tomli_w.dumps({name: value}).strip() for name, value, _ in rows]
    width = max(len(a) for a in assignments)
    header = [f"# {line}".rstrip() for line in title.strip("\n").splitlines()]
    body = [f"{assignment.ljust(width)}  # {help_}"
            for assignment, (_, _, help_) in zip(assignments, rows, strict=True)]
    return "\n".join([*header, "", *body]) + "\n"
