"""The "seed" presets, preprocessing and search space against the seed project's own values.

The seed's values are read from the project brief's reference (``../shared/REFERENCE.md``
relative to the project root, section "The seed project"): its table of config keys
(``config_SP.py`` / ``config_ST.py``) and its Optuna search space. Every key of the tables is
mapped explicitly to the project's fields (or listed as having none), so a new row fails here
until it is mapped.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_kanezaki import STConfig
from napari_kanezaki.core.config import load_preset
from napari_kanezaki.imaging import preprocessing
from napari_kanezaki.imaging.images import to_network_input
from napari_kanezaki.imaging.preprocessing import (
    AUGMENT_CLIP,
    AUGMENT_TILES,
    make_augmenter,
    multiple_shape,
    preprocess,
    random_clahe,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "REFERENCE.md"


# -- reading the reference's tables ----------------------------------------------------------
def _section() -> str:
    if not REFERENCE.is_file():
        pytest.skip(f"the seed's reference table is not available: {REFERENCE} is absent")
    text = REFERENCE.read_text(encoding="utf-8")
    start = text.index("## The seed project")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _table(after: str) -> dict[str, list[str]]:
    """The first markdown table after the line containing `after`: first cell -> the others."""
    lines = _section().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set(cells[0]) <= {"-", " "} or cells[0] in ("key", "parameter"):
            continue  # separator or header
        rows[cells[0].strip("`")] = cells[1:]
    assert rows, f"no table after {after!r} in {REFERENCE}"
    return rows


def _literal(text: str):
    text = text.strip().strip("`'\"")
    if text in ("True", "False"):
        return text == "True"
    if text in ("", "''"):
        return ""
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    return int(number) if number.is_integer() and "." not in text else number


@pytest.fixture(scope="module")
def seed_values():
    """The config table as {seed key: {"sp": value text, "st": value text, "meaning": ...}}."""
    table = _table("### The seed's config values, key by key")
    return {key: {"sp": cells[0], "st": cells[1], "meaning": cells[2]}
            for key, cells in table.items()}


# Seed key -> how the project holds it, per method: a list of fields (several when the seed's
# row holds several values, "a, b" or "a / b"), or None when the project has no such field
# (then the reason). ``ST: MAXITER`` is epochs in the seed's ST configuration ``ref``.
FIELDS = {
    "OPTIMIZER": {"sp": ["optimizer"], "st": ["optimizer"]},
    "CKPT": {"sp": ["checkpoint"], "st": ["checkpoint"]},
    "COMMON.CROP_BAR_SZ": {"sp": ["crop_bottom"], "st": ["crop_bottom"]},
    "COMMON.CLAHE": {"sp": ["clahe"], "st": ["clahe"]},
    "COMMON.DATA_AUGM": {"sp": ["augment_clahe"], "st": ["augment_clahe"]},
    "COMMON.BLUR": {"sp": ["median_blur"], "st": ["median_blur"]},
    "COMMON.NCHANNEL": {"sp": ["n_channels"], "st": ["n_channels"]},
    "COMMON.MAXITER": {"sp": ["max_iter"], "st": ["n_epochs"]},
    "COMMON.MINLABELS": {"sp": ["min_labels"], "st": ["min_labels"]},
    "COMMON.LR": {"sp": ["lr"], "st": ["lr"]},
    "COMMON.NCONV": {"sp": ["n_conv"], "st": ["n_conv"]},
    "SUPERPIXEL_ALGO": {"sp": ["superpixel"], "st": None},
    "NUM_SUPERPIXELS, COMPACTNESS_VALUE": {"sp": ["n_segments", "compactness"], "st": None},
    "FZ_SIGMA, FZ_SCALE, FZ_MIN_SIZE": {"sp": ["sigma", "scale", "min_size"], "st": None},
    "STEPSIZE_SIM / CON / SCR": {"sp": None, "st": ["w_sim", "w_con", "w_scr"]},
    "REF.MAXUPDATE": {"sp": None, "st": ["max_update"]},
    "REF.BATCH_SIZE": {"sp": None, "st": ["batch_size"]},
}
#: Seed keys that are not configuration fields in the project, and why.
NOT_FIELDS = {
    "TRAIN_CONFIGURATION": "chosen by the command (segment = base/base_folder, train = ref)",
    "REF.DIR_SCRIBBLE_PATH": "scribbles are an input of train/segment, not a setting",
    "OPTUNA_V.N_TRIALS": "tune --trials (checked against the CLI's default below)",
}


def _seed_value(key: str, text: str):
    """The project's value(s) for a seed cell; booleans of BLUR become the kernel size."""
    parts = [p for p in re.split(r"\s*[,/]\s*", text) if p]
    values = [_literal(p) for p in parts]
    if key == "COMMON.BLUR":
        return [5 if values[0] else 0]  # the seed's median blur has kernel 5
    return values


