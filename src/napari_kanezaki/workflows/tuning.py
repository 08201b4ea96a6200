"""Hyper-parameter search with Optuna (TPE), maximising mean best-match IoU (the seed's ``tune``).

Every trial trains a fresh model on every image (with the run's seed) and scores it against
the ground truth with `evaluation.score_annotators`; the objective is the mean over images.
A study kept in a storage (a journal file or a database URL) resumes where it stopped.
Optuna loads only when a search runs.

Two named search spaces (`SPACES`; ``tune --space NAME``), each open to ``NAME=LOW:HIGH``
and ``NAME=VALUE`` overrides (`parse_space`):

``project`` (the default, `DEFAULT_SPACE`): wider, log-scaled ranges for short runs.

=============== ======================================= ==============================
parameter       range                                   method
=============== ======================================= ==============================
n_channels      int 16-128, log                         both
n_conv          int 1-4                                 both
lr              float 0.01-0.5, log                     both
max_iter        int 50-500, log                         both
augment_clahe   categorical false, true                 both
superpixel      categorical slic, felzenszwalb          SP
n_segments      int 500-20000, log (SLIC)               SP
compactness     float 1-200, log (SLIC)                 SP
scale           float 1-500, log (Felzenszwalb)         SP
sigma           float 0.1-2 (Felzenszwalb)              SP
min_size        int 5-200, log (Felzenszwalb)           SP
w_sim, w_con    float 0.1-10, log                       ST
=============== ======================================= ==============================

``seed`` (`SEED_SPACE`): the seed project's Optuna space, value for value. ``int`` and
``float`` are ``[low, high, step]`` as the seed passes them to Optuna, which keeps
``low + k * step <= high``: several seed ranges therefore hold fewer values than they seem
to (noted in brackets).

=================== ========================================== ===========================
parameter           SP                                         ST
=================== ========================================== ===========================
augment_clahe       categorical [True, False]                  same
optimizer           (defined in the seed, not sampled)         categorical [adam, sgd,
                                                               asgd]
n_channels          int [25, 75, 25]                           int [50, 150, 25]
max_iter            int [1000, 3000, 2000] (1000 or 3000)      int [200, 300, 20] (*)
lr                  categorical [0.005, 0.01, 0.05, 0.1]       categorical [0.001, 0.005,
                                                               0.01, 0.05, 0.1]
n_conv              int [2, 6, 1]                              int [2, 12, 2]
n_segments (SLIC)   int [2000, 4000, 6000] (always 2000)       --
compactness (SLIC)  int [15, 20, 25] (always 15)               --
scale (Felz.)       int [1, 10, 100] (always 1)                --
min_size (Felz.)    int [10, 30, 100] (always 10)              --
w_sim, w_con, w_scr --                                         float [0.1, 1.0, 0.2] each
                                                               (0.1, 0.3, ..., 0.9)
=================== ========================================== ===========================

(*) The seed tuned ST in its ``ref`` mode, where this range is ``REF.MAXUPDATE`` (updates
per batch). `tune` trains one model per image (the seed's ``base_folder``), whose budget is
``max_iter``, so the range applies to ``max_iter``.

The seed's optimizers carry their own settings, applied with the chosen one (sampled, or
fixed by ``optimizer=NAME``): sgd with momentum 0.9 and weight decay 0.02, adam and asgd
without weight decay (`SEED_OPTIMIZERS`). In both spaces parameters of the other method, and
the SLIC or Felzenszwalb parameters of the superpixel algorithm not chosen, are not sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from napari_kanezaki.core.config import Config, ConfigError, SPConfig
from napari_kanezaki.workflows.extras import require

_PURPOSE = "hyper-parameter tuning (napari-kanezaki tune)"

__all__ = [
    "DEFAULT_SPACE",
    "SEED_OPTIMIZERS",
    "SEED_SPACE",
    "SPACES",
    "TuneResult",
    "parse_space",
    "parse_space_overrides",
    "sample_config",
    "search_space",
    "tune",
]

#: The project's space. name -> ("int" | "float", low, high, log[, step]) or
#: ("categorical", choices[, settings]), where ``settings`` maps a choice to the other fields
#: it sets. Parameters of the other method, and Felzenszwalb/SLIC parameters of the
#: superpixel algorithm not chosen, are not sampled.
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

#: The seed's optimizers and the settings that come with each (``OPTIMIZER`` in the seed).
SEED_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9, "weight_decay": 0.02},
    "adam": {"weight_decay": 0.0},
    "asgd": {"weight_decay": 0.0},
}

#: The seed project's Optuna space per method, in the format of `DEFAULT_SPACE`; the int and
#: float specs carry the seed's ``[low, high, step]`` as written (see the module docstring).
SEED_SPACE: dict[str, dict[str, tuple]] = {
    "sp": {
        "augment_clahe": ("categorical", (True, False)),
        "n_channels": ("int", 25, 75, False, 25),
        "max_iter": ("int", 1000, 3000, False, 2000),
        "lr": ("categorical", (0.005, 0.01, 0.05, 0.1)),
        "n_conv": ("int", 2, 6, False, 1),
        "n_segments": ("int", 2000, 4000, False, 6000),
        "compactness": ("int", 15, 20, False, 25),
        "scale": ("int", 1, 10, False, 100),
        "min_size": ("int", 10, 30, False, 100),
    },
    "st": {
        "augment_clahe": ("categorical", (True, False)),
        "optimizer": ("categorical", ("adam", "sgd", "asgd"), SEED_OPTIMIZERS),
        "n_channels": ("int", 50, 150, False, 25),
        "max_iter": ("int", 200, 300, False, 20),
        "lr": ("categorical", (0.001, 0.005, 0.01, 0.05, 0.1)),
        "n_conv": ("int", 2, 12, False, 2),
        "w_sim": ("float", 0.1, 1.0, False, 0.2),
        "w_con": ("float", 0.1, 1.0, False, 0.2),
        "w_scr": ("float", 0.1, 1.0, False, 0.2),
    },
}

#: The named spaces of ``tune --space NAME``.
SPACES = ("project", "seed")

_SP_ONLY = {"superpixel", "n_segments", "compactness", "scale", "sigma", "min_size"}
_ST_ONLY = {"w_sim", "w_con", "w_scr"}
_SLIC = {"n_segments", "compactness"}
_FELZENSZWALB = {"scale", "sigma", "min_size"}
_ALL_NAMES = dict.fromkeys([*DEFAULT_SPACE, *SEED_SPACE["sp"], *SEED_SPACE["st"]])


@dataclass(frozen=True)
class TuneResult:
    """Outcome of `tune`: the best configuration and its score."""

    config: Config
    value: float
    params: dict[str, Any]
    trial: int
    n_trials: int


def parse_space(items: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``tune --space`` items: at most one space name, then overrides.

    Parameters
    ----------
    items : sequence of str
        A bare name of `SPACES` (``"seed"``, ``"project"``) chooses the space; the other
        items are overrides (see `parse_space_overrides`), e.g.
        ``["seed", "max_iter=1000:1000"]``.

    Returns
    -------
    name : str
        The chosen space (``"project"`` when none is named).
    overrides : dict
        name -> ``(low, high)`` or a fixed value.
    """
    names = [item.strip().lower() for item in items if "=" not in item]
    unknown = [n for n in names if n not in SPACES]
    if unknown or len(names) > 1:
        raise ConfigError(
            f"--space {(unknown or names)[0]!r}: name at most one search space, one of "
            f"{', '.join(SPACES)}; change single parameters with NAME=LOW:HIGH or NAME=VALUE."
        )
    return (names[0] if names else "project"), parse_space_overrides(
        [item for item in items if "=" in item]
    )


