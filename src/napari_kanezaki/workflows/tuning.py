"""Hyper-parameter search with Optuna (TPE), maximising mean best-match IoU (the seed's ``tune``).

The search space is the seed's: n_channels, n_conv, lr, max_iter, the superpixel parameters
(SP), the loss weights (ST) and the random-CLAHE augmentation. Every trial trains a fresh
model on every image (with the run's seed) and scores it against the ground truth with
`evaluation.score_annotators`; the objective is the mean over images. A study kept in a
storage (a journal file or a database URL) resumes where it stopped. Optuna loads only when
a search runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_kanezaki.core.config import Config, ConfigError, SPConfig
from napari_kanezaki.workflows.extras import require

_PURPOSE = "hyper-parameter tuning (napari-kanezaki tune)"

__all__ = ["DEFAULT_SPACE", "TuneResult", "parse_space_overrides", "search_space", "tune"]

#: name -> ("int" | "float", low, high, log) or ("categorical", choices). Parameters of the
#: other method, and Felzenszwalb/SLIC parameters of the superpixel algorithm not chosen, are
#: not sampled.
DEFAULT_SPACE: dict[str, tuple] = {
    "n_channels": ("int", 16, 128, True),
    "n_conv": ("int", 1, 4, False),
    "lr": ("float", 0.01, 0.5, True),
    "max_iter": ("int", 50, 500, True),
    "superpixel": ("categorical", ("slic", "felzenszwalb")),
    "n_segments": ("int", 500, 20000, True),
    "compactness": ("float", 1.0, 200.0, True),
    "scale": ("float", 1.0, 500.0, True),
    "sigma": ("float", 0.1, 2.0, False),
    "min_size": ("int", 5, 200, True),
    "w_sim": ("float", 0.1, 10.0, True),
    "w_con": ("float", 0.1, 10.0, True),
    "augment_clahe": ("categorical", (False, True)),
}
_SP_ONLY = {"superpixel", "n_segments", "compactness", "scale", "sigma", "min_size"}
_ST_ONLY = {"w_sim", "w_con"}
_SLIC = {"n_segments", "compactness"}
_FELZENSZWALB = {"scale", "sigma", "min_size"}


@dataclass(frozen=True)
class TuneResult:
    """Outcome of `tune`: the best configuration and its score."""

    config: Config
    value: float
    params: dict[str, Any]
    trial: int
    n_trials: int


def parse_space_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``NAME=LOW:HIGH`` (a new range) and ``NAME=VALUE`` (a fixed value) strings.

    Parameters
    ----------
    items : sequence of str
        E.g. ``["max_iter=5:10", "augment_clahe=false", "superpixel=slic"]``.

    Returns
    -------
    dict
        name -> ``(low, high)`` or a fixed value.
    """
    import tomllib

    def value(text: str) -> Any:
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return text

    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_SPACE:
            raise ConfigError(
                f"--space {item!r}: expected NAME=LOW:HIGH or NAME=VALUE with NAME one of "
                f"{', '.join(DEFAULT_SPACE)}."
            )
        if ":" in text:
            low, high = (value(t.strip()) for t in text.split(":", 1))
            out[name] = (low, high)
        else:
            out[name] = value(text.strip())
    return out


