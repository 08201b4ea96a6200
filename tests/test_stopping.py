"""The stop rules: label count, budget, plateau, and the GPU-friendly check cadence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from napari_kanezaki import ConfigError, Segmenter, SPConfig
from napari_kanezaki.core.stopping import StopRule
from napari_kanezaki.imaging.samples import noisy_regions


def count(n: int) -> torch.Tensor:
    return torch.tensor(n)


def test_min_labels_and_budget():
    rule = StopRule(max_iter=5, min_labels=3)
    labels = torch.zeros(4, 4, dtype=torch.int64)
    assert [rule.update(i, count(9), labels) for i in range(1, 5)] == [""] * 4
    assert rule.update(5, count(9), labels) == "max_iter"
    assert StopRule(max_iter=5, min_labels=3).update(2, count(3), labels) == "min_labels"


def test_plateau_is_the_median_iteration_of_a_full_window():
    a = torch.zeros(10, 10, dtype=torch.int64)
    b = a.clone()
    b[0, :5] = 1  # 5 % of the pixels change: within the tolerance
    c = a.clone()
    c[:5] = 2  # 50 % change: not stable

    def reasons(sequence, window=3):
        rule = StopRule(max_iter=100, min_labels=1, plateau_iter=window, plateau_tol=0.05)
        return [rule.update(i, count(2), x) for i, x in enumerate(sequence, start=1)]

    # iteration 1 has no predecessor: the window of 3 changes is full at iteration 4
    assert reasons([a, b, b, b]) == ["", "", "", "plateau"]
    # one flip (to c and back: two large changes) in a window of 5 does not keep the run
    # going ...
    assert reasons([a, a, c, a, a, a], window=5) == ["", "", "", "", "", "plateau"]
    # ... but a run changing more than the tolerance in most iterations goes on
    assert reasons([a, c, a, c, a, a, a, a]) == ["", "", "", "", "", "", "plateau", "plateau"]
    assert reasons([a, c, a, c, a, c]) == [""] * 6


def test_plateau_requires_the_same_label_count():
    rule = StopRule(max_iter=100, min_labels=1, plateau_iter=2, plateau_tol=1.0)
    labels = torch.zeros(3, 3, dtype=torch.int64)
    reasons = [rule.update(i, count(n), labels) for i, n in enumerate([5, 4, 5, 4, 4, 4], 1)]
    assert reasons == ["", "", "", "", "", "plateau"]


def test_check_every_delays_the_host_read_to_a_multiple():
    rule = StopRule(max_iter=100, min_labels=3, check_every=10)
    labels = torch.zeros(2, 2, dtype=torch.int64)
    reasons = [rule.update(i, count(2), labels) for i in range(1, 11)]
    assert reasons == [""] * 9 + ["min_labels"]


def test_plateau_config_validation():
    with pytest.raises(ConfigError, match="plateau_iter"):
        SPConfig(plateau_iter=-1)
    with pytest.raises(ConfigError, match="plateau_tol"):
        SPConfig(plateau_tol=2.0)


def test_plateau_stop_shortens_a_run_without_losing_quality():
    image, truth = noisy_regions((64, 64), seed=3)
    base = SPConfig(n_channels=32, max_iter=150, min_labels=1, n_segments=300, compactness=10)
    full = Segmenter(base, device="cpu", seed=0)
    states = list(full.run(image))
    assert states[-1].stop_reason == "max_iter"
    early = Segmenter(base.replace(plateau_iter=10), device="cpu", seed=0)
    early_states = list(early.run(image))
    n = len(early_states)
    assert early_states[-1].stop_reason == "plateau"
    assert n < 100
    # the rule only cuts the run short: up to where it stopped, it is the same-seed full run
    for stopped, complete in zip(early_states, states[:n]):
        assert stopped.n_labels == complete.n_labels
        np.testing.assert_array_equal(stopped.labels(), complete.labels())
    # ... and it stopped on a plateau: the count unchanged over the last 10 iterations
    assert len({s.n_labels for s in early_states[-11:]}) == 1
    # its result is the full run's after the same n updates (state n + 1 is taken before
    # update n + 1), not the full run's final result
    early_labels = early.predict(image)
    np.testing.assert_array_equal(early_labels, states[n].labels())
    assert np.unique(early_labels).size == states[n].n_labels
    # without losing quality: as good as spending the whole budget
    full_ari = adjusted_rand_score(truth.ravel(), full.predict(image).ravel())
    early_ari = adjusted_rand_score(truth.ravel(), early_labels.ravel())
    assert early_ari >= full_ari - 0.02


def test_status_line_reports_iteration_and_label_count():
    image, _ = noisy_regions((24, 24), seed=1)
    config = SPConfig(n_channels=8, max_iter=3, min_labels=1)
    states = list(Segmenter(config, device="cpu", seed=0).run(image))  # GPUs count every 10th
    assert states[0].status() == f"iteration 1/3, {states[0].n_labels} labels"
    assert states[-1].status().startswith("iteration 3/3, ")
