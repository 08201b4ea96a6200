"""The project's training computes what the published code computes.

Each test re-states a published loop independently, in plain PyTorch and NumPy, the way
the published scripts write it (Kanezaki 2018 ``demo.py``; Kim, Kanezaki & Tanaka 2020
``demo.py`` and ``demo_ref.py``; summarised in the project's REFERENCE.md): the network as
``conv1/bn1/conv2[]/bn2[]/conv3/bn3`` modules, ``nn.CrossEntropyLoss``, ``nn.L1Loss`` against
zero targets, ``torch.optim.SGD(lr, momentum=0.9)``, ``torch.max`` as the argmax and the
per-superpixel majority vote as a Python loop over ``np.unique`` histograms.

Both sides run in float64 on the CPU and start from the same initial weights (the project's
seeded `build_network`, copied into the independent network), so a difference can only come
from the loop: the label count of every iteration (taken before its update), the number of
updates and the final parameters and BatchNorm buffers must agree.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from skimage.segmentation import slic
from torch import nn

from napari_kanezaki import Segmenter, SPConfig, STConfig
from napari_kanezaki.core import devices
from napari_kanezaki.core import segmenter as segmenter_module
from napari_kanezaki.core.network import build_network
from napari_kanezaki.imaging.samples import noisy_regions

#: Largest allowed absolute difference of any final parameter or buffer.
TOLERANCE = 1e-6
SHAPE = (24, 32)


# -- the published code, re-stated --------------------------------------------------------
class PublishedNet(nn.Module):
    """``MyNet`` of the published demos (ModuleList version: every layer trains)."""

    def __init__(self, input_dim: int, n_channel: int, n_conv: int) -> None:
        super().__init__()
        self.n_conv = n_conv
        self.conv1 = nn.Conv2d(input_dim, n_channel, kernel_size=3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(n_channel)
        self.conv2 = nn.ModuleList()
        self.bn2 = nn.ModuleList()
        for _ in range(n_conv - 1):
            self.conv2.append(nn.Conv2d(n_channel, n_channel, kernel_size=3, stride=1, padding=1))
            self.bn2.append(nn.BatchNorm2d(n_channel))
        self.conv3 = nn.Conv2d(n_channel, n_channel, kernel_size=1, stride=1, padding=0)
        self.bn3 = nn.BatchNorm2d(n_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = nn.functional.relu(x)
        x = self.bn1(x)
        for i in range(self.n_conv - 1):
            x = self.conv2[i](x)
            x = nn.functional.relu(x)
            x = self.bn2[i](x)
        x = self.conv3(x)
        x = self.bn3(x)
        return x

    def project_key(self, key: str) -> str:
        """Name of the same tensor in the project's ``KanezakiNet`` (an nn.Sequential)."""
        m = self.n_conv
        module, rest = key.split(".", 1)
        if module in ("conv2", "bn2"):
            index, rest = rest.split(".", 1)
            block = int(index) + 1
            position = 3 * block + (0 if module == "conv2" else 2)
        else:
            position = {"conv1": 0, "bn1": 2, "conv3": 3 * m, "bn3": 3 * m + 1}[module]
        return f"layers.{position}.{rest}"

    def copy_from(self, project_model: nn.Module) -> None:
        """Take the project model's weights and buffers, tensor by tensor (shapes checked)."""
        theirs = project_model.state_dict()
        mine = self.state_dict()
        assert len(theirs) == len(mine), "the project's network has other tensors"
        self.load_state_dict({k: theirs[self.project_key(k)].clone() for k in mine}, strict=True)

    def max_difference(self, project_model: nn.Module) -> float:
        theirs = project_model.state_dict()
        return max(
            float((v.double() - theirs[self.project_key(k)].double()).abs().max())
            for k, v in self.state_dict().items()
        )


def published_data(images: list[np.ndarray]) -> torch.Tensor:
    """``np.array([im.transpose((2, 0, 1)).astype('float32') / 255.])``, then float64."""
    array = np.array([im.transpose((2, 0, 1)).astype("float32") / 255.0 for im in images])
    assert array.dtype == np.float32  # as published: the division stays in float32
    return torch.from_numpy(array).double()


def published_vote(im_target: np.ndarray, l_inds: list[np.ndarray]) -> np.ndarray:
    """The published superpixel refinement, in place: each superpixel's majority label."""
    for inds in l_inds:
        labels_per_sp = im_target[inds]
        u_labels_per_sp = np.unique(labels_per_sp)
        hist = np.zeros(len(u_labels_per_sp))
        for j in range(len(hist)):
            hist[j] = len(np.where(labels_per_sp == u_labels_per_sp[j])[0])
        im_target[inds] = u_labels_per_sp[np.argmax(hist)]  # ties: the smallest label
    return im_target


