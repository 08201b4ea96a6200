"""Optuna search: quick trials through the CLI, resumable from a storage file."""

from __future__ import annotations

import pytest
import tifffile

from napari_kanezaki import ConfigError, STConfig, load_config
from napari_kanezaki.cli.main import main
from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.workflows.tuning import parse_space_overrides, search_space

QUICK = ["--space", "max_iter=2:4", "--space", "n_channels=8:16", "--space", "n_conv=1:2",
         "--device", "cpu", "--precision", "fp32", "-q"]


@pytest.fixture
def data(tmp_path):
    for i in range(2):
        image, truth = noisy_regions((24, 24), noise=0.05, seed=i)
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "gt").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "img" / f"x{i}.tif", image)
        tifffile.imwrite(tmp_path / "gt" / f"x{i}.tif", truth)
    return tmp_path


def test_tune_two_trials_then_resume(data, capsys):
    import optuna

    storage = data / "study.log"
    best = data / "best.toml"
    args = ["tune", str(data / "img"), "--gt", str(data / "gt"), "--method", "st",
            "--trials", "2", "--storage", str(storage), "-o", str(best), *QUICK]
    assert main(args) == 0
    config = load_config(best)
    assert isinstance(config, STConfig) and 2 <= config.max_iter <= 4
    assert 8 <= config.n_channels <= 16
    assert "best mean IoU" in capsys.readouterr().out
    study = optuna.load_study(study_name="napari-kanezaki",
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(str(storage))))
    assert len(study.trials) == 2
    assert 0 < study.best_value <= 1
    # resume: 3 trials in total runs one more; the best config is not overwritten silently
    assert main([*args[:-len(QUICK) - 2], "-o", str(best), "--trials", "3", *QUICK]) == 2
    assert main([*args, "--trials", "3", "--overwrite"]) == 0
    study = optuna.load_study(study_name="napari-kanezaki",
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(str(storage))))
    assert len(study.trials) == 3


def test_space_overrides_are_checked():
    space = search_space(parse_space_overrides(["max_iter=5:10", "augment_clahe=false"]))
    assert space["max_iter"] == ("int", 5, 10, True)
    assert space["augment_clahe"] == ("fixed", False)
    with pytest.raises(ConfigError, match="expected NAME=LOW:HIGH"):
        parse_space_overrides(["speed=1:2"])
    with pytest.raises(ConfigError, match="LOW <= HIGH"):
        search_space({"lr": (0.5, 0.1)})
    with pytest.raises(ConfigError, match="categorical"):
        search_space({"superpixel": (1, 2)})


def test_named_spaces_and_overrides():
    from napari_kanezaki.workflows.tuning import DEFAULT_SPACE, SEED_SPACE, parse_space

    assert parse_space([]) == ("project", {})
    assert parse_space(["seed", "max_iter=1000:1000", "augment_clahe=false"]) == (
        "seed", {"max_iter": (1000, 1000), "augment_clahe": False})
    assert parse_space(["max_iter=5:10", "project"]) == ("project", {"max_iter": (5, 10)})
    with pytest.raises(ConfigError, match="at most one search space"):
        parse_space(["seed", "project"])
    with pytest.raises(ConfigError, match="one of project, seed"):
        parse_space(["paper"])
    assert search_space() == DEFAULT_SPACE
    assert search_space(None, "seed", "st") == SEED_SPACE["st"]
    with pytest.raises(ConfigError, match="differs per method"):
        search_space(None, "seed")
    with pytest.raises(ConfigError, match="not a parameter of the seed search space .sp."):
        search_space({"w_scr": 0.5}, "seed", "sp")  # ST only
    with pytest.raises(ConfigError, match="not a parameter of the project search space"):
        search_space({"optimizer": "adam"}, "project")
    # a new range keeps the seed's step; a fixed optimizer keeps its settings
    space = search_space({"n_channels": (25, 100), "optimizer": "adam"}, "seed", "st")
    assert space["n_channels"] == ("int", 25, 100, False, 25)
    assert space["optimizer"][:2] == ("fixed", "adam")
    with pytest.raises(ConfigError, match="categorical"):
        search_space({"lr": (0.01, 0.1)}, "seed", "sp")


def test_seed_optimizers_set_the_seeds_weight_decay():
    import optuna

    from napari_kanezaki.workflows.tuning import sample_config

    base = STConfig(weight_decay=0.01, momentum=0.5)
    space = search_space(None, "seed", "st")
    params = {"augment_clahe": False, "n_channels": 50, "max_iter": 200, "lr": 0.1,
              "n_conv": 2, "w_sim": 0.1, "w_con": 0.1, "w_scr": 0.1}
    for optimizer, decay, momentum in (("sgd", 0.02, 0.9), ("adam", 0.0, 0.5),
                                       ("asgd", 0.0, 0.5)):
        trial = optuna.trial.FixedTrial({**params, "optimizer": optimizer})
        cfg = sample_config(trial, base, space)
        assert (cfg.optimizer, cfg.weight_decay, cfg.momentum) == (optimizer, decay, momentum)
    fixed = search_space({"optimizer": "asgd"}, "seed", "st")
    cfg = sample_config(optuna.trial.FixedTrial(params), base, fixed)
    assert (cfg.optimizer, cfg.weight_decay) == ("asgd", 0.0)


def test_tune_with_the_seed_space_from_the_cli(data, capsys):
    best = data / "best.toml"
    args = ["tune", str(data / "img"), "--gt", str(data / "gt"), "--method", "st",
            "--trials", "1", "-o", str(best), "--space", "seed", "--space", "max_iter=2:2",
            "--space", "n_channels=8:8", "--space", "n_conv=1:1", "--device", "cpu",
            "--precision", "fp32", "-q"]
    assert main(args) == 0
    config = load_config(best)
    assert (config.max_iter, config.n_channels, config.n_conv) == (2, 8, 1)
    assert config.weight_decay == (0.02 if config.optimizer == "sgd" else 0.0)
    assert "optimizer = " in capsys.readouterr().out
    # a bad space is refused before any work
    assert main([*args[:-7], "--space", "sigma=0.5", "--overwrite"]) == 2
    assert "not a parameter of the seed search space (st)" in capsys.readouterr().err


def test_tune_help_names_both_spaces(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'project' (the default" in text and "'seed' (the seed project's Optuna space" in text
