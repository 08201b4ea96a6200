"""Stacks and volumes: the three stack modes, multichannel inputs, anisotropy, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from napari_kanezaki import ImageError, SPConfig, STConfig, segment
from napari_kanezaki.workflows.stacks import run_to_end, segment_iter

FAST = {"device": "cpu", "precision": "fp32"}
# Tuned on the volume below: SP with supervoxels stops at 3 labels in ~20-40 updates.
SP3D = SPConfig(n_channels=32, max_iter=60, n_segments=300, compactness=20)


def blob_volume(shape=(10, 40, 40), noise=0.05, seed=0):
    """Three materials (background and two ellipsoids) in three uint16 channels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    nz, ny, nx = shape
    truth = np.ones(shape, dtype=np.int32)
    first = ((z - 0.35 * nz) / (0.4 * nz)) ** 2 + ((y - 0.3 * ny) / (0.25 * ny)) ** 2
    truth[first + ((x - 0.3 * nx) / (0.25 * nx)) ** 2 < 1] = 2
    second = ((z - 0.65 * nz) / (0.4 * nz)) ** 2 + ((y - 0.7 * ny) / (0.22 * ny)) ** 2
    truth[second + ((x - 0.65 * nx) / (0.28 * nx)) ** 2 < 1] = 3
    colours = np.array([[0, 0, 0], [0.2, 0.3, 0.7], [0.85, 0.3, 0.25], [0.35, 0.75, 0.3]])
    image = colours[truth] + rng.normal(0, noise, (*shape, 3))
    return (np.clip(image, 0, 1) * 65535).astype(np.uint16), truth


def plane_consistency(labels, truth):
    """Among voxel pairs (z, z+1) of the same material, the fraction with the same label."""
    same_truth = truth[1:] == truth[:-1]
    return float(np.mean((labels[1:] == labels[:-1])[same_truth]))


@pytest.fixture(scope="module")
def volume():
    return blob_volume()


@pytest.fixture(scope="module")
def three_d(volume):
    image, _ = volume
    return segment(image, "sp", config=SP3D, stack_mode="3d", channel_axis=-1, seed=0, **FAST)


def test_3d_mode_reaches_the_truth_and_beats_independent_planes(volume, three_d):
    image, truth = volume
    assert three_d.shape == truth.shape and three_d.dtype == np.int32 and three_d.min() >= 1
    assert adjusted_rand_score(truth.ravel(), three_d.ravel()) >= 0.9
    independent = segment(
        image, "sp", config=SP3D.replace(n_segments=40, n_channels=16, max_iter=30), stack_mode="independent",
        channel_axis=-1, seed=0, **FAST,
    )
    assert independent.shape == truth.shape and independent.min() >= 1
    assert plane_consistency(three_d, truth) > plane_consistency(independent, truth)
    assert plane_consistency(three_d, truth) > 0.95


def test_shared_mode_gives_each_material_one_id_in_every_plane():
    # Material sizes change from plane to plane (per-plane numbering would permute ids).
    rng = np.random.default_rng(1)
    truth = np.ones((6, 32, 32), dtype=np.int32)
    for z in range(6):
        truth[z, 4 : 8 + 3 * z, 4:28] = 2
        truth[z, 20:30, 2 : 30 - 4 * z] = 3
    colours = np.array([[0, 0, 0], [0.1, 0.1, 0.8], [0.9, 0.2, 0.1], [0.2, 0.85, 0.2]])
    image = (np.clip(colours[truth] + rng.normal(0, 0.04, (*truth.shape, 3)), 0, 1) * 255)
    image = image.astype(np.uint8)
    config = STConfig(n_channels=16, max_iter=150, w_con=1.0)  # 25 updates per plane
    labels = segment(image, "st", config=config, stack_mode="shared", seed=0, **FAST)
    assert labels.shape == truth.shape
    for material in (1, 2, 3):
        ids = {int(np.bincount(labels[z][truth[z] == material]).argmax()) for z in range(6)}
        assert len(ids) == 1, f"material {material} got ids {ids} across planes"
    majority = {
        m: int(np.bincount(labels[truth == m]).argmax()) for m in (1, 2, 3)
    }
    assert len(set(majority.values())) == 3  # three materials, three ids


