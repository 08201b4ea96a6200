"""The network has the published layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_kanezaki.core.network import KanezakiNet


@pytest.mark.parametrize("n_conv", [1, 2, 4])
def test_layer_order_is_conv_relu_bn_then_1x1_conv_bn(n_conv):
    net = KanezakiNet(in_channels=3, n_channels=16, n_conv=n_conv)
    kinds = [type(m) for m in net.layers]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d] * n_conv + [nn.Conv2d, nn.BatchNorm2d]
    convs = [m for m in net.layers if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * n_conv + [(1, 1)]
    assert [c.padding for c in convs] == [(1, 1)] * n_conv + [(0, 0)]
    assert convs[0].in_channels == 3
    assert all(c.out_channels == 16 for c in convs)
    assert all(c.in_channels == 16 for c in convs[1:])
    # every block has its own weights
    assert len({id(c.weight) for c in convs}) == len(convs)


def test_output_has_input_resolution_and_3d_variant():
    net = KanezakiNet(2, 8, 2)
    assert net(torch.rand(1, 2, 13, 17)).shape == (1, 8, 13, 17)
    net3 = KanezakiNet(1, 8, 2, spatial_dims=3)
    assert isinstance(net3.layers[0], nn.Conv3d) and isinstance(net3.layers[2], nn.BatchNorm3d)
    assert net3(torch.rand(1, 1, 5, 6, 7)).shape == (1, 8, 5, 6, 7)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        KanezakiNet(1, 8, 2, spatial_dims=4)


def test_parameter_count_matches_published_model():
    c, m = 100, 2
    net = KanezakiNet(3, c, m)
    conv = (3 * 9 * c + c) + (m - 1) * (c * 9 * c + c) + (c * c + c)
    bn = 2 * c * (m + 1)
    assert sum(p.numel() for p in net.parameters()) == conv + bn
