"""No silently wrong maps: a store is complete only with every block of one model on one image.

Each test reproduces a way a map went wrong (or an error became a traceback) and checks
that the result is now right, refused with a clear error, or recovered on the next run.
"""

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from napari_tilemap import (
    Cancelled,
    MapStoreError,
    ModelFileError,
    OutputBusyError,
    TilemapInputError,
    open_map,
    predict,
)
from napari_tilemap.cli import main
from napari_tilemap.maps._mapoutput import old_path, work_path
from napari_tilemap.maps._outputlock import OutputLock, lock_path


def read_store(path):
    """Every array of a map store, as numpy, by name."""
    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[...]) for name, arr in group.arrays()}


def assert_identical(a, b):
    """Two stores hold bit-for-bit the same arrays (pyramid and done flags included)."""
    left, right = read_store(a), read_store(b)
    assert sorted(left) == sorted(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def two_models(random_model, tmp_path):
    a, b = random_model("small", 32, 1, seed=1), random_model("small", 32, 1, seed=2)
    a.save(tmp_path / "a.tilemap")
    b.save(tmp_path / "b.tilemap")
    return a, b


def image_of(seed, shape=(200, 180)):
    return np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)


# --- one writer per output -------------------------------------------------------------------

def test_a_second_writer_is_refused_while_the_first_holds_the_output(two_models, tmp_path):
    a, _ = two_models
    out = tmp_path / "m.zarr"
    started, release = threading.Event(), threading.Event()

    def slow(event):
        started.set()
        release.wait(20)

    worker = threading.Thread(target=lambda: predict(a, image_of(1), out=out, block_size=40, device="cpu",
                                                     callback=slow))
    worker.start()
    try:
        assert started.wait(20)
        with pytest.raises(OutputBusyError, match="being written by another tilemap run"):
            predict(a, image_of(1), out=out, device="cpu", overwrite=True)
        assert isinstance(OutputBusyError("x"), MapStoreError)
    finally:
        release.set()
        worker.join()
    assert open_map(out).complete
    assert leftovers(tmp_path) == []  # the lock file goes with the run


