"""Evaluation against ground truth: cell and object figures checked against plain-NumPy references."""

import json
import threading

import numpy as np
import pytest

from napari_tilemap import (
    Cancelled,
    ClassificationMap,
    ClassTable,
    MapGeometry,
    TilemapInputError,
    predict,
)
from napari_tilemap.analysis._evaluate import evaluate
from napari_tilemap.analysis._objects import average_precision, match_objects
from napari_tilemap.analysis._report import write_report


def make_map(scores, tile_size, step, image_shape, values=(1, 2)):
    table = ClassTable.from_values(list(values))
    scores = np.asarray(scores, np.float32)
    classes = np.asarray(table.values, np.uint8)[scores.argmax(0)]
    return ClassificationMap(scores, classes, MapGeometry(tile_size, step, image_shape), table)


def random_case(seed=0, shape=(21, 26), step=4):
    """Random scores for 3 classes on a map of ``shape`` pixels, and blocky random truth."""
    rng = np.random.default_rng(seed)
    geometry = MapGeometry(step + 2, step, shape)
    scores = rng.dirichlet(np.ones(3), geometry.map_shape).transpose(2, 0, 1)
    truth = rng.integers(0, 3, (shape[0] // 2 + 1, shape[1] // 2 + 1)).repeat(2, 0).repeat(2, 1)[: shape[0], : shape[1]]
    return make_map(scores, step + 2, step, shape), truth.astype(np.uint8)


def reference_cells(scores, truth, step, ignore, thresholds=(0.0, 0.0, 0.0)):
    """Confusion (K, K+1) and P/R/F1 written out cell by cell."""
    k, rows, cols = scores.shape
    h, w = truth.shape
    confusion = np.zeros((k, k + 1), int)
    for i in range(rows):
        for j in range(cols):
            t = int(truth[min(i * step + step // 2, h - 1), min(j * step + step // 2, w - 1)])
            if ignore and t == 0:
                continue
            p = int(np.argmax(scores[:, i, j]))
            if scores[p, i, j] < thresholds[p]:
                p = k
            confusion[t, p] += 1
    tp = np.diag(confusion).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / confusion[:, :k].sum(0)
        recall = tp / confusion.sum(1)
        f1 = 2 * precision * recall / (precision + recall)
    return confusion, precision, recall, f1


@pytest.mark.parametrize("unlabelled", ["background", "ignore"])
def test_cell_figures_equal_a_plain_numpy_computation(unlabelled):
    cmap, truth = random_case(seed=1)
    result = evaluate(cmap, None, truth, unlabelled=unlabelled)
    confusion, precision, recall, f1 = reference_cells(cmap.scores, truth, 4, unlabelled == "ignore")
    np.testing.assert_array_equal(result.confusion, confusion)
    np.testing.assert_allclose(result.precision, precision)
    np.testing.assert_allclose(result.recall, recall)
    np.testing.assert_allclose(result.f1, f1)
    np.testing.assert_array_equal(result.support, confusion.sum(1))
    assert result.accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    present = confusion.sum(1) > 0
    assert result.balanced_accuracy == pytest.approx(np.mean(recall[present]))
    np.testing.assert_allclose(result.confusion_normalised[present], confusion[present] / confusion[present].sum(1)[:, None])
    if unlabelled == "ignore":
        assert result.support[0] == 0 and np.isnan(result.recall[0]) and result.cells < cmap.shape[0] * cmap.shape[1]
    else:
        assert result.cells == cmap.shape[0] * cmap.shape[1]


def test_the_cell_truth_is_the_centre_pixel_clipped_to_the_image():
    # step 4: offset 1.5, the pixel judged is 2 (just after the centre); the last row and column are clipped
    scores = np.zeros((2, 3, 2), np.float32)
    scores[0] = 1
    cmap = make_map(scores, 6, 4, (9, 6), values=(1,))
    truth = np.ones((9, 6), np.uint8)
    truth[[2, 6, 8], :] = 0
    truth[:, [2, 5]] = 0
    truth[8, 5] = 0
    result = evaluate(cmap, None, truth)
    assert result.confusion.tolist() == [[6, 0, 0], [0, 0, 0]]
    truth[8, 5] = 1  # cell (2, 1): centre (10, 6) clipped to (8, 5)
    assert evaluate(cmap, None, truth).confusion.tolist() == [[5, 0, 0], [1, 0, 0]]


def test_a_threshold_dict_makes_unknown_cells_per_class():
    cmap, truth = random_case(seed=2)
    result = evaluate(cmap, None, truth, threshold={"background": 0.5, 2: 0.6})
    confusion, precision, recall, _ = reference_cells(cmap.scores, truth, 4, False, thresholds=(0.5, 0.0, 0.6))
    assert confusion[:, -1].sum() > 0
    np.testing.assert_array_equal(result.confusion, confusion)
    np.testing.assert_allclose(result.precision, precision)
    np.testing.assert_allclose(result.recall, recall)
    assert result.accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    assert result.column_names[-1] == "unknown" and "unknown" in result.summary()
    assert result.to_dict()["settings"]["thresholds"] == {"background": 0.5, "class 1": None, "class 2": 0.6}
    one = evaluate(cmap, None, truth, threshold=0.5)
    assert one.thresholds == (0.5, 0.5, 0.5)


def object_case():
    """Class 1 on an 8x10-cell map (step 4): 4 predicted regions, 3 truth objects.

    A (score 0.9) overlaps T1; B (0.8) is far from everything; C (0.7) touches T2 diagonally;
    D (0.6) is next to T1, already taken by A; T3 is missed.
    """
    step, shape = 4, (32, 40)
    p1 = np.full((8, 10), 0.05, np.float32)
    p1[1:3, 1:3] = 0.85
    p1[2, 2] = 0.9        # A: its score is its best cell
    p1[1, 6] = 0.8        # B
    p1[5, 1:3] = 0.7      # C
    p1[1, 4] = 0.6        # D
    truth = np.zeros(shape, np.uint8)
    truth[4:12, 4:16] = 1  # T1: cells rows 1-2, columns 1-3
    truth[24, 15] = 1      # T2: one pixel in the corner of cell (6, 3)
    truth[25, 34] = 1      # T3: one pixel of cell (6, 8)
    return make_map(np.stack([1 - p1, p1]), 6, step, shape, values=(1,)), truth


def test_objects_match_one_to_one_within_the_distance_with_a_known_average_precision():
    cmap, truth = object_case()
    result = evaluate(cmap, None, truth)
    assert result.object_class_names == ("class 1",)
    assert (result.truth_objects[0], result.predicted_objects[0], result.true_positives[0]) == (3, 4, 2)
    assert result.object_precision[0] == pytest.approx(2 / 4)
    assert result.object_recall[0] == pytest.approx(2 / 3)
    assert result.object_f1[0] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # ranks: A hit, B miss, C hit, D miss -> AP = 1/3 * 1 + 1/3 * 2/3
    assert result.average_precision[0] == pytest.approx(5 / 9)
    assert result.mean_average_precision == pytest.approx(5 / 9)
    recall, precision = result.pr_curves[0]
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 2 / 4])

    exact = evaluate(cmap, None, truth, distance=0)  # C no longer reaches T2; D touches nothing
    assert exact.true_positives[0] == 1 and exact.average_precision[0] == pytest.approx(1 / 3)
    assert exact.distance_pixels == 0 and result.distance_pixels == 4

    thresholded = evaluate(cmap, None, truth, threshold={1: 0.75})  # C and D become unknown
    assert (thresholded.predicted_objects[0], thresholded.true_positives[0]) == (2, 1)
    assert thresholded.average_precision[0] == pytest.approx(1 / 3)

    sparse = evaluate(cmap, None, truth, unlabelled="ignore")  # B lies far from every painted pixel
    assert (sparse.predicted_objects[0], sparse.true_positives[0]) == (3, 2)
    assert sparse.average_precision[0] == pytest.approx(2 / 3)  # A hit, C hit, D miss


def test_min_score_leaves_weak_regions_out_of_the_objects_and_the_suggested_one_maximises_f1():
    from napari_tilemap.analysis._regions import regions

    cmap, truth = object_case()
    result = evaluate(cmap, None, truth)
    strong = evaluate(cmap, None, truth, min_score=0.75)  # only A (hit) and B (miss) are left
    assert (strong.predicted_objects[0], strong.true_positives[0], strong.truth_objects[0]) == (2, 1, 3)
    # the cells of C and D (3 background cells) become unknown, as on the map with that min score
    np.testing.assert_array_equal(result.confusion, [[70, 4, 0], [2, 4, 0]])
    np.testing.assert_array_equal(strong.confusion, [[70, 1, 3], [2, 4, 0]])
    np.testing.assert_array_equal(strong.average_precision, result.average_precision)  # of every region
    ruled = evaluate(cmap.with_min_score(0.75), None, truth)  # a map is judged with its own min score
    np.testing.assert_array_equal(ruled.confusion, strong.confusion)
    assert ruled.min_scores == strong.min_scores and ruled.object_f1[0] == strong.object_f1[0]
    with pytest.raises(TilemapInputError, match="different min_scores"):
        evaluate([cmap, cmap.with_min_score(0.75)], None, [truth, truth])
    assert strong.min_scores == (0.0, 0.75) and "left out: class 1 0.75" in strong.summary()
    # F1 when keeping the top 1..4 regions: 2/4, 2/5, 4/6, 4/7 -> keep A, B, C
    cut = result.suggested_min_scores["class 1"]
    assert cut == 0.65 and result.best_object_f1[0] == pytest.approx(2 / 3)  # halfway between C and D
    assert " 0.65 " in result.summary()
    again = evaluate(cmap, None, truth, min_score={"class 1": cut})
    assert again.predicted_objects[0] == 3 and again.object_f1[0] == pytest.approx(2 / 3)
    assert len(regions(cmap, min_score=cut)["region"]) == 3  # tables and exports keep the same regions
    assert json.loads(json.dumps(result.to_dict()))["objects"]["per_class"][0]["suggested_min_score"] == cut
    assert again.suggested_min_scores["class 1"] == cut  # suggested from every region, whatever is applied
    # against every possible cut of a random case
    cmap, truth = random_case(seed=5, shape=(60, 64))
    result = evaluate(cmap, None, truth)
    for j, k in enumerate(result.object_classes):
        name = result.class_names[k]
        peaks = regions(cmap, classes=[name])["max_score"]
        f1 = {float(c): evaluate(cmap, None, truth, min_score={name: float(c)}).object_f1[j] for c in peaks}
        best = max(f1.values())
        assert result.best_object_f1[j] == pytest.approx(best)
        assert result.suggested_min_scores[name] <= min(c for c, f in f1.items() if f == best)
        chosen = evaluate(cmap, None, truth, min_score={name: result.suggested_min_scores[name]})
        assert chosen.object_f1[j] == pytest.approx(best)
    with pytest.raises(TilemapInputError, match="min_score is 2.0, outside"):
        evaluate(cmap, None, truth, min_score=2)


def test_object_helpers_on_bare_arrays():
    pred = np.zeros((5, 5), bool)
    pred[0, 0] = pred[0, 2] = pred[4, 4] = True
    truth = np.zeros((5, 5), bool)
    truth[1, 1] = True
    score = np.where(pred, [[0.5] * 5] * 5, 0.0)
    score[0, 2] = 0.7
    m = match_objects(pred, score, truth, distance=1)  # both top regions reach T; the higher score takes it
    assert m.scores.tolist() == pytest.approx([0.5, 0.7, 0.5]) and m.matched.tolist() == [False, True, False]
    ap, _, precision = average_precision(np.array([0.2, 0.9]), np.array([True, False]), 2)
    assert ap == pytest.approx(0.5 * 0.5) and precision.tolist() == [0.0, 0.5]
    assert np.isnan(average_precision(np.array([0.5]), np.array([False]), 0)[0])
    assert average_precision(np.zeros(0), np.zeros(0, bool), 4)[0] == 0


def test_several_images_sum_their_counts_and_pool_their_objects():
    cmap, truth = object_case()
    one = evaluate(cmap, None, truth)
    two = evaluate([cmap, cmap], None, [truth, truth])
    np.testing.assert_array_equal(two.confusion, 2 * one.confusion)
    np.testing.assert_array_equal(two.truth_objects, 2 * one.truth_objects)
    np.testing.assert_array_equal(two.true_positives, 2 * one.true_positives)
    np.testing.assert_array_equal(two.score_histograms, 2 * one.score_histograms)
    assert two.images == 2 and two.average_precision[0] == pytest.approx(one.average_precision[0], abs=0.1)


def test_score_histograms_and_suggested_thresholds():
    cmap, truth = random_case(seed=3, shape=(40, 44))
    result = evaluate(cmap, None, truth, target_precision=0.5)
    h, w = truth.shape
    rows, cols = cmap.shape
    centre = truth[np.minimum(np.arange(rows) * 4 + 2, h - 1)][:, np.minimum(np.arange(cols) * 4 + 2, w - 1)]
    scores = np.asarray(cmap.scores)
    for t in range(3):
        for c in range(3):
            expected, _ = np.histogram(scores[c][centre == t], bins=50, range=(0, 1))
            np.testing.assert_array_equal(result.score_histograms[t, c], expected)
    best, top = scores.max(0), scores.argmax(0)
    for c, name in enumerate(cmap.class_table.names):
        suggested = result.suggested_thresholds[name]
        grid = np.arange(1000) / 1000
        prec = [np.mean(centre[(top == c) & (best >= g)] == c) if ((top == c) & (best >= g)).any() else 0 for g in grid]
        reached = [g for g, p in zip(grid, prec) if p >= 0.5]
        assert suggested == (pytest.approx(reached[0]) if reached else None), name
    assert "suggested thresholds" in result.summary()


def random_model_case(random_model, shape=(120, 100)):
    model = random_model("small", 32, 1, classes=3, seed=4)
    rng = np.random.default_rng(4)
    image = rng.integers(0, 255, shape).astype(np.uint8)
    truth = rng.integers(0, 3, (shape[0] // 8, shape[1] // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    return model, image, np.pad(truth, ((0, shape[0] - truth.shape[0]), (0, shape[1] - truth.shape[1])))


def assert_same(a, b):
    np.testing.assert_array_equal(a.confusion, b.confusion)
    np.testing.assert_array_equal(a.predicted_objects, b.predicted_objects)
    np.testing.assert_array_equal(a.true_positives, b.true_positives)
    np.testing.assert_allclose(a.average_precision, b.average_precision, atol=1e-9)
    np.testing.assert_array_equal(a.score_histograms, b.score_histograms)


def test_a_stored_map_and_a_model_predicted_block_wise_give_the_in_memory_figures(random_model, tmp_path, monkeypatch):
    model, image, truth = random_model_case(random_model)
    reference = evaluate(predict(model, image, device="cpu", block_size=4096), None, truth)
    stored = predict(model, image, out=tmp_path / "m.zarr", block_size=64, device="cpu")
    assert_same(evaluate(stored, image, truth, block_size=32), reference)

    import napari_tilemap.maps._predict as predict_module  # where the temporary store is made

    folders, real = [], predict_module.tempfile.TemporaryDirectory

    def recording(*args, **kw):
        folders.append(real(*args, **kw))
        return folders[-1]

    monkeypatch.setattr(predict_module.tempfile, "TemporaryDirectory", recording)
    events = []
    result = evaluate(model, image, truth, block_size=64, device="cpu", callback=events.append)
    assert_same(result, reference)
    assert len(folders) == 1 and not __import__("os").path.exists(folders[0].name)  # predicted into a removed store
    stages = {e.stage for e in events}
    assert {"truth", "predict", "compare"} <= stages
    assert max(e.total for e in events if e.stage == "predict") > 1


def test_bad_input_is_refused_with_a_message(random_model):
    cmap, truth = random_case(seed=5)
    with pytest.raises(TilemapInputError, match="shape 20x26 but its map"):
        evaluate(cmap, None, truth[:20])
    with pytest.raises(TilemapInputError, match="truth has shape 21x26 but its image 21x25"):
        evaluate(cmap, np.zeros((21, 25), np.uint8), truth)
    bad = truth.copy()
    bad[3, 4], bad[5, 5] = 7, 9
    with pytest.raises(TilemapInputError, match=r"label values 7, 9 that are not classes.*relabel"):
        evaluate(cmap, None, bad)
    with pytest.raises(TilemapInputError, match="label values 1.5"):
        evaluate(cmap, None, truth + np.float32(0.5) * (truth == 1))
    with pytest.raises(TilemapInputError, match=r"threshold is 1.5, outside \[0, 1\]"):
        evaluate(cmap, None, truth, threshold=1.5)
    with pytest.raises(TilemapInputError, match=r"threshold for class 'class 1' \(1\) is -0.1, outside \[0, 1\]"):
        evaluate(cmap, None, truth, threshold={"class 1": -0.1})
    with pytest.raises(TilemapInputError, match="not a class name or label value"):
        evaluate(cmap, None, truth, threshold={"scratch": 0.5})
    with pytest.raises(TilemapInputError, match="unlabelled must be"):
        evaluate(cmap, None, truth, unlabelled="zero")
    with pytest.raises(TilemapInputError, match="1 map.* but 2 truth"):
        evaluate(cmap, None, [truth, truth])
    incomplete = ClassificationMap(cmap.scores, cmap.classes, cmap.geometry, cmap.class_table, complete=False)
    with pytest.raises(TilemapInputError, match="incomplete"):
        evaluate(incomplete, None, truth)
    model, image, mtruth = random_model_case(random_model)
    with pytest.raises(TilemapInputError, match="truth has shape 120x99 but its image 120x100"):
        evaluate(model, image, mtruth[:, :99], device="cpu")
    with pytest.raises(TilemapInputError, match="needs the images"):
        evaluate(model, None, mtruth)


def test_a_model_without_background_needs_unlabelled_ignore():
    scores = np.full((2, 3, 3), 0.5, np.float32)
    scores[0] += 0.1
    cmap = ClassificationMap(scores, np.ones((3, 3), np.uint8), MapGeometry(6, 4, (12, 12)),
                             ClassTable.from_values([1, 2], background=False))
    truth = np.zeros((12, 12), np.uint8)
    truth[:4] = 1
    with pytest.raises(TilemapInputError, match="unlabelled='ignore'"):
        evaluate(cmap, None, truth)
    result = evaluate(cmap, None, truth, unlabelled="ignore")
    assert result.confusion.tolist() == [[3, 0, 0], [0, 0, 0]] and result.object_class_names == ("class 1", "class 2")


def test_progress_and_cancel():
    cmap, truth = random_case(seed=6, shape=(64, 64))
    events = []
    evaluate(cmap, None, truth, block_size=16, callback=events.append)
    truth_events = [e for e in events if e.stage == "truth"]
    assert truth_events[-1].done == truth_events[-1].total and truth_events[-1].total >= 1
    compare = [(e.done, e.total) for e in events if e.stage == "compare"]
    assert compare == [(i, 16) for i in range(1, 17)]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        evaluate(cmap, None, truth, cancel=stop)
    with pytest.raises(Cancelled):
        evaluate(cmap, None, truth, cancel=lambda: True)


def test_the_report_holds_json_and_three_pictures(tmp_path):
    from skimage.io import imread

    cmap, truth = object_case()
    result = evaluate(cmap, None, truth, threshold=0.65)
    paths = write_report(result, tmp_path / "report")
    assert [p.name for p in paths] == ["evaluation.json", "confusion.png", "scores.png", "precision_recall.png"]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in paths)
    with open(paths[0]) as f:
        assert json.load(f) == result.to_dict()
    for p in paths[1:]:
        picture = imread(p)
        assert picture.ndim == 3 and min(picture.shape[:2]) > 100
    with pytest.raises(TilemapInputError, match="already holds a report; .*overwrite=True"):
        write_report(result, tmp_path / "report")
    before = paths[0].stat().st_mtime_ns
    write_report(result, tmp_path / "report", overwrite=True)  # replaces in place
    assert paths[0].stat().st_mtime_ns >= before and json.loads(paths[0].read_text()) == result.to_dict()
    with pytest.raises(TilemapInputError, match="does not exist"):
        write_report(result, tmp_path / "missing" / "report")
    text = result.summary()
    assert text.splitlines()[0].startswith("cell accuracy") and str(result) == text
    assert "NaN" not in json.dumps(result.to_dict())


def test_the_trained_sample_model_scores_well_on_its_ground_truth(sample, trained):
    _, model, _ = trained
    image, truth = sample.image[:256, :256], sample.truth[:256, :256]
    result = evaluate(model, image, truth, block_size=128, device="cpu")
    assert result.accuracy > 0.8, result.summary()
    assert result.class_names == tuple(sample.class_table.names)
    assert result.truth_objects.sum() > 0 and result.predicted_objects.sum() > 0
