"""Training-mode BatchNorm folded into the convolution that follows it (CPU, bfloat16).

In the network every BatchNorm but the last feeds a convolution. In training mode the
normalisation is per channel affine, ``y = a r + c`` with ``a = gamma / sqrt(var + eps)``
and ``c = beta - a mean`` (the batch's statistics), so the convolution of ``y`` is a
convolution of ``r`` with the weights scaled by ``a`` over their input channels, plus a
constant per output channel (corrected on the border rows and columns, where the
convolution's zero padding does not see ``c``). The normalised map is never written: one
pass for the statistics instead of BatchNorm's two, and no activation kept for it.

Backward, the two per-channel reductions of BatchNorm's gradient come from the
convolution's own weight and bias gradients (``d loss / d a`` is the weight gradient
contracted with the weights, ``d loss / d c`` the bias gradient's), so the input gradient
needs one extra per-channel affine term, ``alpha + beta r``, instead of BatchNorm's
backward kernel (two reductions and a pass). It is the same function: the result differs
from BatchNorm then convolution by bfloat16 rounding only (tested); the running statistics
are updated exactly as `torch.nn.BatchNorm2d` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_kanezaki.core import convolution, devices
from napari_kanezaki.core.convolution import cpu_autocast_dtype, uses_block_weight_gradient

__all__ = ["MIN_CHANNELS_AMX", "MIN_PIXELS", "norm_conv", "uses_folded_norm"]

#: Fewest pixels (batch x height x width) folded. On maps of a few dozen pixels the three
#: bfloat16 roundings of the folded input gradient show against BatchNorm's float32
#: kernel (27 % against 1 % of the first layer's weight gradient on 10 pixels, the same
#: error from 256 pixels on); such maps gain nothing from the fold anyway.
MIN_PIXELS = 1024
#: Fewest normalised channels folded on CPUs with AMX. There the interactive preset's
#: 48-channel network trained faster unfolded (Xeon with AMX-BF16, 2 cores, torch 2.11,
#: 321x481: SP 78-80 instead of 86-87 ms per step, ST 93-94 instead of 100-108); the
#: paper's 100 channels faster folded (SP 232-237 instead of 267-305 ms, both with the
#: blocked weight gradient). Without AMX the fold pays at every width measured.
MIN_CHANNELS_AMX = 64


def uses_folded_norm(x: torch.Tensor, norm: nn.Module, conv: nn.Module) -> bool:
    """Whether `norm_conv` folds `norm` into `conv` for this input.

    Where it is measured to be faster: a training forward pass on the CPU under bfloat16
    autocast, a channels-last 2-D input of at least `MIN_PIXELS` pixels, a
    `torch.nn.BatchNorm2d` in training mode with affine parameters and running statistics,
    then a `torch.nn.Conv2d` with bias, stride 1, no dilation or groups, and a 1x1 kernel
    without padding or a 3x3 kernel with zero padding 1; on CPUs with AMX, at least
    `MIN_CHANNELS_AMX` channels.
    """
    if type(norm) is not nn.BatchNorm2d or type(conv) is not nn.Conv2d:
        return False
    shape_ok = (conv.kernel_size, conv.padding) in (((1, 1), (0, 0)), ((3, 3), (1, 1)))
    return (
        shape_ok
        and x.device.type == "cpu"
        and torch.is_grad_enabled()
        and norm.training
        and norm.affine
        and norm.track_running_stats
        and norm.running_mean is not None
        and cpu_autocast_dtype() == torch.bfloat16
        and x.dim() == 4
        and x.numel() // max(x.shape[1], 1) >= MIN_PIXELS
        and x.is_contiguous(memory_format=torch.channels_last)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.bias is not None
        and (conv.in_channels >= MIN_CHANNELS_AMX or not devices.cpu_has_amx())
    )


def norm_conv(x: torch.Tensor, norm: nn.BatchNorm2d, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(norm(x))`` with `norm` in training mode, the normalisation folded into `conv`.

    Call where `uses_folded_norm` says so (it computes the same function in any floating
    dtype, which the tests use to check it in float64).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C_in, H, W)`` channels-last input of the BatchNorm.
    norm : torch.nn.BatchNorm2d
        In training mode; its running statistics are updated as its own forward would.
    conv : torch.nn.Conv2d
        1x1 or 3x3 (padding 1); parameters stay float32.

    Returns
    -------
    torch.Tensor
        ``(N, C_out, H, W)``, channels-last, in the CPU autocast dtype where autocast is
        on, else in `x`'s.
    """
    norm.num_batches_tracked.add_(1)
    momentum = norm.momentum
    if momentum is None:  # cumulative moving average, as BatchNorm2d does
        momentum = 1.0 / float(norm.num_batches_tracked)
    dtype = cpu_autocast_dtype()
    if dtype is not None:
        x = x.to(dtype)
    mean, var = torch.ops.aten.batch_norm_update_stats(
        x.detach(), norm.running_mean, norm.running_var, momentum
    )
    return _NormConv.apply(
        x, norm.weight, norm.bias, conv.weight, conv.bias, mean, var, norm.eps,
        uses_block_weight_gradient(x, conv),
    )