def published_sp(model, image, sp_labels, *, n_channel, max_iter, min_labels, lr=0.1):
    """ICASSP 2018 ``demo.py``: argmax, superpixel majority vote, CE, SGD, label-count stop.

    Returns the label count of every iteration and the count after refinement.
    """
    data = published_data([image])
    labels = sp_labels.reshape(-1)
    u_labels = np.unique(labels)
    l_inds = [np.where(labels == u)[0] for u in u_labels]
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    counts, refined_counts = [], []
    for _ in range(max_iter):
        optimizer.zero_grad()
        output = model(data)[0]
        output = output.permute(1, 2, 0).contiguous().view(-1, n_channel)
        _, target = torch.max(output, 1)
        im_target = target.data.cpu().numpy().copy()
        n_labels = len(np.unique(im_target))
        published_vote(im_target, l_inds)
        loss = loss_fn(output, torch.from_numpy(im_target))
        loss.backward()
        optimizer.step()
        counts.append(n_labels)
        refined_counts.append(len(np.unique(im_target)))
        if n_labels <= min_labels:
            break
    return counts, refined_counts


def published_st(model, image, *, n_channel, max_iter, min_labels, scribble=None,
                 w_sim=1.0, w_con=1.0, w_scr=0.5, lr=0.1):
    """TIP 2020 ``demo.py``; `scribble` in the published format (uint8, 255 = unlabelled)."""
    data = published_data([image])
    height, width = image.shape[:2]
    if scribble is not None:
        mask = scribble.reshape(-1)
        mask_inds = np.unique(mask)
        mask_inds = np.delete(mask_inds, np.argwhere(mask_inds == 255))
        inds_sim = torch.from_numpy(np.where(mask == 255)[0])
        inds_scr = torch.from_numpy(np.where(mask != 255)[0])
        target_scr = torch.from_numpy(mask.astype(np.int64))
        min_labels = len(mask_inds)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn_scr = nn.CrossEntropyLoss()
    loss_hpy = nn.L1Loss()
    loss_hpz = nn.L1Loss()
    hpy_target = torch.zeros(height - 1, width, n_channel)
    hpz_target = torch.zeros(height, width - 1, n_channel)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    counts = []
    for _ in range(max_iter):
        optimizer.zero_grad()
        output = model(data)[0]
        output = output.permute(1, 2, 0).contiguous().view(-1, n_channel)
        output_hp = output.reshape((height, width, n_channel))
        hpy = output_hp[1:, :, :] - output_hp[0:-1, :, :]
        hpz = output_hp[:, 1:, :] - output_hp[:, 0:-1, :]
        lhpy = loss_hpy(hpy, hpy_target)
        lhpz = loss_hpz(hpz, hpz_target)
        _, target = torch.max(output, 1)
        n_labels = len(np.unique(target.data.cpu().numpy()))
        if scribble is not None:
            loss = (w_sim * loss_fn(output[inds_sim], target[inds_sim])
                    + w_scr * loss_fn_scr(output[inds_scr], target_scr[inds_scr])
                    + w_con * (lhpy + lhpz))
        else:
            loss = w_sim * loss_fn(output, target) + w_con * (lhpy + lhpz)
        loss.backward()
        optimizer.step()
        counts.append(n_labels)
        if n_labels <= min_labels:
            break
    return counts


def published_reference(model, images, *, n_channel, batch_size, epochs, max_update,
                        w_sim=1.0, w_con=5.0, lr=0.1):
    """TIP 2020 ``demo_ref.py`` (no resizing): ONE optimiser for the whole fit,
    ``int(len(images) / batch_size)`` batches (a partial last batch is dropped), no stop rule.

    Returns the label count (over the whole batch) of every update.
    """
    height, width = images[0].shape[:2]
    loss_fn = nn.CrossEntropyLoss()
    loss_hpy = nn.L1Loss()
    loss_hpz = nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    counts = []
    for _ in range(epochs):
        for batch_idx in range(int(len(images) / batch_size)):
            data = published_data(images[batch_idx * batch_size : (batch_idx + 1) * batch_size])
            hpy_target = torch.zeros(batch_size, height - 1, width, n_channel)
            hpz_target = torch.zeros(batch_size, height, width - 1, n_channel)
            for _ in range(max_update):
                optimizer.zero_grad()
                output = model(data)
                output = output.permute(0, 2, 3, 1).contiguous().view(-1, n_channel)
                output_hp = output.reshape((batch_size, height, width, n_channel))
                hpy = output_hp[:, 1:, :, :] - output_hp[:, 0:-1, :, :]
                hpz = output_hp[:, :, 1:, :] - output_hp[:, :, 0:-1, :]
                lhpy = loss_hpy(hpy, hpy_target)
                lhpz = loss_hpz(hpz, hpz_target)
                _, target = torch.max(output, 1)
                counts.append(len(np.unique(target.data.cpu().numpy())))
                loss = w_sim * loss_fn(output, target) + w_con * (lhpy + lhpz)
                loss.backward()
                optimizer.step()
    return counts


