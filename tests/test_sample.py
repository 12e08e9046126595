import numpy as np

from napari_tilemap import sample_surface
from napari_tilemap.io._sample import make_sample_data


def test_sample_is_deterministic_per_seed():
    a, b, c = sample_surface((256, 256), seed=4), sample_surface((256, 256), seed=4), sample_surface((256, 256), seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_painting_is_a_partial_subset_of_the_truth(sample):
    assert sample.image.dtype == np.uint8 and sample.image.shape == sample.labels.shape == sample.truth.shape
    painted = sample.labels > 0
    assert np.array_equal(sample.labels[painted], sample.truth[painted])
    assert set(np.unique(sample.labels)) == {0, 1, 2}
    assert 0 < len(sample.painted_pits) < len(sample.pits)
    assert 0 < len(sample.painted_scratches) < len(sample.scratches)
    for y, x, r in sample.pits:
        assert sample.truth[int(round(y)), int(round(x))] == 1
        assert 30 <= y <= sample.image.shape[0] - 30 and 30 <= x <= sample.image.shape[1] - 30


def test_defects_stand_out_from_the_texture(sample):
    img = sample.image.astype(float)
    bg = img[sample.truth == 0]
    assert img[sample.truth == 1].mean() < bg.mean() - 20  # pits are dark
    assert img[sample.truth == 2].mean() > bg.mean() + 20  # scratches are bright


def test_napari_sample_provider_returns_image_and_labels_layers():
    (image, image_kw, kind1), (labels, labels_kw, kind2) = make_sample_data()
    assert (kind1, kind2) == ("image", "labels")
    assert image.shape == labels.shape
    assert labels_kw["features"]["class"] == ["background", "pit", "scratch"]
