"""Optional checks on the development evaluation data (../shared/data); skipped when absent."""

from __future__ import annotations

import numpy as np

from napari_kanezaki import Segmenter, STConfig
from napari_kanezaki.imaging.images import scribbles_from_published
from napari_kanezaki.imaging.io import read_image


def test_paper_scribbles_keep_their_classes_on_a_voc_image(shared_data):
    image = read_image(shared_data / "voc2012/JPEGImages/2007_001774.jpg")
    published = read_image(shared_data / "voc2012/scribbles/2007_001774_scribble.png")
    scribbles = scribbles_from_published(published)
    assert scribbles.shape == image.shape[:2] and scribbles.max() > 1
    seg = Segmenter(STConfig(max_iter=15), device="cpu", seed=0)
    for _ in seg.run(image, scribbles):
        pass
    labels = seg.predict(image)
    scribbled = scribbles > 0
    # after a short run most scribbled pixels already carry their class id
    assert np.mean(labels[scribbled] == scribbles[scribbled]) > 0.9
    assert set(np.unique(scribbles[scribbled])) <= set(np.unique(labels))


def test_uint8_em_slice_segments_into_a_few_materials(shared_data):
    image = read_image(shared_data / "microscopy/isbi2012_em/image/0.png")[:192, :192]
    seg = Segmenter(STConfig(max_iter=30), device="cpu", seed=0)
    states = list(seg.run(image))
    labels = seg.predict(image)
    assert labels.shape == image.shape and states[-1].n_labels >= 2
