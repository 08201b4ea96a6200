"""BatchNorm folded into the next convolution: the same function as BatchNorm then conv."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from napari_kanezaki.core import convolution, devices, folded_norm, network
from napari_kanezaki.core.folded_norm import norm_conv, uses_folded_norm
from napari_kanezaki.core.network import build_network



@pytest.fixture(autouse=True)
def _no_amx(monkeypatch):
    """Fold at every width, whatever the CPU (`test_amx_cpus_fold_wide_networks_only`)."""
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: False)


def _pair(channels: int, out_channels: int, kernel: int, momentum: float | None = 0.1):
    generator = torch.Generator().manual_seed(channels * 10 + kernel)
    norm = nn.BatchNorm2d(channels, momentum=momentum).double()
    conv = nn.Conv2d(channels, out_channels, kernel, padding=kernel // 2).double()
    with torch.no_grad():  # away from the initial gamma = 1, beta = 0, running stats
        norm.weight.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
        norm.running_mean.copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
        norm.num_batches_tracked.fill_(3)
    return norm, conv


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("height, width", [(7, 9), (1, 5), (5, 1), (2, 2), (1, 1), (3, 4)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_folded_norm_equals_batchnorm_then_conv_in_float64(kernel, height, width, momentum):
    norm, conv = _pair(4, 6, kernel, momentum)
    norm_ref, conv_ref = copy.deepcopy(norm), copy.deepcopy(conv)
    generator = torch.Generator().manual_seed(height * 100 + width)
    x = torch.rand(2, 4, height, width, generator=generator, dtype=torch.float64) + 0.2
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 6, height, width, generator=generator, dtype=torch.float64)

    out = norm_conv(x, norm, conv)
    out.backward(grad)
    out_ref = conv_ref(norm_ref(x_ref))
    out_ref.backward(grad)

    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-11)
    for module, reference in ((norm, norm_ref), (conv, conv_ref)):
        for parameter, expected in zip(module.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(parameter.grad, expected.grad, rtol=0, atol=1e-10)
        for buffer, expected in zip(module.buffers(), reference.buffers(), strict=True):
            torch.testing.assert_close(buffer, expected, rtol=0, atol=1e-14)


def _train_once(model: nn.Module, x: torch.Tensor, grad: torch.Tensor, autocast: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        response = model(x)
    response.float().backward(grad)
    return response.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("channels", [64, 48])  # blocked weight gradient, oneDNN's
def test_folded_network_matches_the_native_one_within_bfloat16_rounding(monkeypatch, channels):
    monkeypatch.setattr(convolution, "blocked_gradient_pays", lambda: True)  # also on AMX
    model = build_network(3, channels, 2, spatial_dims=2, seed=0, device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 40, 50, generator=generator).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(1, channels, 40, 50, generator=generator)
    exact = _train_once(copy.deepcopy(model), x, grad, autocast=False)
    folded = _train_once(copy.deepcopy(model), x, grad, autocast=True)
    monkeypatch.setattr(network, "uses_folded_norm", lambda *args: False)
    native = _train_once(copy.deepcopy(model), x, grad, autocast=True)

    def error(result, name=None):
        values, reference = (
            (result[0], exact[0]) if name is None else (result[1][name], exact[1][name])
        )
        return float((values - reference).norm() / reference.norm())

    assert error(folded) <= 1.2 * error(native) + 1e-3
    # Gradients of biases that a BatchNorm cancels are ~0 and pure rounding in both.
    for name, value in exact[1].items():
        if value.norm() > 1e-3 * max(v.norm() for v in exact[1].values()):
            assert error(folded, name) <= 1.5 * error(native, name) + 0.01, name


def test_the_network_folds_every_batchnorm_that_feeds_a_convolution(monkeypatch):
    calls = []
    monkeypatch.setattr(network, "norm_conv",
                        lambda x, norm, conv: calls.append(conv.kernel_size)
                        or folded_norm.norm_conv(x, norm, conv))
    model = build_network(3, 48, 3, spatial_dims=2, seed=0, device=torch.device("cpu"))
    x = torch.rand(1, 3, 40, 40).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        response = model(x)
    response.float().square().mean().backward()
    # BN1 -> conv2 (3x3), BN2 -> conv3 (3x3), BN3 -> the 1x1; the last BatchNorm stays.
    assert calls == [(3, 3), (3, 3), (1, 1)]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_only_bf16_cpu_training_of_large_2d_maps_is_folded():
    norm, conv = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1)
    x = torch.rand(1, 8, 40, 40).contiguous(memory_format=torch.channels_last)
    assert not uses_folded_norm(x, norm, conv)  # no autocast: float32 stays native
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert uses_folded_norm(x, norm, conv)
        assert uses_folded_norm(x, norm, nn.Conv2d(8, 8, 1))
        assert not uses_folded_norm(x, norm, nn.Conv2d(8, 8, 3))  # no padding
        assert not uses_folded_norm(x, norm, nn.Conv2d(8, 8, 3, padding=1, stride=2))
        assert not uses_folded_norm(x, norm, nn.Conv2d(8, 8, 3, padding=1, bias=False))
        assert not uses_folded_norm(x.contiguous(), norm, conv)  # NCHW
        assert not uses_folded_norm(x[:, :, :20, :20], norm, conv)  # 400 < MIN_PIXELS
        assert not uses_folded_norm(x, nn.BatchNorm2d(8, affine=False), conv)
        assert not uses_folded_norm(x, nn.BatchNorm2d(8).eval(), conv)  # running stats
        assert not uses_folded_norm(x, conv, norm)  # a convolution then a BatchNorm
        with torch.no_grad():
            assert not uses_folded_norm(x, norm, conv)  # prediction


@pytest.mark.parametrize("amx", [True, False])
def test_amx_cpus_fold_wide_networks_only(monkeypatch, amx):
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: amx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for channels in (48, 64, 100):
            x = torch.rand(1, channels, 40, 50).contiguous(memory_format=torch.channels_last)
            folded = uses_folded_norm(x, nn.BatchNorm2d(channels),
                                      nn.Conv2d(channels, channels, 3, padding=1))
            assert folded is (channels >= folded_norm.MIN_CHANNELS_AMX or not amx)
