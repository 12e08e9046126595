"""Each augmentation keeps what it must (shape, value range, the label at the centre) and does its job."""

import math

import numpy as np
import pytest
import torch

from napari_tilemap import TilemapInputError
from napari_tilemap.learn._augment import (
    AUGMENTATIONS,
    DEFAULT_AUGMENT,
    ROTATION_MARGIN,
    Augmenter,
    default_margin,
    normalise_augment,
    random_blur,
    random_dihedral,
    random_geometry,
    random_intensity,
    random_noise,
)
from napari_tilemap.learn._training import TrainConfig

T = 32


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def windows(n=64, margin=None, seed=0):
    m = default_margin(T) if margin is None else margin
    w = T + 2 * m
    x = torch.rand(n, 1, w, w, generator=gen(seed)) * 200 + 20
    return x, m


def centre_mark(n=32, margin=None):
    """Windows of texture with a bright 4×4 square at the centre: the 'class' of the tile."""
    x, m = windows(n, margin)
    x = x * 0.2
    c = (T + 2 * m) // 2
    x[:, :, c - 2 : c + 2, c - 2 : c + 2] = 255.0
    return x, m


def test_names_are_normalised_and_unknown_names_refused():
    assert normalise_augment(True) == AUGMENTATIONS and normalise_augment(False) == ()
    assert normalise_augment(["noise", "flip", "noise"]) == ("flip", "noise")
    assert normalise_augment("blur") == ("blur",)
    assert set(DEFAULT_AUGMENT) <= set(AUGMENTATIONS)
    with pytest.raises(TilemapInputError, match=r"unknown augmentation\(s\) \['sharpen'\]; choose from"):
        normalise_augment(["flip", "sharpen"])
    assert TrainConfig(augment=True).augment is True  # resolved by the tiles (see the last test)
    assert TrainConfig(augment=False).augment == ()
    assert TrainConfig(augment=["rot90", "flip"]).augment == ("flip", "rot90")
    with pytest.raises(TilemapInputError, match="unknown augmentation"):
        TrainConfig(augment=("twist",))


@pytest.mark.parametrize("names", [(), ("shift",), ("rotate",), ("rotate", "shift"), DEFAULT_AUGMENT])
def test_every_combination_makes_tiles_of_the_right_shape_and_range(names):
    x, _ = windows()
    out = Augmenter(names, T, [20.0], [220.0])(x, gen())
    assert out.shape == (len(x), 1, T, T) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 20.0 - 1e-3 and out.max() <= 220.0 + 1e-3


