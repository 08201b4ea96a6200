"""The parameter panel remembers the last settings and restores the defaults on request."""

from __future__ import annotations

import json

from napari_kanezaki.core.config import load_preset
from napari_kanezaki.plugin.parameters import ParameterPanel, last_settings_file

INTERACTIVE_SP = load_preset("interactive", "sp")


def test_last_settings_come_back_in_a_new_panel(qtbot, _own_settings_folder):
    first = ParameterPanel()
    first.method.value = "sp"
    first.fields["n_channels"].value = 42
    first.fields["n_segments"].value = 777
    first.seed.value = 5
    first.precision.value = "fp32"
    assert last_settings_file().parent == _own_settings_folder
    second = ParameterPanel()
    assert second.config() == INTERACTIVE_SP.replace(n_channels=42, n_segments=777)
    assert (second.seed.value, second.precision.value) == (5, "fp32")
    second.restore_defaults()
    assert second.config() == INTERACTIVE_SP
    assert (second.seed.value, second.precision.value, second.device.value) == (0, "auto",
                                                                                 "auto")
    assert ParameterPanel().config() == second.config()  # the restored defaults are kept


def test_unreadable_or_foreign_state_starts_from_the_defaults(qtbot):
    path = last_settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    for text in ("not json", json.dumps({"config": {"method": "st", "n_channels": -3}}),
                 json.dumps([1, 2]), json.dumps({"config": {"method": "xx"}})):
        path.write_text(text, encoding="utf-8")
        assert ParameterPanel().config() == load_preset("interactive", "st")


def test_a_panel_that_does_not_remember_leaves_the_file_alone(qtbot):
    panel = ParameterPanel(remember=False)
    panel.fields["n_channels"].value = 33
    assert not last_settings_file().exists()


def test_another_method_takes_its_presets_values_and_keeps_the_users(qtbot):
    panel = ParameterPanel("st", remember=False)
    panel.preset.value = "microscopy"
    assert panel.config() == load_preset("microscopy", "st")  # 16 channels
    panel.fields["lr"].value = 0.05  # the user's own value
    panel.method.value = "sp"
    assert panel.config() == load_preset("microscopy", "sp").replace(lr=0.05)  # 32 channels
    panel.method.value = "st"
    assert panel.config() == load_preset("microscopy", "st").replace(lr=0.05)


def test_a_remembered_preset_keeps_the_remembered_values(qtbot):
    first = ParameterPanel()
    first.preset.value = "paper"
    first.fields["max_iter"].value = 123
    assert ParameterPanel().config() == load_preset("paper", "st").replace(max_iter=123)
