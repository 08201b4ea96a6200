"""From classes to objects: instance labels (cells, nuclei) out of a class label image.

The network labels every pixel with a class (membrane, interior, stain...); a biologist
counts and measures objects. `to_objects` turns a class label image into instance labels:

1. **Background.** Every class is foreground except the background class(es), chosen
   (a) explicitly (``background=`` one id or several, e.g. the background and a membrane
   class), or ``background="membranes"`` for cells between stained membranes: the
   thinnest of the classes whose largest connected region spans the largest box (the
   membrane network reaches across the image, the cells are cut apart by it), else (b)
   from scribbles: the class under most of the pixels painted with scribble label 1
   ("paint the background with label 1"), else (c) automatically: the class covering the
   largest share of the image border (ties: the larger class, then the smaller id). With
   the image at hand, ``background="bright"`` makes every class brighter on average than
   the image (stained membranes in fluorescence: the membranes and any bright
   stain), ``"dark"`` every class darker (membranes in EM). Label 0 (pixels the
   segmentation left out, e.g. a cropped bar) is always background.
2. **Objects.** The connected components (face connectivity) of the foreground, all
   foreground classes merged: a cell whose nucleus, cytoplasm or rim came out as classes
   of their own is one object. With ``per_class=True`` each foreground class has its own
   objects (nuclei apart from cytoplasm); to keep only some classes, make the others
   background.
3. **Touching objects** in one region are split by a seeded watershed on the distance
   transform (the distance to the region's edge, small holes ignored): the seeds are its
   maxima that rise at least `SEED_DEPTH` (one pixel) above the pass to a higher one
   (h-maxima: a plateau or a ridge is one seed, a wobble of a noisy edge none), at least
   `min_distance` apart (of two closer ones the lower is dropped). With
   ``split_seeds="dark"`` / ``"bright"`` the seeds are instead the darkest / brightest points
   of the image (Gaussian of `IMAGE_SEED_SIGMA` pixels) at least `min_distance` apart:
   cell centres between bright / dark membranes, one per cell even where the
   foreground's membranes have gaps that the distance transform cannot see.
4. Objects smaller than `min_size` pixels/voxels are removed.
5. Optionally (``fill``) the background pixels near objects join the nearest object: for
   cells between membranes, the membrane class (the background) is shared out among the
   cells on either side, and dark specks inside a cell (organelles that came out as the
   membrane class) become part of it.
6. The objects are numbered 1..N in raster order of each object's first pixel, so the
   numbering is deterministic.

`consensus_objects` does the same for several runs on one image (seeds): each run's
background by the same rule, a pixel is background where most runs say so, then steps 2-6.

Pure NumPy/SciPy/scikit-image, no torch; SciPy and scikit-image load at the first call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BY_INTENSITY",
    "DEFAULT_MIN_DISTANCE",
    "DEFAULT_MIN_SIZE",
    "IMAGE_SEED_SIGMA",
    "MEMBRANES",
    "SPLIT_SEEDS",
    "check_runs",
    "choose_background",
    "classes_by_intensity",
    "consensus_objects",
    "membrane_class",
    "needs_image",
    "to_objects",
]

#: Default smallest object kept, in pixels (2-D) or voxels (3-D).
DEFAULT_MIN_SIZE = 20

#: Default smallest distance between the seeds of two touching objects, in pixels of the
#: finest axis.
DEFAULT_MIN_DISTANCE = 5.0

#: How far (in pixels of the finest axis) a maximum of the distance transform must rise
#: above the pass to a higher one to seed an object of its own.
SEED_DEPTH = 1.0

#: How far a maximum of the smoothed image (scaled to 1..2) must rise above the pass to a
#: higher one to be a seed with ``split_seeds="dark"`` or ``"bright"``: any true extremum.
CENTRE_DEPTH = 1e-6

#: Where the seeds of touching objects come from (see `to_objects`).
SPLIT_SEEDS = ("distance", "dark", "bright")

#: Gaussian sigma (pixels of the finest axis) of the image whose extrema seed objects with
#: ``split_seeds="dark"`` or ``"bright"``. Measured on the shared confocal stack (3 runs voted,
#: two triples of seeds): sigma 2 / 3 / 4 px gave mIoU 0.292 / 0.294 / 0.287 and ARI
#: 0.72 / 0.71 / 0.70, against 0.283 / 0.688 with the distance transform's seeds.
IMAGE_SEED_SIGMA = 3.0

#: The `background` value that chooses the membrane class (see `membrane_class`).
MEMBRANES = "membranes"

#: The `background` values that choose the classes by the image's intensity (see
#: `classes_by_intensity`): brighter or darker on average than the whole image.
BY_INTENSITY = ("bright", "dark")


def to_objects(
    labels: np.ndarray,
    *,
    background: int | Sequence[int] | str | None = None,
    image: np.ndarray | None = None,
    scribbles: np.ndarray | None = None,
    per_class: bool = False,
    min_size: int = DEFAULT_MIN_SIZE,
    split_touching: bool = True,
    min_distance: float = DEFAULT_MIN_DISTANCE,
    spacing: Sequence[float] | None = None,
    ndim: int | None = None,
    fill: float = 0.0,
    split_seeds: str = "distance",
) -> np.ndarray:
    """Instance labels (objects) from a class label image.

    Parameters
    ----------
    labels : array_like of int
        Class labels, 2-D ``(Y, X)`` or 3-D ``(Z, Y, X)`` (or a stack of those, see
        `ndim`). Never modified. Label 0 is always background.
    background : int or sequence of int or {"membranes", "bright", "dark"}, optional
        The background class id(s); every other class is foreground. ``"membranes"``: the
        membranes of cells between stained membranes (EM, membrane-stained tissue), chosen
        per image by their shape (`membrane_class`). ``"bright"`` / ``"dark"`` (needs
        `image`): every class brighter / darker on average than the image
        (`classes_by_intensity`): stained membranes in fluorescence / membranes in EM.
        Default: from `scribbles`, else the automatic rule (see `choose_background`).
    image : array_like, optional
        The image segmented, of `labels`' shape (or with a last axis of channels, averaged),
        for ``background="bright"`` or ``"dark"`` and for ``split_seeds="dark"`` or ``"bright"``.
        Never modified.
    scribbles : array_like of int, optional
        Scribbles of `labels`' shape (0 = not painted). The class under most of the pixels
        painted with label 1 is the background ("paint the background with label 1").
        Ignored when `background` is given; without pixels painted 1 the automatic rule
        applies.
    per_class : bool
        False: the foreground classes are merged, objects are regions of foreground
        whatever their classes (a nucleus class inside a cytoplasm class gives one cell;
        a rim class the network found at the edge of the cells stays with its cell).
        True: each foreground class has its own objects (nuclei and cytoplasm apart).
    min_size : int
        Objects with fewer pixels (2-D) or voxels (3-D) are removed (set to 0); holes
        smaller than this inside an object (noise) do not count for the distance transform.
    split_touching : bool
        Split touching objects by a seeded watershed on the distance transform; False:
        objects are the connected components.
    split_seeds : {"distance", "dark", "bright"}
        Seeds of that split: the maxima of the distance transform (default), or the
        darkest (``"dark"``: cells between bright membranes, e.g. a membrane stain) or
        brightest (``"bright"``: cells between dark membranes) points of `image`, smoothed
        by a Gaussian of `IMAGE_SEED_SIGMA` pixels, inside the foreground and at least
        `min_distance` apart. The distance transform still draws the edges between the
        pieces.
    min_distance : float
        Smallest distance between two seeds (object centres), in pixels of the finest
        axis: with `spacing` the distances are physical, divided by the smallest spacing, so
        the default suits any unit. Of two seeds closer than this, the one on the lower
        maximum of the distance transform is dropped. Larger values split less.
    spacing : sequence of float, optional
        Pixel/voxel size per axis of one image (`ndim` entries, e.g. Z, Y, X): the sampling
        of the distance transform and of the distances between seeds. Default: isotropic.
    ndim : {2, 3}, optional
        Number of trailing axes that form one image (default: ``labels.ndim``, which must
        then be 2 or 3). Leading axes (planes, time points) are handled one by one, each
        with its own background choice; the ids continue from one to the next, so every
        object of the array has its own id.
    fill : float
        Background pixels (of the background classes; label 0 stays 0) at most this far
        from an object join the nearest one, in pixels of the finest axis (physical with
        `spacing`); 0 (default) leaves the background alone, ``numpy.inf`` shares all of
        it out, so that the objects tile the image (cells between membranes, whose
        membranes belong to the cells).

    Returns
    -------
    numpy.ndarray
        int32 array of `labels`' shape: 0 = background, 1..N objects numbered in raster
        order of their first pixel.

    Raises
    ------
    ValueError
        Labels that are not integers, `ndim` other than 2 or 3, or `spacing`, `scribbles`,
        `min_distance`, `split_seeds` or `image` that do not fit.

    Examples
    --------
    >>> classes = np.ones((64, 64), np.int32)
    >>> yy, xx = np.mgrid[:64, :64]
    >>> classes[(yy - 32) ** 2 + (xx - 22) ** 2 < 100] = 2
    >>> classes[(yy - 32) ** 2 + (xx - 40) ** 2 < 100] = 2
    >>> int(to_objects(classes).max())
    2
    """
    array = np.asarray(labels)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"labels must be integers (class ids), got {array.dtype}.")
    ndim = _check_ndim(ndim, array.shape)
    scale = _relative_spacing(spacing, ndim)
    if not min_distance > 0:
        raise ValueError(f"min_distance must be positive, got {min_distance}.")
    if split_seeds not in SPLIT_SEEDS:
        raise ValueError(f"split_seeds must be one of {', '.join(SPLIT_SEEDS)}; "
                         f"got {split_seeds!r}.")
    if not fill >= 0:
        raise ValueError(f"fill must be 0 (off), a positive distance or inf, got {fill}.")
    centres = _seed_image(split_seeds if split_touching else "distance", image, array.shape,
                          ndim, scale)
    marks = _scribble_marks(scribbles, background, array.shape)
    choose = _background_rule(background, image, marks, array.shape)
    out = np.zeros(array.shape, np.int32)
    offset = 0
    for lead in np.ndindex(*array.shape[: array.ndim - ndim]):
        block = array[lead]
        objects = _block_objects(block, choose(block, lead), per_class, min_size,
                                 split_touching, scale, min_distance,
                                 None if centres is None else centres[lead])
        if fill > 0:
            objects = _fill(objects, block != 0, fill, scale)
        n = int(objects.max(initial=0))
        out[lead] = np.where(objects > 0, objects + offset, 0)
        offset += n
    return out


def consensus_objects(
    runs: Sequence[np.ndarray],
    *,
    background: int | Sequence[int] | str | None = None,
    image: np.ndarray | None = None,
    scribbles: np.ndarray | None = None,
    ndim: int | None = None,
    **options: Any,
) -> np.ndarray:
    """Objects of one image segmented several times: the background by majority vote.

    Runs with different seeds place the edge between two classes differently (a membrane
    class one run draws thin, with gaps, another thick); which class is the background is
    chosen in every run by the same rule as `to_objects`, a pixel is background where more
    than half of the runs say so, and the objects are those of that two-class image
    (`to_objects` with `options`). With three runs one run that went astray (a collapse to
    a thin membrane class) is outvoted.

    Parameters
    ----------
    runs : sequence of array_like of int
        Class labels of the same image from each run (e.g. seeds 0, 1, 2), one shape.
        Never modified. Label 0 of the first run (pixels left out) stays out.
    background, image, scribbles
        The background rule of every run, as in `to_objects`.
    ndim : {2, 3}, optional
        As in `to_objects`: trailing axes that form one image; the vote is per pixel.
    **options
        Further keyword arguments of `to_objects` (``min_size``, ``split_touching``,
        ``split_seeds``, ``min_distance``, ``spacing``, ``fill``; seeds from the image use
        `image`); not ``per_class`` (the vote keeps two classes only).

    Returns
    -------
    numpy.ndarray
        int32 objects of the runs' shape, as `to_objects` returns them.

    Raises
    ------
    ValueError
        No runs, runs of different shapes, ``per_class``, or what `to_objects` refuses.
    """
    if "per_class" in options:
        raise ValueError("consensus_objects votes on background against foreground only: "
                         "per_class is not available; call to_objects on one run for it.")
    arrays = [np.asarray(run) for run in runs]
    if not arrays:
        raise ValueError("consensus_objects needs the labels of at least one run.")
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(
            f"every run must have the same shape; got {sorted({a.shape for a in arrays})}."
        )
    if not all(np.issubdtype(a.dtype, np.integer) or a.dtype == bool for a in arrays):
        raise ValueError("labels must be integers (class ids).")
    ndim = _check_ndim(ndim, shape)
    choose = _background_rule(background, image,
                              _scribble_marks(scribbles, background, shape), shape)
    votes = np.zeros(shape, np.int32)
    for labels in arrays:
        for lead in np.ndindex(*shape[: len(shape) - ndim]):
            block = labels[lead]
            votes[lead] += np.isin(block, choose(block, lead)) | (block == 0)
    # 1 = background by majority, 2 = foreground; 0 where the first run left pixels out.
    two_classes = np.where(2 * votes > len(arrays), 1, 2).astype(np.int32)
    two_classes[arrays[0] == 0] = 0
    if options.get("split_seeds", "distance") != "distance":
        options["image"] = image
    return to_objects(two_classes, background=1, ndim=ndim, **options)


def check_runs(runs: Any, objects: bool, per_class: bool = False) -> None:
    """Check a number of runs for `consensus_objects` before any training.

    Parameters
    ----------
    runs : int
        Networks to train (``segment(runs=)``, ``--runs``); a positive integer.
    objects : bool
        Whether objects are made (more than one run is only for their vote).
    per_class : bool
        Whether objects per class are asked for (the vote keeps two classes only).

    Raises
    ------
    ValueError
        Naming the problem and the way out.
    """
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}.")
    if runs > 1 and not objects:
        raise ValueError(
            f"runs={runs} combines the runs' objects by majority vote; ask for objects "
            "(objects=True, --objects) when training (class labels of different runs are "
            "not numbered alike and are not combined), or use one run."
        )
    if runs > 1 and per_class:
        raise ValueError(
            f"runs={runs} votes on background against foreground, so per_class is not "
            "available with it; use one run for objects per class."
        )


def _check_ndim(ndim: int | None, shape: tuple[int, ...]) -> int:
    """The number of trailing axes of one image (2 or 3), or `ValueError`."""
    ndim = len(shape) if ndim is None else int(ndim)
    if ndim not in (2, 3) or len(shape) < ndim:
        raise ValueError(
            f"objects are found in 2-D or 3-D images; got ndim={ndim} for labels of shape "
            f"{shape} (pass ndim=2 or 3 to handle the leading axes one by one)."
        )
    return ndim


def _scribble_marks(
    scribbles: np.ndarray | None, background: object, shape: tuple[int, ...]
) -> np.ndarray | None:
    """The scribbles the background rule uses (None when not used), shape checked."""
    if scribbles is None or background is not None:
        return None
    marks = np.asarray(scribbles)
    if marks.shape != shape:
        raise ValueError(f"scribbles have shape {marks.shape} but the labels {shape}.")
    return marks


def _background_rule(
    background: object, image: np.ndarray | None, marks: np.ndarray | None,
    shape: tuple[int, ...],
) -> Callable[[np.ndarray, tuple[int, ...]], list[int]]:
    """``choose(block, lead)``: the background classes of one image (see `to_objects`)."""
    named = isinstance(background, str)
    if named and background not in (MEMBRANES, *BY_INTENSITY):
        raise ValueError(
            f"background must be class id(s), {MEMBRANES!r}, 'bright' or 'dark', got "
            f"{background!r}."
        )
    intensity = _intensity(image, shape) if needs_image({"background": background}) else None
    explicit = (None if background is None or named
                else [int(i) for i in np.atleast_1d(background)])

    def choose(block: np.ndarray, lead: tuple[int, ...]) -> list[int]:
        if intensity is not None:
            return classes_by_intensity(block, intensity[lead], bright=background == "bright")
        if named:
            return [membrane_class(block)]
        if explicit is None:
            return [choose_background(block, None if marks is None else marks[lead])]
        return explicit

    return choose


def needs_image(options: dict[str, Any]) -> bool:
    """Whether `to_objects` with these keyword arguments needs the image.

    It does for ``background="bright"`` or ``"dark"`` and for seeds from the image
    (``split_seeds="dark"`` or ``"bright"``, with the split on).
    """
    background = options.get("background")
    return (isinstance(background, str) and background in BY_INTENSITY) or (
        options.get("split_touching", True)
        and options.get("split_seeds", "distance") != "distance"
    )


def membrane_class(labels: np.ndarray) -> int:
    """The membrane class of cells between stained membranes: a thin network through the image.

    Parameters
    ----------
    labels : array_like of int
        Class labels, 2-D or 3-D (0 is ignored).

    Returns
    -------
    int
        Of the classes whose largest connected region (face connectivity) spans the
        largest box (the membrane network reaches across the image, a cell does not), the
        thinnest: the smallest mean distance of its pixels to the class's edge (ties: the
        smaller id). 0 when `labels` holds only 0.
    """
    from scipy import ndimage as ndi

    array = np.asarray(labels)
    best, best_key = 0, None
    for value in np.unique(array[array != 0]):
        mask = array == value
        regions, _ = ndi.label(mask)
        largest = int(np.argmax(np.bincount(regions.ravel())[1:])) + 1
        box = ndi.find_objects(regions)[largest - 1]
        extent = math.prod(s.stop - s.start for s in box)
        thickness = float(ndi.distance_transform_edt(mask)[mask].mean())
        key = (-extent, thickness)
        if best_key is None or key < best_key:
            best, best_key = int(value), key
    return best


def classes_by_intensity(labels: np.ndarray, image: np.ndarray, *, bright: bool) -> list[int]:
    """The classes brighter (or darker) on average than the image: stained membranes.

    Parameters
    ----------
    labels : array_like of int
        Class labels (0 is ignored).
    image : array_like
        Grey image of `labels`' shape.
    bright : bool
        True: the classes whose mean intensity is above the mean over the labelled pixels
        (fluorescence: the stained membranes and any bright stain); False: below it (EM:
        the dark membranes).

    Returns
    -------
    list of int
        The class ids, ascending; never every class (of classes with equal means none is
        chosen), empty when `labels` holds only 0.
    """
    array = np.asarray(labels)
    values = np.asarray(image, dtype=np.float64)
    inside = array != 0
    ids, index = np.unique(array[inside], return_inverse=True)
    if ids.size == 0:
        return []
    counts = np.bincount(index, minlength=ids.size)
    means = np.bincount(index, weights=values[inside], minlength=ids.size) / counts
    overall = float(values[inside].mean())
    chosen = means > overall if bright else means < overall
    return [int(value) for value in ids[chosen]]


def choose_background(labels: np.ndarray, scribbles: np.ndarray | None = None) -> int:
    """The background class of a 2-D or 3-D class label image.

    Parameters
    ----------
    labels : array_like of int
        Class labels (0 is ignored: it is background anyway).
    scribbles : array_like of int, optional
        Of `labels`' shape: the class under most pixels painted with label 1 wins.

    Returns
    -------
    int
        With scribbles painted 1: the most frequent class under them. Otherwise the class
        covering the largest share of the image border (every face of the image), ties
        broken by the larger class, then the smaller id: cells and nuclei lie in a
        background that surrounds them and touch the border only where they are cut,
        while they may cover most of the image. 0 when `labels` holds only 0.
    """
    array = np.asarray(labels)
    if scribbles is not None:
        under = array[(np.asarray(scribbles) == 1) & (array != 0)]
        if under.size:
            ids, counts = np.unique(under, return_counts=True)
            return int(ids[np.argmax(counts)])  # ties: the smaller id
    edge = np.zeros(array.shape, bool)
    for axis in range(array.ndim):
        index = [slice(None)] * array.ndim
        for end in (0, -1):
            index[axis] = end
            edge[tuple(index)] = True
    ids, border = np.unique(array[edge], return_counts=True)
    border = border[ids != 0]
    ids = ids[ids != 0]
    if ids.size == 0:  # a border of label 0 only: the largest class
        ids, sizes = np.unique(array[array != 0], return_counts=True)
        return int(ids[np.argmax(sizes)]) if ids.size else 0
    tied = ids[border == border.max()]
    sizes = [np.count_nonzero(array == value) for value in tied]
    return int(tied[np.argmax(sizes)])  # ties: the smaller id


# -- internals -----------------------------------------------------------------------------
def _intensity(image: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`image` as grey values of `shape` (channels on a last axis averaged)."""
    if image is None:
        raise ValueError(
            "background='bright' or 'dark' chooses the classes by the image's intensity: "
            "pass the image segmented as image=."
        )
    values = np.asarray(image)
    if values.shape != shape and values.shape[:-1] == shape:
        values = values.mean(axis=-1)
    if values.shape != shape:
        raise ValueError(
            f"image has shape {values.shape} but the labels {shape}: pass the image that "
            "was segmented (channels, if any, on its last axis)."
        )
    return values


