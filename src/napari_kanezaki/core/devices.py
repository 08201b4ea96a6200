"""Choosing the compute device and the arithmetic precision."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "available_devices",
    "resolve_device",
    "resolve_precision",
    "autocast",
    "cpu_has_amx",
    "reproducible_kernels",
    "memory_format",
    "to_device",
]

PRECISIONS = ("auto", "fp32", "bf16")


def available_devices() -> list[str]:
    """Return the device names usable here, best first, always ending with ``"cpu"``."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` or a device name into a `torch.device`, checking it exists.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA, then MPS, then CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"`` name one.

    Returns
    -------
    torch.device
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'."
        ) from exc
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'.")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was requested but this PyTorch sees no CUDA GPU; use "
                "device='auto' or 'cpu', or install a CUDA build of PyTorch."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s)."
            )
    if resolved.type == "mps" and "mps" not in available_devices():
        raise ValueError(
            "device 'mps' was requested but MPS is not available; use 'auto' or 'cpu'."
        )
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype for a precision setting, or None for plain float32.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16"}
        ``"auto"`` uses bfloat16 autocast where the hardware runs it natively (CPUs with
        AVX-512 BF16 or AMX, CUDA GPUs of compute capability 8.0 or newer) and float32
        elsewhere. ``"bf16"`` forces bfloat16 autocast; ``"fp32"`` disables it.
    device : torch.device
        The device the model runs on.

    Returns
    -------
    torch.dtype or None
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has_fast_bf16() else None
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else None
    return None


@functools.cache
def cpu_has_amx() -> bool:
    """True on CPUs with AMX tiles (Intel Xeon since Sapphire Rapids), as PyTorch sees them.

    Some CPU paths of the training step are chosen by it (`core.convolution`,
    `core.folded_norm`): oneDNN's AMX kernels change which of them is faster.
    """
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bfloat16 arithmetic (AVX-512 BF16 or AMX tiles)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device` (see `resolve_precision`); no-op for None.

    Parameters
    ----------
    device : torch.device
    dtype : torch.dtype or None

    Returns
    -------
    context manager
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def reproducible_kernels(device: torch.device) -> Iterator[None]:
    """Run the enclosed CUDA work with cuDNN's deterministic algorithms, then restore.

    cuDNN may otherwise pick convolution algorithms (weight gradients, above all) whose
    sums run in a varying order, so that two runs with one seed can drift apart. Inside
    this context ``torch.backends.cudnn.deterministic`` is True and ``benchmark`` False;
    the caller's settings come back on exit, so the rest of the process is untouched.
    Nothing changes on other devices.

    Parameters
    ----------
    device : torch.device
        The device the enclosed work runs on.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


def memory_format(ndim: int) -> torch.memory_format:
    """Memory layout of network tensors with `ndim` axes: channels-last for 2-D images.

    3-D volumes stay contiguous: channels_last_3d BatchNorm and element-wise kernels are
    about 10x slower on CPU.
    """
    return torch.contiguous_format if ndim == 5 else torch.channels_last


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 ``(N, C, *spatial)`` array as a tensor on `device`, in `memory_format`.

    Parameters
    ----------
    batch : numpy.ndarray
    device : torch.device

    Returns
    -------
    torch.Tensor
    """
    tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    return tensor.to(device).contiguous(memory_format=memory_format(tensor.ndim))
