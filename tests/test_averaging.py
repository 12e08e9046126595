"""The moving average of the weights that training validates and keeps."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_tilemap import TilemapInputError, extract_tiles, train
from napari_tilemap.learn._averaging import WeightAverage

from .test_sampling import two_blobs


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def test_the_average_follows_the_documented_decay_and_copies_integer_buffers():
    net = _net()
    average = WeightAverage(net, decay=0.9)
    expected = net[0].weight.detach().numpy().astype(np.float64).copy()
    rng = np.random.default_rng(0)
    for t in range(1, 31):
        with torch.no_grad():
            net[0].weight.copy_(torch.from_numpy(rng.normal(size=net[0].weight.shape).astype(np.float32)))
        net[1].num_batches_tracked += 1
        average.update()
        d = min(0.9, (1 + t) / (10 + t))  # early steps forget the random start faster
        expected = d * expected + (1 - d) * net[0].weight.detach().numpy()
    np.testing.assert_allclose(average.module[0].weight.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert int(average.module[1].num_batches_tracked) == 30
    assert not average.module[0].weight.requires_grad and net[0].weight.requires_grad


def test_without_decay_the_average_is_the_network():
    net = _net()
    average = WeightAverage(net, decay=0.0)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.add_(2.0)
    average.update()
    assert torch.equal(average.module[0].weight, net[0].weight)
    assert torch.equal(average.module[1].running_mean, net[1].running_mean)


def test_training_records_the_average_and_refuses_a_decay_outside_0_1():
    image, labels = two_blobs()
    tiles = extract_tiles(image, labels, tile_size=24, seed=0)
    kw = {"preset": "small", "epochs": 2, "samples_per_epoch": 64, "device": "cpu", "seed": 1}
    averaged, last = train(tiles, **kw), train(tiles, weight_average=0, **kw)
    assert averaged.record["parameters"]["weight_average"] == 0.99
    assert last.record["parameters"]["weight_average"] == 0
    # the same batches, so only the averaging tells the kept networks apart
    assert any(not torch.equal(a, b) for a, b in zip(averaged.network.state_dict().values(),
                                                     last.network.state_dict().values()))
    for bad in (1.0, -0.1, "0.9"):
        with pytest.raises(TilemapInputError, match=r"weight_average must be in \[0, 1\) \(0: no averaging\)"):
            train(tiles, weight_average=bad, **kw)
