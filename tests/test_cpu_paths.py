"""benchmarks/cpu_paths.py: each variant forces the paths it names, ``default`` restores."""

from __future__ import annotations

import pytest

from napari_kanezaki.core import convolution, folded_norm


@pytest.fixture
def cpu_paths(load_benchmark):
    module = load_benchmark("cpu_paths")
    yield module
    module.set_variant("default")


def test_variants_force_their_paths_and_default_restores_the_projects(cpu_paths):
    project = convolution.blocked_gradient_pays
    cpu_paths.set_variant("blocked_on")
    assert convolution.blocked_gradient_pays() is True
    cpu_paths.set_variant("blocked_off")
    assert convolution.blocked_gradient_pays() is False
    cpu_paths.set_variant("fold_off")
    assert folded_norm.MIN_PIXELS > 10**9 and convolution.blocked_gradient_pays is project
    cpu_paths.set_variant("fold_all")
    assert folded_norm.MIN_CHANNELS_AMX == 0 and folded_norm.MIN_PIXELS == 1024
    cpu_paths.set_variant("default")
    assert convolution.blocked_gradient_pays is project
    assert (folded_norm.MIN_PIXELS, folded_norm.MIN_CHANNELS_AMX) == (1024, 64)
