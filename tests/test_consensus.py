"""Objects by majority vote over runs (`consensus_objects`, ``segment(..., runs=N)``)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kanezaki import consensus_objects, segment, to_objects
from napari_kanezaki.workflows import api


def cells_between_membranes(gap: bool = False, membrane: int = 2) -> np.ndarray:
    """Class labels of four square cells (class 1) between membranes (class `membrane`).

    With `gap`, the membrane between the two top cells has a hole: they merge.
    """
    labels = np.ones((64, 64), np.int32)
    labels[[0, 31, 32, 63], :] = membrane
    labels[:, [0, 31, 32, 63]] = membrane
    if gap:
        labels[10:20, 31:33] = 1
    return labels


def test_the_majority_outvotes_a_run_with_a_gap_in_its_membranes():
    good, also_good, astray = (cells_between_membranes(), cells_between_membranes(membrane=5),
                               cells_between_membranes(gap=True))
    assert to_objects(astray, background=2, split_touching=False).max() == 3  # merged
    runs = [good, astray, also_good]
    before = [run.copy() for run in runs]
    # each run's background by the same rule: here the class spanning the image
    objects = consensus_objects(runs, background="membranes", split_touching=False)
    assert objects.dtype == np.int32 and objects.max() == 4
    np.testing.assert_array_equal(objects, to_objects(good, background=2,
                                                      split_touching=False))
    for run, copy in zip(runs, before, strict=True):
        np.testing.assert_array_equal(run, copy)
    # two runs with gaps against one without: the gap wins (a majority, not a union)
    merged = consensus_objects([astray, astray.copy(), good], background="membranes",
                               split_touching=False)
    assert merged.max() == 3
    # the options reach to_objects
    filled = consensus_objects(runs, background="membranes", split_touching=False,
                               fill=np.inf)
    assert filled.min() >= 1 and filled.max() == 4


def test_background_rules_per_run_and_label_zero():
    # the same partition with the classes numbered differently in each run: by intensity
    image = np.where(cells_between_membranes() == 2, 200, 50).astype(np.uint16)
    runs = [cells_between_membranes(), 3 - cells_between_membranes()]  # 1 <-> 2 swapped
    runs.append(cells_between_membranes())
    objects = consensus_objects(runs, background="bright", image=image,
                                split_touching=False)
    assert objects.max() == 4
    # label 0 (pixels left out) of the first run stays background
    left_out = [run.copy() for run in runs]
    left_out[0][:16] = 0
    cut = consensus_objects(left_out, background="bright", image=image,
                            split_touching=False)
    assert (cut[:16] == 0).all() and cut.max() == 4  # the top cells keep their lower halves


def test_stacks_vote_per_pixel_with_a_background_per_plane():
    planes = np.stack([cells_between_membranes(), cells_between_membranes(membrane=7)])
    astray = np.stack([cells_between_membranes(gap=True)] * 2)
    objects = consensus_objects([planes, astray, planes], background="membranes", ndim=2,
                                split_touching=False)
    assert objects.shape == planes.shape and objects.max() == 8  # 4 per plane, ids go on


def test_refused_inputs_name_the_problem():
    good = cells_between_membranes()
    with pytest.raises(ValueError, match="at least one run"):
        consensus_objects([])
    with pytest.raises(ValueError, match="same shape"):
        consensus_objects([good, good[:10]])
    with pytest.raises(ValueError, match="per_class"):
        consensus_objects([good, good], per_class=True)
    with pytest.raises(ValueError, match="integers"):
        consensus_objects([good, good.astype(float)])
    with pytest.raises(ValueError, match="ndim"):
        consensus_objects([good], ndim=3)


def test_segment_trains_one_network_per_seed_and_votes(monkeypatch):
    seen = []
    outputs = {0: cells_between_membranes(), 1: cells_between_membranes(gap=True),
               2: cells_between_membranes(membrane=5)}

    def fake_segment(image, *args, seed, **kwargs):
        seen.append(seed)
        return outputs[seed - 3 if seed >= 3 else seed]

    monkeypatch.setattr(api, "_segment", fake_segment)
    image = np.zeros((64, 64), np.uint8)
    objects = segment(image, "st", objects=True, runs=3,
                      object_options={"background": "membranes", "split_touching": False})
    assert seen == [0, 1, 2] and objects.max() == 4
    seen.clear()
    segment(image, "st", objects=True, runs=3, seed=3,
            object_options={"background": "membranes"})
    assert seen == [3, 4, 5]
    seen.clear()
    single = segment(image, "st", objects=True, seed=1,
                     object_options={"background": "membranes", "split_touching": False})
    assert seen == [1] and single.max() == 3  # one run: that run's objects


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"runs": 3}, "objects=True"), ({"runs": 0}, "positive integer"),
     ({"runs": 2.0, "objects": True}, "positive integer"),
     ({"runs": 2, "objects": True, "object_options": {"per_class": True}}, "per_class")],
)
def test_segment_refuses_runs_before_training(monkeypatch, kwargs, message):
    monkeypatch.setattr(api, "_segment", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message):
        segment(np.zeros((32, 32), np.uint8), "st", **kwargs)
