"""A time limit on training: the plan shrinks to fit it, and training ends within one step of it."""

import pytest
import torch

from napari_tilemap import BatchProgress, EpochReport, TilemapInputError, TrainConfig, extract_tiles, sample_surface, train
from napari_tilemap.learn import _training


@pytest.fixture(scope="module")
def tiles():
    s = sample_surface((256, 256), seed=0)
    return extract_tiles(s.image, s.labels, tile_size=32, seed=0)


class Clock:
    """A monotonic clock that moves only when the test says: one second per finished batch."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(tiles, monkeypatch, max_time, jump_at=None, **kw):
    clock = Clock()
    monkeypatch.setattr(_training, "monotonic", clock)
    events = []

    def tick(event) -> None:
        events.append(event)
        if isinstance(event, BatchProgress):
            batches = sum(isinstance(e, BatchProgress) for e in events)
            clock.now += 100.0 if batches == jump_at else 1.0  # a step that takes far longer than the others

    model = train(tiles, preset="small", epochs=50, samples_per_epoch=4 * 64, batch_size=64, device="cpu",
                  max_time=max_time, callback=tick, **kw)
    return model, [e for e in events if isinstance(e, BatchProgress)], [e for e in events if isinstance(e, EpochReport)]


def test_the_epochs_planned_shrink_to_what_fits_and_the_schedule_completes(tiles, monkeypatch):
    model, batches, epochs = _run(tiles, monkeypatch, max_time=12.5)
    # epoch 1 takes 4 s of the 12.5: two more fit, so three epochs are planned, and run to the end
    assert [(e.epoch, e.epochs) for e in epochs] == [(1, 3), (2, 3), (3, 3)]
    assert len(batches) == 12 and not model.record["timed_out"] and model.record["epochs_run"] == 3
    # the one-cycle schedule ends where a plan of three epochs from the start would end
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=TrainConfig.lr)
    plain = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=TrainConfig.lr, total_steps=12)
    for _ in range(12):
        opt.step()
        plain.step()
    assert epochs[-1].lr == pytest.approx(plain.get_last_lr()[0], rel=1e-6)
    assert epochs[0].lr < epochs[1].lr and epochs[2].lr < 0.05 * TrainConfig.lr


def test_training_ends_within_one_step_of_the_limit_and_keeps_the_best_epoch(tiles, monkeypatch):
    model, batches, epochs = _run(tiles, monkeypatch, max_time=12.5, jump_at=6)
    assert len(batches) == 6  # the sixth step overran the limit: no seventh starts
    assert model.record["timed_out"] and not model.record["stopped"]
    assert [e.epoch for e in epochs] == [1] and model.record["final"]["epoch"] == 1


def test_a_limit_that_ends_training_before_any_epoch_leaves_no_model_and_says_so(tiles, monkeypatch):
    with pytest.raises(TilemapInputError, match=r"max_time=2.5 s ended training before its first epoch"):
        _run(tiles, monkeypatch, max_time=2.5)


@pytest.mark.parametrize("bad", [0, -1, True, "60"])
def test_a_bad_limit_is_refused(bad):
    with pytest.raises(TilemapInputError, match="max_time is a number of seconds above 0"):
        TrainConfig(max_time=bad)
