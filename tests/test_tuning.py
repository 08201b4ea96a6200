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