def test_a_killed_holder_releases_its_lock(tmp_path):
    out = tmp_path / "m.zarr"
    code = ("import sys, time; from pathlib import Path; from napari_tilemap.maps._outputlock import OutputLock; "
            f"OutputLock(Path({str(out)!r})).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError):
            OutputLock(out).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # a kill leaves the file, but not the lock
    with OutputLock(out):
        pass
    assert not lock_path(out).exists()


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "napari_tilemap.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


SLOW_WRITER = """
import os, sys, time
from napari_tilemap import OutputBusyError, load_model, predict

def wait(event):  # about 2 s for 25 blocks, or hold after the first block until a file appears
    deadline = time.monotonic() + 60
    while len(sys.argv) > 4 and not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.08)

try:
    predict(load_model(sys.argv[1]), sys.argv[2], out=sys.argv[3], block_size=40, device="cpu", workers=1,
            overwrite=True, callback=wait)
except OutputBusyError as err:
    sys.exit(f"busy: {err}")
"""


def _slow_writer(*args, **kw):
    """A process that writes a map slowly through the Python API; with a 4th argument it holds the
    output after its first block until that file exists."""
    return subprocess.Popen([sys.executable, "-c", SLOW_WRITER, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_lock(out, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with OutputLock(out):
                pass
        except OutputBusyError:
            return True
        time.sleep(0.02)
    return False


def test_two_processes_on_one_output_never_leave_a_mixed_map(two_models, tmp_path):
    """The issue's race: `predict B --overwrite &` then `predict A --overwrite` on the same store."""
    a, b = two_models
    image = image_of(2)
    np.save(tmp_path / "img.npy", image)
    out = tmp_path / "cc.zarr"
    reference = {name: predict(m, image, block_size=40, device="cpu") for name, m in (("a", a), ("b", b))}
    predict(a, tmp_path / "img.npy", out=out, block_size=40, device="cpu")
    cli_args = ("img.npy", "-o", "cc.zarr", "--overwrite", "--chunk", "40", "--workers", "1", "--device", "cpu")

    # deterministic overlap: the second run starts while the first holds the output
    first = _slow_writer("b.tilemap", "img.npy", "cc.zarr", "go", cwd=tmp_path)
    assert _wait_for_lock(out, first), first.communicate()
    second = _cli("predict", "a.tilemap", *cli_args, cwd=tmp_path)
    _, err2 = second.communicate(timeout=120)
    (tmp_path / "go").touch()
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and "being written by another tilemap run" in err2, err2
    assert len(err2.strip().splitlines()) == 1, err2

    # racing starts: whoever wins, the store is one model's complete map
    for delay in (0.0, 0.5, 1.5):
        p = _slow_writer("a.tilemap", "img.npy", "cc.zarr", cwd=tmp_path)
        time.sleep(delay)
        q = _cli("predict", "b.tilemap", *cli_args, cwd=tmp_path)
        (_, p_err), (_, q_err) = p.communicate(timeout=120), q.communicate(timeout=120)
        assert p.returncode in (0, 1) and q.returncode in (0, 2), (p_err, q_err)
        assert p.returncode == 0 or "busy" in p_err, p_err
        assert p.returncode == 0 or q.returncode == 0
        cmap = open_map(out)
        assert cmap.complete
        winner = "a" if zarr.open_group(str(out)).attrs["tilemap"]["run"]["model_sha256"] == _digest(a) else "b"
        np.testing.assert_allclose(np.asarray(cmap.scores), reference[winner].scores, atol=1e-5, rtol=0)
        assert leftovers(tmp_path) == []


def _digest(model):
    from napari_tilemap.learn._modelfile import model_digest, model_to_bytes

    return model_digest(model_to_bytes(model))


def test_a_store_is_marked_complete_only_with_every_block(two_models, tmp_path):
    from napari_tilemap.maps._mapoutput import finish_output

    a, _ = two_models
    out = tmp_path / "m.zarr"
    seen = []
    with pytest.raises(Cancelled):
        predict(a, image_of(3), out=out, block_size=40, device="cpu", callback=seen.append,
                cancel=lambda: len(seen) == 3)
    run = zarr.open_group(str(out)).attrs["tilemap"]["run"]
    with pytest.raises(MapStoreError, match=r"of 25 blocks were not written"):
        finish_output(out, out, run, pyramid=False)
    with pytest.raises(MapStoreError, match="changed by another run"):
        finish_output(out, out, {**run, "model_sha256": "0" * 64}, pyramid=False)
    assert not open_map(out).complete


def test_a_complete_marked_store_with_missing_blocks_is_finished_not_reused(two_models, tmp_path):
    """Stores left by the old race (complete, blocks missing) are repaired by the next run."""
    a, _ = two_models
    image = image_of(4)
    full = tmp_path / "full.zarr"
    predict(a, image, out=full, block_size=40, device="cpu")
    out = tmp_path / "m.zarr"
    predict(a, image, out=out, block_size=40, device="cpu")
    group = zarr.open_group(str(out), mode="r+")
    group["done"][1, 2] = 0
    group["scores"][:, 10:20, 20:30] = 0
    group["classes"][10:20, 20:30] = 0
    events = []
    predict(a, image, out=out, block_size=40, device="cpu", callback=events.append)
    assert [(e.rows, e.cols) for e in events] == [((10, 20), (20, 30))]
    assert_identical(out, full)


# --- the image is part of the run record ----------------------------------------------------

@pytest.mark.parametrize("kind", ["array", "npy file"])
def test_a_different_image_of_the_same_shape_is_refused(two_models, tmp_path, kind):
    a, _ = two_models
    first, other = image_of(5), image_of(6)
    if kind == "npy file":
        np.save(tmp_path / "img.npy", first)
        first = tmp_path / "img.npy"
    out = tmp_path / "m.zarr"
    kept = np.asarray(predict(a, first, out=out, device="cpu").scores)
    if kind == "npy file":
        time.sleep(0.01)
        np.save(tmp_path / "img.npy", other)  # the same path, other pixels
        other = tmp_path / "img.npy"
    with pytest.raises(MapStoreError, match="holds a map of another image"):
        predict(a, other, out=out, device="cpu")
    np.testing.assert_array_equal(np.asarray(open_map(out).scores), kept)
    replaced = predict(a, other, out=out, device="cpu", overwrite=True)
    np.testing.assert_array_equal(np.asarray(replaced.scores), predict(a, other, device="cpu").scores)


def test_an_interrupted_run_is_not_resumed_on_another_image(two_models, tmp_path):
    a, _ = two_models
    out, seen = tmp_path / "m.zarr", []
    with pytest.raises(Cancelled):
        predict(a, image_of(7), out=out, block_size=40, device="cpu", callback=seen.append,
                cancel=lambda: len(seen) == 4)
    with pytest.raises(MapStoreError, match="another image"):
        predict(a, image_of(8), out=out, block_size=40, device="cpu")
    cmap = predict(a, image_of(8), out=out, block_size=40, device="cpu", overwrite=True)
    reference = predict(a, image_of(8), block_size=40, device="cpu")
    np.testing.assert_array_equal(np.asarray(cmap.scores), reference.scores)


def test_lazy_sources_are_fingerprinted_by_sampled_windows(tmp_path):
    import dask.array as da

    from napari_tilemap.io._sources import open_image

    image = image_of(9, (300, 260))
    changed = image.copy()
    changed[0:5, 0:5] += 1  # inside the top-left sampled window
    fp = open_image(da.from_array(image, chunks=64)).fingerprint()
    assert fp["pixels_hashed"] == "sampled" and fp["shape"] == [300, 260]
    assert fp == open_image(da.from_array(image.copy(), chunks=50)).fingerprint()
    assert fp != open_image(da.from_array(changed, chunks=64)).fingerprint()
    whole = open_image(image).fingerprint()
    assert whole["pixels_hashed"] == "all"
    middle = image.copy()
    middle[150, 130] ^= 1  # any pixel of an in-memory array counts
    assert open_image(middle).fingerprint() != whole


# --- interrupted creation and swap ----------------------------------------------------------

class Killed(BaseException):
    """Stands for a SIGKILL at this point: nothing after it runs (the lock is released by the OS)."""


class _KillOnRename:
    """``os`` as the map-output module sees it, killed at its ``when``-th rename."""

    def __init__(self, when):
        self.when, self.calls = when, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        self.calls += 1
        if self.calls == self.when:
            raise Killed
        os.replace(src, dst)


@pytest.mark.parametrize("point", ["create: before the rename", "swap: before the first rename",
                                   "swap: between the renames", "swap: removing the old map"])
def test_an_interrupted_creation_or_swap_recovers_on_the_next_run(two_models, tmp_path, monkeypatch, point):
    import napari_tilemap.maps._mapoutput as mapoutput

    a, b = two_models
    image = image_of(10)
    reference = tmp_path / "ref"
    reference.mkdir()
    predict(b, image, out=reference / "m.zarr", block_size=40, device="cpu")
    out = tmp_path / "m.zarr"
    if point.startswith("create"):
        monkeypatch.setattr(mapoutput, "os", _KillOnRename(1))
        model, overwrite = b, False
    else:
        predict(a, image, out=out, block_size=40, device="cpu")
        model, overwrite = b, True
        if point.endswith("first rename"):
            monkeypatch.setattr(mapoutput, "os", _KillOnRename(1))
        elif point.endswith("between the renames"):
            monkeypatch.setattr(mapoutput, "os", _KillOnRename(2))
        else:
            def half_removed(path):  # killed half-way through the removal: some chunks gone
                chunks = sorted((path / "scores" / "c").rglob("*"))
                for f in chunks[: len(chunks) // 2]:
                    if f.is_file():
                        f.unlink()
                raise Killed
            monkeypatch.setattr(mapoutput, "remove_store", half_removed)
    with pytest.raises(Killed):
        predict(model, image, out=out, block_size=40, device="cpu", overwrite=overwrite)
    monkeypatch.undo()
    cmap = predict(model, image, out=out, block_size=40, device="cpu", overwrite=overwrite)
    assert cmap.complete
    assert_identical(out, reference / "m.zarr")
    assert leftovers(tmp_path) == []


def test_leftovers_from_an_old_version_or_a_kill_during_creation_are_cleared(two_models, tmp_path):
    a, _ = two_models
    out = tmp_path / "m.zarr"
    work_path(out).mkdir()  # killed right after mkdir
    predict(a, image_of(11), out=out, device="cpu")
    assert leftovers(tmp_path) == []
    work_path(tmp_path / "p.zarr").mkdir()  # killed while zarr wrote the group's metadata
    (work_path(tmp_path / "p.zarr") / "zarr.3f2a9c.partial").write_bytes(b'{"attrib')
    predict(a, image_of(11), out=tmp_path / "p.zarr", device="cpu")
    assert leftovers(tmp_path) == []
    # killed between the two renames with no complete new map: the old one is put back
    predict(a, image_of(11), out=tmp_path / "old.zarr", device="cpu")
    os.replace(tmp_path / "old.zarr", old_path(tmp_path / "n.zarr"))
    cmap = predict(a, image_of(11), out=tmp_path / "n.zarr", device="cpu")
    assert cmap.complete and leftovers(tmp_path) == []


def test_overwrite_never_deletes_what_is_not_its_own(two_models, tmp_path):
    a, b = two_models
    out = tmp_path / "m.zarr"
    predict(a, image_of(12), out=out, device="cpu")
    users = work_path(out)
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(MapStoreError, match=r"\.m\.zarr\.partial' is in the way"):
        predict(b, image_of(12), out=out, device="cpu", overwrite=True)
    assert (users / "notes.txt").read_text() == "mine"
    assert open_map(out).complete


# --- what is written is checked ------------------------------------------------------------

def test_damaged_chunks_fail_to_read_instead_of_returning_wrong_numbers(two_models, tmp_path):
    a, _ = two_models
    out = tmp_path / "m.zarr"
    predict(a, image_of(13), out=out, block_size=40, device="cpu", pyramid=False)
    chunk = next(p for p in sorted((out / "scores" / "c").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)checksum|corrupt|error"):
        np.asarray(open_map(out).scores[...])
    done = next(p for p in sorted((out / "done" / "c").rglob("*")) if p.is_file())
    done.write_bytes(done.read_bytes()[:-3] + b"xyz")
    with pytest.raises(MapStoreError, match="is damaged"):
        predict(a, image_of(13), out=out, block_size=40, device="cpu")


@pytest.mark.parametrize("fault", ["shape", "nan"])
def test_a_block_with_wrong_shape_or_nan_scores_is_never_written(two_models, tmp_path, monkeypatch, fault):
    import napari_tilemap.maps._blockrun as blockrun

    a, _ = two_models
    real = blockrun.dense_scores

    def broken(net, window, device=None, orientations=blockrun.AS_IS):
        s = real(net, window, device, orientations)
        return s[:, :-1] if fault == "shape" else np.full_like(s, np.nan)

    monkeypatch.setattr(blockrun, "dense_scores", broken)
    out = tmp_path / "m.zarr"
    match = "scores of shape" if fault == "shape" else "NaN or infinite scores"
    with pytest.raises(ModelFileError, match=match):
        predict(a, image_of(14), out=out, device="cpu")
    assert not open_map(out).complete
    assert int(np.asarray(zarr.open_group(str(out))["done"][...]).sum()) == 0


# --- kill and disk full: bit-for-bit equal to an uninterrupted run --------------------------

def test_kill_9_and_resume_is_bit_for_bit_the_uninterrupted_map(two_models, tmp_path):
    np.save(tmp_path / "img.npy", image_of(15, (600, 520)))
    args = ("--chunk", "40", "--workers", "1", "--device", "cpu")
    full = _cli("predict", "a.tilemap", "img.npy", "-o", "full.zarr", *args, cwd=tmp_path)
    assert full.wait(120) == 0, full.stderr.read()
    store = tmp_path / "k.zarr"
    for kill_after in (5, 60):
        run = _cli("predict", "a.tilemap", "img.npy", "-o", "k.zarr", *args, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            try:
                if int(np.asarray(zarr.open_group(str(store), mode="r")["done"][...]).sum()) >= kill_after:
                    break
            except Exception:  # not created yet, or a chunk being written
                pass
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
    assert not open_map(store).complete
    resumed = _cli("predict", "a.tilemap", "img.npy", "-o", "k.zarr", *args, cwd=tmp_path)
    assert resumed.wait(120) == 0, resumed.stderr.read()
    assert_identical(store, tmp_path / "full.zarr")


def test_disk_full_ends_in_one_line_and_resumes_bit_for_bit(two_models, tmp_path, monkeypatch, capsys):
    from zarr.storage import LocalStore

    np.save(tmp_path / "img.npy", image_of(16, (300, 280)))
    base = [str(tmp_path / "a.tilemap"), str(tmp_path / "img.npy"), "--chunk", "40", "--device", "cpu"]
    assert main(["predict", *base[:2], "-o", str(tmp_path / "full.zarr"), *base[2:]]) == 0
    real, writes = LocalStore.set, []

    async def full_disk(self, key, value):
        writes.append(key)
        if len(writes) > 30:
            raise OSError(errno.ENOSPC, "No space left on device", key)
        return await real(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full_disk)
    capsys.readouterr()
    assert main(["predict", *base[:2], "-o", str(tmp_path / "d.zarr"), *base[2:]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tilemap predict: error: no space left on the disk") and "resume" in err[-1]
    assert "Traceback" not in "\n".join(err)
    monkeypatch.undo()
    assert main(["predict", *base[:2], "-o", str(tmp_path / "d.zarr"), *base[2:]]) == 0
    assert_identical(tmp_path / "d.zarr", tmp_path / "full.zarr")


# --- smaller ones ---------------------------------------------------------------------------

def test_an_unreachable_scheduler_is_one_line_and_exit_1(two_models, tmp_path, capsys):
    pytest.importorskip("distributed")
    import dask

    np.save(tmp_path / "img.npy", image_of(17))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["predict", str(tmp_path / "a.tilemap"), str(tmp_path / "img.npy"), "-o",
                     str(tmp_path / "m.zarr"), "--scheduler", "tcp://127.0.0.1:9", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("tilemap predict: error: the dask cluster failed")


def test_relative_paths_work_on_workers_started_in_another_folder(two_models, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    a, _ = two_models
    image = image_of(18)
    np.save(tmp_path / "img.npy", image)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        monkeypatch.chdir(tmp_path)
        cmap = predict(a, "img.npy", out="m.zarr", block_size=64, device="cpu", client=client)
    assert cmap.complete and not (elsewhere / "m.zarr").exists()
    np.testing.assert_allclose(np.asarray(open_map(tmp_path / "m.zarr").scores), predict(a, image).scores,
                               atol=1e-6, rtol=0)


def test_stopping_training_before_the_first_epoch_gives_no_model(sample):
    from napari_tilemap import TrainingRun, extract_tiles, train

    tiles = extract_tiles(sample.image, sample.labels, tile_size=24, class_table=sample.class_table, seed=0)
    run = TrainingRun(tiles, preset="small", epochs=2, device="cpu")
    for _ in run:
        run.stop()
    assert run.model is None
    with pytest.raises(Cancelled, match="before its first epoch ended; no model"):
        train(tiles, preset="small", epochs=2, device="cpu", cancel=lambda: True)


def test_input_messages_say_what_is_wrong(tmp_path):
    from napari_tilemap.io._sources import open_image

    with pytest.raises(TilemapInputError, match="beyond the float32 range"):
        open_image(np.full((40, 40), 1e300)).read((0, 10), (0, 10))
    with pytest.raises(TilemapInputError, match="NaN or infinite"):
        open_image(np.full((40, 40), np.nan)).read((0, 10), (0, 10))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(TilemapInputError, match="not a valid PNG image or the file is damaged") as err:
        open_image(tmp_path / "bad.png")
    assert "\n" not in str(err.value) and "plugin" not in str(err.value)


def test_a_failing_callback_releases_the_output_at_once(two_models, tmp_path):
    a, _ = two_models
    out = tmp_path / "m.zarr"

    def closed_widget(event):
        raise RuntimeError("the progress bar was closed")

    with pytest.raises(RuntimeError, match="progress bar") as failure:
        predict(a, image_of(19), out=out, block_size=40, device="cpu", callback=closed_widget)
    cmap = predict(a, image_of(19), out=out, block_size=40, device="cpu")  # the failure is still referenced
    assert cmap.complete and failure.value is not None


@pytest.mark.parametrize("spec", ["path", "array object"])
def test_a_zarr_image_edited_in_place_is_refused(two_models, tmp_path, spec):
    a, _ = two_models
    image = image_of(20, (560, 400))
    z = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(128, 128), dtype="uint8")
    z[...] = image
    source = tmp_path / "img.zarr" if spec == "path" else zarr.open_array(str(tmp_path / "img.zarr"), mode="r")
    out = tmp_path / "m.zarr"
    predict(a, source, out=out, block_size=80, device="cpu")
    time.sleep(0.01)
    z[80:150, 100:300] = 255 - image[80:150, 100:300]  # between the sampled windows: only chunk mtimes change
    with pytest.raises(MapStoreError, match="another image"):
        predict(a, source, out=out, block_size=80, device="cpu")


def test_a_scheduler_address_that_never_answers_ends_in_one_line(two_models, tmp_path, capsys):
    pytest.importorskip("distributed")
    import socket

    import dask

    np.save(tmp_path / "img.npy", image_of(21))
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            code = main(["predict", str(tmp_path / "a.tilemap"), str(tmp_path / "img.npy"), "-o",
                         str(tmp_path / "m.zarr"), "--device", "cpu",
                         "--scheduler", f"tcp://127.0.0.1:{silent.getsockname()[1]}"])
    finally:
        silent.close()
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "no answer in 7 s" in err, err
    with OutputLock(tmp_path / "m.zarr"):  # the output is free again
        pass