# -- harness ------------------------------------------------------------------------------
@pytest.fixture
def float64(monkeypatch):
    """Run the project in float64, so that both sides agree to far better than 1e-6.

    With float64 as the default dtype, `build_network` creates float64 layers (and
    `pixel_weights` float64 weights). The project's inputs are cast to float32 by
    `core.devices.to_device`; a test-only substitute casts them to float64 instead (the
    float32 values of ``uint8 / 255`` convert exactly, and the published code's inputs are
    those same float32 values). It replaces the function in `core.devices` and the name
    `core.segmenter` imported from it, through which every training input passes.
    """

    def to_device_float64(batch: np.ndarray, device: torch.device) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float64))
        return tensor.to(device).contiguous(memory_format=devices.memory_format(tensor.ndim))

    monkeypatch.setattr(devices, "to_device", to_device_float64)
    monkeypatch.setattr(segmenter_module, "to_device", to_device_float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def image(seed: int) -> np.ndarray:
    return noisy_regions(SHAPE, noise=0.1, seed=seed)[0]


def published_twin(config, seed: int, in_channels: int = 3) -> tuple[PublishedNet, dict]:
    """The independent network holding the initial weights the project's run starts from."""
    project_initial = build_network(in_channels, config.n_channels, config.n_conv,
                                    spatial_dims=2, seed=seed, device=torch.device("cpu"))
    twin = PublishedNet(in_channels, config.n_channels, config.n_conv)
    twin.copy_from(project_initial)
    assert next(twin.parameters()).dtype == torch.float64
    return twin, {k: v.clone() for k, v in twin.state_dict().items()}


def project_segmenter(config, seed: int) -> Segmenter:
    return Segmenter(config, device="cpu", precision="fp32", seed=seed)


def assert_same_final_weights(twin: PublishedNet, initial: dict, seg: Segmenter) -> None:
    assert next(seg.model.parameters()).dtype == torch.float64  # the fixture took effect
    assert twin.max_difference(seg.model) <= TOLERANCE
    moved = max(float((v.double() - initial[k].double()).abs().max())
                for k, v in twin.state_dict().items())
    assert moved > 1e3 * TOLERANCE  # training did change the weights


# -- the tests ----------------------------------------------------------------------------
def test_same_weights_give_the_same_response(float64):
    config = STConfig(n_channels=12, n_conv=3)
    twin, _ = published_twin(config, seed=5)
    project = build_network(3, 12, 3, spatial_dims=2, seed=5, device=torch.device("cpu"))
    x = published_data([image(0)])
    torch.testing.assert_close(project(x), twin(x), rtol=0, atol=1e-12)


def test_sp_with_slic_matches_the_published_loop(float64):
    config = SPConfig(n_channels=16, n_conv=2, max_iter=12, min_labels=1,
                      superpixel="slic", n_segments=100, compactness=10)
    img = image(1)
    # superpixels once, before training, as published: SLIC on the 8-bit RGB image
    sp_labels = slic(img, n_segments=config.n_segments, compactness=config.compactness)
    twin, initial = published_twin(config, seed=3)
    counts, refined = published_sp(twin, img, sp_labels, n_channel=16, max_iter=12,
                                   min_labels=1)
    seg = project_segmenter(config, seed=3)
    states = list(seg.run(img))
    assert len(counts) == 12 and [s.n_labels for s in states] == counts
    # the vote changes the label count on this image: counting after it would show
    assert refined != counts
    assert_same_final_weights(twin, initial, seg)


def test_superpixel_vote_matches_the_published_loop_ties_included():
    from napari_kanezaki.core.superpixels import refine_by_superpixels

    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(12, 16))
    # 48 superpixels of 4 pixels each, ids shuffled: many 2-2 and 1-1-1-1 ties
    superpixels = rng.permutation(48)[np.arange(12 * 16).reshape(12, 16) // 4]
    flat = superpixels.reshape(-1)
    l_inds = [np.where(flat == u)[0] for u in np.unique(flat)]
    ties = sum(np.sort(np.bincount(target.reshape(-1)[i]))[-2:].tolist() in ([1, 1], [2, 2])
               for i in l_inds)
    assert ties >= 10
    expected = published_vote(target.reshape(-1).copy(), l_inds).reshape(target.shape)
    refined = refine_by_superpixels(torch.from_numpy(target), torch.from_numpy(superpixels),
                                    48, 5)
    np.testing.assert_array_equal(refined.numpy(), expected)


@pytest.mark.parametrize("n_conv", [2, 3])
def test_st_matches_the_published_loop(float64, n_conv):
    config = STConfig(n_channels=16, n_conv=n_conv, max_iter=12, min_labels=1)
    img = image(2)
    twin, initial = published_twin(config, seed=7)
    counts = published_st(twin, img, n_channel=16, max_iter=12, min_labels=1)
    seg = project_segmenter(config, seed=7)
    states = list(seg.run(img))
    assert len(counts) == 12 and [s.n_labels for s in states] == counts
    assert_same_final_weights(twin, initial, seg)


def test_st_with_scribbles_matches_the_published_loop(float64):
    config = STConfig(n_channels=16, max_iter=12, min_labels=1, w_scr=0.7)
    img, truth = noisy_regions(SHAPE, noise=0.1, seed=4)
    scribbles = np.zeros(SHAPE, np.int32)  # napari: 0 = unlabelled, k = class k
    scribbles[2, 3:20] = 1
    scribbles[5:7, 9:11] = 2
    scribbles[17, 16:26] = 9
    assert all((truth[scribbles == k] == t).all() for k, t in [(1, 1), (2, 2), (9, 3)])
    # published format: 255 = unlabelled, every other value a class (channel) index
    published_mask = np.where(scribbles == 0, 255, scribbles).astype(np.uint8)
    twin, initial = published_twin(config, seed=11)
    counts = published_st(twin, img, n_channel=16, max_iter=12, min_labels=1,
                          scribble=published_mask, w_scr=0.7)
    seg = project_segmenter(config, seed=11)
    states = list(seg.run(img, scribbles))
    # min_labels became the 3 scribbled classes on both sides; the counts stay above it
    assert len(counts) == 12 and [s.n_labels for s in states] == counts
    assert seg.keep_ids == (1, 2, 9)
    assert_same_final_weights(twin, initial, seg)


@pytest.mark.parametrize(
    ("n_images", "batch_size", "n_epochs", "max_update"),
    [
        (1, 1, 1, 10),  # one batch: the optimiser question does not arise
        (2, 1, 2, 3),  # momentum must carry over from batch to batch and epoch to epoch
    ],
)
def test_reference_mode_matches_the_published_loop(float64, n_images, batch_size, n_epochs,
                                                   max_update):
    config = STConfig(n_channels=12, w_con=5.0, ref_size=0, batch_size=batch_size,
                      n_epochs=n_epochs, max_update=max_update)
    images = [image(10 + i) for i in range(n_images)]
    twin, initial = published_twin(config, seed=2)
    counts = published_reference(twin, images, n_channel=12, batch_size=batch_size,
                                 epochs=n_epochs, max_update=max_update, w_con=5.0)
    seg = project_segmenter(config, seed=2)
    states = list(seg.fit_iter(images))
    assert len(counts) == n_epochs * (n_images // batch_size) * max_update >= 10
    assert [s.n_labels for s in states] == counts
    assert states[-1].max_iter == len(counts) and states[-1].done
    assert_same_final_weights(twin, initial, seg)


def test_reference_mode_drops_a_partial_last_batch(float64):
    config = STConfig(n_channels=8, w_con=5.0, ref_size=0, batch_size=2, n_epochs=1,
                      max_update=4)
    images = [image(20 + i) for i in range(3)]  # int(3 / 2) = 1 batch; the third is unused
    twin, initial = published_twin(config, seed=4)
    counts = published_reference(twin, images, n_channel=8, batch_size=2, epochs=1,
                                 max_update=4, w_con=5.0)
    seg = project_segmenter(config, seed=4)
    states = list(seg.fit_iter(images))
    assert len(counts) == 4
    assert [s.n_labels for s in states] == counts
    assert_same_final_weights(twin, initial, seg)


def test_key_mapping_covers_every_layer():
    twin = PublishedNet(3, 4, 3)
    keys = {twin.project_key(k) for k in twin.state_dict()}
    project = build_network(3, 4, 3, spatial_dims=2, seed=0, device=torch.device("cpu"))
    assert keys == set(project.state_dict())
    assert all(re.fullmatch(r"layers\.\d+\.\w+", k) for k in keys)
