"""The GPU paths of training: cuDNN's deterministic algorithms around every update, and
the update replayed as a CUDA graph (when it applies, and, on a GPU, that a graphed run is
bitwise the eager run, state by state)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from napari_kanezaki import NormalizedImage, Segmenter, SPConfig, STConfig
from napari_kanezaki.core import cuda_graph, training
from napari_kanezaki.core.devices import reproducible_kernels
from napari_kanezaki.imaging.samples import noisy_regions

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("fails", [False, True])
def test_reproducible_kernels_set_cudnn_for_cuda_work_and_restore_it(fails):
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = False, True  # a caller's own settings
    try:
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            with reproducible_kernels(torch.device("cuda")):
                assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
                if fails:
                    raise RuntimeError("a failing update")
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with reproducible_kernels(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def test_every_update_runs_inside_reproducible_kernels(monkeypatch):
    seen = []

    @contextlib.contextmanager
    def recording(device):
        seen.append(device.type)
        yield

    monkeypatch.setattr(training, "reproducible_kernels", recording)
    image, _ = noisy_regions((24, 24), seed=1)
    config = STConfig(n_channels=8, max_iter=3, min_labels=1)
    states = list(Segmenter(config, device="cpu", seed=0).run(image))
    assert seen == ["cpu"] * len(states) == ["cpu"] * 3


@pytest.mark.parametrize(
    ("device", "optimizer", "expected"),
    [("cuda", "sgd", True), ("cuda:1", "sgd", True), ("cpu", "sgd", False),
     ("cuda", "adam", False), ("cuda", "asgd", False)],
)
def test_graphs_apply_to_sgd_on_cuda_only(device, optimizer, expected):
    config = STConfig(optimizer=optimizer)
    assert cuda_graph.use_cuda_graph(config, torch.device(device)) is expected


def _run(config, image, scribbles=None, *, graphed: bool, monkeypatch, keep_every=7):
    """Losses, label counts, some kept states' labels, weights and prediction of one run."""
    with monkeypatch.context() as patch:
        if not graphed:
            patch.setattr(cuda_graph, "use_cuda_graph", lambda config, device: False)
        segmenter = Segmenter(config, device="cuda", seed=0)
        states = list(segmenter.run(image, scribbles))
    return {
        "losses": [s.loss for s in states],
        "counts": [s.n_labels for s in states],
        "stop": (states[-1].iteration, states[-1].stop_reason),
        # labels of states kept while the run went on: a replay must not overwrite them
        "kept": [states[i].labels() for i in range(0, len(states), keep_every)],
        "weights": {k: v.clone() for k, v in segmenter.model.state_dict().items()},
        "labels": segmenter.predict(image),
    }


def _assert_same(a, b):
    assert a["losses"] == b["losses"]
    assert a["counts"] == b["counts"]
    assert a["stop"] == b["stop"]
    for x, y in zip(a["kept"], b["kept"], strict=True):
        np.testing.assert_array_equal(x, y)
    for name in a["weights"]:
        assert torch.equal(a["weights"][name], b["weights"][name]), name
    np.testing.assert_array_equal(a["labels"], b["labels"])


@pytest.fixture
def replays(monkeypatch):
    """Counts `torch.cuda.CUDAGraph.replay` calls."""
    calls = []
    replay = torch.cuda.CUDAGraph.replay

    def counted(self):
        calls.append(1)
        return replay(self)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counted)
    return calls


@needs_cuda
@pytest.mark.parametrize(
    "config",
    [SPConfig(max_iter=40, min_labels=1, n_channels=32),
     STConfig(max_iter=40, min_labels=1, n_channels=32),
     STConfig(max_iter=400, n_channels=32, plateau_iter=10),
     STConfig(max_iter=30, min_labels=1, n_channels=16, augment_clahe=True)],
    ids=["sp", "st", "st-plateau-stop", "st-augmented"],
)
def test_graphed_run_is_bitwise_the_eager_run(config, monkeypatch, replays):
    image, _ = noisy_regions((96, 128), noise=0.05, seed=2)
    eager = _run(config, image, graphed=False, monkeypatch=monkeypatch)
    assert not replays
    graphed = _run(config, image, graphed=True, monkeypatch=monkeypatch)
    iterations = graphed["stop"][0]
    assert len(replays) == iterations - cuda_graph.WARMUP_STEPS
    _assert_same(eager, graphed)


@needs_cuda
def test_graphed_run_with_scribbles_and_a_volume(monkeypatch, replays):
    image, truth = noisy_regions((64, 80), noise=0.05, seed=4)
    scribbles = np.zeros(truth.shape, np.int32)
    scribbles[::9, ::9] = truth[::9, ::9]
    config = STConfig(max_iter=25, n_channels=16)
    _assert_same(_run(config, image, scribbles, graphed=False, monkeypatch=monkeypatch),
                 _run(config, image, scribbles, graphed=True, monkeypatch=monkeypatch))
    # (C, Z, Y, X) in [0, 1]: a 3-D network
    volume = NormalizedImage(np.stack([image.transpose(2, 0, 1)] * 6, axis=1) / np.float32(255))
    config = SPConfig(max_iter=12, min_labels=1, n_channels=16)
    _assert_same(_run(config, volume, graphed=False, monkeypatch=monkeypatch),
                 _run(config, volume, graphed=True, monkeypatch=monkeypatch))
    assert replays
