"""The parameter panel shared by the dock widgets: method, hyper-parameters, seed, device.

Every hyper-parameter of `SPConfig` and `STConfig` has a widget whose initial value is the
paper's default (read from the dataclasses, so it is never duplicated here). The panel turns
its values into a config object and back, and reads and writes the core's config files.
Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
    Widget,
    show_file_dialog,
)

from napari_kanezaki.core.config import Config, SPConfig, STConfig, config_for_method
from napari_kanezaki.plugin.notify import report_errors

__all__ = ["ParameterPanel"]

CONFIG_FILTER = "Config files (*.toml *.yaml *.yml)"
PRECISIONS = ("auto", "fp32", "bf16")

# Widget options of every config field: (widget class, options).
_FIELD_WIDGETS: dict[str, tuple[type[Widget], dict[str, Any]]] = {
    "n_channels": (SpinBox, {"min": 2, "max": 1000, "tooltip": "Feature channels C = most segments"}),
    "n_conv": (SpinBox, {"min": 1, "max": 20, "tooltip": "3x3 convolution blocks M"}),
    "max_iter": (SpinBox, {"min": 1, "max": 100_000, "tooltip": "Training iterations budget"}),
    "min_labels": (SpinBox, {"min": 1, "max": 1000, "tooltip": "Stop at this many labels"}),
    "lr": (FloatSpinBox, {"min": 1e-4, "max": 10.0, "step": 0.001, "label": "learning rate"}),
    "w_sim": (FloatSpinBox, {"min": 0.0, "max": 100.0, "step": 0.1, "label": "w_sim"}),
    "w_con": (FloatSpinBox, {"min": 0.0, "max": 100.0, "step": 0.1, "label": "w_con"}),
    "w_scr": (FloatSpinBox, {"min": 0.0, "max": 100.0, "step": 0.1, "label": "w_scr"}),
    "superpixel": (ComboBox, {"choices": ["slic", "felzenszwalb"]}),
    "n_segments": (SpinBox, {"min": 1, "max": 1_000_000, "tooltip": "SLIC segments"}),
    "compactness": (FloatSpinBox, {"min": 0.01, "max": 10_000.0, "tooltip": "SLIC compactness"}),
    "scale": (FloatSpinBox, {"min": 0.01, "max": 10_000.0, "tooltip": "Felzenszwalb scale"}),
    "sigma": (FloatSpinBox, {"min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Felzenszwalb sigma"}),
    "min_size": (SpinBox, {"min": 0, "max": 100_000, "tooltip": "Felzenszwalb min_size"}),
    "momentum": (FloatSpinBox, {"min": 0.0, "max": 0.999, "step": 0.01}),
    "optimizer": (ComboBox, {"choices": ["sgd", "adam", "asgd"]}),
    "weight_decay": (FloatSpinBox, {"min": 0.0, "max": 10.0, "step": 0.001}),
    "ref_size": (SpinBox, {"min": 0, "max": 8192, "tooltip": "Reference mode: resize to this (0 = keep size)"}),
    "batch_size": (SpinBox, {"min": 1, "max": 1024, "tooltip": "Reference mode: images per batch"}),
    "n_epochs": (SpinBox, {"min": 1, "max": 1000, "tooltip": "Reference mode: epochs"}),
    "max_update": (SpinBox, {"min": 1, "max": 100_000, "tooltip": "Reference mode: updates per batch"}),
    "plateau_iter": (SpinBox, {"min": 0, "max": 100_000, "tooltip": "Stop after this many stable iterations (0 = off)"}),
    "plateau_tol": (FloatSpinBox, {"min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Plateau: fraction of pixels that may change"}),
    "checkpoint": (LineEdit, {"tooltip": "Warm start: model file to start training from (empty = fresh weights)"}),
    "crop_bottom": (SpinBox, {"min": 0, "max": 100_000, "tooltip": "Cut N rows off the bottom (SEM bar: 65); they get label 0"}),
    "resize_multiple": (SpinBox, {"min": 0, "max": 4096, "tooltip": "Resize to a multiple of N (seed: 32; 0 = off); labels resized back"}),
    "clahe": (CheckBox, {"text": "CLAHE on lightness (L of Lab)"}),
    "clahe_clip": (FloatSpinBox, {"min": 0.01, "max": 100.0, "step": 0.5, "tooltip": "CLAHE clip limit, OpenCV units (seed: 2)"}),
    "clahe_tiles": (SpinBox, {"min": 1, "max": 64, "tooltip": "CLAHE tiles per axis (seed: 8)"}),
    "augment_clahe": (CheckBox, {"text": "random CLAHE every iteration (augmentation)"}),
    "median_blur": (SpinBox, {"min": 0, "max": 99, "tooltip": "Median filter size, odd (seed: 5; 0 = off)"}),
}
_MAIN = ("n_channels", "n_conv", "max_iter", "min_labels", "lr")
_ST = ("w_sim", "w_con", "w_scr")
_SLIC = ("n_segments", "compactness")
_FELZENSZWALB = ("scale", "sigma", "min_size")
_ADVANCED = (
    "momentum", "optimizer", "weight_decay", "ref_size", "batch_size", "n_epochs", "max_update",
    "plateau_iter", "plateau_tol", "checkpoint",
    # preprocessing (see preprocessing.py)
    "crop_bottom", "resize_multiple", "clahe", "clahe_clip", "clahe_tiles", "augment_clahe",
    "median_blur",
)


def _device_choices(_widget: ComboBox) -> list[str]:
    """``"auto"`` and the devices PyTorch can use here (imports torch on first call)."""
    from napari_kanezaki.core.devices import available_devices

    return ["auto", *available_devices()]


class ParameterPanel(Container):
    """Method, hyper-parameters (paper defaults), seed, device and an advanced section.

    Parameters
    ----------
    method : {"st", "sp"}
        Initial method.
    """

    def __init__(self, method: str = "st") -> None:
        defaults = {**STConfig().to_dict(), **SPConfig().to_dict()}
        self.fields: dict[str, Widget] = {}
        for name, (widget_class, options) in _FIELD_WIDGETS.items():
            self.fields[name] = widget_class(name=name, value=defaults[name], **options)
        self.method = ComboBox(
            name="method",
            choices=[("ST: similarity + continuity (TIP 2020)", "st"),
                     ("SP: superpixels (ICASSP 2018)", "sp")],
            value=method,
        )
        self.seed = SpinBox(name="seed", value=0, min=0, max=2**31 - 1)
        self.device = ComboBox(name="device", choices=_device_choices, value="auto")
        self.precision = ComboBox(name="precision", choices=list(PRECISIONS), value="auto")
        self.preview_every = SpinBox(
            name="preview_every", value=10, min=0, max=10_000,
            tooltip="Update the result layer every N iterations (0: only at the end)",
        )
        self.show_advanced = CheckBox(name="show_advanced", text="advanced settings", value=False)
        self.st_group = Container(widgets=[self.fields[n] for n in _ST])
        self.slic_group = Container(widgets=[self.fields[n] for n in _SLIC])
        self.felzenszwalb_group = Container(widgets=[self.fields[n] for n in _FELZENSZWALB])
        self.sp_group = Container(
            widgets=[self.fields["superpixel"], self.slic_group, self.felzenszwalb_group]
        )
        self.advanced = Container(
            widgets=[*(self.fields[n] for n in _ADVANCED), self.precision, self.preview_every]
        )
        load = PushButton(name="load_settings", text="Load settings…")
        save = PushButton(name="save_settings", text="Save settings…")
        for group in (self.st_group, self.slic_group, self.felzenszwalb_group, self.sp_group,
                      self.advanced):
            group.margins = (0, 0, 0, 0)
        super().__init__(
            widgets=[
                self.method,
                *(self.fields[n] for n in _MAIN),
                self.st_group,
                self.sp_group,
                self.seed,
                self.device,
                self.show_advanced,
                self.advanced,
                Container(widgets=[load, save], layout="horizontal", labels=False),
            ]
        )
        self.margins = (0, 0, 0, 0)
        self.method.changed.connect(self._update_visibility)
        self.fields["superpixel"].changed.connect(self._update_visibility)
        self.show_advanced.changed.connect(self._update_visibility)
        load.changed.connect(self._ask_load)
        save.changed.connect(self._ask_save)
        self._update_visibility()

    # -- values -----------------------------------------------------------------------------
    def config(self) -> Config:
        """Return the configuration the widgets describe.

        Returns
        -------
        SPConfig or STConfig

        Raises
        ------
        ConfigError
            If the values are inconsistent (e.g. ``min_labels > n_channels``).
        """
        config_class = config_for_method(self.method.value)
        return config_class(**{f.name: self.fields[f.name].value for f in fields(config_class)})

    def set_config(self, config: Config) -> None:
        """Show a configuration in the widgets (method included).

        Parameters
        ----------
        config : SPConfig or STConfig
        """
        self.method.value = config.method
        for name, value in config.to_dict().items():
            if name in self.fields:
                self.fields[name].value = value

    def runtime(self) -> dict[str, Any]:
        """Return the `Segmenter` arguments other than the config: seed, device, precision."""
        return {
            "seed": int(self.seed.value),
            "device": self.device.value,
            "precision": self.precision.value,
        }

    # -- files ------------------------------------------------------------------------------
    def load_file(self, path: str | Path) -> Config:
        """Read a config file of the core (TOML or YAML) and show it.

        Parameters
        ----------
        path : str or Path
            A file written by `SPConfig.to_file` / `STConfig.to_file` (or by hand).

        Returns
        -------
        SPConfig or STConfig
            The configuration read.
        """
        from napari_kanezaki.core.config import load_config

        config = load_config(path)
        self.set_config(config)
        return config

    def save_file(self, path: str | Path) -> Path:
        """Write the current settings to a TOML or YAML file, replacing an existing one.

        Parameters
        ----------
        path : str or Path
            Destination; the suffix (``.toml``, ``.yaml``, ``.yml``) chooses the format.

        Returns
        -------
        Path
        """
        return self.config().to_file(path, overwrite=True)

    def _ask_load(self) -> None:
        path = show_file_dialog(mode="r", caption="Load settings", filter=CONFIG_FILTER)
        if path:
            with report_errors():
                self.load_file(path)

    def _ask_save(self) -> None:
        path = show_file_dialog(mode="w", caption="Save settings", filter=CONFIG_FILTER)
        if path:
            with report_errors():
                self.save_file(path)

    def _update_visibility(self) -> None:
        is_st = self.method.value == "st"
        self.st_group.visible = is_st
        self.sp_group.visible = not is_st
        is_slic = self.fields["superpixel"].value == "slic"
        self.slic_group.visible = is_slic
        self.felzenszwalb_group.visible = not is_slic
        self.advanced.visible = self.show_advanced.value
