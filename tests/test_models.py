"""The paper's FCN and CNN as lists of modules: shapes, layer order, dtype, errors."""

from __future__ import annotations

import numpy as np
import pytest

from minidni import models
from minidni.dni.feedforward import output_shapes
from minidni.layers import AvgPool2d, BatchNorm, Conv2d, Linear, MaxPool2d, ReLU


@pytest.mark.parametrize("layers", [3, 6])
def test_fcn_modules_shapes_and_layers(layers):
    nets = models.fcn(layers, rng=np.random.default_rng(0))
    assert len(nets) == layers
    assert output_shapes(nets, (784,)) == [(256,)] * (layers - 1) + [(10,)]
    for i, net in enumerate(nets):
        kinds = [type(layer) for layer in net.layers]
        assert kinds[:3] == [Linear, BatchNorm, ReLU]
        assert kinds[3:] == ([Linear] if i == layers - 1 else [])  # the output layer is in the top module
    assert nets[0].layers[0].in_dim == 784 and nets[-1].layers[-1].out_dim == 10


@pytest.mark.parametrize("in_shape, sides", [((1, 28, 28), [14, 7, 4, 2]), ((3, 32, 32), [16, 8, 4, 2])])
def test_cnn_halves_the_maps_and_pools_as_in_the_paper(in_shape, sides):
    nets = models.cnn(4, in_shape=in_shape, filters=4, rng=np.random.default_rng(0))
    shapes = output_shapes(nets, in_shape)
    assert shapes == [(4, s, s) for s in sides[:3]] + [(10,)]
    assert isinstance(nets[0].layers[3], MaxPool2d)
    assert all(isinstance(net.layers[3], AvgPool2d) for net in nets[1:])
    conv = nets[0].layers[0]
    assert isinstance(conv, Conv2d) and conv.kernel_size == (5, 5) and conv.pad == 2  # same padding
    assert nets[-1].layers[-1].in_dim == 4 * 2 * 2


def test_models_keep_float32_and_float64():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        h = rng.random((3, 1, 8, 8)).astype(dtype)
        for net in models.cnn(2, in_shape=(1, 8, 8), filters=2, rng=rng, dtype=dtype):
            h, _ = net.forward(h)
        assert h.dtype == dtype and h.shape == (3, 10)
        x = rng.random((3, 20)).astype(dtype)
        for net in models.fcn(2, in_dim=20, width=5, rng=rng, dtype=dtype):
            x, _ = net.forward(x)
        assert x.dtype == dtype and x.shape == (3, 10)


def test_same_seed_same_weights():
    a, b = (models.fcn(2, rng=np.random.default_rng(7)) for _ in range(2))
    for na, nb in zip(a, b):
        assert all(np.array_equal(v, nb.params[k]) for k, v in na.params.items())


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_layer_counts_are_clear_errors(bad):
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        models.fcn(bad, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_layers"):
        models.cnn(bad, rng=np.random.default_rng(0))
