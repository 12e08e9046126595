import pytest
import torch

from napari_tilemap import TilemapInputError
from napari_tilemap.learn._networks import (
    PRESETS,
    architecture,
    build_network,
    flops_per_output,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_allowed_tile_size_maps_a_tile_to_one_output(preset):
    p = PRESETS[preset]
    for t in range(p.min_tile_size, p.min_tile_size + 3 * p.step, 2):
        arch = architecture(preset, t, in_channels=3, num_classes=4)
        net = build_network(arch).eval()
        with torch.no_grad():
            assert net(torch.zeros(2, 3, t, t)).shape == (2, 4, 1, 1)
            # a larger input gives one output per step: the network's stride is S
            out = net(torch.zeros(1, 3, t + 5 * p.step, t + 2 * p.step))
        assert out.shape == (1, 4, 6, 3)
        assert torch.isfinite(out).all()


def test_tile_sizes_that_are_multiples_of_the_step_use_a_5x5_stem():
    assert architecture("medium", 64, 1, 3).stem_kernel == 5
    assert architecture("medium", 64, 1, 3).step == 8
    assert architecture("small", 32, 1, 3).step == 4
    assert architecture("large", 128, 1, 3).step == 16


def test_bad_tile_sizes_and_presets_are_refused_with_the_fix():
    with pytest.raises(TilemapInputError, match="must be even"):
        architecture("medium", 63, 1, 3)
    with pytest.raises(TilemapInputError, match="below the 'medium' preset's minimum of 38"):
        architecture("medium", 36, 1, 3)
    with pytest.raises(TilemapInputError, match="unknown preset 'huge'"):
        architecture("huge", 64, 1, 3)


def test_flop_count_matches_a_hand_count_for_the_head():
    arch = architecture("small", 32, 1, 3)
    # one output: the 1x1 classifier alone costs 2 * head_width * classes
    assert flops_per_output(arch, 1, 1) > 2 * arch.head_width * 3
    assert flops_per_output(arch, 4, 4) > flops_per_output(arch, 1, 1)
