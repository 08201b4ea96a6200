"""The fused loss computes the published losses and their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_kanezaki.core.losses import loss_and_gradient, pixel_weights, self_training_loss


def published_st_loss(response, scribbles=None, w_sim=1.0, w_con=1.0, w_scr=0.5):
    """The TIP 2020 demo's loss, written as the published code writes it (one image)."""
    c = response.shape[1]
    output = response[0].permute(1, 2, 0).contiguous().view(-1, c)
    hp = output.reshape(response.shape[2], response.shape[3], c)
    hpy = hp[1:, :, :] - hp[0:-1, :, :]
    hpz = hp[:, 1:, :] - hp[:, 0:-1, :]
    lhpy = F.l1_loss(hpy, torch.zeros_like(hpy))
    lhpz = F.l1_loss(hpz, torch.zeros_like(hpz))
    _, target = torch.max(output, 1)
    if scribbles is None:
        return w_sim * F.cross_entropy(output, target) + w_con * (lhpy + lhpz)
    mask = scribbles.reshape(-1)
    sim, scr = mask < 0, mask >= 0
    return (
        w_sim * F.cross_entropy(output[sim], target[sim])
        + w_scr * F.cross_entropy(output[scr], mask[scr])
        + w_con * (lhpy + lhpz)
    )


def test_continuity_term_by_hand():
    # 1 image, 1 channel, 2x3: rows differ by [3, -1, 0], columns by [1, 1] and [-3, 2]
    r = torch.tensor([[[[0.0, 1.0, 2.0], [3.0, 0.0, 2.0]]]])
    target = torch.zeros(1, 2, 3, dtype=torch.long)
    loss = self_training_loss(r, target, weights=0.0, w_con=1.0)
    vertical = (3 + 1 + 0) / 3
    horizontal = (1 + 1 + 3 + 2) / 4
    assert loss.item() == pytest.approx(vertical + horizontal)
    weighted = self_training_loss(r, target, 0.0, w_con=2.0, axis_weights=(0.5, 0.0))
    assert weighted.item() == pytest.approx(2.0 * 0.5 * vertical)


@pytest.mark.parametrize("with_scribbles", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_st_loss_matches_published_value_and_gradient(with_scribbles, channels_last):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 6, 7, 9, generator=gen, dtype=torch.float64)
    scribbles = None
    if with_scribbles:
        scribbles = torch.full((1, 7, 9), -1, dtype=torch.long)
        scribbles[0, 1, 2:6] = 1
        scribbles[0, 5, 1:4] = 4
    ref_in = base.clone().requires_grad_()
    ref = published_st_loss(ref_in, scribbles, w_sim=0.7, w_con=1.3, w_scr=0.4)
    ref.backward()

    fused_in = base.clone()
    if channels_last:
        fused_in = fused_in.contiguous(memory_format=torch.channels_last)
    fused_in.requires_grad_()
    target = fused_in.detach().argmax(1)
    if scribbles is not None:
        target = torch.where(scribbles >= 0, scribbles, target)
    weights = pixel_weights(scribbles, target.shape, 0.7, 0.4)
    loss = self_training_loss(fused_in, target, weights, w_con=1.3)
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(fused_in.grad, ref_in.grad, rtol=1e-6, atol=1e-9)
    if channels_last:
        assert fused_in.grad.is_contiguous(memory_format=torch.channels_last)


def test_fused_sp_loss_is_cross_entropy_to_any_target():
    gen = torch.Generator().manual_seed(1)
    r = torch.randn(2, 5, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (2, 4, 6), generator=gen)
    ref = F.cross_entropy(r, target)
    (g_ref,) = torch.autograd.grad(ref, r)
    loss = self_training_loss(r, target, 1.0 / target.numel())
    (g,) = torch.autograd.grad(loss, r)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("with_scribbles", [False, True])
