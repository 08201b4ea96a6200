"""One description per setting: the validator, the CLI and the widget agree with the table."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from napari_kanezaki.core.config import ConfigError, SPConfig, STConfig
from napari_kanezaki.core.settings import INT_MAX, SECTIONS, SETTINGS, Setting

CONFIG_FIELDS = {f.name for cls in (SPConfig, STConfig) for f in fields(cls)}
NUMERIC = [s for s in SETTINGS.values() if s.kind in (int, float)]


def _config_for(name: str):
    return SPConfig if name in {f.name for f in fields(SPConfig)} else STConfig


def _valid_with(setting: Setting, value):
    """A config holding `value` for the setting (other fields adjusted for cross-field rules)."""
    changes = {setting.name: value}
    if setting.name == "n_channels":
        changes["min_labels"] = min(3, int(value))
    if setting.name == "min_labels":
        changes["n_channels"] = min(INT_MAX, max(2, int(value)))
    if setting.name == "median_blur" and value and value % 2 == 0:
        changes[setting.name] = value - 1
    if setting.name == "ref_size" and 0 < value < 8:
        changes[setting.name] = 0
    return _config_for(setting.name)(**changes)


def test_every_field_has_exactly_one_complete_description():
    assert set(SETTINGS) == CONFIG_FIELDS
    for setting in SETTINGS.values():
        assert setting.help.strip() and setting.label.strip(), setting.name
        assert setting.section in SECTIONS, setting.name
        if setting.kind in (int, float):
            assert setting.low is not None and setting.high is not None, setting.name
        if setting.kind is float:
            assert setting.decimals > 0, setting.name


def test_config_docstrings_are_generated_from_the_table():
    for cls in (SPConfig, STConfig):
        for f in fields(cls):
            assert SETTINGS[f.name].help[1:] in cls.__doc__, f.name


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_validator_accepts_exactly_the_described_range(setting):
    low, high = setting.widget_range()
    for value in (low, high):
        config = _valid_with(setting, value)
        assert getattr(config, setting.name) == pytest.approx(value)
    unit = 1 if setting.kind is int else 10.0**-setting.decimals
    outside = [setting.low - unit, setting.high + unit * max(1.0, setting.high * 1e-6)]
    if not setting.low_inclusive:
        outside.append(setting.low)
    if not setting.high_inclusive:
        outside.append(setting.high)
    for value in outside:
        with pytest.raises(ConfigError, match=setting.name):
            _valid_with(setting, setting.kind(value) if setting.kind is int else value)


def test_choices_are_validated_from_the_table():
    for setting in SETTINGS.values():
        if not setting.choices:
            continue
        for choice in setting.choices:
            assert getattr(_valid_with(setting, choice.upper()), setting.name) == choice
        with pytest.raises(ConfigError, match=setting.name):
            _valid_with(setting, "no-such-choice")


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)
        else:
            yield parser, action


def test_every_cli_option_has_help_and_field_options_use_the_table():
    from napari_kanezaki.cli import build_parser

    field_options = {}
    for parser, action in _all_actions(build_parser()):
        if action.help is argparse.SUPPRESS:
            continue
        assert action.help and action.help.strip(), (parser.prog, action.option_strings)
        if action.dest.startswith("field_"):
            field_options.setdefault(action.dest[len("field_"):], action)
    assert set(field_options) == CONFIG_FIELDS
    for name, action in field_options.items():
        setting = SETTINGS[name]
        assert action.option_strings[0] == "--" + name.replace("_", "-")
        assert setting.help in action.help, name
        if setting.choices:
            assert tuple(action.choices) == setting.choices, name


def test_widget_labels_tooltips_and_ranges_come_from_the_table(qtbot):
    from napari_kanezaki.plugin.parameters import ParameterPanel

    panel = ParameterPanel()
    assert set(panel.fields) == CONFIG_FIELDS
    for name, widget in panel.fields.items():
        setting = SETTINGS[name]
        assert widget.tooltip == setting.tooltip(), name
        if setting.kind is not bool:
            assert widget.label == setting.label, name
        if setting.kind in (int, float):
            assert (widget.min, widget.max) == pytest.approx(setting.widget_range()), name
        if setting.choices:
            assert tuple(widget.choices) == setting.choices, name


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_every_valid_extreme_loads_into_the_panel_unchanged(qtbot, setting):
    from napari_kanezaki.plugin.parameters import ParameterPanel

    panel = ParameterPanel()
    for value in setting.widget_range():
        config = _valid_with(setting, value)
        panel.set_config(config)
        assert panel.config() == config


def test_panel_refuses_a_value_finer_than_it_shows(qtbot):
    from napari_kanezaki.plugin.parameters import ParameterPanel

    panel = ParameterPanel()
    before = panel.config()
    with pytest.raises(ConfigError, match="lr = 1e-07 is finer than the panel shows"):
        panel.set_config(STConfig(lr=1e-7))
    assert panel.config() == before  # nothing half-applied
