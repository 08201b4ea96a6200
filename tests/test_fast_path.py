"""The fast path computes the same function as the plain PyTorch formulation."""

from __future__ import annotations

import torch

from napari_kanezaki.segmenter import argmax_channels
from napari_kanezaki.superpixels import histogram


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