def test_fused_loss_under_bf16_autocast_matches_published_formulation(with_scribbles):
    # A bfloat16 response from a convolution under CPU autocast (channels-last, as in
    # training); both losses computed from it under the same autocast.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 24, 30, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(20, 3, 3, 3, generator=gen) * 0.5
    scribbles = None
    if with_scribbles:
        scribbles = torch.full((1, 24, 30), -1, dtype=torch.long)
        scribbles[0, 2, 3:20] = 1
        scribbles[0, 15, 5:9] = 7
    results = []
    for fused in (False, True):
        weight = w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            r = F.conv2d(x, weight, padding=1)
            r.retain_grad()
            if fused:
                assert r.dtype == torch.bfloat16
                assert r.is_contiguous(memory_format=torch.channels_last)
                target = r.detach().argmax(1)
                if scribbles is not None:
                    target = torch.where(scribbles >= 0, scribbles, target)
                weights = pixel_weights(scribbles, target.shape, 0.7, 0.4)
                loss = self_training_loss(r, target, weights, w_con=1.3)
            else:
                loss = published_st_loss(r, scribbles, w_sim=0.7, w_con=1.3, w_scr=0.4)
        loss.backward()
        results.append((loss.item(), r.grad.double(), weight.grad.double()))
    (ref, ref_grad, ref_wgrad), (got, grad, wgrad) = results
    # Measured (torch 2.13, CPU), without / with scribbles: loss 9.8e-5 / 9.0e-5 relative;
    # gradient w.r.t. the response 8.0e-3 / 5.4e-3 and w.r.t. the weights 6.4e-3 / 3.5e-3
    # relative (L2 norm): bfloat16 rounding (the fused loss takes the softmax in bf16, the
    # published cross-entropy runs in fp32 under autocast). Tolerances ~4x that.
    assert got == pytest.approx(ref, rel=4e-4)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 3e-2
    assert float((wgrad - ref_wgrad).norm() / ref_wgrad.norm()) < 2.5e-2


def test_3d_continuity_has_a_term_per_axis():
    r = torch.zeros(1, 1, 2, 2, 2)
    r[0, 0, 1] = 1.0  # only the first spatial axis changes
    t = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    assert self_training_loss(r, t, 0.0, w_con=1.0).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need 3 axis weights"):
        self_training_loss(r, t, 0.0, w_con=1.0, axis_weights=(1, 1))


def test_pixel_weights_make_two_means():
    scribbles = torch.tensor([[[-1, -1, 2], [-1, 3, -1]]])
    w = pixel_weights(scribbles, scribbles.shape, w_sim=1.0, w_scr=0.5).numpy()
    np.testing.assert_allclose(w[scribbles.numpy() < 0], 1 / 4)
    np.testing.assert_allclose(w[scribbles.numpy() >= 0], 0.5 / 2)
    assert pixel_weights(None, (1, 4, 5), w_sim=2.0, w_scr=0.5) == pytest.approx(0.1)


def test_gradient_scales_with_the_upstream_gradient():
    gen = torch.Generator().manual_seed(2)
    r = torch.randn(1, 4, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (1, 5, 6), generator=gen)
    (g1,) = torch.autograd.grad(self_training_loss(r, target, 0.1, w_con=2.0), r)
    (g3,) = torch.autograd.grad(3.0 * self_training_loss(r, target, 0.1, w_con=2.0), r)
    torch.testing.assert_close(g3, 3.0 * g1)
    # a retained graph gives the same gradient twice (the saved buffer is not spent)
    loss = self_training_loss(r, target, 0.1, w_con=2.0)
    (first,) = torch.autograd.grad(loss, r, retain_graph=True)
    (second,) = torch.autograd.grad(loss, r)
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("with_scribbles", [False, True])
def test_loss_and_unscaled_gradient_equal_the_autograd_loss(with_scribbles):
    # The training step back-propagates `grad` and scales the parameter gradients by
    # `scale`: scale * grad must be the loss's gradient, the loss the same value.
    gen = torch.Generator().manual_seed(3)
    r = torch.randn(1, 5, 6, 8, generator=gen, dtype=torch.float64)
    target = r.argmax(1)
    weights = 0.7 / target.numel()
    if with_scribbles:
        scribbles = torch.full((1, 6, 8), -1, dtype=torch.long)
        scribbles[0, 2, 1:5] = 3
        weights = pixel_weights(scribbles, (1, 6, 8), 0.7, 0.4)
    r_in = r.clone().requires_grad_()
    expected = self_training_loss(r_in, target, weights, w_con=1.3)
    expected.backward()
    loss, grad, scale = loss_and_gradient(r, target, weights, w_con=1.3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert scale == (1.0 if with_scribbles else pytest.approx(0.7 / 48))
    torch.testing.assert_close(grad * scale, r_in.grad)
