"""Helpers shared by the benchmark scripts: evaluation data and machine description.

The development evaluation data lives beside the project, at ``../shared/data`` from the
project root, and is never copied into the project (its images are for non-commercial
research use only). Every helper here reads it in place and reports its absence instead of
failing, so that the benchmarks run (or skip cleanly) on any checkout.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: The evaluation data folder, ``../shared/data`` relative to the project root.
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The BSDS500 images used in the papers' code, in the order the papers list them.
BSDS_IDS = ("101027", "108004", "196062")
#: CPU feature flags that decide which arithmetic is fast.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def bsds_image_path(image_id: str) -> Path:
    """Return the path of a BSDS500 image of the evaluation data (it may not exist)."""
    return DATA_DIR / "bsds500" / "images" / f"{image_id}.jpg"


def load_bsds_image(image_id: str) -> np.ndarray:
    """Read a BSDS500 image of the evaluation data.

    Parameters
    ----------
    image_id : str
        File stem, e.g. ``"101027"``.

    Returns
    -------
    numpy.ndarray
        uint8 RGB, ``(321, 481, 3)`` or ``(481, 321, 3)``.
    """
    from skimage.io import imread

    return np.ascontiguousarray(imread(bsds_image_path(image_id)))


def load_bsds_ground_truth(image_id: str) -> list[np.ndarray]:
    """Read every annotator's segmentation of a BSDS500 image.

    Parameters
    ----------
    image_id : str
        File stem, e.g. ``"101027"``.

    Returns
    -------
    list of numpy.ndarray
        One ``(H, W)`` label map (labels 1..K) per annotator.
    """
    from scipy.io import loadmat

    segs = loadmat(DATA_DIR / "bsds500" / "groundTruth" / f"{image_id}.mat")["gt_seg"]
    return [np.asarray(segs[k, 0]) for k in range(segs.shape[0])]


def voc_dir() -> Path:
    """Return the VOC 2012 folder of the evaluation data (it may not exist)."""
    return DATA_DIR / "voc2012"


def voc_scribbled_ids() -> list[str]:
    """Ids of the VOC images that have published scribbles, image and class map, sorted.

    Returns
    -------
    list of str
        E.g. ``["2007_001774", "2008_001439"]``; empty when the data is absent.
    """
    root = voc_dir()
    ids = []
    for path in sorted((root / "scribbles").glob("*_scribble.png")):
        image_id = path.name.removesuffix("_scribble.png")
        if (root / "JPEGImages" / f"{image_id}.jpg").is_file() and (
            root / "SegmentationClass" / f"{image_id}.png"
        ).is_file():
            ids.append(image_id)
    return ids


def load_voc_image(image_id: str) -> np.ndarray:
    """Read a VOC 2012 image of the evaluation data as uint8 RGB ``(H, W, 3)``."""
    from skimage.io import imread

    return np.ascontiguousarray(imread(voc_dir() / "JPEGImages" / f"{image_id}.jpg"))


def load_voc_class_map(image_id: str) -> np.ndarray:
    """Read a VOC 2012 class map (palette indices 0..20, 255 = void) as a 2-D array."""
    from napari_kanezaki.workflows.evaluation import read_labels

    return read_labels(voc_dir() / "SegmentationClass" / f"{image_id}.png")


def load_voc_scribbles(image_id: str) -> np.ndarray:
    """Read the TIP 2020 paper's scribbles of a VOC image in napari's convention.

    The published files are 8-bit single channel, 255 = not scribbled and any other value
    a class id (0 included); `scribbles_from_published` turns them into napari labels
    (0 = not scribbled, published class v = label v + 1).

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)``, 0 = not scribbled.
    """
    from skimage.io import imread

    from napari_kanezaki.imaging.images import scribbles_from_published

    raw = imread(voc_dir() / "scribbles" / f"{image_id}_scribble.png")
    return scribbles_from_published(raw)


def benchmark_image(path: str | None = None) -> tuple[np.ndarray, str]:
    """Return the image the speed benchmark runs on, and a line saying which it is.

    Parameters
    ----------
    path : str, optional
        An image file to use instead of the default.

    Returns
    -------
    image : numpy.ndarray
        uint8 RGB. By default BSDS500 ``101027.jpg`` (321 x 481) of the evaluation data,
        or the bundled immunohistochemistry sample (256 x 256) when the data is absent.
    description : str
        Where the image came from and its shape.
    """
    if path is not None:
        from skimage.io import imread

        image, source = np.ascontiguousarray(imread(path)), str(path)
    elif bsds_image_path(BSDS_IDS[0]).is_file():
        image, source = load_bsds_image(BSDS_IDS[0]), f"BSDS500 {BSDS_IDS[0]}.jpg"
    else:
        from napari_kanezaki.imaging.samples import immunohistochemistry

        image = immunohistochemistry()
        source = f"bundled immunohistochemistry sample ({DATA_DIR} not found)"
    return image, f"{source}, shape {image.shape}, {image.dtype}"


def machine_info(device: torch.device) -> dict[str, Any]:
    """Describe the software and hardware a benchmark runs on.

    Parameters
    ----------
    device : torch.device
        The device the benchmark uses.

    Returns
    -------
    dict
        torch version, thread counts, CPU model and flags, torch's CPU capability, the
        device, its name (for CUDA) and the precision the project picks there by default.
    """
    from napari_kanezaki.core.devices import resolve_precision

    model, flags = _cpu_model_and_flags()
    dtype = resolve_precision("auto", device)
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "default_precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def format_machine_info(info: dict[str, Any]) -> str:
    """Render `machine_info` as a few human-readable lines."""
    flags = ", ".join(info["cpu_flags"]) or "none of " + ", ".join(CPU_FLAGS)
    device = info["device"]
    if "gpu" in info:
        device += f" ({info['gpu']}, compute capability {info['gpu_capability']})"
    return "\n".join(
        [
            f"torch {info['torch']} (python {info['python']}), {info['threads']} threads "
            f"({info['interop_threads']} inter-op)",
            f"CPU: {info['cpu']}; flags: {flags}; torch CPU capability {info['cpu_capability']}",
            f"device: {device}; project default precision there: {info['default_precision']}",
        ]
    )


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    """CPU model name and feature flags from /proc/cpuinfo (Linux), else from `platform`."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine(), flags


def add_run_arguments(parser: Any, methods: tuple[str, ...], what: str) -> None:
    """Add the ``--methods``, ``--device`` and ``--seed`` options every benchmark takes.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    methods : tuple of str
        The method choices (all are the default).
    what : str
        Verb for the help text, e.g. ``"time"`` or ``"run"``.
    """
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=methods,
        default=list(methods),
        help=f"methods to {what} (default: {' '.join(methods)})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps' "
        "(default: auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (default: 0)")
