"""The loss value reported in states and logs is accurate on full-size images."""

from __future__ import annotations

import torch

from napari_kanezaki.core.losses import self_training_loss


def test_continuity_value_is_accurate_at_bsds_size():
    # A BSDS-sized response (321 x 481, 100 channels), channels-last like the network's.
    torch.manual_seed(0)
    response = (torch.randn(1, 100, 321, 481) * 0.5 + 2).contiguous(
        memory_format=torch.channels_last)
    target = torch.zeros(1, 321, 481, dtype=torch.int64)
    loss = self_training_loss(response, target, 0.0, w_con=1.0)
    r = response.double()
    expected = ((r[:, :, 1:] - r[:, :, :-1]).abs().mean()
                + (r[:, :, :, 1:] - r[:, :, :, :-1]).abs().mean())
    # A single float32 reduction drifts by ~4e-3 here; the row-wise sum stays near 1e-7.
    assert abs(loss.item() - expected.item()) / expected.item() < 1e-5


def test_continuity_value_in_bfloat16_with_any_pixel_count():
    # Wide rows of the |diff| product need a divisor of the pixel count: 7 x 101 (prime
    # width) and 64 x 96 both give the exact sum of the bfloat16 differences.
    for height, width in ((7, 101), (64, 96)):
        torch.manual_seed(1)
        response = torch.randn(1, 100, height, width).bfloat16().contiguous(
            memory_format=torch.channels_last)
        target = torch.zeros(1, height, width, dtype=torch.int64)
        loss = self_training_loss(response, target, 0.0, w_con=1.0)
        r = response.double()
        expected = ((r[:, :, 1:] - r[:, :, :-1]).bfloat16().double().abs().mean()
                    + (r[:, :, :, 1:] - r[:, :, :, :-1]).bfloat16().double().abs().mean())
        assert abs(loss.item() - expected.item()) / expected.item() < 2e-3