def test_shift_is_an_exact_crop_within_t_over_16():
    x, m = windows(200)
    out = random_geometry(x, T, shift=True, rotate=False, gen=gen())
    offsets = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * m + 1) for dx in range(2 * m + 1)
                if torch.equal(out[i], x[i, :, dy : dy + T, dx : dx + T])]
        assert len(hits) == 1
        offsets.add((hits[0][0] - m, hits[0][1] - m))
    s = max(1, T // 16)
    assert max(max(abs(a), abs(b)) for a, b in offsets) == s and len(offsets) == (2 * s + 1) ** 2
    centre = random_geometry(x, T, shift=False, rotate=False, gen=gen())
    assert torch.equal(centre, x[:, :, m : m + T, m : m + T])


def test_a_shift_limit_per_tile_bounds_each_tiles_offset():
    x, m = windows(200)
    limit = torch.tensor([0, 1] * 100)
    out = random_geometry(x, T, shift=True, rotate=False, gen=gen(), shift_limit=limit)
    moved = {0: set(), 1: set()}
    for i in range(len(x)):
        (dy, dx), = [(dy, dx) for dy in range(2 * m + 1) for dx in range(2 * m + 1)
                     if torch.equal(out[i], x[i, :, dy : dy + T, dx : dx + T])]
        moved[int(limit[i])].add((dy - m, dx - m))
    assert moved[0] == {(0, 0)} and len(moved[1]) == 9 and max(map(max, moved[1])) == 1


def test_rotation_turns_by_any_angle_without_padding_and_keeps_the_centre():
    # a horizontal bar through the centre: its orientation after rotation tells the angle
    m = math.ceil(ROTATION_MARGIN * T)
    w = T + 2 * m
    x = torch.zeros(300, 1, w, w)
    x[:, :, w // 2 - 1 : w // 2 + 1, :] = 100.0
    out = random_geometry(x, T, shift=False, rotate=True, gen=gen())
    c = T // 2
    assert (out[:, 0, c - 1 : c + 1, c - 1 : c + 1].amin(dim=(1, 2)) > 50).all()  # the centre stays on the bar
    angles = bar_angles(out)
    assert angles.max() > 35 and angles.min() < 5 and np.median(angles) > 10
    # the whole turned tile came from the window: every corner pixel sampled inside it, none padded
    full = torch.full((4, 1, w, w), 7.0)
    assert torch.allclose(random_geometry(full, T, False, True, gen()), torch.tensor(7.0))


def bar_angles(out):
    yy, xx = torch.meshgrid(torch.arange(T) - (T - 1) / 2, torch.arange(T) - (T - 1) / 2, indexing="ij")
    angles = []
    for tile in out[:, 0]:
        wgt = tile / tile.sum()
        cyy, cxx, cxy = (wgt * yy * yy).sum(), (wgt * xx * xx).sum(), (wgt * yy * xx).sum()
        angles.append(0.5 * math.degrees(math.atan2(2 * float(cxy), float(cxx - cyy))))
    return np.abs(angles)


def test_rotation_angle_shrinks_to_what_a_small_margin_allows():
    m = 2
    w = T + 2 * m
    x = torch.zeros(300, 1, w, w)
    x[:, :, w // 2 - 1 : w // 2 + 1, :] = 100.0
    angles = bar_angles(random_geometry(x, T, shift=False, rotate=True, gen=gen()))
    # the turned tile's corner, T/2·(cos a + sin a) from the centre, stays within T/2 + m
    limit = math.degrees(math.asin((T / 2 + m) / (T / 2) / math.sqrt(2)) - math.pi / 4)
    assert angles.max() <= limit + 1.0 and angles.max() > limit / 2


def test_dihedral_keeps_the_pixels_and_mixes_orientations():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(40, 1, 1, 1)
    out = random_dihedral(x, gen())
    variants = [torch.rot90(x[0], k, dims=(1, 2)) for k in range(4)]
    variants += [torch.flip(v, dims=(2,)) for v in variants]
    assert all(any(torch.equal(o, v) for v in variants) for o in out)
    assert len({o.numpy().tobytes() for o in out}) == 8
    only_flip = random_dihedral(x, gen(), rot90=False, flip=True)
    assert all(torch.equal(o, x[0]) or torch.equal(o, torch.flip(x[0], dims=(2,))) for o in only_flip)


def test_intensity_changes_brightness_contrast_gamma_within_the_range_and_keeps_order():
    x, _ = windows(200)
    low, span = torch.tensor(20.0).reshape(1, 1, 1, 1), torch.tensor(200.0).reshape(1, 1, 1, 1)
    out = random_intensity(x, low, span, gen())
    assert out.shape == x.shape and out.min() >= 20.0 and out.max() <= 220.0
    means = (out - x).mean(dim=(1, 2, 3))
    assert means.std() > 3  # tiles are changed by different amounts
    ratio = out.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert ratio.min() < 0.95 and ratio.max() > 1.05
    # monotonic per tile: a brighter pixel stays at least as bright (what a dark pit is, stays)
    flat_x, flat_o = x.flatten(1), out.flatten(1)
    order = flat_x.argsort(1)
    assert (torch.diff(torch.gather(flat_o, 1, order), dim=1) >= -1e-3).all()


def test_noise_is_gaussian_with_a_random_strength_and_clipped_to_the_range():
    x = torch.full((100, 1, 40, 40), 120.0)
    low, span = torch.tensor(20.0).reshape(1, 1, 1, 1), torch.tensor(200.0).reshape(1, 1, 1, 1)
    out = random_noise(x, low, span, gen())
    sd = (out - x).std(dim=(1, 2, 3))
    assert sd.max() <= 0.03 * 200 * 1.1 and sd.max() > 3 and sd.min() < 1
    assert abs(float((out - x).mean())) < 0.2
    edge = random_noise(torch.full((10, 1, 8, 8), 220.0), low, span, gen())
    assert edge.max() <= 220.0


def test_blur_smooths_a_third_of_the_tiles_and_keeps_their_mean():
    x, _ = windows(300)
    out = random_blur(x, gen())
    changed = ~(out == x).flatten(1).all(1)
    assert 0.2 < float(changed.float().mean()) < 0.45
    rough = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    assert (rough(out[changed]) < 0.8 * rough(x[changed])).all()
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1.0, rtol=0)


def test_the_default_chain_keeps_the_tile_label_at_the_centre():
    x, _ = centre_mark(64)
    out = Augmenter(DEFAULT_AUGMENT, T, [0.0], [255.0])(x, gen())
    c = T // 2
    centre = out[:, 0, c - 1 : c + 1, c - 1 : c + 1].mean(dim=(1, 2))
    background = out[:, 0, :4, :4].mean(dim=(1, 2))
    assert (centre > background + 60).all()


def test_augmentation_draws_fresh_each_call():
    x, _ = windows(16)
    aug = Augmenter(DEFAULT_AUGMENT, T, [20.0], [220.0])
    g = gen()
    assert not torch.equal(aug(x, g), aug(x, g))



def test_the_default_leaves_out_intensity_for_defects_and_adds_it_for_regions():
    import numpy as np

    from napari_tilemap import extract_tiles, train
    from napari_tilemap.learn._augment import DEFAULT_AUGMENT_REGIONS, default_augment

    assert "intensity" not in default_augment(True) and default_augment(True) == DEFAULT_AUGMENT
    assert default_augment(False) == DEFAULT_AUGMENT_REGIONS == tuple(n for n in AUGMENTATIONS
                                                                      if n in {*DEFAULT_AUGMENT, "intensity"})
    image = np.random.default_rng(0).normal(100, 10, (96, 96))
    labels = np.zeros((96, 96), np.uint8)
    labels[10:14, 10:40], labels[60:64, 50:80] = 1, 2
    kw = {"preset": "small", "epochs": 1, "samples_per_epoch": 64, "device": "cpu"}
    with_bg = train(extract_tiles(image, labels, tile_size=24), **kw)
    regions = train(extract_tiles(image, labels, tile_size=24, background="none"), **kw)
    assert with_bg.record["augment"] == list(DEFAULT_AUGMENT) and with_bg.record["parameters"]["augment"] is True
    assert regions.record["augment"] == list(DEFAULT_AUGMENT_REGIONS)
    chosen = train(extract_tiles(image, labels, tile_size=24, background="none"), augment=("flip",), **kw)
    assert chosen.record["augment"] == ["flip"]