def parse_space_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``NAME=LOW:HIGH`` (a new range) and ``NAME=VALUE`` (a fixed value) strings.

    Parameters
    ----------
    items : sequence of str
        E.g. ``["max_iter=5:10", "augment_clahe=false", "superpixel=slic"]``. NAME is a
        parameter of any named space; `search_space` checks it against the chosen one.

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
        if not sep or name not in _ALL_NAMES:
            raise ConfigError(
                f"--space {item!r}: expected NAME=LOW:HIGH or NAME=VALUE with NAME one of "
                f"{', '.join(_ALL_NAMES)}, or a space name ({', '.join(SPACES)})."
            )
        if ":" in text:
            low, high = (value(t.strip()) for t in text.split(":", 1))
            out[name] = (low, high)
        else:
            out[name] = value(text.strip())
    return out


def search_space(
    overrides: Mapping[str, Any] | None = None, name: str = "project", method: str | None = None
) -> dict[str, Any]:
    """A named space with ranges changed or parameters fixed.

    Parameters
    ----------
    overrides : mapping, optional
        name -> ``(low, high)`` (numeric parameters; a new range keeps the space's step
        and log scale) or a fixed value.
    name : {"project", "seed"}
        The space: `DEFAULT_SPACE` or the method's `SEED_SPACE`.
    method : {"sp", "st"}, optional
        The method; needed for the seed's space, whose ranges differ per method.

    Returns
    -------
    dict
        name -> spec tuple (see `DEFAULT_SPACE`) or ``("fixed", value[, settings])``.
    """
    key = str(name).lower()
    if key == "project":
        space: dict[str, Any] = dict(DEFAULT_SPACE)
    elif key == "seed":
        if str(method).lower() not in SEED_SPACE:
            raise ConfigError("the seed's search space differs per method: give method 'sp' "
                              "or 'st'.")
        space = dict(SEED_SPACE[str(method).lower()])
    else:
        raise ConfigError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}.")
    for param, change in (overrides or {}).items():
        if param not in space:
            raise ConfigError(f"{param!r} is not a parameter of the {key} search space"
                              f"{f' ({method})' if key == 'seed' else ''}; choose from "
                              f"{', '.join(space)}.")
        spec = space[param]
        if isinstance(change, tuple):
            if spec[0] not in ("int", "float"):
                raise ConfigError(f"{param} is categorical: fix it with {param}=VALUE instead.")
            low, high = change
            numbers = isinstance(low, (int, float)) and isinstance(high, (int, float))
            if not numbers or low > high:
                raise ConfigError(
                    f"range of {param} must be two numbers LOW <= HIGH, got {change}."
                )
            if spec[3] and low <= 0:
                raise ConfigError(f"{param} is searched on a log scale: LOW must be > 0.")
            kind = spec[0]
            space[param] = (kind, int(low) if kind == "int" else float(low),
                            int(high) if kind == "int" else float(high), *spec[3:])
        else:
            space[param] = ("fixed", change, *spec[2:3]) if spec[0] == "categorical" \
                else ("fixed", change)
    return space