def test_every_seed_key_is_mapped(seed_values):
    assert set(seed_values) == set(FIELDS) | set(NOT_FIELDS)


@pytest.mark.parametrize("method", ["sp", "st"])
def test_seed_presets_hold_the_seed_values_field_by_field(seed_values, method):
    preset = load_preset("seed", method)
    checked = set()
    for key, per_method in FIELDS.items():
        fields = per_method[method]
        text = seed_values[key][method]
        if fields is None:
            assert text in ("–", "-", ""), f"{key} has a {method} value but no field"
            continue
        if key == "COMMON.MINLABELS" and text.startswith("None"):
            # The seed's None stops at the number of ground-truth classes; the project has no
            # such mode: the preset keeps the paper's 3 and says why in its header.
            assert preset.min_labels == 3
            assert "MINLABELS = None" in load_preset_text("seed", method)
            checked.add("min_labels")
            continue
        expected = _seed_value(key, text)
        assert len(expected) == len(fields), (key, text)
        for field, value in zip(fields, expected, strict=True):
            actual = getattr(preset, field)
            assert actual == value, f"{key} -> {field}: seed {value!r}, preset {actual!r}"
            checked.add(field)
    # the optimiser's settings, from the OPTIMIZER row's meaning
    meaning = seed_values["OPTIMIZER"]["meaning"]
    momentum, decay = re.search(
        r"`sgd`: momentum ([\d.]+), weight decay ([\d.]+)", meaning).groups()
    assert preset.optimizer == "sgd"
    assert (preset.momentum, preset.weight_decay) == (float(momentum), float(decay))
    # CLAHE's fixed parameters, from the CLAHE row's meaning ("clip 2.0, 8×8 tiles")
    clip, tiles = re.search(r"clip ([\d.]+), (\d+)×\d+ tiles",
                            seed_values["COMMON.CLAHE"]["meaning"]).groups()
    assert (preset.clahe_clip, preset.clahe_tiles) == (float(clip), int(tiles))
    # "The seed's ref mode does not resize to 224×224"
    assert "does not resize" in _section() and preset.ref_size == 0
    # the preprocessing the seed does unconditionally
    assert preset.resize_multiple == 32 and "multiple of 32" in _section()
    if method == "st":
        assert seed_values["TRAIN_CONFIGURATION"]["st"] == "ref"  # MAXITER means epochs
        assert "ST in `ref`: epochs" in seed_values["COMMON.MAXITER"]["meaning"]
        assert "n_epochs" in checked and "MAXITER = 2" in load_preset_text("seed", "st")


def load_preset_text(name: str, method: str) -> str:
    from napari_kanezaki.core.config import preset_path

    return preset_path(name, method).read_text(encoding="utf-8")


def test_seed_trials_are_the_tune_default(seed_values):
    from napari_kanezaki.cli.parser import build_parser

    trials = {int(seed_values["OPTUNA_V.N_TRIALS"][m]) for m in ("sp", "st")}
    args = build_parser().parse_args(["tune", "x", "--gt", "y", "-o", "o.toml"])
    assert trials == {args.trials}


