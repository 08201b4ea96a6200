"""Objects by majority vote over runs (`consensus_objects`, ``segment(..., runs=N)``)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import exit_status

from napari_kanezaki import consensus_objects, enhance_membranes, segment, to_objects
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


# -- command line and jobs --------------------------------------------------------------------
TINY_ST = ["--method", "st", "--n-channels", "8", "--max-iter", "4", "--device", "cpu",
           "--precision", "fp32", "-q"]


def membrane_image() -> np.ndarray:
    """uint16 cells between bright membranes two pixels thick, with noise."""
    rng = np.random.default_rng(0)
    image = 200 + rng.normal(0, 10, (64, 64))
    for at in (20, 42):
        image[:, at:at + 2] += 300
        image[at:at + 2, :] += 300
    return image.astype(np.uint16)


@pytest.fixture
def seeds_trained(monkeypatch):
    """The seeds of every network the test trains, in order."""
    from napari_kanezaki.core.segmenter import Segmenter

    seen: list[int] = []
    original = Segmenter.__init__

    def init(self, config, *args, seed=0, **kwargs):
        seen.append(seed)
        original(self, config, *args, seed=seed, **kwargs)

    monkeypatch.setattr(Segmenter, "__init__", init)
    return seen


def test_cli_runs_vote_and_trains_on_the_membrane_response(tmp_path, seeds_trained):
    import json

    import tifffile

    from napari_kanezaki import enhance_membranes
    from napari_kanezaki.cli import main

    image = membrane_image()
    tifffile.imwrite(tmp_path / "cells.tif", image)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "cells.tif"), "-o", str(out), *TINY_ST,
                 "--seed", "4", "--objects", "--background", "bright", "--fill", "inf",
                 "--runs", "3", "--enhance-membranes", "bright", "--ridge-sigma", "1.5"]) == 0
    assert seeds_trained[:3] == [4, 5, 6]
    labels = tifffile.imread(out / "cells_labels.tif")
    objects = tifffile.imread(out / "cells_objects.tif")
    seeds_trained.clear()
    # the labels are the first run's, trained on the membrane response
    ridges = enhance_membranes(image, sigma=1.5)
    first = segment(ridges, "st", n_channels=8, max_iter=4, seed=4, device="cpu",
                    precision="fp32")
    np.testing.assert_array_equal(labels, first)
    # the objects are the vote of the three runs
    voted = segment(ridges, "st", n_channels=8, max_iter=4, seed=4, device="cpu",
                    precision="fp32", objects=True, runs=3,
                    object_options={"background": "bright", "fill": np.inf})
    np.testing.assert_array_equal(objects, voted)
    record = json.loads((out / "run.json").read_text())
    assert record["runs"] == 3 and record["membranes"] == "bright"
    assert record["ridge_sigma"] == 1.5
    # the model file carries the filter, and predict applies it again to a new image
    from napari_kanezaki import Segmenter

    model = Segmenter.load(out / "cells_model.pt")
    assert model.membranes == {"bright": True, "sigma": 1.5}
    assert main(["predict", str(out / "cells_model.pt"), str(tmp_path / "cells.tif"),
                 "-o", str(tmp_path / "pred"), "--device", "cpu", "--precision", "fp32",
                 "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "pred" / "cells_labels.tif"),
                                  labels)
    # without the record (a model trained on the intensity) predict sees the intensity
    model.membranes = None
    plain = model.predict(image)
    assert not np.array_equal(plain, labels)


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--runs", "2"], "need --objects"), (["--ridge-sigma", "2"], "needs --enhance"),
     (["--enhance-membranes", "bright", "--channel-axis", "0"], "grey images"),
     (["--objects", "--runs", "0"], "positive number"),
     (["--enhance-membranes", "red"], "invalid choice")],
)
def test_cli_refuses_runs_and_membrane_options_that_do_not_fit(tmp_path, capsys, options,
                                                               message):
    import tifffile

    image = membrane_image()
    if "--channel-axis" in options:  # two channels, the first axis
        image = np.stack([image, image])
    tifffile.imwrite(tmp_path / "cells.tif", image, photometric="minisblack")
    status = exit_status(["segment", str(tmp_path / "cells.tif"), "-o", str(tmp_path / "x"),
                          *TINY_ST, *options])
    assert status == 2 and not (tmp_path / "x").exists()
    assert message in capsys.readouterr().err


def test_stack_jobs_vote_over_runs(tmp_path, seeds_trained):
    import tifffile

    from napari_kanezaki.workflows.jobs import Job, run_job

    volume = np.stack([membrane_image()] * 4)
    tifffile.imwrite(tmp_path / "volume.tif", volume, photometric="minisblack")
    job = Job(name="volume", image=tmp_path / "volume.tif", outdir=tmp_path / "out",
              config={"method": "st", "n_channels": 8, "max_iter": 3}, device="cpu",
              precision="fp32", stack_mode="3d", objects=True, background="bright",
              runs=2, membranes="bright", seed=1)
    result = run_job(job)
    assert result.status == "done", result.message
    assert seeds_trained == [1, 2]
    objects = tifffile.imread(tmp_path / "out" / "volume_objects.tif")
    seeds_trained.clear()
    voted = segment(enhance_membranes(volume), "st",
                    n_channels=8, max_iter=3, seed=1, device="cpu", precision="fp32",
                    stack_mode="3d", objects=True, runs=2,
                    object_options={"background": "bright"})
    np.testing.assert_array_equal(objects, voted)
    # several runs without objects are refused before training
    bad = Job(name="bad", image=tmp_path / "volume.tif", outdir=tmp_path / "bad",
              config={"method": "st", "n_channels": 8, "max_iter": 3}, device="cpu",
              stack_mode="3d", runs=2)
    seeds_trained.clear()
    failed = run_job(bad)
    assert failed.status == "failed" and "objects" in failed.message and not seeds_trained


# -- widgets ----------------------------------------------------------------------------------
FAST_ST = {"n_channels": 8, "max_iter": 4}


@pytest.mark.parametrize("volume", [False, True])
def test_widget_votes_over_runs_and_shows_the_first_runs_labels(widget, viewer, qtbot,
                                                               seeds_trained, volume):
    from widget_helpers import fast_settings

    data = np.stack([membrane_image()] * 3) if volume else membrane_image()
    image = viewer.add_image(data, name="cells")
    fast_settings(widget.params, FAST_ST, "st", plateau_iter=0)
    widget.params.precision.value = "fp32"
    widget.stack_mode.value = "3d"
    assert widget.objects.runs.native.isHidden()  # shown with the objects checkbox
    widget.objects.enabled_box.value = True
    assert not widget.objects.runs.native.isHidden()
    widget.objects.background.value = "bright"
    widget.objects.runs.value = 3
    widget.segment(image)
    qtbot.waitUntil(lambda: not widget.controls.running, timeout=120_000)
    first = int(widget.params.runtime()["seed"])
    assert seeds_trained == [first, first + 1, first + 2]
    found = viewer.layers["cells objects"].data
    seeds_trained.clear()
    kwargs = {"n_channels": 8, "max_iter": 4, "plateau_iter": 0, "device": "cpu",
              "precision": "fp32", "stack_mode": "3d" if volume else None}
    expected = segment(data, "st", seed=first, objects=True, runs=3,
                       object_options={"background": "bright"}, **kwargs)
    np.testing.assert_array_equal(found, expected)
    # the segmentation layer ends with the first run's labels
    labels = segment(data, "st", seed=first, **kwargs)
    np.testing.assert_array_equal(viewer.layers["cells segmentation"].data, labels)
    np.testing.assert_array_equal(image.data, data)


def test_batch_widget_votes_per_layer_in_the_fresh_model_mode(viewer, qtbot, seeds_trained):
    from widget_helpers import fast_settings

    from napari_kanezaki.plugin.batch_widget import BatchWidget

    batch = BatchWidget(viewer)
    images = {"a": membrane_image(), "b": membrane_image()[::-1].copy()}
    layers = [viewer.add_image(data, name=name) for name, data in images.items()]
    fast_settings(batch.params, FAST_ST, "st", plateau_iter=0)
    batch.params.precision.value = "fp32"
    batch.objects.enabled_box.value = True
    assert not batch.objects.runs.native.isHidden()
    batch.objects.background.value = "bright"
    batch.objects.runs.value = 2
    batch.segment(layers)
    qtbot.waitUntil(lambda: not batch.controls.running, timeout=120_000)
    first = int(batch.params.runtime()["seed"])
    assert seeds_trained == [first, first + 1] * 2
    seeds_trained.clear()
    for name, data in images.items():
        expected = segment(data, "st", seed=first, objects=True, runs=2, n_channels=8,
                           max_iter=4, plateau_iter=0, device="cpu", precision="fp32",
                           object_options={"background": "bright"})
        np.testing.assert_array_equal(viewer.layers[f"{name} objects"].data, expected)
    # one shared or saved model has nothing to vote over: refused before any work
    seeds_trained.clear()
    with pytest.raises(ValueError, match="a fresh model per layer"):
        batch.segment(layers, mode="reference", references=layers[:1])
    assert not seeds_trained


def test_with_consensus_progress_over_all_runs_and_a_stop():
    import threading

    from napari_kanezaki.plugin.jobs import JobResult, Update
    from napari_kanezaki.plugin.segment_widget import with_consensus

    outputs = [cells_between_membranes(), cells_between_membranes(gap=True),
               cells_between_membranes(membrane=5)]

    def fake(labels, stop_after=False):
        def job(stop):
            for step in (1, 2):
                yield Update(step, 2, "training", "cells", labels if step == 2 else None)
            if stop_after:
                stop.set()
            return JobResult(None, stop.is_set())
        return job

    target = (("cells", "objects"), {"background": "membranes", "split_touching": False})
    updates = list(with_consensus([fake(o) for o in outputs], "cells", target,
                                  threading.Event()))
    steps = [u.step for u in updates]
    assert steps == sorted(steps) and updates[-1].step == updates[-1].total == 6
    assert updates[-1].key == ("cells", "objects") and updates[-1].labels.max() == 4
    assert "vote of 3 runs" in updates[-1].text
    np.testing.assert_array_equal(updates[-2].labels, outputs[0])  # first run shown last
    # stopped during the second run: the vote of the runs done, named as such
    stop = threading.Event()
    jobs = [fake(outputs[1]), fake(outputs[0], stop_after=True), fake(outputs[2])]
    updates = list(with_consensus(jobs, "cells", target, stop))
    assert "vote of 2 of 3 runs" in updates[-1].text
