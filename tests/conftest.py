import os

import numpy as np
import pytest
import torch

# Two cores: keep torch from oversubscribing when tests run beside other work.
torch.set_num_threads(int(os.environ.get("TILEMAP_TEST_THREADS", "2")))


@pytest.fixture
def random_model():
    """A factory of untrained models with randomised BatchNorm statistics (eval mode)."""
    from napari_tilemap._classes import ClassTable
    from napari_tilemap.learn._model import TileClassifier
    from napari_tilemap.learn._networks import architecture

    def make(preset="small", tile_size=32, channels=1, classes=3, seed=0):
        torch.manual_seed(seed)
        arch = architecture(preset, tile_size, channels, classes)
        table = ClassTable.from_values(range(1, classes))
        model = TileClassifier.create(arch, table, np.full(channels, 100.0), np.full(channels, 40.0))
        gen = torch.Generator().manual_seed(seed)
        for m in model.network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
        model.network.eval()
        return model

    return make


@pytest.fixture(scope="session")
def sample():
    from napari_tilemap import sample_surface

    return sample_surface(seed=0)


@pytest.fixture(scope="session")
def trained(sample):
    """One model trained from scratch on the built-in sample, shared by the tests that read it."""
    from napari_tilemap import extract_tiles, train

    tiles = extract_tiles(sample.image, sample.labels, tile_size=48, class_table=sample.class_table, seed=0)
    events = []
    # the sample paints only some of its defects: the balanced prior, as tilemap demo uses
    model = train(tiles, epochs=15, device="cpu", seed=0, prior="balanced", callback=events.append)
    return tiles, model, events