# -- preprocessing: the seed's order, rounding and random CLAHE ------------------------------
def test_preprocessing_runs_in_the_seeds_order(monkeypatch):
    calls = []
    for name in ("crop_bottom", "median_blur", "resize_to_multiple", "clahe"):
        original = getattr(preprocessing, name)

        def record(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(preprocessing, name, record)
    image = np.random.default_rng(0).random((1, 80, 70)).astype(np.float32)
    cfg = STConfig(crop_bottom=5, median_blur=5, resize_multiple=32, clahe=True)
    out, geometry = preprocess(image, cfg)
    assert calls == ["crop_bottom", "median_blur", "resize_to_multiple", "clahe"]
    assert out.shape == (1, 64, 64) and geometry.network_shape == (64, 64)  # 75x70: down


def test_median_blur_comes_before_the_resize():
    image = np.random.default_rng(1).random((1, 75, 70)).astype(np.float32)
    cfg = STConfig(median_blur=5, resize_multiple=32)
    out, _ = preprocess(image, cfg)
    seed_order = preprocessing.resize_to_multiple(preprocessing.median_blur(image, 5), 32)
    old_order = preprocessing.median_blur(preprocessing.resize_to_multiple(image, 32), 5)
    np.testing.assert_array_equal(out, seed_order)
    assert not np.allclose(out, old_order)


@pytest.mark.parametrize(("size", "down"), [(63, 32), (64, 64), (95, 64), (96, 96), (127, 96)])
def test_resize_rounds_down_like_int_w_over_32(size, down):
    assert down == int(size / 32) * 32
    assert multiple_shape((size, size), 32) == (down, down)


def test_random_clahe_draws_integers_with_both_ends_included(monkeypatch):
    drawn = []
    monkeypatch.setattr(preprocessing, "clahe",
                        lambda array, clip, tiles: drawn.append((clip, tiles)) or array)
    rng = np.random.default_rng(0)
    array = np.zeros((1, 16, 16), np.float32)
    for _ in range(400):
        random_clahe(array, rng)
    clips, tiles = zip(*drawn, strict=True)
    assert all(type(c) is int for c in clips) and all(type(t) is int for t in tiles)
    assert set(clips) == set(range(2, 10)) and AUGMENT_CLIP == (2, 9)  # randint(2, 9)
    assert set(tiles) == set(range(3, 10)) and AUGMENT_TILES == (3, 9)  # randint(3, 9)


def test_random_clahe_replaces_clahe_instead_of_running_on_top(monkeypatch):
    drawn = []
    original = preprocessing.clahe

    def record(array, clip=2.0, tiles=8):
        drawn.append((clip, tiles))
        return original(array, clip, tiles)

    monkeypatch.setattr(preprocessing, "clahe", record)
    image = to_network_input(np.random.default_rng(2).integers(0, 255, (40, 40, 3), np.uint8))
    cfg = STConfig(clahe=True, clahe_clip=3.0, clahe_tiles=4, augment_clahe=True)
    prepared, _ = preprocess(image, cfg)
    assert drawn == []  # the fixed CLAHE is skipped: the random one takes its place
    np.testing.assert_array_equal(prepared, image)
    augment = make_augmenter(cfg, seed=0)
    augmented = augment(prepared)
    assert len(drawn) == 1 and drawn[0] != (3.0, 4)
    assert all(type(v) is int for v in drawn[0])
    expected = original(image, *drawn[0])  # one CLAHE of the un-equalised image
    np.testing.assert_array_equal(augmented, expected)
    # without the augmentation the fixed CLAHE runs as configured
    drawn.clear()
    preprocess(image, cfg.replace(augment_clahe=False))
    assert drawn == [(3.0, 4)]


def test_segmenter_trains_on_one_random_clahe_per_iteration(monkeypatch, rgb_image):
    from napari_kanezaki import Segmenter

    drawn = []
    original = preprocessing.clahe

    def record(array, clip=2.0, tiles=8):
        drawn.append((clip, tiles))
        return original(array, clip, tiles)

    monkeypatch.setattr(preprocessing, "clahe", record)
    cfg = STConfig(n_channels=8, max_iter=3, min_labels=1, clahe=True, augment_clahe=True)
    list(Segmenter(cfg, device="cpu", seed=0, precision="fp32").run(rgb_image))
    assert len(drawn) == 3 and all(type(c) is int and type(t) is int for c, t in drawn)


# -- the seed's Optuna search space ----------------------------------------------------------
def _spec(text: str):
    """``int [25, 75, 25]`` -> ("int", 25, 75, 25); ``categorical [a, b]`` -> tuple of values."""
    kind, _, rest = text.strip().partition(" ")
    values = [_literal(v) for v in rest.split("]")[0].strip(" [").split(",")]
    if kind == "categorical":
        return ("categorical", tuple(values))
    return (kind, *values)


@pytest.fixture(scope="module")
def seed_space_table():
    return _table("Optuna search space (type: values")


#: Row of the seed's space table -> the project's parameter names (several for "a / b" rows).
SPACE_ROWS = {
    "data augmentation": ["augment_clahe"],
    "optimizer": ["optimizer"],
    "n_channels": ["n_channels"],
    "max_iter (ST `ref`: max_update)": ["max_iter"],
    "lr": ["lr"],
    "n_conv": ["n_conv"],
    "SLIC n_segments / compactness": ["n_segments", "compactness"],
    "Felzenszwalb scale / min_size": ["scale", "min_size"],
    "w_sim / w_con / w_scr": ["w_sim", "w_con", "w_scr"],
}


def _as_table_spec(spec: tuple) -> tuple:
    if spec[0] == "categorical":
        return ("categorical", tuple(spec[1]))
    return (spec[0], spec[1], spec[2], spec[4])


@pytest.mark.parametrize("method", ["sp", "st"])
def test_seed_space_is_the_seeds_table(seed_space_table, method):
    from napari_kanezaki.workflows.tuning import SEED_SPACE

    assert set(seed_space_table) == set(SPACE_ROWS)
    expected = {}
    for row, names in SPACE_ROWS.items():
        sp_text, st_text = seed_space_table[row]
        text = st_text if method == "st" else sp_text
        if text == "same":
            text = sp_text
        if text in ("–", "-") or "sampled only in ST" in text:
            continue  # not sampled for this method
        parts = text.split(" / ")
        if len(parts) == 1 and len(names) > 1:
            parts = [text.replace(" each", "")] * len(names)
        for name, part in zip(names, parts, strict=True):
            expected[name] = _spec(part)
    space = SEED_SPACE[method]
    assert {name: _as_table_spec(spec) for name, spec in space.items()} == expected


def _sampled(method: str, base, trials: int = 40):
    import optuna

    from napari_kanezaki.workflows.tuning import sample_config, search_space

    space = search_space(None, "seed", method)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not divisible.*")  # no silent clipping
        for _ in range(trials):
            trial = study.ask()
            configs.append(sample_config(trial, base, space))
            study.tell(trial, 0.0)
    return configs


def test_seed_space_samples_the_seeds_values_sp():
    pytest.importorskip("optuna")
    for base in (load_preset("seed", "sp"), load_preset("seed", "sp").replace(superpixel="slic")):
        configs = _sampled("sp", base)
        assert {c.n_channels for c in configs} == {25, 50, 75}
        assert {c.max_iter for c in configs} == {1000, 3000}  # 1000 + k * 2000 <= 3000
        assert {c.lr for c in configs} == {0.005, 0.01, 0.05, 0.1}
        assert {c.n_conv for c in configs} == {2, 3, 4, 5, 6}
        assert {c.augment_clahe for c in configs} == {True, False}
        assert {(c.optimizer, c.weight_decay) for c in configs} == {("sgd", 0.02)}
        if base.superpixel == "slic":
            assert {(c.n_segments, c.compactness) for c in configs} == {(2000, 15.0)}
        else:
            assert {(c.scale, c.min_size, c.sigma) for c in configs} == {(1.0, 10, 0.8)}


def test_seed_space_samples_the_seeds_values_st_with_their_optimizers():
    pytest.importorskip("optuna")
    configs = _sampled("st", STConfig(), trials=60)  # from the paper preset: wd 0
    assert {c.n_channels for c in configs} == {50, 75, 100, 125, 150}
    assert {c.max_iter for c in configs} == {200, 220, 240, 260, 280, 300}
    assert {c.n_conv for c in configs} == {2, 4, 6, 8, 10, 12}
    assert {c.lr for c in configs} == {0.001, 0.005, 0.01, 0.05, 0.1}
    for name in ("w_sim", "w_con", "w_scr"):
        assert {getattr(c, name) for c in configs} == {0.1, 0.3, 0.5, 0.7, 0.9}
    assert {c.optimizer for c in configs} == {"sgd", "adam", "asgd"}
    for c in configs:  # the seed's optimizers: weight decay with sgd only
        assert c.weight_decay == (0.02 if c.optimizer == "sgd" else 0.0)
        if c.optimizer == "sgd":
            assert c.momentum == 0.9