def _seed_image(split_seeds: str, image: np.ndarray | None, shape: tuple[int, ...], ndim: int,
                scale: np.ndarray) -> np.ndarray | None:
    """The image whose maxima seed the split, in 1..2 (None: the distance's maxima)."""
    if split_seeds == "distance":
        return None
    if image is None:
        raise ValueError(
            f"split_seeds={split_seeds!r} places the seeds at the image's {split_seeds}est "
            "points: pass the image segmented as image=, or use split_seeds='distance'."
        )
    from scipy import ndimage as ndi

    values = _intensity(image, shape).astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("image has NaN or infinite values; seeds from the image need "
                         "finite values (replace them, or use split_seeds='distance').")
    sigma = (0.0,) * (len(shape) - ndim) + tuple(IMAGE_SEED_SIGMA / scale)
    smooth = ndi.gaussian_filter(values, sigma)
    if split_seeds == "dark":
        smooth = -smooth
    low, high = smooth.min(), smooth.max()
    return 1.0 + (smooth - low) / (high - low if high > low else 1.0)


def _relative_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Spacing divided by its smallest entry (ones without spacing)."""
    if spacing is None:
        return np.ones(ndim)
    scale = np.asarray(spacing, dtype=float).ravel()
    if scale.size != ndim or not np.all(scale > 0) or not np.all(np.isfinite(scale)):
        raise ValueError(
            f"spacing must hold {ndim} positive sizes (one per axis of an image), got "
            f"{tuple(spacing)}."
        )
    return scale / scale.min()


def _fill(objects: np.ndarray, allowed: np.ndarray, distance: float,
          scale: np.ndarray) -> np.ndarray:
    """Background pixels of `allowed` within `distance` of an object join the nearest one."""
    from skimage.segmentation import expand_labels

    if not objects.any():
        return objects
    grown = expand_labels(objects, distance=min(distance, float(np.sum(
        np.asarray(objects.shape) * scale))), spacing=scale)
    return _relabel(np.where(allowed, grown, objects), 1)  # first pixels moved: renumber


def _block_objects(
    labels: np.ndarray,
    background: list[int],
    per_class: bool,
    min_size: int,
    split_touching: bool,
    scale: np.ndarray,
    min_distance: float,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """Objects of one 2-D or 3-D image, numbered 1..N in raster order.

    `centres`: where given, the split's seeds are its maxima instead of the distance's.
    """
    from scipy import ndimage as ndi

    classes = np.unique(labels)
    classes = classes[(classes != 0) & ~np.isin(classes, background)]
    out = np.zeros(labels.shape, np.int64)
    if classes.size == 0:
        return out.astype(np.int32)
    # 1..F for the foreground classes (per class) or 1 for all of them, 0 elsewhere.
    dense = np.searchsorted(classes, labels).clip(0, classes.size - 1)
    dense = np.where(classes[dense] == labels, dense + 1 if per_class else 1, 0)
    offset = 0
    for value, box in enumerate(ndi.find_objects(dense), 1):
        if box is None:
            continue
        # The bounding box grown by one pixel: the distance transform then sees the edges
        # as in the whole image.
        region = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        mask = dense[region] == value
        pieces = _split(mask, min_size, split_touching, scale, min_distance,
                        None if centres is None else centres[region])
        inside = pieces > 0
        out[region][inside] = pieces[inside] + offset
        offset += int(pieces.max(initial=0))
    return _relabel(out, min_size)


def _split(
    mask: np.ndarray,
    min_size: int,
    split_touching: bool,
    scale: np.ndarray,
    min_distance: float,
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """The objects of one foreground mask: its components, split at their necks.

    Seeds: the distance transform's maxima, or those of `centres` (at least 1 inside).
    """
    from scipy import ndimage as ndi

    components, n = ndi.label(mask)
    if not split_touching or n == 0:
        return components
    from skimage.segmentation import watershed

    # Holes smaller than an object (noise specks of another class) would attract seeds
    # around them: the distance is measured as if they were filled.
    holes, n_holes = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
    small = np.bincount(holes.ravel(), minlength=n_holes + 1) < max(min_size, 1)
    small[0] = False
    distance = ndi.distance_transform_edt(mask | small[holes], sampling=scale)
    if centres is None:
        seeds = _seeds(distance, components, scale, min_distance)
    else:
        seeds = _seeds(centres, components, scale, min_distance, CENTRE_DEPTH)
    pieces = watershed(-distance, seeds, mask=mask)
    # A component without a seed (none found in it) stays one object.
    missing = mask & (pieces == 0)
    if missing.any():
        pieces = np.where(missing, components + pieces.max(), pieces)
    return pieces


def _seeds(
    distance: np.ndarray,
    components: np.ndarray,
    scale: np.ndarray,
    min_distance: float,
    depth: float = SEED_DEPTH,
) -> np.ndarray:
    """Watershed markers 1..S: the maxima of the distance, at least `min_distance` apart.

    Candidates are the maxima that rise at least `depth` above the pass to a higher
    one (`h_maxima`, ties broken in raster order): a plateau or ridge is one candidate, a
    wobble of a noisy edge none. `distance` is positive inside the components. Then,
    highest first (ties: raster order), a candidate closer than `min_distance` (physical,
    in finest-axis pixels) to a kept one of its component is dropped.
    """
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree
    from skimage.morphology import h_maxima

    # A ramp far below the distance's resolution breaks ties (raster order), so that of two
    # equal maxima joined by a high pass only one is a maximum of its own.
    ramp = np.arange(distance.size, dtype=float).reshape(distance.shape) * (1e-6 / distance.size)
    ranked = np.where(components > 0, distance + ramp, 0.0)
    tops, n = ndi.label(h_maxima(ranked, depth).astype(bool) & (components > 0),
                        structure=np.ones((3,) * distance.ndim, bool))
    if n == 0:
        return tops
    # Each top's highest pixel (the first in raster order): sorting the few top pixels.
    flat = np.flatnonzero(tops)
    top_of, height = tops.ravel()[flat], distance.ravel()[flat]
    first = np.lexsort((flat, -height, top_of))
    first = first[np.r_[True, top_of[first][1:] != top_of[first][:-1]]]
    index, heights = top_of[first], height[first]
    where = np.column_stack(np.unravel_index(flat[first], distance.shape))
    order = np.lexsort((flat[first], -heights))
    # Components far apart in an extra coordinate: no seed suppresses another component's.
    far = 2.0 * (min_distance + float(np.sum(np.asarray(distance.shape) * scale)))
    points = np.column_stack([where[order] * scale, components[tuple(where[order].T)] * far])
    keep = np.ones(n, bool)
    for i, near in enumerate(cKDTree(points).query_ball_point(points, r=min_distance)):
        if keep[i]:
            keep[[j for j in near if j > i]] = False
    new = np.zeros(n + 1, np.int32)
    new[index[order][keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[tops]


def _relabel(objects: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects under `min_size` and number the others 1..N in raster order."""
    flat = objects.ravel()
    ids, first, counts = np.unique(flat, return_index=True, return_counts=True)
    keep = (ids != 0) & (counts >= min_size)
    order = np.argsort(first[keep], kind="stable")
    new = np.zeros(ids.size, np.int32)
    new[np.flatnonzero(keep)[order]] = np.arange(1, order.size + 1, dtype=np.int32)
    return new[np.searchsorted(ids, flat)].reshape(objects.shape)
