"""The 3x3 convolution with a blocked weight gradient: the same function as oneDNN's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_kanezaki.core import convolution, devices
from napari_kanezaki.core.convolution import (
    block_weight_gradient,
    blocked_gradient_pays,
    conv3x3,
    uses_block_weight_gradient,
)
from napari_kanezaki.core.network import build_network


@pytest.fixture(autouse=True)
def _blocked_gradient_pays(monkeypatch):
    """The tests below exercise the blocked path whatever the CPU (AMX CPUs skip it)."""
    monkeypatch.setattr(convolution, "blocked_gradient_pays", lambda: True)


def _channels_last(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator).to(torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last)


def _exact_gradients(x: torch.Tensor, grad_out: torch.Tensor):
    c_out, c_in = grad_out.shape[1], x.shape[1]
    weight = torch.zeros(c_out, c_in, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(c_out, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.conv2d(x.double(), weight, bias, padding=1).backward(grad_out.double())
    return weight.grad, bias.grad


@pytest.mark.parametrize("shape", [(1, 64, 13, 17), (2, 72, 9, 40), (1, 64, 1, 5)])
@pytest.mark.parametrize("block_pixels", [4096, 30])  # one block per image, many blocks
def test_block_gradients_match_the_exact_ones(monkeypatch, shape, block_pixels):
    monkeypatch.setattr(convolution, "BLOCK_PIXELS", block_pixels)
    n, c_in, h, w = shape
    x = _channels_last(*shape, seed=0)
    grad_out = _channels_last(n, c_in + 3, h, w, seed=1)
    exact_weight, exact_bias = _exact_gradients(x, grad_out)
    grad_weight, grad_bias = block_weight_gradient(x, grad_out)
    assert grad_weight.shape == exact_weight.shape and grad_weight.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits: within a few units of its rounding of the largest entry
    scale = exact_weight.abs().max()
    assert (grad_weight.double() - exact_weight).abs().max() <= 0.01 * scale
    assert (grad_bias.double() - exact_bias).abs().max() <= 0.01 * exact_bias.abs().max()


def test_training_step_gradients_equal_onednns(monkeypatch):
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = _channels_last(1, 64, 20, 24, seed=2).float().requires_grad_()
    grad_out = _channels_last(1, 64, 20, 24, seed=3)
    results = {}
    for name, minimum in (("onednn", 10**9), ("blocked", 64)):
        monkeypatch.setattr(convolution, "MIN_CHANNELS", minimum)
        conv.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert uses_block_weight_gradient(x, conv) == (name == "blocked")
            out = conv3x3(x, conv)
        out.backward(grad_out)
        results[name] = (out.detach(), x.grad.clone(), conv.weight.grad.clone(),
                         conv.bias.grad.clone())
    (out_a, gx_a, gw_a, gb_a), (out_b, gx_b, gw_b, gb_b) = results["onednn"], results["blocked"]
    assert torch.equal(out_a, out_b)  # the forward pass is oneDNN's in both
    assert torch.equal(gx_a, gx_b)  # so is the input gradient
    assert (gw_a - gw_b).abs().max() <= 0.01 * gw_a.abs().max()
    assert (gb_a - gb_b).abs().max() <= 0.01 * gb_a.abs().max()


def test_only_bf16_cpu_training_of_wide_3x3_layers_takes_the_blocked_path():
    wide = nn.Conv2d(64, 64, 3, padding=1)
    x = _channels_last(1, 64, 8, 8, seed=4).float()
    assert not uses_block_weight_gradient(x, wide)  # no autocast: plain float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert uses_block_weight_gradient(x, wide)
        assert not uses_block_weight_gradient(x.contiguous(), wide)  # NCHW input
        assert not uses_block_weight_gradient(x, nn.Conv2d(64, 64, 1))
        assert not uses_block_weight_gradient(x[:, :8], nn.Conv2d(8, 64, 3, padding=1))
        with torch.no_grad():
            assert not uses_block_weight_gradient(x, wide)  # prediction


def test_the_network_trains_through_the_blocked_path(monkeypatch):
    calls = []
    original = convolution.block_weight_gradient
    monkeypatch.setattr(convolution, "block_weight_gradient",
                        lambda *args: calls.append(1) or original(*args))
    model = build_network(3, 64, 2, spatial_dims=2, seed=0, device=torch.device("cpu"))
    x = _channels_last(1, 3, 16, 16, seed=5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        response = model(x)
    response.float().square().mean().backward()
    assert calls == [1]  # the 64 -> 64 layer; the first (3 -> 64) stays oneDNN's
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("amx", [True, False])
def test_cpus_with_amx_keep_onednns_weight_gradient(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert devices.cpu_has_amx.__wrapped__() is amx  # the cached probe, uncached
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(convolution, "blocked_gradient_pays", blocked_gradient_pays)
    x = _channels_last(1, 64, 8, 8, seed=6).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert uses_block_weight_gradient(x, nn.Conv2d(64, 64, 3, padding=1)) is (not amx)
