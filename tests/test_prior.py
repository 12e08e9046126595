"""The class prior: balanced training, then the output moved to the classes' shares of the tiles."""

import numpy as np
import pytest
import torch

from napari_tilemap import TilemapInputError, extract_tiles, train
from napari_tilemap.learn._training import logit_adjustment

from .test_sampling import two_blobs

T = 32
KW = {"preset": "small", "epochs": 2, "samples_per_epoch": 128, "device": "cpu", "seed": 3, "normalise": "dataset"}


def bias(model) -> np.ndarray:
    return model.network[-1].bias.detach().numpy().astype(np.float64)


@pytest.fixture(scope="module")
def tiles():
    image, labels = two_blobs((256, 320))
    return extract_tiles(image, labels, tile_size=T, seed=0)


def test_tile_shares_move_only_the_last_bias_by_the_log_of_k_times_the_share(tiles):
    balanced = train(tiles, prior="balanced", **KW)
    shares = train(tiles, prior="tiles", **KW)
    counts = np.bincount(tiles.classes, minlength=3)
    expected = np.log(3 * counts / counts.sum())  # Bayes' rule from equal draws to the tiles' shares
    assert counts[0] > 10 * counts[1:].max() and expected[0] > 0 > expected[1:].max()
    np.testing.assert_allclose(bias(shares) - bias(balanced), expected, atol=1e-5)
    for (name, a), b in zip(list(balanced.network.state_dict().items())[:-1],
                            list(shares.network.state_dict().values())[:-1]):
        assert torch.equal(a, b), name
    assert shares.record["prior"]["mode"] == "tiles" and balanced.record["prior"]["mode"] == "balanced"
    np.testing.assert_allclose(shares.record["prior"]["logit_adjustment"], expected, atol=1e-6)
    assert balanced.record["prior"]["logit_adjustment"] == [0.0, 0.0, 0.0]
    # scores: background's odds against each class grow by the ratio of the shares
    x = tiles.tiles[:20]
    pb, ps = balanced.classify_tiles(x), shares.classify_tiles(x)
    ratio = (ps[:, 0] / ps[:, 1]) / (pb[:, 0] / pb[:, 1])
    np.testing.assert_allclose(ratio, counts[0] / counts[1], rtol=1e-3)


def test_sigmoid_outputs_move_by_the_log_odds():
    adj = logit_adjustment([90, 5, 5], "sigmoid", "tiles", has_background=True)
    share = np.array([0.9, 0.05, 0.05])
    np.testing.assert_allclose(adj, np.log(share / (1 - share)) - np.log(0.5), atol=1e-12)
    # without a background class, painted tile counts measure effort: no adjustment
    assert not logit_adjustment([90, 5, 5], "softmax", "tiles", has_background=False).any()


def test_fine_tuning_starts_from_the_balanced_network_and_sets_the_prior_once(tiles):
    first = train(tiles, prior="tiles", **KW)
    # a learning rate too small to move the weights: what is left is the prior's bookkeeping
    again = train(tiles, init_model=first, prior="tiles", **{**KW, "lr": 1e-12})
    np.testing.assert_allclose(bias(again), bias(first), atol=1e-5)
    back = train(tiles, init_model=first, prior="balanced", **{**KW, "lr": 1e-12})
    np.testing.assert_allclose(bias(back), bias(first) - first.record["prior"]["logit_adjustment"], atol=1e-5)


def test_an_unknown_prior_is_refused_by_name():
    image, labels = two_blobs((128, 128))
    small = extract_tiles(image, labels, tile_size=T)
    with pytest.raises(TilemapInputError, match=r"prior must be one of \['tiles', 'balanced'\], got 'data'"):
        train(small, prior="data", **KW)


def test_the_tile_prior_records_a_min_score_from_each_class_share_of_the_painted_area(tiles):
    model = train(tiles, prior="tiles", **KW)
    image, labels = two_blobs((256, 320))
    # independent reference: the shares of the tiles and of the pixels (unpainted = background)
    pi = np.bincount(tiles.classes, minlength=3) / len(tiles)
    alpha = np.array([(labels == v).sum() for v in (0, *tiles.class_table.values[1:])]) / labels.size
    rho = alpha / pi
    assert (rho[1:] < rho[0]).all()  # a blob is one tile (or one per T/4 along it) for its area
    expected = {name: 1 / (1 + rho[c] / rho[0]) for c, name in enumerate(tiles.class_table.names) if c}
    assert model.min_score.keys() == expected.keys()
    for name, value in expected.items():
        assert model.min_score[name] == pytest.approx(value, rel=1e-9)
    assert model.record["prior"]["area"]["background"] == (labels == 0).sum()
    # a cell at the min score is as likely the class as background under the area's shares
    scores = np.array([1 - model.min_score["class 1"], model.min_score["class 1"]])
    odds = scores[1] / scores[0] * rho[1] / rho[0]
    assert odds == pytest.approx(1.0)
    # 'balanced' declares a partial painting: no shares to hold the regions to
    assert train(tiles, prior="balanced", **KW).min_score is None


def test_sigmoid_min_score_compares_the_log_odds_of_the_two_shares():
    from napari_tilemap.learn._training import area_min_score

    cut = area_min_score([900, 50, 50], [9800, 100, 100], "sigmoid")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = 1 / (1 + np.exp(-(logit(0.05) - logit(0.01))))
    np.testing.assert_allclose(cut, [0.0, expected, expected], rtol=1e-12)
    # a class no rarer in area than in tiles needs no cut
    assert not area_min_score([900, 50, 50], [8000, 1000, 1000], "softmax").any()


def test_evaluate_takes_the_model_min_score_by_name(tiles):
    from napari_tilemap import evaluate, predict

    model = train(tiles, prior="tiles", **KW)
    image, labels = two_blobs((256, 320))
    own = evaluate(model, image, labels, device="cpu", min_score="model")
    given = evaluate(model, image, labels, device="cpu", min_score=model.min_score)
    assert own.min_scores == given.min_scores and own.min_scores[1:] == tuple(model.min_score.values())
    np.testing.assert_array_equal(own.object_f1, given.object_f1)
    cmap = predict(model, image, device="cpu")
    with pytest.raises(TilemapInputError, match="min_score='model' needs a model"):
        evaluate(cmap, image, labels, min_score="model")