def search_space(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The default space with ranges changed or parameters fixed.

    Parameters
    ----------
    overrides : mapping, optional
        name -> ``(low, high)`` (numeric parameters) or a fixed value.

    Returns
    -------
    dict
        name -> spec tuple (see `DEFAULT_SPACE`) or ``("fixed", value)``.
    """
    space: dict[str, Any] = dict(DEFAULT_SPACE)
    for name, change in (overrides or {}).items():
        if name not in space:
            raise ConfigError(f"unknown search parameter {name!r}; choose from {', '.join(space)}.")
        spec = space[name]
        if isinstance(change, tuple):
            if spec[0] not in ("int", "float"):
                raise ConfigError(f"{name} is categorical: fix it with {name}=VALUE instead.")
            low, high = change
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or low > high:
                raise ConfigError(f"range of {name} must be two numbers LOW <= HIGH, got {change}.")
            if spec[3] and low <= 0:
                raise ConfigError(f"{name} is searched on a log scale: LOW must be > 0.")
            kind = spec[0]
            space[name] = (kind, int(low) if kind == "int" else float(low),
                           int(high) if kind == "int" else float(high), spec[3])
        else:
            space[name] = ("fixed", change)
    return space


def _suggest(trial, name: str, spec: tuple) -> Any:
    kind = spec[0]
    if kind == "fixed":
        return spec[1]
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2], log=spec[3] and spec[1] != spec[2])
    if kind == "float":
        return trial.suggest_float(name, spec[1], spec[2], log=spec[3] and spec[1] != spec[2])
    return trial.suggest_categorical(name, list(spec[1]))


def sample_config(trial, base: Config, space: Mapping[str, Any]) -> Config:
    """The configuration of one trial: `base` with the sampled parameters.

    Parameters
    ----------
    trial : optuna.Trial
    base : SPConfig or STConfig
    space : mapping
        From `search_space`.
    """
    is_sp = isinstance(base, SPConfig)
    changes: dict[str, Any] = {}
    for name, spec in space.items():
        if (name in _SP_ONLY and not is_sp) or (name in _ST_ONLY and is_sp):
            continue
        if name in _SLIC | _FELZENSZWALB:
            continue  # after the algorithm is known
        changes[name] = _suggest(trial, name, spec)
    if is_sp:
        algorithm = changes.get("superpixel", base.superpixel)
        for name in _SLIC if algorithm == "slic" else _FELZENSZWALB:
            changes[name] = _suggest(trial, name, space[name])
    n_channels = changes.get("n_channels", base.n_channels)
    if base.min_labels > n_channels:
        changes["min_labels"] = min(base.min_labels, n_channels)
    return base.replace(**changes)


def tune(
    images: Sequence[str | Path],
    ground_truths: Sequence[str | Path],
    base: Config,
    *,
    n_trials: int = 20,
    storage: str | None = None,
    study_name: str = "napari-kanezaki",
    space: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    channel_axis: int | None = None,
    ignore: int | None = None,
    progress: bool = True,
) -> TuneResult:
    """Search hyper-parameters maximising the mean best-match IoU over images.

    Parameters
    ----------
    images : sequence of path
        Image files.
    ground_truths : sequence of path
        Ground truth matched to the images by file stem (see `evaluation.evaluate_files`).
    base : SPConfig or STConfig
        Method and the values of every parameter not searched.
    n_trials : int
        Total trials of the study; a resumed study runs only the missing ones.
    storage : str, optional
        A journal file path, or a database URL (``sqlite:///study.db``); None keeps the
        study in memory.
    study_name : str
        Name of the study in the storage.
    space : mapping, optional
        Overrides, see `search_space`.
    seed : int
        Seed of the sampler and of every model.
    device, precision, channel_axis
        As for `Segmenter`.
    ignore : int, optional
        Ground-truth value left out of the scores.
    progress : bool
        Show a progress bar.

    Returns
    -------
    TuneResult
    """
    optuna = require("optuna", "tune", _PURPOSE)

    from napari_kanezaki.core.segmenter import Segmenter
    from napari_kanezaki.imaging.io import read_image
    from napari_kanezaki.workflows.evaluation import (
        _match_key,
        read_ground_truth,
        score_annotators,
    )

    if n_trials < 1:
        raise ConfigError(f"n_trials must be >= 1, got {n_trials}.")
    gt_by_key = {_match_key(Path(p).stem): Path(p) for p in ground_truths}
    pairs = []
    for path in map(Path, images):
        key = _match_key(path.stem)
        if key not in gt_by_key:
            raise ValueError(f"no ground truth named like {path.name}; name each like its image.")
        pairs.append((read_image(path), read_ground_truth(gt_by_key[key])))
    full_space = search_space(space)

    def objective(trial) -> float:
        config = sample_config(trial, base, full_space)
        scores = []
        for image, annotations in pairs:
            segmenter = Segmenter(config, device=device, seed=seed, precision=precision)
            for _ in segmenter.run(image, channel_axis=channel_axis):
                pass
            labels = segmenter.predict(image, channel_axis=channel_axis)
            scores.append(score_annotators(labels, annotations, ignore=ignore).miou)
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=_storage(storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    remaining = max(0, n_trials - len(finished))
    if remaining:
        from tqdm.auto import tqdm

        with tqdm(total=n_trials, initial=len(finished), unit="trial", desc="tuning",
                  disable=not progress) as bar:
            def update(study_, trial_) -> None:
                bar.update(1)
                if study_.best_trials:
                    bar.set_postfix(best=f"{study_.best_value:.4f}", refresh=False)

            study.optimize(objective, n_trials=remaining, callbacks=[update])
    best = study.best_trial
    config = _config_of(best, base, full_space)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return TuneResult(config, float(best.value), dict(best.params), best.number, done)


def _config_of(trial, base: Config, space: Mapping[str, Any]) -> Config:
    optuna = require("optuna", "tune", _PURPOSE)

    fixed = optuna.trial.FixedTrial(dict(trial.params))
    return sample_config(fixed, base, space)


def _storage(storage: str | None):
    if storage is None:
        return None
    if "://" in storage:
        return storage
    journal = require("optuna.storages.journal", "tune", _PURPOSE)
    JournalStorage, JournalFileBackend = journal.JournalStorage, journal.JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))