def _reachable_high(low: float, high: float, step: float) -> float:
    """The largest ``low + k * step <= high`` (what Optuna samples up to, without its warning)."""
    low_d, step_d = Decimal(str(low)), Decimal(str(step))
    count = (Decimal(str(high)) - low_d) // step_d
    top = low_d + count * step_d
    return int(top) if isinstance(low, int) and isinstance(step, int) else float(top)


def _suggest(trial, name: str, spec: tuple) -> Any:
    kind = spec[0]
    if kind == "fixed":
        return spec[1]
    if kind in ("int", "float"):
        low, high, log = spec[1], spec[2], spec[3] and spec[1] != spec[2]
        step = spec[4] if len(spec) > 4 else None
        if kind == "int":
            if step is None:
                return trial.suggest_int(name, low, high, log=log)
            return trial.suggest_int(name, low, _reachable_high(low, high, step), step=step)
        if step is None:
            return trial.suggest_float(name, low, high, log=log)
        value = trial.suggest_float(name, low, _reachable_high(low, high, step), step=step)
        return round(value, 10)  # 0.7000000000000001 -> 0.7
    return trial.suggest_categorical(name, list(spec[1]))


def _settings_of(spec: tuple, value: Any) -> dict[str, Any]:
    """Fields a categorical choice sets besides itself (the seed's optimizer settings)."""
    if spec[0] in ("categorical", "fixed") and len(spec) > 2:
        return dict(spec[2].get(value, {}))
    return {}


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
        changes.update(_settings_of(spec, changes[name]))
    if is_sp:
        algorithm = changes.get("superpixel", base.superpixel)
        for name in _SLIC if algorithm == "slic" else _FELZENSZWALB:
            if name in space:
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
    space_name: str = "project",
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
    space_name : {"project", "seed"}
        The search space (see the module docstring): the project's or the seed's.
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
    full_space = search_space(space, space_name, base.method)

    def objective(trial) -> float:
        config = sample_config(trial, base, full_space)
        scores = []
        for image, truth in pairs:
            segmenter = Segmenter(config, device=device, seed=seed, precision=precision)
            for _ in segmenter.run(image, channel_axis=channel_axis):
                pass
            labels = segmenter.predict(image, channel_axis=channel_axis)
            scores.append(score_annotators(labels, truth, ignore=ignore).miou)
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
