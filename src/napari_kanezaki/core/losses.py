"""The training loss of both methods, fused into one pass-efficient autograd function.

Both methods minimise a pixel-weighted cross-entropy between the response map and a label
target, plus (ST) a spatial-continuity term:

- SP: ``CE(r, refined argmax)``, mean over pixels;
- ST: ``w_sim * CE(r, argmax) + w_con * L_con``;
- ST with scribbles: ``w_sim * CE over unscribbled pixels (mean over them) + w_scr * CE(r,
  scribble ids) over scribbled pixels (mean over them) + w_con * L_con``;

with ``L_con = sum over spatial axes of mean|r[i+1] - r[i]|``. Written with separate
PyTorch operations these take about twenty passes over the ``C x H x W`` response; here
the gradient is formed while the loss is computed, in a handful of passes over a
channels-last view, and handed back in the response's own memory layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pixel_weights", "self_training_loss"]


def pixel_weights(
    scribbles: torch.Tensor | None, shape: Sequence[int], w_sim: float, w_scr: float
) -> torch.Tensor | float:
    """Per-pixel cross-entropy weights that turn one weighted sum into the method's means.

    Parameters
    ----------
    scribbles : torch.Tensor or None
        ``(N, *spatial)`` int64 class ids, -1 where not scribbled.
    shape : sequence of int
        ``(N, *spatial)``, used when there are no scribbles.
    w_sim, w_scr : float
        Weights of the similarity and scribble terms.

    Returns
    -------
    torch.Tensor or float
        ``w_sim / n_pixels`` (a float) without scribbles; otherwise a float32 tensor with
        ``w_sim / n_unscribbled`` on unscribbled and ``w_scr / n_scribbled`` on scribbled
        pixels.
    """
    if scribbles is None:
        n = 1
        for s in shape:
            n *= int(s)
        return w_sim / n
    scribbled = scribbles >= 0
    n_scr = int(scribbled.sum())
    n_unl = scribbled.numel() - n_scr
    weights = torch.full(scribbles.shape, w_sim / max(n_unl, 1), device=scribbles.device)
    weights[scribbled] = w_scr / n_scr
    return weights


class _SelfTrainingLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, response, target, weights, w_con, axis_weights):  # type: ignore[override]
        # Channels-last view (N, *spatial, C); a copy only if the layout is not channels-last.
        r = response.movedim(1, -1)
        if not r.is_contiguous():
            r = r.contiguous()
        n_channels = r.shape[-1]
        grad = torch.softmax(r, dim=-1)
        # d CE / d r = w * (softmax - onehot(target)): write softmax - 1 at the target
        # through a flat index (much faster than scatter along the channel axis).
        flat = grad.view(-1)
        index = torch.arange(target.numel(), device=r.device) * n_channels + target.reshape(-1)
        picked = flat[index]
        flat.index_put_((index,), picked - 1)
        nll = -torch.log(picked.float().clamp_min(1e-30))
        if torch.is_tensor(weights):
            ce = (nll * weights.reshape(-1)).sum()
            grad.mul_(weights.unsqueeze(-1).to(grad.dtype))
            factor = 1.0
        elif weights:
            # A uniform weight is applied once, in backward, together with grad_output.
            ce = nll.sum() * weights
            factor = float(weights)
        else:  # no cross-entropy term at all
            ce = torch.zeros((), dtype=torch.float32, device=r.device)
            grad.zero_()
            factor = 1.0
        con = torch.zeros((), dtype=torch.float32, device=r.device)
        if w_con:
            for axis, axis_weight in enumerate(axis_weights, start=1):
                n = r.shape[axis]
                if axis_weight == 0 or n < 2:
                    continue
                diff = r.narrow(axis, 1, n - 1) - r.narrow(axis, 0, n - 1)
                scale = w_con * axis_weight / diff.numel()
                # Per-pixel sums of |diff| over the C channels as a product with a vector
                # of ones (twice as fast as a reduction in bfloat16), summed in float64:
                # one fp32 reduction over millions of values drifts by ~0.4 %.
                pixels = diff.abs().reshape(-1, n_channels)
                ones = torch.ones(n_channels, 1, dtype=diff.dtype, device=diff.device)
                l1 = (pixels @ ones).double().sum()
                con = con + (l1 * scale).float()
                sign = diff.sign_()
                grad.narrow(axis, 1, n - 1).add_(sign, alpha=scale / factor)
                grad.narrow(axis, 0, n - 1).sub_(sign, alpha=scale / factor)
        ctx.save_for_backward(grad)
        ctx.factor = factor
        return ce + con

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        # movedim back gives the response's layout: channels-last in, channels-last out.
        scale = (grad_output * ctx.factor).to(grad.dtype)
        return grad.movedim(-1, 1) * scale, None, None, None, None


def self_training_loss(
    response: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | float,
    w_con: float = 0.0,
    axis_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Weighted cross-entropy to a label target plus the spatial-continuity term.

    Parameters
    ----------
    response : torch.Tensor
        Response map ``(N, C, *spatial)``, any float dtype and memory layout.
    target : torch.Tensor
        int64 target labels ``(N, *spatial)`` (argmax, refined argmax or scribble ids).
    weights : torch.Tensor or float
        Per-pixel cross-entropy weights ``(N, *spatial)``, or one weight for all pixels
        (see `pixel_weights`); the cross-entropy term is ``sum(weights * nll)``.
    w_con : float
        Weight of the continuity term (0 for SP).
    axis_weights : sequence of float, optional
        Per-spatial-axis weights of the continuity term (default 1 each).

    Returns
    -------
    torch.Tensor
        float32 scalar. Its gradient has the dtype and memory layout of `response`.
    """
    spatial = response.ndim - 2
    axes = tuple(float(w) for w in (axis_weights or (1.0,) * spatial))
    if len(axes) != spatial:
        raise ValueError(f"need {spatial} axis weights, got {len(axes)}.")
    return _SelfTrainingLoss.apply(response, target, weights, float(w_con), axes)