def _row_groups(size: int) -> list[tuple[slice, int, bool]]:
    """Rows (or columns) of a map of `size` grouped by how the 3x3 padding sees them.

    Returns ``(rows, index, interior)`` triples: the rows see the padding as row `index`
    of a ``min(size, 3)`` map does; `interior` rows see none of it.
    """
    if size == 1:
        return [(slice(0, 1), 0, False)]
    if size == 2:
        return [(slice(0, 1), 0, False), (slice(1, 2), 1, False)]
    return [(slice(0, 1), 0, False), (slice(1, size - 1), 1, True),
            (slice(size - 1, size), 2, False)]


def _border_sums(grad: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``S[o, dy, dx]``: the sum of `grad` over the pixels whose 3x3 tap ``(dy, dx)``
    falls inside the map, ``(C, 3, 3)`` in `total`'s dtype (the gradient of a constant's
    contribution through a zero-padded 3x3 convolution).

    `total` is the sum over all pixels (the bias gradient); only the border rows and
    columns are read here.
    """
    dtype = total.dtype
    first_row = grad[:, :, 0].sum(dim=(0, 2), dtype=dtype)
    last_row = grad[:, :, -1].sum(dim=(0, 2), dtype=dtype)
    first_col = grad[:, :, :, 0].sum(dim=(0, 2), dtype=dtype)
    last_col = grad[:, :, :, -1].sum(dim=(0, 2), dtype=dtype)
    corner = grad[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].sum(dim=0, dtype=dtype)
    rows = (first_row, None, last_row)
    cols = (first_col, None, last_col)
    corners = {(0, 0): corner[:, 0], (0, 2): corner[:, 1], (2, 0): corner[:, 2],
               (2, 2): corner[:, 3]}
    sums = torch.empty(grad.shape[1], 3, 3, dtype=dtype, device=grad.device)
    for dy in range(3):
        for dx in range(3):
            s = total.clone()
            if rows[dy] is not None:
                s -= rows[dy]
            if cols[dx] is not None:
                s -= cols[dx]
            if (dy, dx) in corners:
                s += corners[(dy, dx)]
            sums[:, dy, dx] = s
    return sums


class _NormConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, mean, var, eps, blocked):  # type: ignore[override]
        with torch.autocast("cpu", enabled=False):
            return _NormConv._forward(ctx, x, gamma, beta, weight, bias, mean, var, eps, blocked)

    @staticmethod
    def _forward(ctx, x, gamma, beta, weight, bias, mean, var, eps, blocked):
        invstd = torch.rsqrt(var + eps)
        a = gamma.detach() * invstd
        c = beta.detach() - a * mean
        w = weight.detach()
        k = w.shape[-1]
        # Constant per output channel and 3x3 tap: the contribution of c through weight.
        taps = torch.einsum("oiyx,i->oyx", w, c)
        scaled = (w * a.view(1, -1, 1, 1)).to(x.dtype)
        folded_bias = (bias.detach() + taps.sum(dim=(1, 2))).to(x.dtype)
        out = F.conv2d(x, scaled, folded_bias, padding=k // 2)
        if k == 3:
            _correct_border(out, w, c, taps)
        ctx.save_for_backward(x, scaled, w, a, c, mean, invstd, gamma)
        ctx.blocked = blocked
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        with torch.autocast("cpu", enabled=False):
            return _NormConv._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        x, scaled, w, a, c, mean, invstd, gamma = ctx.saved_tensors
        k = w.shape[-1]
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        if ctx.blocked:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, scaled, None, [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]
            grad_scaled, grad_bias = convolution.block_weight_gradient(x, grad_out, w.dtype)
        else:
            grad_x, grad_scaled, grad_bias = torch.ops.aten.convolution_backward(
                grad_out, x, scaled, [scaled.shape[0]], [1, 1], [k // 2] * 2, [1, 1], False,
                [0, 0], 1, [True, True, True],
            )
            grad_scaled, grad_bias = grad_scaled.to(w.dtype), grad_bias.to(w.dtype)
        if k == 3:
            tap_sums = _border_sums(grad_out, grad_bias)
        else:
            tap_sums = grad_bias.view(-1, 1, 1)
        # weight' = weight * a (input channels), taps = weight . c.
        grad_a = torch.einsum("oiyx,oiyx->i", grad_scaled, w)
        grad_c = torch.einsum("oiyx,oyx->i", w, tap_sums)
        grad_weight = grad_scaled * a.view(1, -1, 1, 1) + torch.einsum(
            "oyx,i->oiyx", tap_sums, c
        )
        # a = gamma * invstd, c = beta - a * mean: back to gamma, beta, mean, var.
        grad_a_total = grad_a - grad_c * mean
        grad_gamma = grad_a_total * invstd
        grad_beta = grad_c
        grad_var = grad_a_total * gamma.detach() * (-0.5) * invstd**3
        grad_mean = -grad_c * a
        count = x.numel() // x.shape[1]
        # d mean / d x = 1 / count, d var / d x = 2 (x - mean) / count.
        slope = 2.0 * grad_var / count
        offset = grad_mean / count - slope * mean
        view = (1, -1, 1, 1)
        grad_x.add_(offset.to(grad_x.dtype).view(view))
        grad_x.addcmul_(x, slope.to(grad_x.dtype).view(view))
        return grad_x, grad_gamma, grad_beta, grad_weight, grad_bias, None, None, None, None


def _correct_border(out: torch.Tensor, weight: torch.Tensor, c: torch.Tensor,
                    taps: torch.Tensor) -> None:
    """Add to `out`'s border what zero padding changes in the constant's contribution.

    The folded bias holds the contribution of ``c`` through all nine taps; a border pixel
    sees only the taps inside the map (exactly the contribution computed on a map of at
    most 3x3 pixels, whose rows and columns stand for the first, interior and last ones).
    """
    height, width = out.shape[2:]
    small = F.conv2d(
        c.view(1, -1, 1, 1).expand(1, -1, min(height, 3), min(width, 3)), weight, padding=1
    )[0]
    correction = small - taps.sum(dim=(1, 2)).view(-1, 1, 1)
    for rows, sy, inner_rows in _row_groups(height):
        for cols, sx, inner_cols in _row_groups(width):
            if inner_rows and inner_cols:
                continue
            out[:, :, rows, cols] += correction[:, sy, sx].to(out.dtype).view(1, -1, 1, 1)
