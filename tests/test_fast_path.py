"""The fast path computes the same function as the plain PyTorch formulation."""

from __future__ import annotations

import torch

from napari_kanezaki.core.superpixels import histogram
from napari_kanezaki.core.training import argmax_channels


def test_argmax_channels_equals_argmax_with_ties():
    torch.manual_seed(0)
    # Rounded values in bfloat16 give many ties: the first maximal channel must win.
    response = (torch.randn(2, 40, 17, 23) * 2).round().to(torch.bfloat16)
    for layout in (torch.contiguous_format, torch.channels_last):
        r = response.contiguous(memory_format=layout)
        assert torch.equal(argmax_channels(r), r.argmax(dim=1))
    volume = torch.randn(1, 8, 4, 5, 6).round()
    assert torch.equal(argmax_channels(volume), volume.argmax(dim=1))


def test_histogram_equals_bincount():
    values = torch.randint(0, 50, (7, 9, 11))
    assert torch.equal(histogram(values, 64), torch.bincount(values.reshape(-1), minlength=64))


def test_seeded_initialisation_is_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    from napari_kanezaki import Segmenter, STConfig

    config = STConfig(n_channels=64, n_conv=3)

    def weights(seed: int) -> torch.Tensor:
        segmenter = Segmenter(config, device="cpu", seed=seed)
        segmenter._prepare_model(3, warm_start=False)
        return torch.cat([p.detach().reshape(-1) for p in segmenter.model.parameters()])

    seeds = [i % 4 for i in range(48)]
    expected = {seed: weights(seed) for seed in range(4)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(weights, seeds))
    for seed, got in zip(seeds, concurrent):
        assert torch.equal(got, expected[seed])
