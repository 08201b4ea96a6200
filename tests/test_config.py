"""Configuration dataclasses: paper defaults, validation and files."""

from __future__ import annotations

import pytest

from napari_kanezaki import ConfigError, SPConfig, STConfig, load_config


def test_paper_defaults():
    sp, st = SPConfig(), STConfig()
    for cfg in (sp, st):
        assert (cfg.n_channels, cfg.n_conv, cfg.max_iter, cfg.min_labels) == (100, 2, 1000, 3)
        assert (cfg.lr, cfg.momentum, cfg.optimizer, cfg.weight_decay) == (0.1, 0.9, "sgd", 0.0)
    assert (sp.superpixel, sp.n_segments, sp.compactness) == ("slic", 10000, 100.0)
    assert (sp.scale, sp.sigma, sp.min_size) == (10.0, 0.8, 10)
    assert (st.w_sim, st.w_con, st.w_scr) == (1.0, 1.0, 0.5)
    assert (st.ref_size, st.batch_size, st.n_epochs, st.max_update) == (224, 1, 1, 1000)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (STConfig, {"n_channels": 1}, "n_channels must be >= 2"),
        (STConfig, {"n_conv": 0}, "n_conv must be >= 1"),
        (STConfig, {"max_iter": 2.5}, "max_iter must be an integer"),
        (STConfig, {"lr": 0}, "lr must be > 0"),
        (STConfig, {"lr": "fast"}, "lr must be a number"),
        (STConfig, {"momentum": 1.0}, "momentum must be < 1"),
        (STConfig, {"w_con": -1}, "w_con must be >= 0"),
        (STConfig, {"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, asgd"),
        (STConfig, {"min_labels": 200}, "min_labels=200 is larger than n_channels=100"),
        (STConfig, {"n_channels": True}, "n_channels must be an integer"),
        (SPConfig, {"superpixel": "watershed"}, "superpixel must be one of slic, felzenszwalb"),
        (SPConfig, {"compactness": float("nan")}, "compactness must be finite"),
    ],
)
def test_invalid_values_are_named(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_integral_floats_from_files_become_ints():
    assert STConfig(n_channels=50.0).n_channels == 50
    assert isinstance(STConfig(lr=1).lr, float)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml"])
@pytest.mark.parametrize("cfg", [SPConfig(n_segments=4000, compactness=20), STConfig(w_con=5)])
def test_file_round_trip(tmp_path, suffix, cfg):
    path = cfg.to_file(tmp_path / f"settings{suffix}")
    assert type(cfg).from_file(path) == cfg
    assert load_config(path) == cfg


def test_ref_size_zero_means_no_resizing_and_survives_files(tmp_path):
    cfg = STConfig(ref_size=0)
    assert load_config(cfg.to_file(tmp_path / "c.toml")) == cfg
    with pytest.raises(ConfigError, match="ref_size must be 0"):
        STConfig(ref_size=4)


def test_existing_file_is_not_overwritten(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        STConfig().to_file(path)
    assert path.read_text() == "keep me"
    STConfig(max_iter=7).to_file(path, overwrite=True)
    assert load_config(path).max_iter == 7


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "st"\nmax_iters = 10\n')
    with pytest.raises(ConfigError, match="unknown ST setting.*max_iters.*valid keys are"):
        load_config(path)


def test_wrong_method_and_bad_files(tmp_path):
    path = SPConfig().to_file(tmp_path / "sp.yaml")
    with pytest.raises(ConfigError, match="for method 'sp', not 'st'"):
        STConfig.from_file(path)
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml or \.yml"):
        STConfig().to_file(tmp_path / "c.json")
    (tmp_path / "bad.toml").write_text("max_iter = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        STConfig.from_file(tmp_path / "bad.toml")
    (tmp_path / "nomethod.toml").write_text("max_iter = 3\n")
    with pytest.raises(ConfigError, match="no 'method' key"):
        load_config(tmp_path / "nomethod.toml")
    assert STConfig.from_file(tmp_path / "nomethod.toml").max_iter == 3
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")


def test_replace_validates():
    assert STConfig().replace(max_iter=5).max_iter == 5
    with pytest.raises(ConfigError, match="unknown ST setting"):
        STConfig().replace(n_segments=5)


# -- shipped presets: written by preset_text, so their comments follow core/settings.py --------
def _preset_title(text: str) -> str:
    """The header of a preset file: its leading comment lines, without the ``# ``."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


def write_presets() -> None:
    """Rewrite the shipped presets with `preset_text`, keeping their values and headers.

    Run ``python tests/test_config.py`` after changing a help text in core/settings.py.
    """
    from napari_kanezaki.core.config import PRESETS, load_preset, preset_path, preset_text

    for name in PRESETS:
        for method in ("sp", "st"):
            path = preset_path(name, method)
            title = _preset_title(path.read_text(encoding="utf-8"))
            path.write_text(preset_text(load_preset(name, method), title), encoding="utf-8")


@pytest.mark.parametrize("name", ["interactive", "paper", "seed", "microscopy"])
@pytest.mark.parametrize("method", ["sp", "st"])
def test_shipped_presets_are_preset_text_of_their_values(name, method):
    from napari_kanezaki.core.config import load_preset, preset_path, preset_text

    text = preset_path(name, method).read_text(encoding="utf-8")
    title = _preset_title(text)
    assert title and text.startswith("# ")
    assert text == preset_text(load_preset(name, method), title), (
        f"{name}-{method}.toml is out of date with core/settings.py; regenerate the presets "
        "with `python tests/test_config.py`."
    )
    first_line = title.splitlines()[0]
    if name == "paper":
        assert "the publications' defaults" in first_line
    elif name == "interactive":
        assert "for a person waiting on a result" in first_line
    elif name == "microscopy":
        assert "cells between stained membranes" in first_line
    else:
        assert "the seed project's values" in first_line


def test_interactive_presets_are_the_papers_with_the_plateau_stop_and_48_channels():
    from napari_kanezaki.core.config import load_preset

    assert load_preset("interactive", "sp") == SPConfig(plateau_iter=20, n_segments=0,
                                                        n_channels=48)
    assert load_preset("interactive", "st") == STConfig(plateau_iter=20, painted_only=True,
                                                        n_channels=48)


def test_automatic_superpixel_count_follows_the_image_size():
    from napari_kanezaki.core.training import superpixel_count

    auto = SPConfig(n_segments=0)
    assert superpixel_count(auto, 64 * 96) == 410  # not 10000 one-pixel superpixels
    assert superpixel_count(auto, 321 * 481) == 10000  # the paper's count on BSDS
    assert superpixel_count(auto, 4000 * 4000) == 10000
    assert superpixel_count(SPConfig(n_segments=300), 64 * 96) == 300


def test_paper_presets_are_the_dataclass_defaults():
    from napari_kanezaki.core.config import load_preset

    assert load_preset("paper", "sp") == SPConfig()
    assert load_preset("paper", "st") == STConfig()


def test_preset_text_comments_every_field_with_its_help_and_reads_back(tmp_path):
    from napari_kanezaki.core.config import preset_text
    from napari_kanezaki.core.settings import SETTINGS

    cfg = SPConfig(superpixel="felzenszwalb", weight_decay=0.02, checkpoint='a "b".pt')
    text = preset_text(cfg, "My preset\nsecond line")
    lines = text.splitlines()
    assert lines[:3] == ["# My preset", "# second line", ""]
    assert lines[3].startswith('method = "sp"')
    body = lines[4:]
    assert [line.split(" = ")[0] for line in body] == [
        name for name in SETTINGS if hasattr(cfg, name)
    ]
    for line in body:
        key = line.split(" = ")[0]
        assert line.endswith(f"  # {SETTINGS[key].help}")
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == cfg


if __name__ == "__main__":
    write_presets()