def test_four_channel_uint16_stack_and_float_data():
    rng = np.random.default_rng(2)
    truth = np.zeros((4, 24, 24), dtype=int)
    truth[:, :, 12:] = 1
    channels = np.stack([truth * 3000 + 500, (1 - truth) * 2000, truth * 100, rng.integers(0, 50, truth.shape)])
    image = (channels + rng.integers(0, 300, channels.shape)).astype(np.uint16)  # (C, Z, Y, X)
    before = image.copy()
    cfg = STConfig(n_channels=8, max_iter=15, min_labels=1)
    labels = segment(image, config=cfg, stack_mode="independent", channel_axis=0, **FAST)
    assert labels.shape == (4, 24, 24) and labels.min() >= 1
    np.testing.assert_array_equal(image, before)  # the input is never modified
    plane = segment(image[:, 0], config=cfg, channel_axis=0, **FAST)  # 2-D, 4 channels
    assert plane.shape == (24, 24)
    as_float = segment(image.astype(np.float32) / 7.0, config=cfg, stack_mode="3d", channel_axis=0, **FAST)
    assert as_float.shape == (4, 24, 24)


def test_anisotropic_spacing_weights_the_continuity_term():
    from napari_kanezaki.core.training import axis_weights

    assert axis_weights((4.0, 1.0, 2.0), 3) == (0.25, 1.0, 0.5)
    image = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    labels = segment(image, config=STConfig(n_channels=8, max_iter=3), stack_mode="3d",
                     spacing=(4.0, 1.0, 1.0), **FAST)
    assert labels.shape == image.shape
    sp = segment(image, "sp", config=SPConfig(n_channels=8, max_iter=3, n_segments=20), stack_mode="3d",
                 spacing=(4.0, 1.0, 1.0), **FAST)
    assert sp.shape == image.shape


def test_stack_progress_stop_and_time_axis():
    image = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)  # (T, Z, Y, X)

    class StopAfter:
        calls = 0

        def is_set(self):
            return self.calls >= 3

    stop = StopAfter()
    generator = segment_iter(
        image, STConfig(n_channels=8, max_iter=50), stack_mode="independent", stop=stop, **FAST
    )
    steps = []

    def seen(progress):
        stop.calls += 1
        steps.append(progress.step)

    result = run_to_end(generator, seen)
    assert result.stopped and steps == sorted(steps) and steps[-1] < 6 * 50
    assert result.labels[0, 0].min() >= 1 and result.labels[1, 2].max() == 0  # later planes skipped
    volume = run_to_end(
        segment_iter(image, STConfig(n_channels=8, max_iter=4), stack_mode="3d", **FAST)
    )
    assert volume.labels.shape == image.shape and volume.labels.min() >= 1


def test_bad_inputs_are_explained():
    image = np.zeros((16, 16), np.uint8)
    stack = np.zeros((3, 16, 16), np.uint8)
    with pytest.raises(ImageError, match="needs a stack or volume"):
        segment(image, stack_mode="3d")
    with pytest.raises(ImageError, match="choose stack_mode"):
        segment(stack)
    with pytest.raises(ImageError, match="unknown stack_mode"):
        segment(stack, stack_mode="4d")
    with pytest.raises(ImageError, match="channel_axis=5 is out of range"):
        segment(stack, stack_mode="3d", channel_axis=5)
    with pytest.raises(ImageError, match="spacing"):
        segment(stack, stack_mode="3d", spacing=(1.0, 2.0, 3.0, 4.0))
    with pytest.raises(ImageError, match="not supported with stack_mode='shared'"):
        segment(stack, stack_mode="shared", scribbles=np.zeros((3, 16, 16), int))
    with pytest.raises(ValueError, match="2-D only"):
        segment(stack, "sp", stack_mode="3d", superpixel="felzenszwalb", **FAST)


def test_shared_mode_spends_max_iter_updates_over_all_planes():
    from napari_kanezaki import segment_iter

    stack = np.random.default_rng(0).random((16, 20, 20)).astype(np.float32)
    config = STConfig(n_channels=8, max_iter=50, min_labels=1, max_update=1000, n_epochs=3)
    generator = segment_iter(stack, config, stack_mode="shared", **FAST)
    seen = []
    result = run_to_end(generator, seen.append)
    updates = [progress.step for progress in seen if "shared model" in progress.text]
    progress = seen[-1]
    assert len(updates) == 50 and updates[-1] == 50  # max_iter in all, not per plane
    assert progress.total == progress.step  # the progress total was the real step count
    assert result.labels.shape == (16, 20, 20)


def test_shared_mode_stops_on_a_plateau_comparing_each_plane_with_itself():
    from napari_kanezaki import Segmenter
    from napari_kanezaki.imaging.images import NormalizedImage

    planes = [NormalizedImage(np.full((1, 16, 16), v, np.float32)) for v in (0.2, 0.8)]
    config = STConfig(n_channels=4, max_iter=500, plateau_iter=6, plateau_tol=0.0)
    states = list(Segmenter(config, **FAST).fit_in_turn(planes))
    assert states[-1].stop_reason == "plateau" and len(states) < 500
