"""The parameter panel shared by the dock widgets: method, hyper-parameters, seed, device.

Every hyper-parameter of `SPConfig` and `STConfig` has a widget whose initial value is the
paper's default (read from the dataclasses, so it is never duplicated here). The panel turns
its values into a config object and back, and reads and writes the core's config files.
Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import json
import os
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

from napari_kanezaki.core.config import (
    PRESETS,
    Config,
    ConfigError,
    config_for_method,
    load_preset,
)
from napari_kanezaki.core.settings import SECTIONS, SETTINGS, Setting
from napari_kanezaki.plugin.notify import report_errors

__all__ = ["ParameterPanel"]

CONFIG_FILTER = "Config files (*.toml *.yaml *.yml)"
PRECISIONS = ("auto", "fp32", "bf16")

#: The preset the panel starts from (the command line's default too).
DEFAULT_PRESET = "interactive"

_SECTION_FIELDS = {
    section: tuple(s.name for s in SETTINGS.values() if s.section == section)
    for section in SECTIONS
}
_ADVANCED_SECTIONS = ("stop", "optimizer", "reference", "preprocessing")

#: What a panel is used for (`ParameterPanel.show_for`): a single image (the Segment widget)
#: and the batch widget's modes.
MODES = ("image", "each", "reference", "saved")
#: Settings that do not apply in a mode, hidden there: the reference-image mode's settings
#: apply to it only, and it has no stop rule (a fixed number of updates per batch).
_HIDDEN_FIELDS = {
    "image": frozenset(_SECTION_FIELDS["reference"]),
    "each": frozenset(_SECTION_FIELDS["reference"]),
    "reference": frozenset(("max_iter", "min_labels", *_SECTION_FIELDS["stop"])),
    "saved": frozenset(SETTINGS),
}


def setting_widget(setting: Setting, value: Any) -> Widget:
    """The widget of one setting: label, tooltip and range from its `Setting`.

    Parameters
    ----------
    setting : Setting
        The description (`napari_kanezaki.core.settings.SETTINGS`).
    value : object
        Initial value (the paper's default).

    Returns
    -------
    magicgui.widgets.Widget
        A SpinBox, FloatSpinBox, CheckBox, ComboBox or LineEdit.
    """
    common = {"name": setting.name, "tooltip": setting.tooltip()}
    if setting.kind is bool:
        return CheckBox(value=value, text=setting.label, **common)
    if setting.choices:
        return ComboBox(value=value, choices=list(setting.choices), label=setting.label, **common)
    if setting.kind is str:
        return LineEdit(value=value, label=setting.label, **common)
    low, high = setting.widget_range()
    if setting.kind is int:
        return SpinBox(value=value, min=low, max=high, step=setting.step, label=setting.label,
                       **common)
    widget = FloatSpinBox(step=setting.step, label=setting.label, **common)
    # Decimals first: Qt rounds the range and the value to the decimals shown.
    widget.native.setDecimals(setting.decimals)
    widget.max, widget.min = high, low
    widget.value = value
    return widget


def last_settings_file() -> Path:
    """Where the panels remember their last settings.

    ``$NAPARI_KANEZAKI_CONFIG_DIR/last-settings.json`` when that variable is set, otherwise
    in the user's configuration folder (`platformdirs.user_config_dir`).
    """
    root = os.environ.get("NAPARI_KANEZAKI_CONFIG_DIR")
    if not root:
        from platformdirs import user_config_dir

        root = user_config_dir("napari-kanezaki")
    return Path(root) / "last-settings.json"


def _device_choices(_widget: ComboBox) -> list[str]:
    """``"auto"`` and the devices PyTorch can use here (imports torch on first call)."""
    from napari_kanezaki.core.devices import available_devices

    return ["auto", *available_devices()]


class ParameterPanel(Container):
    """Method, hyper-parameters (paper defaults), seed, device and an advanced section.

    The last settings used are restored when a panel opens (from `last_settings_file`),
    and every change is remembered there; *Restore defaults* returns to the interactive
    preset.

    Parameters
    ----------
    method : {"st", "sp"}
        Initial method (a remembered one takes precedence).
    remember : bool
        Restore and remember the last settings.
    """

    def __init__(self, method: str = "st", remember: bool = True) -> None:
        defaults = {**load_preset(DEFAULT_PRESET, "st").to_dict(),
                    **load_preset(DEFAULT_PRESET, "sp").to_dict()}
        self.fields: dict[str, Widget] = {
            name: setting_widget(setting, defaults[name]) for name, setting in SETTINGS.items()
        }
        self.preset = ComboBox(
            name="preset", choices=list(PRESETS), value=DEFAULT_PRESET,
            tooltip="Load a preset's settings: interactive (the papers' method, ending by "
            "itself once the labels are stable), paper (the publications' exact settings, "
            "1000 iterations) or seed (the seed project's values)",
        )
        self.method = ComboBox(
            name="method",
            choices=[("ST: similarity + continuity (TIP 2020)", "st"),
                     ("SP: superpixels (ICASSP 2018)", "sp")],
            value=method,
            tooltip="ST: feature similarity + spatial continuity, takes scribbles (Kim, "
            "Kanezaki & Tanaka 2020); SP: refines superpixels (Kanezaki 2018)",
        )
        self.seed = SpinBox(
            name="seed", value=0, min=0, max=2**31 - 1,
            tooltip="Seed of the network's initial weights: the same seed and settings give "
            "the same result on the same device",
        )
        self.device = ComboBox(
            name="device", choices=_device_choices, value="auto",
            tooltip="Where the network runs: auto picks a GPU (CUDA, then Apple MPS) when "
            "there is one, else the CPU",
        )
        self.precision = ComboBox(
            name="precision", choices=list(PRECISIONS), value="auto",
            tooltip="Arithmetic of the network: auto (bf16 where the device computes it fast, "
            "else fp32), fp32 or bf16",
        )
        self.preview_every = SpinBox(
            name="preview_every", value=10, min=0, max=10_000,
            tooltip="Update the result layer every N iterations (0: only at the end)",
        )
        self.show_advanced = CheckBox(
            name="show_advanced", text="advanced settings", value=False,
            tooltip="Show the stop rule, optimizer, preprocessing and precision settings",
        )
        def section(name: str) -> list[Widget]:
            return [self.fields[n] for n in _SECTION_FIELDS[name]]

        self.st_group = Container(widgets=section("st"))
        self.slic_group = Container(widgets=section("slic"))
        self.felzenszwalb_group = Container(widgets=section("felzenszwalb"))
        self.sp_group = Container(
            widgets=[*section("superpixels"), self.slic_group, self.felzenszwalb_group]
        )
        advanced = [w for name in _ADVANCED_SECTIONS for w in section(name)]
        self.advanced = Container(widgets=[*advanced, self.precision, self.preview_every])
        load = PushButton(name="load_settings", text="Load settings…",
                          tooltip="Read the settings from a TOML or YAML config file")
        save = PushButton(name="save_settings", text="Save settings…",
                          tooltip="Write the settings to a TOML or YAML config file (for "
                          "the command line or Python)")
        defaults_button = PushButton(
            name="restore_defaults", text="Restore defaults",
            tooltip="Back to the interactive preset, seed 0, automatic device and precision",
        )
        self._files_row = Container(widgets=[load, save, defaults_button], layout="horizontal",
                                    labels=False)
        self._mode = "image"
        for group in (self.st_group, self.slic_group, self.felzenszwalb_group, self.sp_group,
                      self.advanced):
            group.margins = (0, 0, 0, 0)
        super().__init__(
            widgets=[
                self.method,
                self.preset,
                *section("main"),
                self.st_group,
                self.sp_group,
                self.seed,
                self.device,
                self.show_advanced,
                self.advanced,
                self._files_row,
            ]
        )
        self.margins = (0, 0, 0, 0)
        self.method.changed.connect(self._update_visibility)
        self.method.changed.connect(self._method_changed)
        self.preset.changed.connect(self._apply_preset)
        self._method_shown = self.method.value
        self._quiet = False  # True while the panel sets its own values (no preset follows)
        self.fields["superpixel"].changed.connect(self._update_visibility)
        self.show_advanced.changed.connect(self._update_visibility)
        load.changed.connect(self._ask_load)
        save.changed.connect(self._ask_save)
        defaults_button.changed.connect(self.restore_defaults)
        self._update_visibility()
        self._remembering = False
        if remember:
            self._restore_last()
            self.changed.connect(self._remember)
            self._remembering = True

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
        for name, value in config.to_dict().items():
            if name in self.fields:
                _check_shown_exactly(self.fields[name], SETTINGS[name], value)
        quiet, self._quiet = self._quiet, True
        try:
            self.method.value = config.method
            self._method_shown = config.method
            for name, value in config.to_dict().items():
                if name in self.fields:
                    self.fields[name].value = value
        finally:
            self._quiet = quiet

    def runtime(self) -> dict[str, Any]:
        """Return the `Segmenter` arguments other than the config: seed, device, precision."""
        return {
            "seed": int(self.seed.value),
            "device": self.device.value,
            "precision": self.precision.value,
        }

    # -- defaults and the last settings -----------------------------------------------------
    def restore_defaults(self) -> None:
        """Back to the interactive preset of the current method, seed 0, automatic device."""
        self.preset.value = DEFAULT_PRESET
        self.set_config(load_preset(DEFAULT_PRESET, self.method.value))
        self.seed.value = 0
        self.device.value = "auto"
        self.precision.value = "auto"
        self.preview_every.value = 10

    def _state(self) -> dict[str, Any]:
        return {"config": self.config().to_dict(), "preset": self.preset.value,
                "seed": int(self.seed.value), "precision": self.precision.value,
                "preview_every": int(self.preview_every.value)}

    def _remember(self, *_args: Any) -> None:
        """Write the current settings to `last_settings_file` (never fails the panel)."""
        if not self._remembering:
            return
        try:
            state = self._state()
        except ConfigError:  # an inconsistent moment while editing: keep the last good one
            return
        path = last_settings_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial_file = path.with_name(path.name + ".partial")
            partial_file.write_text(json.dumps(state, indent=1), encoding="utf-8")
            partial_file.replace(path)
        except OSError:  # a read-only home: settings are simply not remembered
            pass

    def _restore_last(self) -> None:
        """Show the remembered settings; anything unreadable leaves the defaults."""
        try:
            state = json.loads(last_settings_file().read_text(encoding="utf-8"))
            values = dict(state["config"])
            config = config_for_method(values.get("method", "")).from_dict(values)
            self.set_config(config)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # no file yet, or one this version cannot read
        with contextlib.suppress(Exception):  # each optional value on its own
            self._quiet = True  # the remembered values, not the preset's
            self.preset.value = state["preset"]
        self._quiet = False
        with contextlib.suppress(Exception):
            self.seed.value = int(state["seed"])
        with contextlib.suppress(Exception):
            self.precision.value = state["precision"]
        with contextlib.suppress(Exception):
            self.preview_every.value = int(state["preview_every"])

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

    def _apply_preset(self) -> None:
        if self._quiet:
            return
        with report_errors():
            self.set_config(load_preset(self.preset.value, self.method.value))

    def _method_changed(self) -> None:
        """Another method: its own settings and those still at the preset's value take the
        new method's preset values.

        Presets differ between methods (e.g. *microscopy*: 32 channels for SP, 16 for ST);
        a shared setting the user changed keeps its value.
        """
        old, new = self._method_shown, self.method.value
        self._method_shown = new
        if self._quiet or old == new:
            return
        with report_errors():
            before = load_preset(self.preset.value, old).to_dict()
            after = load_preset(self.preset.value, new).to_dict()
            values = {name: self.fields[name].value for name in after if name in self.fields}
            for name, value in after.items():
                # settings the old method did not show, or still at its preset's value
                if name in values and (name not in before or values[name] == before[name]):
                    values[name] = value
            self.set_config(config_for_method(new).from_dict({**after, **values,
                                                              "method": new}))

    def show_for(self, mode: str) -> None:
        """Show only the settings that apply to `mode`.

        Parameters
        ----------
        mode : {"image", "each", "reference", "saved"}
            ``"image"`` (the Segment widget, the default) and ``"each"`` (a fresh model per
            layer) hide the reference-image settings; ``"reference"`` (one model trained on
            reference layers, a fixed number of updates) hides the iteration budget, the
            label-count stop, the plateau stop and the preview; ``"saved"`` (a model file)
            shows the device and precision only.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        self._mode = mode
        self._update_visibility()

    def _update_visibility(self) -> None:
        training = self._mode != "saved"
        for widget in (self.method, self.preset, self.seed, self._files_row):
            widget.visible = training
        hidden = _HIDDEN_FIELDS[self._mode]
        for name, widget in self.fields.items():
            widget.visible = name not in hidden
        self.preview_every.visible = self._mode in ("image", "each")
        is_st = self.method.value == "st"
        self.st_group.visible = training and is_st
        self.sp_group.visible = training and not is_st
        is_slic = self.fields["superpixel"].value == "slic"
        self.slic_group.visible = is_slic
        self.felzenszwalb_group.visible = not is_slic
        self.advanced.visible = self.show_advanced.value


def _check_shown_exactly(widget: Widget, setting: Setting, value: Any) -> None:
    """Refuse a value the widget would change (a float finer than its decimals).

    The widgets' ranges equal the settings' valid ranges, so only a float's resolution can
    differ from what a config file holds.
    """
    if setting.kind is not float:
        return
    shown = round(float(value), setting.decimals)
    if abs(shown - float(value)) > 1e-12 * max(1.0, abs(float(value))):
        raise ConfigError(
            f"{setting.name} = {value!r} is finer than the panel shows ({setting.decimals} "
            f"decimals, i.e. it would become {shown!r}); round it in the file, or run it "
            "from the command line or Python, which take any valid value."
        )
