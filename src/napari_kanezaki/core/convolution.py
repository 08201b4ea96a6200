"""A 3x3 convolution whose weight gradient is computed block by block (CPU, bfloat16).

oneDNN computes the forward pass and the input gradient of a channels-last bfloat16 3x3
convolution near the CPU's matrix-product rate, but its weight gradient at about 60 % of
it, through a scratch buffer (between 128 and 256 MiB for 100 channels on 321x481: a heap
keeping blocks up to 128 MiB still faulted at every step, one keeping 256 MiB did not)
that is mapped afresh, page by page, at every training step. Here the weight and bias gradients
are formed block by block instead: the nine shifted copies of a few image rows (an im2col
block of ~4000 pixels by ``9 C`` features plus a column of ones for the bias, copied with
contiguous runs from a zero-padded channels-last copy of the input) times the output
gradient of those pixels, accumulated in float32. The blocks stay in cache and the products
``(C x pixels) @ (pixels x 9C)`` run at ~80 % of the machine's matrix rate.

The forward pass and the input gradient stay oneDNN's. It is the same function: the
gradients differ from oneDNN's by bfloat16 rounding only (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_kanezaki.core import devices

__all__ = [
    "block_weight_gradient", "blocked_gradient_pays", "conv3x3", "cpu_autocast_dtype",
    "uses_block_weight_gradient",
]

#: Fewest input channels for which the blocked gradient is used. Measured on 321x481
#: (AVX-512-BF16, 2 cores): 100 channels 366 instead of 386-403 ms per SP step, 48 channels
#: 105 instead of 98 ms (narrower products; oneDNN's smaller scratch stays in the heap).
MIN_CHANNELS = 64
#: Pixels per im2col block (with 100 channels: operands of ~0.8 and ~7 MB in bfloat16).
BLOCK_PIXELS = 4096


def blocked_gradient_pays() -> bool:
    """Whether this CPU runs the blocked weight gradient faster than oneDNN's: not with AMX.

    oneDNN's AMX kernels compute the weight gradient faster than the blocked products
    (Xeon with AMX-BF16, 2 cores, torch 2.11, 321x481, 100 channels: SP step 201-209
    instead of 232-237 ms, ST 226-242 instead of 280). The blocked gradient was measured
    faster on AVX-512-BF16 CPUs without AMX (see `MIN_CHANNELS`).
    """
    return not devices.cpu_has_amx()


def cpu_autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype in effect, None when CPU autocast is off."""
    try:
        enabled = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu")
    except TypeError:  # torch < 2.4
        enabled = torch.is_autocast_cpu_enabled()
        dtype = torch.get_autocast_cpu_dtype()
    return dtype if enabled else None


def uses_block_weight_gradient(x: torch.Tensor, conv: torch.nn.Conv2d) -> bool:
    """Whether `conv3x3` computes this layer's weight gradient block by block.

    Only where it is measured to be faster: a training forward pass on the CPU under
    bfloat16 autocast, a 2-D 3x3 convolution with stride 1, padding 1, bias, no dilation or
    groups, at least `MIN_CHANNELS` input channels, a channels-last input, and a CPU
    without AMX (`blocked_gradient_pays`).
    """
    return (
        x.device.type == "cpu"
        and blocked_gradient_pays()
        and torch.is_grad_enabled()
        and conv.weight.requires_grad
        and cpu_autocast_dtype() == torch.bfloat16
        and x.dim() == 4
        and conv.in_channels >= MIN_CHANNELS
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.bias is not None
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def conv3x3(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """``conv(x)``, with the blocked weight gradient where `uses_block_weight_gradient`.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C_in, H, W)`` input.
    conv : torch.nn.Conv2d
        The layer (its parameters stay float32 and are cast as autocast would).

    Returns
    -------
    torch.Tensor
        ``(N, C_out, H, W)``: ``conv(x)``.
    """
    if not uses_block_weight_gradient(x, conv):
        return conv(x)
    weight = conv.weight.to(torch.bfloat16)
    bias = conv.bias.to(torch.bfloat16)
    return _Conv3x3.apply(x.to(torch.bfloat16), weight, bias)


class _Conv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        with torch.autocast("cpu", enabled=False):
            out = F.conv2d(x, weight, bias, padding=1)
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The input gradient only: asked for the bias gradient too, oneDNN computes its
            # weight gradient as well.
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]
        grad_weight, grad_bias = block_weight_gradient(x, grad_out)
        return grad_x, grad_weight, grad_bias


def block_weight_gradient(
    x: torch.Tensor, grad_out: torch.Tensor, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias gradients of a 3x3, padding 1 convolution, block by block.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C_in, H, W)`` channels-last input of the convolution.
    grad_out : torch.Tensor
        ``(N, C_out, H, W)`` channels-last gradient of its output.
    dtype : torch.dtype, optional
        Of the results (they are accumulated in float32); default `x`'s.

    Returns
    -------
    grad_weight : torch.Tensor
        ``(C_out, C_in, 3, 3)``.
    grad_bias : torch.Tensor
        ``(C_out,)``.
    """
    n, c_in, height, width = x.shape
    c_out = grad_out.shape[1]
    features = 9 * c_in
    # Zero-padded channels-last copy; only the one-pixel border is zeroed (zeroing the
    # whole buffer first cost a pass of its own, ~6 ms of a 321x481 step).
    padded = x.new_empty(n, height + 2, width + 2, c_in)
    for edge in (padded[:, 0], padded[:, -1], padded[:, :, 0], padded[:, :, -1]):
        edge.zero_()
    padded[:, 1:-1, 1:-1] = x.permute(0, 2, 3, 1)
    grads = grad_out.permute(0, 2, 3, 1)  # (N, H, W, C_out), contiguous
    rows = max(1, min(height, BLOCK_PIXELS // width))
    # The im2col block, plus a column of ones whose product is the bias gradient.
    block = x.new_empty(rows, width, features + 1)
    block[..., features] = 1
    total = torch.zeros(c_out, features + 1, dtype=torch.float32, device=x.device)
    s_n, s_y, s_x, _ = padded.stride()
    for image in range(n):
        for top in range(0, height, rows):
            r = min(rows, height - top)
            part = block[:r]
            for dy in range(3):
                # Padded rows top+dy .. top+dy+r-1, each pixel followed by its two right
                # neighbours: (r, W, 3 C_in), read in contiguous runs of 3 C_in values.
                window = padded.as_strided(
                    (r, width, 3 * c_in), (s_y, s_x, 1),
                    padded.storage_offset() + image * s_n + (top + dy) * s_y,
                )
                part[:, :, dy * 3 * c_in:(dy + 1) * 3 * c_in].copy_(window)
            g = grads[image, top:top + r].reshape(r * width, c_out)
            total += g.t() @ part.view(r * width, features + 1)
    # Features are ordered (dy, dx, c_in): back to (C_out, C_in, 3, 3).
    grad_weight = total[:, :features].reshape(c_out, 3, 3, c_in).permute(0, 3, 1, 2)
    dtype = x.dtype if dtype is None else dtype
    return grad_weight.to(dtype), total[:, features].to(dtype)
