"""Robustness: tries, as a careful user would, to make napari-tilemap produce a silently wrong map.

Six categories of cases, on small images and untrained ``small``-preset models (tile 32):

1. model files: every lie a model file can tell, written into the safetensors header or the
   file (tile_size vs weights, num_classes vs class table, NaN/huge weights, zero std, huge
   layer sizes, list/null metadata, sparse 1.5 GB files, pickles...), seeded byte flips and
   truncations of a valid file, a few through the CLI; one process loads them all and its
   peak RSS is printed;
2. images/labels: NaN, inf, values beyond float32, wrong channels, stacks, empty, tiny and
   unreadable inputs to ``predict`` (onto an existing map), ``extract_tiles`` and the CLI,
   next to odd but valid ones (bool, big-endian, strided, dask, zarr with named axes...);
3. interruption: ``kill -9`` of a CLI ``predict`` at random block counts or delays, fresh and
   ``--overwrite`` over another map, then the same command again;
4. concurrency: two CLI processes (and two threads) writing one output with different models;
5. disk full: a real 2 MiB tmpfs, mounted in a private mount namespace (``unshare``) and
   filled to a random level (or, where no mount is possible, zarr writes patched to fail);
6. distributed: a dask worker SIGKILLed mid-run, the whole cluster closed mid-run, scheduler
   addresses that cannot be reached.

A case *held* when it ended in a correct result, checked against an independent reference
(an unfused tile-by-tile forward pass of the model, the in-memory threaded map, or an
uninterrupted run of the same command compared array by array, bit for bit), or in a clear
refusal: the right exception type with a one-line message, or one error line from the CLI
with the right exit status and no traceback, with any earlier map at the output untouched.

Prints one line per category as it finishes, then a Markdown table
``| category | cases tried | held | what was tried |``, notes (peak RSS, how the disk was
filled), every case that did not hold with what happened, the totals and the wall time.
Exits 1 if any case did not hold.

    python benchmarks/bench_robustness.py                # about 3 minutes on 2 idle cores
    python benchmarks/bench_robustness.py --quick        # fewer random cases, about 70 s
    python benchmarks/bench_robustness.py --seed 3 --verbose --only interruption concurrency
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CATEGORIES = ("model files", "images/labels", "interruption", "concurrency", "disk full", "distributed")
KEYS = {
    "models": "model files",
    "images": "images/labels",
    "interruption": "interruption",
    "concurrency": "concurrency",
    "diskfull": "disk full",
    "distributed": "distributed",
}
CHUNK = 40  # image pixels per work block side: 10 map cells with the small preset (step 4)
LOCAL = ("--workers", "1", "--device", "cpu")


# --- bookkeeping -------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every case tried, by category, and what to print below the table."""

    cases: list = field(default_factory=list)
    tried: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def add(self, category: str, name: str, held: bool, detail: str = "") -> None:
        self.cases.append((category, name, bool(held), detail))

    def attempt(self, category: str, name: str, fn, *args) -> None:
        """Run one case; an exception the case did not expect is a case that did not hold."""
        try:
            held, detail = fn(*args)
        except Exception as err:  # noqa: BLE001 - anything unexpected is a finding
            held, detail = False, f"unexpected {type(err).__name__}: {_short(err)} [{_where(err)}]"
        self.add(category, name, held, detail)


def _short(x, n: int = 300) -> str:
    text = " ".join(str(x).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _where(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"


def _one_line(message: str) -> str | None:
    """Why ``message`` is not a usable one-line error (None: it is)."""
    if "\n" in message or "Traceback" in message:
        return f"message spans lines: {_short(message)}"
    if not message.strip() or len(message) > 600:
        return f"message empty or {len(message)} characters long"
    return None


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "napari_tilemap.cli", *map(str, args)]


def run_cli(args, cwd, env=None, timeout=240) -> tuple[int, str]:
    """Run the ``tilemap`` CLI in a fresh process: (exit status, stderr)."""
    done = subprocess.run(
        cli_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stderr


def cli_error_problem(rc: int, err: str, want: tuple[int, ...], words: tuple[str, ...] = ()) -> str | None:
    """Why a CLI run was not a clean refusal: exit status in ``want``, exactly one error line
    (tqdm progress fragments aside), no traceback, mentioning one of ``words``. None: clean."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", err) if line.strip()]
    other = [line for line in lines if not line.startswith(("predict:", "epoch "))]
    if rc not in want:
        return f"exit status {rc}, expected {'/'.join(map(str, want))}; stderr: {_short(' | '.join(other[-3:]))}"
    if "Traceback" in err:
        return f"traceback on stderr: {_short(' | '.join(other[-3:]))}"
    if len(other) != 1 or ": error: " not in other[0] or not other[0].startswith("tilemap "):
        return f"stderr is not one error line ({len(other)} lines): {_short(' | '.join(other[:4]))}"
    if words and not any(w in other[0].lower() for w in words):
        return f"message does not say {' or '.join(map(repr, words))}: {_short(other[0])}"
    return None


def error_line(err: str) -> str:
    """The last line of a CLI's stderr that is not a progress bar."""
    lines = [line.strip() for line in re.split(r"[\r\n]+", err) if line.strip()]
    other = [line for line in lines if not line.startswith(("predict:", "epoch "))]
    return _short(other[-1], 200) if other else "(nothing on stderr)"


def refused(rc: int, err: str) -> str:
    return f"exit {rc}: {error_line(err)}"


def wait_or_kill(p: subprocess.Popen, timeout: float = 240) -> int:
    """The exit status of ``p``; a process that hangs is killed and reported as such."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise RuntimeError(f"a CLI process hung for {timeout:.0f} s and was killed") from None


def run_parallel(jobs, workers: int = 2) -> list:
    """Run callables two at a time (each mostly waits on its own process)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


# --- models, images and references -----------------------------------------------------------


def make_model(seed: int, tile: int = 32, channels: int = 1, classes: int = 3, preset: str = "small"):
    """An untrained model with randomised BatchNorm statistics (as tests/conftest.py's random_model)."""
    import torch

    from napari_tilemap import ClassTable, TileClassifier
    from napari_tilemap.learn._networks import architecture

    torch.manual_seed(seed)
    arch = architecture(preset, tile, channels, classes)
    model = TileClassifier.create(
        arch, ClassTable.from_values(range(1, classes)), np.full(channels, 100.0), np.full(channels, 40.0)
    )
    gen = torch.Generator().manual_seed(seed)
    for m in model.network.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    model.network.eval()
    return model


_REFERENCES: dict = {}


def reference_scores(model, image) -> np.ndarray | None:
    """:func:`_reference_scores`, remembered per model and image."""
    import hashlib

    arr = np.ascontiguousarray(image)
    key = (id(model), arr.shape, arr.dtype.str, hashlib.sha256(arr.view(np.uint8).data).hexdigest())
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_scores(model, arr)
    return _REFERENCES[key]


def _reference_scores(model, image, sample: int = 400) -> np.ndarray | None:
    """The map computed tile by tile, independently of the library's dense path.

    Each cell's T×T tile is cut from the image padded symmetrically (edge pixel repeated),
    normalised in float64 and passed through the unfused network one tile at a time (in
    batches). The cells whose tiles reach past the border (where the reflection matters) and
    ``sample`` seeded others are computed; the rest are NaN. None when the image or the
    network's output is not finite.
    """
    import torch

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    img = img.astype(np.float64)
    if not np.isfinite(img).all():
        return None
    t, s = model.tile_size, model.step
    h = (t - s) // 2
    rows, cols = img.shape[:2]
    mh, mw = -(-rows // s), -(-cols // s)
    pad = np.pad(img, ((h, mh * s - rows + h), (h, mw * s - cols + h), (0, 0)), mode="symmetric")
    with np.errstate(over="ignore", invalid="ignore"):
        x = ((pad - model.mean.astype(np.float64)) / model.std.astype(np.float64)).astype(np.float32)
    if not np.isfinite(x).all():
        return None
    win = np.lib.stride_tricks.sliding_window_view(x, (t, t), axis=(0, 1))[::s, ::s][:mh, :mw]
    chosen = np.zeros((mh, mw), bool)
    edge = -(-h // s) + 1  # cells whose tile reaches past the image's border
    chosen[:edge], chosen[-edge:], chosen[:, :edge], chosen[:, -edge:] = True, True, True, True
    chosen.flat[np.random.default_rng(mh * 7919 + mw).permutation(mh * mw)[:sample]] = True
    rows, cols = np.nonzero(chosen)
    tiles = torch.from_numpy(np.ascontiguousarray(win[rows, cols]))
    out = []
    net = model.network.eval()
    with torch.inference_mode():
        for i in range(0, len(tiles), 2048):
            out.append(torch.softmax(net(tiles[i : i + 2048]).double(), 1)[:, :, 0, 0].numpy())
    scores = np.concatenate(out)
    if not np.isfinite(scores).all():
        return None
    p = np.full((scores.shape[1], mh, mw), np.nan, np.float32)
    p[:, rows, cols] = scores.T
    return p


def map_problem(scores, classes, ref: np.ndarray, values, atol: float = 1e-4) -> str | None:
    """Why a map differs from the reference scores (None: it agrees).

    Where the reference is known (not NaN), scores must agree within ``atol``, and classes
    must be the label value of the reference's best class wherever the best two reference
    scores are more than 1e-3 apart.
    """
    scores, classes = np.asarray(scores), np.asarray(classes)
    if scores.shape != ref.shape:
        return f"scores of shape {scores.shape}, the reference has {ref.shape}"
    if not np.isfinite(scores).all():
        return "non-finite scores in the map"
    known = np.isfinite(ref).all(0)
    diff = float(np.abs(scores.astype(np.float64) - ref)[:, known].max())
    if diff > atol:
        return f"scores differ from the reference by up to {diff:.3g} (tolerance {atol:g})"
    filled = np.where(known, ref, 0)
    top2 = np.sort(filled, 0)[-2:]
    clear = ((top2[1] - top2[0]) > 1e-3) & known
    want = np.asarray(values, np.uint8)[filled.argmax(0)]
    wrong = int(((classes != want) & clear).sum())
    return f"{wrong} cells have another class than the reference" if wrong else None


def store_arrays(path) -> dict:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[...]) for name, arr in group.arrays()}


def store_difference(path, reference) -> str | None:
    """Why the store at ``path`` is not bit-for-bit the reference store (all arrays)."""
    try:
        got = store_arrays(path)
    except Exception as err:  # noqa: BLE001
        return f"cannot read {Path(path).name}: {type(err).__name__}: {_short(err, 120)}"
    want = store_arrays(reference)
    if sorted(got) != sorted(want):
        return f"arrays {sorted(got)} where the reference has {sorted(want)}"
    for name in want:
        a, b = got[name], want[name]
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            return f"array {name!r} differs from the uninterrupted run's"
    return None


def store_attrs(path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs["tilemap"])


def is_complete(path) -> bool:
    try:
        return bool(store_attrs(path).get("complete"))
    except Exception:  # noqa: BLE001 - missing or not a map store
        return False


def tree_digest(path) -> str | None:
    """SHA-256 over the relative paths and bytes of every file under ``path`` (None: absent)."""
    import hashlib

    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def leftovers(out: Path) -> list[str]:
    """Work, old and lock paths a run leaves beside ``out`` when it did not clean up."""
    return [p for p in (f".{out.name}.partial", f".{out.name}.old", f".{out.name}.lock") if (out.parent / p).exists()]


def done_count(stores) -> int:
    """Blocks marked done in the given stores, counted from the chunk files of ``done``."""
    n = 0
    for store in stores:
        for _, _, files in os.walk(Path(store) / "done" / "c"):
            n += sum(1 for f in files if not f.endswith(".partial"))
    return n


def digest_of(model) -> str:
    from napari_tilemap.learn._modelfile import model_digest, model_to_bytes

    return model_digest(model_to_bytes(model))


@dataclass
class Context:
    root: Path
    quick: bool
    seed: int
    no_mount: bool = False
    a: object = None
    b: object = None
    img: np.ndarray = None  # the small image (200x180 uint8) most cases start from
    good_store: Path = None  # the map of model a on img, written by predict

    def sub(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d


def setup(root: Path, quick: bool, seed: int) -> Context:
    from napari_tilemap import predict

    ctx = Context(root, quick, seed)
    ctx.a, ctx.b = make_model(1), make_model(2)
    ctx.a.save(root / "a.tilemap")
    ctx.b.save(root / "b.tilemap")
    ctx.img = np.random.default_rng(seed).integers(0, 255, (200, 180)).astype(np.uint8)
    np.save(root / "small.npy", ctx.img)
    ctx.good_store = root / "good.zarr"
    predict(ctx.a, ctx.img, out=ctx.good_store, block_size=CHUNK, device="cpu")
    return ctx


def fresh_copy(src: Path, dst: Path) -> str:
    """Copy a store to ``dst`` (replacing what is there); its digest."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return tree_digest(dst)


# --- 1. model files ----------------------------------------------------------------------------


def _split(data: bytes) -> tuple[dict, str, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    return header, header["__metadata__"]["tilemap"], data[8 + n :]


def _join(header, tensors: bytes) -> bytes:
    raw = header if isinstance(header, (bytes, str)) else json.dumps(header)
    raw = raw.encode() if isinstance(raw, str) else raw
    return struct.pack("<Q", len(raw)) + raw + tensors


def _with_text(data: bytes, text: str) -> bytes:
    header, _, tensors = _split(data)
    return _join({**header, "__metadata__": {"tilemap": text}}, tensors)


def _edit(data: bytes, *path_and_value) -> bytes:
    """``data`` with the metadata entry at a path set (or, with a value of ..., removed)."""
    *path, value = path_and_value
    meta = json.loads(_split(data)[1])
    d = meta
    for key in path[:-1]:
        d = d[key]
    if value is ...:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return _with_text(data, json.dumps(meta))


def _edit_header(data: bytes, key: str, fld: str, value) -> bytes:
    header, _, tensors = _split(data)
    header[key] = {**header[key], fld: value}
    return _join(header, tensors)


class _Payload:
    """Unpickling this writes a marker file: a loader that unpickles would leave it behind."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def hostile_models(ctx: Context, d: Path) -> list[tuple[str, Path, bool]]:
    """(name, path, may_load) for every lie written as a file; ``may_load``: a harmless lie
    that may load if its map is the original's."""
    import torch
    from safetensors.torch import save as st_save

    from napari_tilemap import ClassTable
    from napari_tilemap.learn._modelfile import VERSION, model_to_bytes
    from napari_tilemap.learn._networks import architecture

    good = model_to_bytes(ctx.a)

    def tampered(change, **kw) -> bytes:
        model = make_model(1, **kw)
        with torch.no_grad():
            change(model)
        return model_to_bytes(model)

    header, text, tensors = _split(good)
    meta = json.loads(text)
    four = model_to_bytes(make_model(1, classes=4))
    floats = sorted(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32" and "weight" in k)
    same = next((a, b) for a in floats for b in floats if a < b and header[a]["shape"] == header[b]["shape"])
    raw_header = good[8 : 8 + struct.unpack("<Q", good[:8])[0]].decode().rstrip()

    def duplicate(first: bool) -> bytes:
        entry = f'"{same[0]}": {json.dumps(header[same[1]])}'
        text = "{" + entry + ", " + raw_header[1:] if first else raw_header[:-1] + ", " + entry + "}"
        return _join(text, tensors)

    lies: dict[str, bytes] = {
        "tile_size 36 in the metadata, weights of a 32 px model": _edit(
            good, "architecture", architecture("small", 36, 1, 3).to_dict()
        ),
        "tile_size changed alone": _edit(good, "architecture", "tile_size", 36),
        "num_classes 4 in the architecture, a class table of 3": _edit(
            four, "class_table", ClassTable.from_values([1, 2]).to_dict()
        ),
        "a class table of 4, architecture and weights of 3": _edit(
            good, "class_table", ClassTable.from_values([1, 2, 3]).to_dict()
        ),
        "architecture of 2 classes over weights of 3": _edit(
            _edit(good, "architecture", architecture("small", 32, 1, 2).to_dict()),
            "class_table",
            ClassTable.from_values([1]).to_dict(),
        ),
        "NaN weight": tampered(lambda m: m.network[0].weight.__setitem__((0, 0, 0, 0), float("nan"))),
        "+inf BatchNorm bias": tampered(lambda m: m.network[1].bias.__setitem__(0, float("inf"))),
        "NaN running mean": tampered(lambda m: m.network[1].running_mean.__setitem__(0, float("nan"))),
        "1e35 weight (overflows)": tampered(lambda m: m.network[0].weight.__setitem__((0, 0, 0, 0), 1e35)),
        "negative running variance": tampered(lambda m: m.network[1].running_var.__setitem__(0, -1.0)),
        "zero std": tampered(lambda m: m.std.__setitem__(0, 0.0)),
        "negative std": _edit(good, "normalisation", "std", [-40.0]),
        "std 1e-30": _edit(good, "normalisation", "std", [1e-30]),
        "NaN mean": _with_text(good, text.replace("[100.0]", "[NaN]")),
        "mean 1e39 (inf in float32)": _edit(good, "normalisation", "mean", [1e39]),
        "mean of 2 channels for 1": _edit(good, "normalisation", "mean", [1.0, 2.0]),
        "mean a string": _edit(good, "normalisation", "mean", "100"),
        "widths [4096]*30": _edit(good, "architecture", "widths", [4096] * 30),
        "widths [1024]*12": _edit(good, "architecture", "widths", [1024] * 12),
        "widths []": _edit(good, "architecture", "widths", []),
        "widths null": _edit(good, "architecture", "widths", None),
        "head_width 1e9": _edit(good, "architecture", "head_width", 10**9),
        "convs_per_stage 200000": _edit(good, "architecture", "convs_per_stage", 200_000),
        "stem_kernel 10**6": _edit(good, "architecture", "stem_kernel", 10**6),
        "architecture large/1024 px/4 ch/256 classes": _edit(
            good, "architecture", architecture("large", 1024, 4, 256).to_dict()
        ),
        "tile_size 100000": _edit(good, "architecture", "tile_size", 100_000),
        "odd tile_size 33": _edit(good, "architecture", "tile_size", 33),
        "tile_size true": _edit(good, "architecture", "tile_size", True),
        "tile_size 32.0": _edit(good, "architecture", "tile_size", 32.0),
        "unknown preset": _edit(good, "architecture", "preset", "giant"),
        "in_channels 5": _edit(good, "architecture", "in_channels", 5),
        "in_channels 0": _edit(good, "architecture", "in_channels", 0),
        "num_classes 10**6": _edit(good, "architecture", "num_classes", 10**6),
        "duplicate class values": _edit(good, "class_table", "values", [0, 1, 1]),
        "class names not strings": _edit(good, "class_table", "class_names", [1, 2, 3]),
        "colour 1e400": _edit(good, "class_table", "colors", [[10**400, 0, 0, 1]] * 3),
        "label value 300": _edit(good, "class_table", "values", [0, 1, 300]),
        "metadata a list": _with_text(good, json.dumps([meta])),
        "metadata null": _with_text(good, "null"),
        "metadata a string": _with_text(good, json.dumps("napari-tilemap-model")),
        "metadata a number": _with_text(good, "1e999"),
        "metadata not JSON": _with_text(good, "{'format': 1}"),
        "metadata nested 100000 deep": _with_text(good, "[" * 100_000 + "]" * 100_000),
        "tilemap metadata an object, not a string": _join({**header, "__metadata__": {"tilemap": meta}}, tensors),
        "architecture null": _edit(good, "architecture", None),
        "class table a list": _edit(good, "class_table", [1, 2, 3]),
        "normalisation null": _edit(good, "normalisation", None),
        "record a list": _edit(good, "record", [1, 2]),
        "unknown entry 'code'": _edit(good, "code", "import os"),
        "normalisation missing": _edit(good, "normalisation", ...),
        f"format version {VERSION + 1} (newer than this reader)": _edit(good, "version", VERSION + 1),
        "format version 2 on a softmax model": _edit(good, "version", 2),
        "format version 1 with activation 'sigmoid' (a version-2 feature)": _edit(
            good, "architecture", "activation", "sigmoid"
        ),
        "activation 'relu'": _edit(good, "architecture", "activation", "relu"),
        "format version '1'": _edit(good, "version", "1"),
        "format version 0": _edit(good, "version", 0),
        "another format name": _edit(good, "format", "pytorch"),
        "header length 2**63": struct.pack("<Q", 2**63) + good[8:],
        "header length past the end": struct.pack("<Q", 10**6) + good[8:],
        "header an array": _join(b"[1, 2]", b""),
        "header not UTF-8": _join(b"{\xff\xfe}", b""),
        "8 bytes appended": good + b"\0" * 8,
        "dtype F64 for F32 bytes": _edit_header(good, "0.weight", "dtype", "F64"),
        "dtype F16": _edit_header(good, "0.weight", "dtype", "F16"),
        "extra field in a tensor entry": _edit_header(good, "0.weight", "x", 1),
        "overlapping byte ranges": _edit_header(good, "1.num_batches_tracked", "data_offsets", [4, 12]),
        "byte range beyond the data": _edit_header(
            good, floats[0], "data_offsets", [len(tensors) - 4, len(tensors) + 60]
        ),
        "tensor shape changed": _edit_header(good, "0.weight", "shape", header["0.weight"]["shape"][::-1]),
        "unknown tensor": _join({**header, "evil": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}, tensors),
        "missing tensor": _join({k: v for k, v in header.items() if k != floats[0]}, tensors),
        "safetensors file without tilemap metadata": st_save({"w": torch.zeros(2)}),
        "text file": b"hello, I am a model",
        "empty file": b"",
        "7 bytes": b"\x08\0\0\0\0\0\0",
    }
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(2), "p": _Payload(str(d / "pwned-by-torch"))}, buf)
    lies["torch.save file with a pickle payload"] = buf.getvalue()
    lies["pickle payload"] = pickle.dumps(_Payload(str(d / "pwned")))

    harmless = {"format version 2 on a softmax model"}  # may load, if the map is the original's
    out = []
    for i, (name, data) in enumerate(lies.items()):
        path = d / f"lie{i:02d}.tilemap"
        path.write_bytes(data)
        out.append((name, path, name in harmless))
    for i, first in enumerate((True, False)):
        path = d / f"dup{i}.tilemap"
        path.write_bytes(duplicate(first))
        out.append(
            (
                f"tensor {same[0]!r} twice in the header ({'first' if first else 'last'} copy points elsewhere)",
                path,
                True,
            )
        )
    for size in (1_500_000_000, 300_000_000):
        path = d / f"sparse{size}.tilemap"
        with open(path, "wb") as f:
            f.write(good)
            f.truncate(size)
        out.append((f"sparse file of {size / 1e9:.1f} GB", path, False))
    (d / "adir.tilemap").mkdir()
    out.append(("a directory", d / "adir.tilemap", False))
    out.append(("a missing file", d / "missing.tilemap", False))
    os.mkfifo(d / "fifo.tilemap")
    out.append(("a FIFO (would block a reader)", d / "fifo.tilemap", False))
    os.symlink("/dev/zero", d / "zero.tilemap")
    out.append(("a symlink to /dev/zero", d / "zero.tilemap", False))
    return out


def mutated_models(ctx: Context, d: Path, n: int) -> list[tuple[str, Path, bool]]:
    """Seeded byte flips (header, data, length prefix) and truncations of a valid file."""
    good = (ctx.root / "a.tilemap").read_bytes()
    start = 8 + struct.unpack("<Q", good[:8])[0]
    rng = random.Random(ctx.seed * 7919 + 1)
    kinds = [
        "flip in the header",
        "digit changed in the header",
        "flip in the header",
        "flip in the tensor data",
        "flip in the tensor data",
        "digit changed in the header",
        "truncation",
        "flip in the tensor data",
        "truncation",
        "flip in the length",
    ]
    digits = [i for i in range(8, start) if chr(good[i]).isdigit()]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        data = bytearray(good)
        if kind == "digit changed in the header":
            spot = rng.choice(digits)
            data[spot] = ord(rng.choice([c for c in "0123456789" if ord(c) != good[spot]]))
            context = good[max(8, spot - 24) : spot + 6].decode(errors="replace")
            what = f"#{i} digit at byte {spot} changed to {chr(data[spot])} (in ...{context}...)"
        elif kind == "truncation":
            cut = rng.randrange(len(good))
            data = data[:cut]
            what = f"#{i} truncated to {cut} of {len(good)} bytes"
        else:
            lo, hi = {
                "flip in the header": (8, start),
                "flip in the tensor data": (start, len(good)),
                "flip in the length": (0, 8),
            }[kind]
            spots = sorted(rng.randrange(lo, hi) for _ in range(rng.randint(1, 3)))
            for p in spots:
                data[p] ^= rng.randint(1, 255)
            what = f"#{i} {kind} at byte(s) {spots}"
        path = d / f"mut{i:03d}.tilemap"
        path.write_bytes(bytes(data))
        out.append((what, path, True))
    return out


MODEL_CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from napari_tilemap import ModelFileError, TilemapInputError, load_model, predict
print(json.dumps({"rss_after_imports_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
job = json.load(open(sys.argv[1]))
image = np.load(job["image"])
for item in job["files"]:
    print(json.dumps({"start": item["name"]}), flush=True)
    t0 = time.perf_counter()
    result = {"name": item["name"]}
    try:
        model = load_model(item["path"])
    except ModelFileError as err:
        result.update(outcome="refused", message=str(err))
    except BaseException as err:
        result.update(outcome="error", message=f"{type(err).__name__}: {err}")
    else:
        try:
            np.save(item["scores"], predict(model, image, device="cpu", workers=1).scores)
            result.update(outcome="loaded")
        except ModelFileError as err:
            result.update(outcome="refused at predict", message=str(err))
        except BaseException as err:
            result.update(outcome="error", message=f"predict: {type(err).__name__}: {err}")
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result), flush=True)
print(json.dumps({"peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
"""


def load_in_child(d: Path, files: list[tuple[str, Path, bool]], image: Path) -> tuple[dict, int, int]:
    """Load every file in one process (restarted after a crash): results by name, the peak RSS
    and the RSS once napari_tilemap and torch were imported, in KiB."""
    results, peak, base, todo = {}, 0, 0, list(files)
    while todo:
        job = {
            "image": str(image),
            "files": [
                {"name": n, "path": str(p), "scores": str(d / f"scores-{i}.npy")} for i, (n, p, _) in enumerate(todo)
            ],
        }
        (d / "job.json").write_text(json.dumps(job))
        names = {j["name"]: j["scores"] for j in job["files"]}
        proc = subprocess.run(
            [sys.executable, "-c", MODEL_CHILD, str(d / "job.json")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        started = None
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "start" in r:
                started = r["start"]
            elif "peak_rss_kib" in r:
                peak = max(peak, r["peak_rss_kib"])
            elif "rss_after_imports_kib" in r:
                base = base or r["rss_after_imports_kib"]
            else:
                r["scores"] = names[r["name"]]
                results[r["name"]] = r
                started = None
        if proc.returncode != 0 or started is not None:
            crashed = started or (todo[0][0] if todo else None)
            results[crashed] = {
                "name": crashed,
                "outcome": "crash",
                "message": f"the loading process died (status {proc.returncode}): {_short(proc.stderr[-300:])}",
                "seconds": 0,
            }
        todo = [f for f in todo if f[0] not in results]
    return results, peak, base


def category_models(ctx: Context, led: Ledger) -> None:
    cat = "model files"
    d = ctx.sub("models")
    lies = hostile_models(ctx, d)
    flips = mutated_models(ctx, d, 15 if ctx.quick else 60)
    control = ("original (control)", ctx.root / "a.tilemap", True)

    # three hostile files through the CLI, onto an existing map, while the loader runs
    cli_cases = [
        ("CLI: NaN weight", "NaN weight"),
        ("CLI: tile_size 36 over 32 px weights", "tile_size 36 in the metadata, weights of a 32 px model"),
        ("CLI: pickle payload", "pickle payload"),
    ][: 2 if ctx.quick else 3]
    by_name = {n: p for n, p, _ in lies}

    def cli_case(i, label, lie):
        case = ctx.sub(f"models/cli{i}")
        before = fresh_copy(ctx.good_store, case / "m.zarr")
        rc, err = run_cli(
            ["predict", by_name[lie], ctx.root / "small.npy", "-o", "m.zarr", "--overwrite", "--chunk", CHUNK, *LOCAL],
            cwd=case,
        )
        problem = cli_error_problem(rc, err, (2,), ("model",))
        if problem is None and tree_digest(case / "m.zarr") != before:
            problem = "the existing map at the output was changed"
        return label, problem, refused(rc, err) + ", map untouched"

    with ThreadPoolExecutor(2) as pool:
        cli_futures = [pool.submit(cli_case, i, *c) for i, c in enumerate(cli_cases)]
        results, peak, base = load_in_child(d, [control, *lies, *flips], ctx.root / "small.npy")
        cli_results = [f.result() for f in cli_futures]

    ref = results.get(control[0], {})
    if ref.get("outcome") != "loaded":
        raise RuntimeError(f"the unchanged model file did not load: {ref}")
    original = np.load(ref["scores"])
    changed_weights = 0
    for name, path, may_load in lies + flips:
        r = results[name]
        outcome, seconds = r["outcome"], r.get("seconds", 0)
        if outcome in ("refused", "refused at predict"):
            problem = _one_line(r["message"])
            if problem is None and seconds > 5:
                problem = f"refused only after {seconds:.1f} s"
            held, detail = problem is None, problem or f"{outcome} in {seconds:.2f} s: {_short(r['message'], 160)}"
        elif outcome == "loaded":
            got = np.load(r["scores"])
            same = np.array_equal(got, original)
            held = may_load and same
            if not may_load:
                detail = "loaded although the file lies"
            elif not same:
                changed_weights += 1
                moved = int((got.argmax(0) != original.argmax(0)).sum())
                detail = (
                    f"loaded, and its map differs from the original model's (scores by up to "
                    f"{np.abs(got - original).max():.2g}, {moved} of {original[0].size} cells change class); "
                    "nothing in the file detects the change"
                )
            else:
                detail = "loaded; its map is the original model's, bit for bit"
        else:
            held, detail = False, f"{outcome}: {_short(r.get('message', ''))}"
        if name == "pickle payload" or name.startswith("torch.save"):
            marker = d / ("pwned" if name == "pickle payload" else "pwned-by-torch")
            if marker.exists():
                held, detail = False, "the pickle payload ran"
        led.add(cat, name, held, detail)
    for label, problem, info in cli_results:
        led.add(cat, label, problem is None, problem or info)
    led.tried[cat] = (
        f"{len(lies)} lies written as files (tile_size vs weights, num_classes vs class table, NaN/inf/huge "
        f"weights, zero/negative/tiny std, huge layer sizes, widths=[], metadata list/null/nested, bad "
        f"offsets/dtypes/lengths, pickle, sparse 1.5 GB file, FIFO, /dev/zero); {len(flips)} seeded byte "
        f"flips/truncations; {len(cli_cases)} through the CLI onto an existing map"
    )
    led.notes.append(
        f"model files: one process loaded all {len(lies) + len(flips) + 1} files (hostile, mutated and the "
        f"control; a map of each that loaded) with a peak RSS of {peak / 1024:.0f} MiB "
        f"({base / 1024:.0f} MiB right after importing napari_tilemap and torch)"
    )
    if changed_weights:
        led.notes.append(
            f"model files: {changed_weights} mutated file(s) loaded as a different, valid-looking model "
            "whose map differs; the file format carries no checksum over its contents"
        )


# --- 2. images and labels ----------------------------------------------------------------------


def image_cases(ctx: Context):
    """(name, image, canonical image for the reference or None: must be refused)."""
    import dask.array as da
    import zarr

    base = ctx.img
    f32 = base.astype(np.float32)

    def with_value(dtype, where, value):
        a = base.astype(dtype)
        a[where] = value
        return a

    transposed = zarr.create_array(
        store={}, shape=base.T.shape, chunks=(64, 64), dtype="uint8", dimension_names=("x", "y")
    )
    transposed[...] = base.T
    odd = np.random.default_rng(ctx.seed + 5).integers(0, 255, (203, 177)).astype(np.uint8)
    big_endian = (base.astype(np.uint16) * 200).astype(">u2")
    fortran = np.asfortranarray(base)
    strided = np.repeat(np.repeat(base, 2, 0), 2, 1)[::2, ::2]
    return [
        ("NaN in the last pixel (float32)", with_value(np.float32, (-1, -1), np.nan), None),
        ("NaN everywhere (float64)", np.full(base.shape, np.nan), None),
        ("+inf in one pixel (float32)", with_value(np.float32, (100, 90), np.inf), None),
        ("-inf in one pixel (float64)", with_value(np.float64, (0, 0), -np.inf), None),
        ("1e300 in one pixel (float64)", with_value(np.float64, (150, 10), 1e300), None),
        ("3.5e38 in one pixel (float64, beyond float32)", with_value(np.float64, (5, 170), 3.5e38), None),
        ("float32 values near 1e30", f32 * np.float32(1e28), f32.astype(np.float64) * 1e28),
        ("3 channels for a 1-channel model", np.stack([base] * 3, -1), None),
        ("5 channels last", np.stack([base] * 5, -1), None),
        ("3-D stack (5, H, W)", np.stack([base] * 5), None),
        ("4-D array (2, 1, H, W)", np.stack([base] * 2)[:, None], None),
        ("empty 0x0", np.zeros((0, 0), np.uint8), None),
        ("empty 0x180", np.zeros((0, 180), np.uint8), None),
        ("smaller than the tile (20x20)", base[:20, :20], None),
        ("one side below the tile (31x180)", base[:31], None),
        ("complex image", base.astype(np.complex64), None),
        ("string image", base.astype(str), None),
        ("object array", base.astype(object), None),
        ("exactly one tile (32x32)", base[:32, :32], base[:32, :32]),
        ("odd size 203x177", odd, odd),
        ("bool image", base > 127, (base > 127).astype(np.float32)),
        ("big-endian uint16", big_endian, big_endian.astype(np.float64)),
        ("Fortran-ordered", fortran, base),
        ("strided view", strided, base),
        ("(H, W, 1)", base[..., None], base),
        ("int64 near 2**62", base.astype(np.int64) << 54, (base.astype(np.int64) << 54).astype(np.float64)),
        ("negative float64", f32.astype(np.float64) - 300, f32.astype(np.float64) - 300),
        ("dask array, chunks of 37x23", da.from_array(base, chunks=(37, 23)), base),
        ("zarr array with dimension names (x, y)", transposed, base),
    ]


def predict_case(ctx: Context, i: int, image, canonical):
    """predict onto an existing map (overwrite=True): refused cleanly, or the reference map."""
    from napari_tilemap import TilemapInputError, predict

    case = ctx.sub(f"images/api{i}")
    out = case / "m.zarr"
    before = fresh_copy(ctx.good_store, out)
    try:
        cmap = predict(ctx.a, image, out=out, overwrite=True, block_size=CHUNK, device="cpu", workers=1)
    except TilemapInputError as err:
        problem = _one_line(str(err))
        if problem is None and tree_digest(out) != before:
            problem = "refused, but the existing map at the output was changed"
        return problem is None, problem or f"refused ({type(err).__name__}: {_short(err, 160)}), map untouched"
    ref = None if canonical is None else reference_scores(ctx.a, canonical)
    if ref is None:
        return False, "accepted an image that has no valid map (the reference is not finite)"
    problem = map_problem(cmap.scores[...], cmap.classes[...], ref, ctx.a.class_table.values)
    if problem is None and not cmap.complete:
        problem = "the map is not marked complete"
    return problem is None, problem or "accepted; the map matches the per-tile reference"


def labels_cases(ctx: Context):
    """(name, images, labels, keyword arguments, canonical labels or None: must be refused)."""
    base = ctx.img
    lab = np.zeros(base.shape, np.uint8)
    lab[20:40, 30:60] = 1
    lab[120:150, 100:120] = 2
    flt = lab.astype(np.float64)

    def changed(value, dtype=np.float64, where=(30, 40)):
        a = lab.astype(dtype)
        a[where] = value
        return a

    return [
        ("labels of another shape", base, lab[:-1], {}, None),
        ("labels with NaN", base, changed(np.nan), {}, None),
        ("fractional labels (1.5)", base, changed(1.5), {}, None),
        ("negative labels", base, changed(-1, np.int16), {}, None),
        ("label value 256", base, changed(256, np.int32), {}, None),
        ("label value 1e20 (float)", base, changed(1e20), {}, None),
        ("uint64 label 2**64-1", base, changed(2**64 - 1, np.uint64), {}, None),
        ("labels (H, W, 2)", base, np.stack([lab, lab], -1), {}, None),
        ("nothing painted", base, np.zeros_like(lab), {}, None),
        ("one class and background='none'", base, (lab == 1).astype(np.uint8), {"background": "none"}, None),
        ("image with NaN", changed(np.nan).astype(np.float32) + base, lab, {}, None),
        ("image with 1e300 (float64)", changed(1e300) + base, lab, {}, None),
        ("image smaller than the tile", base[:20, :20], lab[:20, :20], {}, None),
        ("two images, one labels array", [base, base], [lab], {}, None),
        ("images with 1 and 3 channels", [base, np.stack([base] * 3, -1)], [lab, lab], {}, None),
        ("tile_size 0", base, lab, {"tile_size": 0}, None),
        ("tile_size 1000 (larger than the image)", base, lab, {"tile_size": 1000}, None),
        ("float labels 1.0/2.0", base, flt, {}, lab),
        ("int64 labels", base, lab.astype(np.int64), {}, lab),
        ("labels (H, W, 1)", base, lab[..., None], {}, lab),
        ("bool labels", base, lab == 1, {}, (lab == 1).astype(np.uint8)),
    ]


def tiles_case(ctx: Context, images, labels, kw, canonical):
    from napari_tilemap import TilemapInputError, extract_tiles

    kw = {"tile_size": 32, "seed": 0, **kw}
    try:
        tiles = extract_tiles(images, labels, **kw)
    except TilemapInputError as err:
        problem = _one_line(str(err))
        return problem is None, problem or f"refused ({_short(err, 160)})"
    if canonical is None:
        return False, f"accepted: {len(tiles.classes)} tiles"
    want = extract_tiles(ctx.img, canonical, **kw)
    if not (
        np.array_equal(tiles.windows, want.windows)
        and np.array_equal(tiles.classes, want.classes)
        and tiles.class_table == want.class_table
    ):
        return False, "tiles differ from those of the same labels as uint8"
    t, m = tiles.tile_size, tiles.margin
    img = ctx.img.astype(np.float32)
    for w, (y, x), k in zip(tiles.windows, tiles.origins, tiles.classes):  # independent check of every tile
        if not np.array_equal(w[..., 0], img[y - m : y + t + m, x - m : x + t + m]):
            return False, f"a tile at {(y, x)} is not the image's pixels there"
        value = tiles.class_table.values[k]
        if value and not (canonical[y : y + t, x : x + t] == value).any():
            return False, f"a tile of class value {value} at {(y, x)} holds no pixel painted {value}"
    return True, f"accepted; {len(tiles.classes)} tiles equal those of the uint8 labels and the image's pixels"


def cli_image_files(ctx: Context, d: Path) -> list[tuple[str, str]]:
    """(name, file to pass) for bad image files; every one must be refused."""
    import tifffile
    import zarr
    from skimage.io import imsave

    base = ctx.img
    nan = base.astype(np.float32)
    nan[100, 90] = np.nan
    np.save(d / "nan.npy", nan)
    inf = base.astype(np.float32)
    inf[199, 0] = np.inf
    tifffile.imwrite(d / "inf.tif", inf)
    big = base.astype(np.float64)
    big[3, 3] = 1e300
    np.save(d / "big.npy", big)
    imsave(d / "rgb.png", np.stack([base] * 3, -1), check_contrast=False)
    tifffile.imwrite(d / "stack.tif", np.stack([base] * 5))
    np.save(d / "empty.npy", np.zeros((0, 0), np.uint8))
    imsave(d / "tiny.png", base[:20, :20], check_contrast=False)
    (d / "garbage.png").write_bytes(np.random.default_rng(ctx.seed).bytes(5000))
    tifffile.imwrite(d / "whole.tif", base, compression="zlib", tile=(64, 64))
    data = (d / "whole.tif").read_bytes()
    (d / "truncated.tif").write_bytes(data[: len(data) * 2 // 3])
    (d / "notzarr").mkdir(exist_ok=True)
    (d / "notzarr" / "readme.txt").write_text("not an image")
    (d / "image.txt").write_text("0 1 2\n3 4 5\n")
    np.save(d / "object.npy", base.astype(object), allow_pickle=True)
    zarr.create_group(str(d / "group.zarr")).create_array("raw", shape=base.shape, dtype="uint8")[...] = base
    labels_bad = np.zeros(base.shape, np.float32)
    labels_bad[10:20, 10:20] = 1.5
    np.save(d / "labels_frac.npy", labels_bad)
    np.save(d / "labels_small.npy", np.ones((100, 100), np.uint8))
    return [
        ("NaN in a .npy", "nan.npy"),
        ("inf in a float32 TIFF", "inf.tif"),
        ("1e300 in a float64 .npy", "big.npy"),
        ("RGB PNG for a 1-channel model", "rgb.png"),
        ("5-page TIFF stack", "stack.tif"),
        ("empty .npy", "empty.npy"),
        ("20x20 PNG", "tiny.png"),
        ("random bytes named .png", "garbage.png"),
        ("truncated tiled TIFF", "truncated.tif"),
        ("directory that is not zarr", "notzarr"),
        ("missing file", "missing.tif"),
        ("unknown extension (.txt)", "image.txt"),
        ("pickled object .npy", "object.npy"),
        ("zarr group without multiscales", "group.zarr"),
    ]


def category_images(ctx: Context, led: Ledger) -> None:
    from napari_tilemap import MapStoreError, predict

    cat = "images/labels"
    d = ctx.sub("images")
    cases = image_cases(ctx)
    if ctx.quick:  # every refusal, every other accepted image
        cases = [c for i, c in enumerate(cases) if c[2] is None or i % 2]
    for i, (name, image, canonical) in enumerate(cases):
        led.attempt(cat, f"predict: {name}", predict_case, ctx, i, image, canonical)
    lcases = labels_cases(ctx)
    for name, images, labels, kw, canonical in lcases:
        led.attempt(cat, f"extract_tiles: {name}", tiles_case, ctx, images, labels, kw, canonical)

    # an image that changes in place after its map was written: .npy file, zarr directory
    def edited(kind):
        import zarr

        v1 = np.random.default_rng(ctx.seed + 11).integers(0, 255, (560, 400)).astype(np.uint8)
        v2 = v1.copy()
        v2[80:150, 100:300] = 255 - v2[80:150, 100:300]  # away from the sampled fingerprint windows
        case = ctx.sub(f"images/edited-{kind}")
        src = case / ("img.npy" if kind == "npy" else "img.zarr")
        if kind == "npy":
            np.save(src, v1)
        else:
            zarr.open_array(str(src), mode="w", shape=v1.shape, chunks=(128, 128), dtype="uint8")[...] = v1
        predict(ctx.a, src, out=case / "m.zarr", block_size=80, device="cpu")
        if kind == "npy":
            np.save(src, v2)
        else:
            zarr.open_array(str(src), mode="r+")[...] = v2
        try:
            cmap = predict(ctx.a, src, out=case / "m.zarr", block_size=80, device="cpu")
        except MapStoreError as err:
            return _one_line(str(err)) is None and "another image" in str(err), _short(err)
        problem = map_problem(
            cmap.scores[...],
            cmap.classes[...],
            predict(ctx.a, v2, device="cpu").scores,
            ctx.a.class_table.values,
            atol=1e-5,
        )
        return problem is None, (
            f"the same command gave the map of the image before the edit ({problem}); "
            + ("the zarr image is fingerprinted by 16 sampled 64x64 windows and no mtime" if kind == "zarr" else "")
            if problem
            else "accepted; the map is the edited image's"
        )

    if not ctx.quick:
        led.attempt(cat, "image .npy rewritten in place after its map was written; same command again", edited, "npy")
    led.attempt(cat, "zarr image edited in place after its map was written; same command again", edited, "zarr")

    files = cli_image_files(ctx, d)

    def cli_case(i, name, file):
        case = ctx.sub(f"images/cli{i}")
        before = fresh_copy(ctx.good_store, case / "m.zarr")
        args = ["predict", ctx.root / "a.tilemap", d / file, "-o", "m.zarr", "--overwrite", "--chunk", CHUNK, *LOCAL]
        rc, err = run_cli(args, cwd=case)
        problem = cli_error_problem(rc, err, (2,))
        if problem is None and tree_digest(case / "m.zarr") != before:
            problem = "the existing map at the output was changed"
        return f"CLI predict: {name}", problem, refused(rc, err) + ", map untouched"

    def train_case(name, labels):
        case = ctx.sub(f"images/train-{labels}")
        model = case / "model.tilemap"
        shutil.copy(ctx.root / "a.tilemap", model)
        before = model.read_bytes()
        rc, err = run_cli(
            [
                "train",
                ctx.root / "small.npy",
                d / labels,
                "-o",
                model,
                "--overwrite",
                "--preset",
                "small",
                "--tile-size",
                "32",
                "--epochs",
                "1",
                "--device",
                "cpu",
            ],
            cwd=case,
        )
        problem = cli_error_problem(rc, err, (2,))
        if problem is None and model.read_bytes() != before:
            problem = "the existing model file was changed"
        return f"CLI train: {name}", problem, refused(rc, err) + ", model file untouched"

    chosen = files if not ctx.quick else [files[k] for k in (0, 7, 8)]
    jobs = [lambda i=i, c=c: cli_case(i, *c) for i, c in enumerate(chosen)]
    jobs += [lambda: train_case("fractional labels", "labels_frac.npy")]
    if not ctx.quick:
        jobs += [lambda: train_case("labels of another shape", "labels_small.npy")]
    for name, problem, info in run_parallel(jobs):
        led.add(cat, name, problem is None, problem or info)
    led.tried[cat] = (
        f"{len(cases)} images to predict onto an existing map (NaN, ±inf, 1e300, >float32, 1e30, "
        f"wrong channels, stacks, empty, below the tile, complex/str/object; odd valid ones against a "
        f"per-tile reference); {len(lcases)} extract_tiles inputs; an image edited in place "
        f"({'' if ctx.quick else '.npy, '}zarr); {len(jobs)} CLI runs on bad files (PNG/TIFF/npy/zarr/missing/dir)"
    )


# --- 3. interruption ---------------------------------------------------------------------------


@dataclass
class KillRun:
    finished: bool  # the process ended by itself before the kill
    rc: int
    seconds: float


def run_and_kill(cmd, cwd, plan, count_in, timeout=120) -> KillRun:
    """Start ``cmd``; SIGKILL it once ``plan`` says: ("blocks", k) when k blocks are marked done
    in the stores ``count_in``, or ("delay", s) after s seconds."""
    with open(Path(cwd) / "stderr.txt", "w") as err:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        t0 = time.monotonic()
        kind, value = plan
        while p.poll() is None and time.monotonic() - t0 < timeout:
            if kind == "delay" and time.monotonic() - t0 >= value:
                break
            if kind == "blocks" and done_count(count_in) >= value:
                break
            time.sleep(0.004)
        finished = p.poll() is not None
        if not finished:
            p.send_signal(signal.SIGKILL)
        rc = p.wait()
    return KillRun(finished, rc, time.monotonic() - t0)


def category_interruption(ctx: Context, led: Ledger) -> None:
    import zarr

    cat = "interruption"
    d = ctx.sub("interrupt")
    shape = (280, 1040) if ctx.quick else (560, 1040)  # a map 260 cells wide: one pyramid level
    image = np.random.default_rng(ctx.seed + 3).integers(0, 255, shape).astype(np.uint8)
    np.save(d / "img.npy", image)
    chunk = 80
    args = ("img.npy", "--chunk", chunk, *LOCAL)
    for name in ("a", "b"):
        shutil.copy(ctx.root / f"{name}.tilemap", d / f"{name}.tilemap")
    from napari_tilemap import predict

    t0 = time.monotonic()
    rc, err = run_cli(["predict", "a.tilemap", args[0], "-o", "ref-a.zarr", *args[1:]], cwd=d)
    run_seconds = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"the uninterrupted reference run failed: {_short(err[-400:])}")
    predict(ctx.b, d / "img.npy", out=d / "ref-b.zarr", block_size=chunk, device="cpu")  # the old map to overwrite
    total = int(np.prod(zarr.open_group(str(d / "ref-a.zarr"), mode="r")["done"].shape))
    rng = random.Random(f"{ctx.seed}-{cat}")  # its own stream: --only does not change the draws
    n_fresh, n_over = (1, 1) if ctx.quick else (5, 3)

    def plan():
        if rng.random() < 0.25:
            return ("delay", round(rng.uniform(0.3, run_seconds), 2))
        return ("blocks", rng.choice([0, 1, total, total] + list(range(2, total))))

    plans = [[plan() for _ in range(1 if ctx.quick else rng.randint(1, 2))] for _ in range(n_fresh + n_over)]

    def state_after_kill(out: Path, overwrite: bool) -> tuple[str | None, str]:
        """(what a kill left that a user could take for a map but is not the right one, what it left)."""
        ref_a, ref_b = d / "ref-a.zarr", d / "ref-b.zarr"
        old, work = out.with_name(f".{out.name}.old"), out.with_name(f".{out.name}.partial")
        if not overwrite:
            if not out.exists():
                return None, "no map yet"
            if not is_complete(out):
                return None, "an incomplete map"
            diff = store_difference(out, ref_a)
            return (f"marked complete but {diff}" if diff else None), "a complete map"
        if out.exists():
            if store_difference(out, ref_b) is None:
                return None, "the old map intact"
            if is_complete(out) and store_difference(out, ref_a) is None:
                return None, "the new map complete"
            return "the map at the output is neither the old map intact nor the new one complete", ""
        if (
            old.exists()
            and store_difference(old, ref_b) is None
            and is_complete(work)
            and store_difference(work, ref_a) is None
        ):
            return None, "old and complete new map between the two renames"
        return "the old map is gone and no complete new map replaced it", ""

    def describe(kills) -> str:
        return " then ".join(f"kill after {v} s" if k == "delay" else f"kill after {v} more blocks" for k, v in kills)

    def case(i: int, overwrite: bool):
        case_dir = ctx.sub(f"interrupt/case{i}")
        for f in ("a.tilemap", "img.npy"):
            if not (case_dir / f).exists():
                os.link(d / f, case_dir / f)
        out = case_dir / "k.zarr"
        if overwrite:
            shutil.copytree(d / "ref-b.zarr", out)
        cmd = cli_cmd(
            "predict",
            "a.tilemap",
            "img.npy",
            "-o",
            "k.zarr",
            "--chunk",
            chunk,
            *LOCAL,
            *(["--overwrite"] if overwrite else []),
        )
        count_in = [out.with_name(f".{out.name}.partial")] + ([] if overwrite else [out])
        what = []
        for kind, value in plans[i]:
            plan_now = (kind, value) if kind == "delay" else (kind, done_count(count_in) + value)
            k = run_and_kill(cmd, case_dir, plan_now, count_in)
            problem, left = state_after_kill(out, overwrite)
            what.append(
                f"finished first (exit {k.rc})"
                if k.finished
                else f"killed at {k.seconds:.2f} s with {done_count(count_in)} of {total} blocks done ({left})"
            )
            if problem:
                return False, f"{'; '.join(what)}: {problem}"
        rc, err = run_cli(cmd[3:], cwd=case_dir)
        if rc != 0:
            problem = cli_error_problem(rc, err, (0,))
        else:
            problem = store_difference(out, d / "ref-a.zarr") or (None if is_complete(out) else "not marked complete")
        if problem is None and leftovers(out):
            problem = f"left {leftovers(out)} behind"
        return problem is None, f"{'; '.join(what)}; rerun: {problem or 'exit 0, bit-for-bit the uninterrupted map'}"

    def named(i: int, overwrite: bool):
        name = f"{'--overwrite over the other model' + chr(39) + 's map: ' if overwrite else ''}{describe(plans[i])}"
        try:
            held, detail = case(i, overwrite)
        except Exception as err:  # noqa: BLE001
            held, detail = False, f"unexpected {type(err).__name__}: {_short(err)} [{_where(err)}]"
        return name, held, detail

    # the image is edited (in place, outside the sampled windows) between the kill and the rerun
    def edited_between():
        import zarr as z

        from napari_tilemap import predict

        case_dir = ctx.sub("interrupt/edited")
        shutil.copy(d / "a.tilemap", case_dir / "a.tilemap")
        z.open_array(str(case_dir / "img.zarr"), mode="w", shape=image.shape, chunks=(128, 128), dtype="uint8")[...] = (
            image
        )
        cmd = cli_cmd("predict", "a.tilemap", "img.zarr", "-o", "e.zarr", "--chunk", chunk, *LOCAL)
        out = case_dir / "e.zarr"
        k = run_and_kill(cmd, case_dir, ("blocks", total // 2), [out, out.with_name(".e.zarr.partial")])
        at_kill = done_count([out, out.with_name(".e.zarr.partial")])
        v2 = image.copy()
        v2[70:160, 400:640] = 255 - v2[70:160, 400:640]  # between the sampled fingerprint windows
        z.open_array(str(case_dir / "img.zarr"), mode="r+")[...] = v2
        rc, err = run_cli(cmd[3:], cwd=case_dir)
        if rc == 2:
            problem = cli_error_problem(rc, err, (2,), ("another image",))
            return problem is None, problem or refused(rc, err)
        if rc != 0:
            return False, cli_error_problem(rc, err, (0, 2))
        got = store_arrays(out)
        problem = map_problem(
            got["scores"],
            got["classes"],
            predict(ctx.a, v2, block_size=chunk, device="cpu").scores,
            ctx.a.class_table.values,
            atol=1e-5,
        )
        return problem is None, (
            f"killed at {k.seconds:.1f} s with {at_kill} of {total} blocks done, image "
            f"edited, rerun exit 0: the map mixes blocks of both images ({problem})"
            if problem
            else "resumed; the map is the edited image's"
        )

    def edited_named():
        name = "zarr image edited in place between the kill and the rerun"
        try:
            return (name, *edited_between())
        except Exception as err:  # noqa: BLE001
            return name, False, f"unexpected {type(err).__name__}: {_short(err)} [{_where(err)}]"

    jobs = [lambda i=i: named(i, i >= n_fresh) for i in range(n_fresh + n_over)]
    jobs += [] if ctx.quick else [edited_named]  # --quick: the same weakness is shown under images/labels
    for name, held, detail in run_parallel(jobs):
        led.add(cat, name, held, detail)

    def callback_raises():
        """The caller's progress callback raises (a closed progress widget); the caller runs the same
        call again while the exception is still referenced, as an interactive session keeps
        ``sys.last_value``, or as a retry inside the ``except`` block does."""
        from napari_tilemap import OutputBusyError, predict

        out = ctx.sub("interrupt/callback") / "m.zarr"
        k = rng.randint(1, 20)

        def cb(event):
            if event.done >= k:
                raise RuntimeError("the progress widget was closed")

        kept = None
        try:
            predict(ctx.a, ctx.img, out=out, block_size=CHUNK, device="cpu", callback=cb)
        except RuntimeError as err:
            kept = err
        try:
            predict(ctx.a, ctx.img, out=out, block_size=CHUNK, device="cpu")
        except OutputBusyError as err:
            return False, (
                f"callback raised after {k} block(s); the same call again: OutputBusyError ({_short(err, 90)}) "
                "although no other run exists: predict leaves its generator, and the output's lock, "
                "suspended while the exception lives"
            )
        finally:
            del kept
        problem = store_difference(out, ctx.good_store)
        return problem is None, f"callback raised after {k} block(s); the same call again: {problem or 'bit-for-bit'}"

    led.attempt(cat, "API: the progress callback raises, the same call again at once", callback_raises)
    led.tried[cat] = (
        f"kill -9 of CLI predict ({total} blocks, pyramid level) at random block counts or delays, "
        f"{'1 kill' if ctx.quick else '1-2 kills'} then the same command: {n_fresh} fresh, {n_over} --overwrite over another model's map "
        f"(old map must stay intact); {'' if ctx.quick else 'a zarr image edited between kill and rerun; '}"
        "a callback that raises"
    )


# --- 4. concurrency ----------------------------------------------------------------------------


def category_concurrency(ctx: Context, led: Ledger) -> None:
    from napari_tilemap import MapStoreError, OutputBusyError, predict

    cat = "concurrency"
    d = ctx.sub("concurrency")
    shape = (400, 360) if ctx.quick else (600, 520)
    image = np.random.default_rng(ctx.seed + 4).integers(0, 255, shape).astype(np.uint8)
    np.save(d / "img.npy", image)
    models = {"a": ctx.a, "b": ctx.b}
    digests = {digest_of(m): k for k, m in models.items()}
    ref = {k: predict(m, image, block_size=CHUNK, device="cpu") for k, m in models.items()}
    for k in models:
        shutil.copy(ctx.root / f"{k}.tilemap", d / f"{k}.tilemap")
    rng = random.Random(f"{ctx.seed}-{cat}")  # its own stream: --only does not change the draws

    def final_problem(out: Path, winners: set[str], initial: str | None) -> str | None:
        if not out.exists():
            return "no map at the output"
        attrs = store_attrs(out)
        if not attrs.get("complete"):
            return "the map is not marked complete"
        who = digests.get(attrs.get("run", {}).get("model_sha256"))
        if who is None:
            return "the recorded model is neither"
        if who not in winners and who != initial:
            return f"model {who} is recorded but no run of it succeeded"
        got = store_arrays(out)
        problem = map_problem(got["scores"], got["classes"], ref[who].scores, models[who].class_table.values, atol=1e-5)
        if problem:
            return f"recorded model {who}: {problem}"
        return f"left {leftovers(out)} behind" if leftovers(out) else None

    def pair(i: int, initial, first, second, ow, offset):
        case_dir = ctx.sub(f"concurrency/pair{i}")
        for f in ("a.tilemap", "b.tilemap", "img.npy"):
            if not (case_dir / f).exists():
                os.link(d / f, case_dir / f)
        out = case_dir / "m.zarr"
        if initial:  # written here, so that its image (path included) is the one the processes read
            predict(models[initial], case_dir / "img.npy", out=out, block_size=CHUNK, device="cpu")
        procs = []
        with contextlib.ExitStack() as stack:
            for k, (m, o) in enumerate(zip((first, second), ow)):
                if k:
                    time.sleep(offset)
                log = stack.enter_context(open(case_dir / f"stderr-{k}.txt", "w"))
                procs.append(
                    subprocess.Popen(
                        cli_cmd(
                            "predict",
                            f"{m}.tilemap",
                            "img.npy",
                            "-o",
                            "m.zarr",
                            "--chunk",
                            CHUNK,
                            *LOCAL,
                            *(["--overwrite"] if o else []),
                        ),
                        cwd=case_dir,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
            try:
                rcs = [wait_or_kill(p) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
        errs = [(case_dir / f"stderr-{k}.txt").read_text() for k in range(2)]
        problems, winners, said = [], set(), []
        for m, rc, err in zip((first, second), rcs, errs):
            if rc == 0:
                winners.add(m)
                said.append(f"{m} exit 0")
            else:
                pr = cli_error_problem(rc, err, (2,), ("being written by another", "holds a map of another"))
                problems += [f"{m}: {pr}"] if pr else []
                why = re.search(r"being written by another|holds a map of [^;(]+", err)
                said.append(f"{m} exit {rc} ({why.group(0) if why else error_line(err)})")
        problems.append(final_problem(out, winners, initial))
        problems = [p for p in problems if p]
        who = digests.get(store_attrs(out).get("run", {}).get("model_sha256")) if out.exists() else None
        return not problems, "; ".join(
            problems + said
        ) if problems else f"{', '.join(said)}; the output holds {who}'s complete map, equal to its in-memory map"

    n = 2 if ctx.quick else 6
    plans = []
    for i in range(n):
        initial = rng.choice([None, "a", "b"])
        first, second = rng.sample(["a", "b"], 2)
        ow = [rng.random() < 0.6, rng.random() < 0.6]
        plans.append((i, initial, first, second, ow, round(rng.uniform(0.0, 3.0 if ctx.quick else 5.5), 2)))

    def named(plan):
        _, initial, first, second, ow, offset = plan
        desc = (
            f"processes: {first}{' --overwrite' if ow[0] else ''} then {second}{' --overwrite' if ow[1] else ''} "
            f"{offset} s later, output {'empty' if not initial else 'holding ' + initial + chr(39) + 's map'}"
        )
        try:
            return desc, pair(*plan)
        except Exception as err:  # noqa: BLE001
            return desc, (False, f"unexpected {type(err).__name__}: {_short(err)} [{_where(err)}]")

    for desc, (held, detail) in run_parallel([lambda p=p: named(p) for p in plans]):
        led.add(cat, desc, held, detail)

    def threads(i: int, ow_first: bool, ow_second: bool):
        out = ctx.sub(f"concurrency/threads{i}") / "m.zarr"
        outcome = {}

        def go(key, overwrite):
            try:
                predict(models[key], ctx.img, out=out, block_size=CHUNK, device="cpu", overwrite=overwrite, workers=1)
                outcome[key] = "ok"
            except OutputBusyError:
                outcome[key] = "busy"
            except MapStoreError as err:
                outcome[key] = "another model" if "another model" in str(err) else f"MapStoreError: {err}"
            except Exception as err:  # noqa: BLE001
                outcome[key] = f"{type(err).__name__}: {err}"

        ts = [threading.Thread(target=go, args=("a", ow_first)), threading.Thread(target=go, args=("b", ow_second))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        bad = [f"{k}: {v}" for k, v in outcome.items() if v not in ("ok", "busy", "another model")]
        winners = {k for k, v in outcome.items() if v == "ok"}
        small_ref = {k: predict(m, ctx.img, device="cpu") for k, m in models.items()}
        problem = None
        if out.exists() and is_complete(out):
            who = digests.get(store_attrs(out)["run"].get("model_sha256"))
            got = store_arrays(out)
            problem = (
                f"recorded model {who} did not succeed"
                if who not in winners
                else map_problem(
                    got["scores"], got["classes"], small_ref[who].scores, models[who].class_table.values, atol=1e-5
                )
            )
        else:
            problem = "no complete map at the output"
        if leftovers(out):
            problem = f"left {leftovers(out)} behind"
        bad += [problem] if problem else []
        return not bad, "; ".join(
            bad
        ) + f" ({outcome})" if bad else f"{outcome}; the output holds a complete map of a winner"

    led.attempt(cat, "threads: a and b --overwrite at once in one process", threads, 0, False, True)
    led.attempt(cat, "threads: a --overwrite and b --overwrite at once in one process", threads, 1, True, True)
    led.tried[cat] = (
        f"{n} pairs of CLI processes on one output with models a/b, random --overwrite, random start "
        f"offsets 0-{3 if ctx.quick else 5.5} s (two pairs at a time), output empty or holding either "
        "map; 2 pairs of threads in one process"
    )


# --- 5. disk full ------------------------------------------------------------------------------

DISK_ARGS = ("--chunk", str(CHUNK), *LOCAL)


def captured_main(argv) -> tuple[int, str]:
    """``napari_tilemap.cli.main`` in this process: (exit status, stderr); an exception that
    escapes main is reported as a traceback, as a user would see it."""
    from napari_tilemap.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        try:
            rc = main([str(a) for a in argv])
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            rc = -1
    return rc, buf.getvalue()


def diskfull_cases(cfg: dict, fill, free_space, method: str) -> list[dict]:
    """Run every disk-full case; ``fill(n)`` leaves about n bytes free (and says how it filled
    the disk), ``free_space()`` frees it again."""
    out_dir = Path(cfg["dir"])
    out = out_dir / "m.zarr"
    rng = random.Random(cfg["seed"])
    results = []
    for i in range(cfg["n"]):
        overwrite = i % 3 == 2
        for p in list(out_dir.iterdir()):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if overwrite:
            shutil.copytree(cfg["ref_b"], out)
        budget = rng.randrange(0, cfg["store_bytes"]) if i else 0
        argv = ["predict", cfg["a"], cfg["image"], "-o", out, *DISK_ARGS, *(["--overwrite"] if overwrite else [])]
        how = fill(budget)
        rc, err = captured_main(argv)
        free_space()
        name = f"{'--overwrite over another map, ' if overwrite else ''}{how}"
        problem = cli_error_problem(rc, err, (1,), ("no space left",))
        written = done_count([out.with_name(".m.zarr.partial")] + ([] if overwrite else [out]))
        info = f"exit {rc} with {written} blocks written: {error_line(err)}"
        if rc == 0:
            problem = (
                "the run did not fill the disk"
                if store_difference(out, cfg["ref_a"]) is None
                else f"exit 0 on a full disk, and {store_difference(out, cfg['ref_a'])}"
            )
        if problem is None and overwrite and store_difference(out, cfg["ref_b"]) is not None:
            problem = "the old map at the output was damaged"
        if problem is None:
            rc2, err2 = captured_main(argv)
            if rc2 != 0:
                problem = f"rerun after freeing space: {cli_error_problem(rc2, err2, (0,))}"
            else:
                problem = store_difference(out, cfg["ref_a"]) or (None if is_complete(out) else "rerun not complete")
                if problem is None and leftovers(out):
                    problem = f"left {leftovers(out)} behind"
                problem = problem and f"rerun after freeing space: {problem}"
        results.append(
            {
                "name": name,
                "held": problem is None,
                "detail": f"{info}; {problem}"
                if problem
                else f"{info}{'; old map intact' if overwrite else ''}; after freeing: exit 0, bit-for-bit",
            }
        )
    return results


def diskfull_child(cfg_path: str) -> None:
    """Runs in a private mount namespace: mount a small tmpfs, fill it, run the cases."""
    cfg = json.loads(Path(cfg_path).read_text())
    mnt = Path(cfg["dir"])
    mnt.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(json.dumps({"mount_failed": _short(done.stderr)}), flush=True)
        sys.exit(3)
    try:

        def fill(free_bytes: int) -> str:
            st = os.statvfs(mnt)
            n = max(0, st.f_bavail * st.f_frsize - free_bytes)
            with open(mnt / ".filler-not-a-map", "wb", buffering=0) as f, contextlib.suppress(OSError):
                f.write(b"\0" * n)  # unbuffered: what does not fit is simply not written
            return f"{free_bytes // 1024} KiB left free"

        def free_space() -> None:
            (mnt / ".filler-not-a-map").unlink(missing_ok=True)

        # the store's size on this disk, to pick how much room to leave
        shutil.copytree(cfg["ref_a"], mnt / "probe")
        st = os.statvfs(mnt)
        cfg["store_bytes"] = int((st.f_blocks - st.f_bfree) * st.f_frsize * 0.95)
        shutil.rmtree(mnt / "probe")
        cfg["dir"] = str(mnt)
        for r in diskfull_cases(cfg, fill, free_space, "tmpfs"):
            print(json.dumps(r), flush=True)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def diskfull_patched(cfg: dict) -> list[dict]:
    """Fallback without a mount: zarr's LocalStore.set raises ENOSPC after a random number of writes."""
    from zarr.storage import LocalStore

    real = LocalStore.set
    state = {"left": None}

    async def full(self, key, value):
        if state["left"] is not None:
            if state["left"] <= 0:
                raise OSError(errno.ENOSPC, "No space left on device", key)
            state["left"] -= 1
        return await real(self, key, value)

    rng = random.Random(cfg["seed"] + 1)
    LocalStore.set = full
    try:
        Path(cfg["dir"]).mkdir(parents=True, exist_ok=True)
        cfg["store_bytes"] = 1  # unused: writes are counted instead

        def fill(_):
            state["left"] = rng.randrange(0, 80)
            return f"ENOSPC after {state['left']} writes"

        return diskfull_cases(cfg, fill, lambda: state.update(left=None), "patched")
    finally:
        LocalStore.set = real


def category_diskfull(ctx: Context, led: Ledger) -> None:
    cat = "disk full"
    d = ctx.sub("diskfull")
    refs = run_parallel(
        [
            lambda m=m: run_cli(
                ["predict", ctx.root / f"{m}.tilemap", ctx.root / "small.npy", "-o", d / f"ref-{m}.zarr", *DISK_ARGS],
                cwd=d,
            )
            for m in ("a", "b")
        ]
    )
    for rc, err in refs:
        if rc != 0:
            raise RuntimeError(f"reference run failed: {_short(err[-300:])}")
    n = 4 if ctx.quick else 16
    cfg = {
        "dir": str(d / "disk"),
        "seed": ctx.seed,
        "n": n,
        "a": str(ctx.root / "a.tilemap"),
        "image": str(ctx.root / "small.npy"),
        "ref_a": str(d / "ref-a.zarr"),
        "ref_b": str(d / "ref-b.zarr"),
    }
    (d / "cfg.json").write_text(json.dumps(cfg))
    results, method = [], None
    wrappers = ([["unshare", "--mount", "--propagation", "private"]] if os.geteuid() == 0 else []) + [
        ["unshare", "--user", "--map-root-user", "--mount"]
    ]
    for wrap in wrappers if shutil.which("unshare") and not ctx.no_mount else []:
        done = subprocess.run(
            [*wrap, sys.executable, os.path.abspath(__file__), "--diskfull-child", str(d / "cfg.json")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        results = [x for x in lines if "name" in x]
        if not results:  # unshare or mount refused: try the next way
            continue
        method = (
            f"a real 2 MiB tmpfs (mount -t tmpfs -o size=2m, inside `{' '.join(wrap)}`), filled to leave a "
            "random amount free"
        )
        if done.returncode != 0:
            results.append(
                {
                    "name": "(the process running the cases)",
                    "held": False,
                    "detail": f"exit {done.returncode}: {_short(done.stderr[-400:])}",
                }
            )
        break
    if method is None:
        results = diskfull_patched(cfg)
        method = (
            "patched zarr.storage.LocalStore.set raising ENOSPC after a random number of writes "
            f"({'--no-mount' if ctx.no_mount else 'no tmpfs could be mounted'})"
        )
    for r in results:
        led.add(cat, r["name"], r["held"], r["detail"])
    led.notes.append(f"disk full: {method}")
    led.tried[cat] = (
        f"{len(results)} CLI predict runs (cli.main in the process) on a disk that fills up at a random "
        "point, 0 B to one store's size free (every third --overwrite over another model's map), then "
        "the same command after freeing it"
    )


# --- 6. distributed ----------------------------------------------------------------------------


def category_distributed(ctx: Context, led: Ledger) -> None:
    import logging

    import distributed

    from napari_tilemap import predict

    for name in ["distributed", *[n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # lost workers and tasks are expected here
    cat = "distributed"
    d = ctx.sub("distributed")
    shape = (400, 360) if ctx.quick else (600, 520)
    image = np.random.default_rng(ctx.seed + 6).integers(0, 255, shape).astype(np.uint8)
    np.save(d / "img.npy", image)
    shutil.copy(ctx.root / "a.tilemap", d / "a.tilemap")
    threaded = predict(ctx.a, image, block_size=CHUNK, device="cpu")
    cells = CHUNK // ctx.a.step
    total = -(-threaded.shape[0] // cells) * -(-threaded.shape[1] // cells)
    rng = random.Random(f"{ctx.seed}-{cat}")  # its own stream: --only does not change the draws

    def final(out: Path) -> str | None:
        if not is_complete(out):
            return "the map is not marked complete"
        got = store_arrays(out)
        return map_problem(got["scores"], got["classes"], threaded.scores, ctx.a.class_table.values, atol=1e-5) or (
            f"left {leftovers(out)} behind" if leftovers(out) else None
        )

    def new_cluster():
        c = distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None)
        return c, distributed.Client(c)

    def shut(c, client) -> None:
        for x in (client, c):
            with contextlib.suppress(Exception):
                x.close()

    def kill_worker(client) -> None:
        """SIGKILL one worker process (its nanny starts a new one)."""
        pids = client.run(os.getpid)
        os.kill(pids[rng.choice(sorted(pids))], signal.SIGKILL)

    def cli_case(name: str) -> tuple[Path, Path, list]:
        case = ctx.sub(f"distributed/{name}")
        for f in ("a.tilemap", "img.npy"):
            if not (case / f).exists():
                os.link(d / f, case / f)
        return (
            case,
            case / "m.zarr",
            ["predict", "a.tilemap", "img.npy", "-o", "m.zarr", "--chunk", CHUNK, "--device", "cpu"],
        )

    def cli_interrupted(c, client, name: str, action: str) -> dict:
        """CLI --scheduler on a live cluster; after k blocks kill a worker or close the whole cluster."""
        case, out, args = cli_case(name)
        k = rng.randint(3, total // 2)
        with open(case / "stderr.txt", "w") as log:
            p = subprocess.Popen(
                cli_cmd(*args, "--scheduler", c.scheduler_address), cwd=case, stdout=subprocess.DEVNULL, stderr=log
            )
            t0 = time.monotonic()
            while p.poll() is None and done_count([out]) < k and time.monotonic() - t0 < 120:
                time.sleep(0.01)
            acted = p.poll() is None
            if acted:
                kill_worker(client) if action == "kill" else c.close()
            rc = wait_or_kill(p)
        err = (case / "stderr.txt").read_text()
        return {
            "case": case,
            "out": out,
            "args": args,
            "k": k,
            "rc": rc,
            "acted": acted,
            "problem": None if rc == 0 else cli_error_problem(rc, err, (1,)),
            "said": "exit 0" if rc == 0 else refused(rc, err),
        }

    # 1. a worker killed mid-run: the cluster reschedules its tasks
    def api_worker_killed(client):
        out = d / "worker.zarr"
        k = rng.randint(3, total // 2)
        seen = []

        def cb(event):
            seen.append(event)
            if len(seen) == k:
                kill_worker(client)

        try:
            predict(ctx.a, d / "img.npy", out=out, block_size=CHUNK, device="cpu", client=client, callback=cb)
            first = "completed"
        except Exception as err:  # noqa: BLE001 - one rerun is allowed
            first = f"raised {type(err).__name__}: {_short(err, 80)}"
        if first != "completed":
            client.wait_for_workers(2, timeout=60)
            predict(ctx.a, d / "img.npy", out=out, block_size=CHUNK, device="cpu", client=client)
            first += "; rerun completed"
        problem = final(out)
        return problem is None, f"worker killed after {k} of {total} blocks, first run {first}: " + (
            problem or "complete and equal to the threaded map"
        )

    def cli_worker_killed(c, client):
        r = cli_interrupted(c, client, "cli-worker", "kill")
        if r["problem"]:
            return False, f"worker killed after {r['k']} blocks: {r['problem']}"
        if r["rc"] != 0:
            client.wait_for_workers(2, timeout=60)
            rc, err = run_cli([*r["args"], "--scheduler", c.scheduler_address], cwd=r["case"])
            if rc != 0:
                return False, f"first run {r['said']}; rerun: {cli_error_problem(rc, err, (0,))}"
        problem = final(r["out"])
        return problem is None, (
            f"worker killed after {r['k']} of {total} blocks, first run {r['said']}: "
            f"{problem or 'complete and equal to the threaded map'}"
        )

    # 2. the whole cluster closed mid-run: the run fails, a rerun on a fresh cluster resumes
    def api_close_first(c, client) -> dict:
        out, k, seen = d / "closed.zarr", rng.randint(3, total // 2), []

        def cb(event):
            seen.append(event)
            if len(seen) == k:
                c.close()

        try:
            predict(ctx.a, d / "img.npy", out=out, block_size=CHUNK, device="cpu", client=client, callback=cb)
            first = "completed"
        except Exception as err:  # noqa: BLE001
            first = f"raised {type(err).__name__}"
        problem = final(out) if is_complete(out) else None
        return {"k": k, "first": first, "problem": problem and f"marked complete after the cluster closed: {problem}"}

    def api_close_rerun(first: dict, client):
        if first["problem"]:
            return False, first["problem"]
        out, seen = d / "closed.zarr", []
        predict(ctx.a, d / "img.npy", out=out, block_size=CHUNK, device="cpu", client=client, callback=seen.append)
        problem = final(out)
        if problem is None and first["first"] != "completed" and len(seen) >= total:
            problem = "the rerun computed every block again instead of resuming"
        return problem is None, (
            f"cluster closed after {first['k']} blocks, first run {first['first']}; rerun on a "
            f"fresh cluster computed {len(seen)} of {total} blocks: "
            f"{problem or 'complete and equal to the threaded map'}"
        )

    def cli_close_rerun(first: dict, c):
        if first["problem"]:
            return False, f"cluster closed after {first['k']} blocks: {first['problem']}"
        if first["rc"] == 0 and first["acted"]:
            return False, "exit 0 although the cluster was closed mid-run"
        rc, err = run_cli([*first["args"], "--scheduler", c.scheduler_address], cwd=first["case"])
        if rc != 0:
            return False, f"rerun on a fresh cluster: {cli_error_problem(rc, err, (0,))}"
        problem = final(first["out"])
        return problem is None, (
            f"cluster closed after {first['k']} blocks, first run {first['said']}; rerun exit 0: "
            f"{problem or 'complete and equal to the threaded map'}"
        )

    # 3. schedulers that cannot be reached, onto an existing map
    env_fast = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}

    hang_limit = 30  # s; the connect timeout is 2 s

    def unreachable(i, address):
        case = ctx.sub(f"distributed/unreachable{i}")
        before = fresh_copy(ctx.good_store, case / "m.zarr")
        t0 = time.monotonic()
        try:
            rc, err = run_cli(
                [
                    "predict",
                    ctx.root / "a.tilemap",
                    ctx.root / "small.npy",
                    "-o",
                    "m.zarr",
                    "--overwrite",
                    "--scheduler",
                    address,
                    "--device",
                    "cpu",
                ],
                cwd=case,
                env=env_fast,
                timeout=hang_limit,
            )
        except subprocess.TimeoutExpired:
            return (
                f"no answer after {hang_limit} s with distributed.comm.timeouts.connect=2s: the CLI hangs in "
                "distributed.Client() (killed), holding the output's lock"
            ), ""
        problem = cli_error_problem(rc, err, (1, 2))
        if problem is None and tree_digest(case / "m.zarr") != before:
            problem = "the existing map at the output was changed"
        return problem, f"{refused(rc, err)} after {time.monotonic() - t0:.0f} s, map untouched"

    stop = threading.Event()

    def listener(answer: bytes | None) -> tuple[str, threading.Thread, socket.socket]:
        """A port that is not a dask scheduler: it answers junk and closes, or (None) accepts and stays silent."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.2)

        def serve():
            held = []
            while not stop.is_set():
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                if answer is None:
                    held.append(conn)
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(answer)
                conn.close()
            for conn in held:
                conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}", t, sock

    junk_addr, junk_thread, junk = listener(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"\xff" * 64)
    silent_addr, silent_thread, silent = listener(None)
    closed_port = socket.socket()
    closed_port.bind(("127.0.0.1", 0))
    dead = f"tcp://127.0.0.1:{closed_port.getsockname()[1]}"
    closed_port.close()
    unreach = [
        ("a port that accepts and never answers (as a dashboard or HTTP port)", silent_addr),
        ("closed port", dead),
        ("a port that answers junk and closes", junk_addr),
        ("an unresolvable host", "tcp://no-such-host.invalid:8786"),
        ("a malformed address", "tcp://[::1"),
    ]
    unreach = unreach[1:2] if ctx.quick else unreach  # the silent port costs its whole time limit
    pool = ThreadPoolExecutor(2)
    unreach_futures = [(n, pool.submit(unreachable, i, a)) for i, (n, a) in enumerate(unreach)]
    try:
        c1, client1 = new_cluster()
        try:
            led.attempt(cat, "API: a worker killed -9 mid-run (its nanny restarts it)", api_worker_killed, client1)
            if not ctx.quick:
                led.attempt(cat, "CLI --scheduler: a worker killed -9 mid-run", cli_worker_killed, c1, client1)
            closed = api_close_first(c1, client1)
        finally:
            shut(c1, client1)
        c2, client2 = new_cluster()
        try:
            led.attempt(
                cat, "API: the whole cluster closed mid-run, rerun on a fresh cluster", api_close_rerun, closed, client2
            )
            if not ctx.quick:
                cli_closed = cli_interrupted(c2, client2, "cli-closed", "close")
        finally:
            shut(c2, client2)
        if not ctx.quick:
            c3, client3 = new_cluster()
            try:
                led.attempt(
                    cat,
                    "CLI --scheduler: the whole cluster closed mid-run, rerun on a fresh cluster",
                    cli_close_rerun,
                    cli_closed,
                    c3,
                )
            finally:
                shut(c3, client3)
    finally:
        for name, future in unreach_futures:
            problem, info = future.result()
            led.add(cat, f"CLI --scheduler: {name}", problem is None, problem or info)
            if "junk" in name and problem is None and "cluster" not in info:
                led.notes.append(
                    f"distributed: a scheduler address that answers junk is refused, but the message misleads: {info}"
                )
        pool.shutdown()
        stop.set()
        for t, sock in ((junk_thread, junk), (silent_thread, silent)):
            t.join()
            sock.close()
    led.tried[cat] = (
        "LocalCluster (2 worker processes, 1 thread each): a worker SIGKILLed mid-run"
        f"{'' if ctx.quick else ' (API and CLI)'}, the whole cluster closed mid-run then a rerun on a "
        f"fresh cluster{'' if ctx.quick else ' (API and CLI)'}; CLI onto an existing map with "
        f"{len(unreach)} bad scheduler addresses ({', '.join(n.split(' (')[0] for n, _ in unreach)}; "
        "connect timeout 2 s)"
    )


# --- main --------------------------------------------------------------------------------------


def print_report(led: Ledger, wall: float, verbose: bool) -> int:
    if verbose:
        for cat in CATEGORIES:
            for c, name, held, detail in led.cases:
                if c == cat:
                    print(f"{'held' if held else 'FAIL'} [{cat}] {name}: {detail}")
    print()
    print("| category | cases tried | held | what was tried |")
    print("|---|---:|---:|---|")
    for cat in CATEGORIES:
        rows = [c for c in led.cases if c[0] == cat]
        if not rows and cat not in led.tried:
            continue
        print(f"| {cat} | {len(rows)} | {sum(c[2] for c in rows)} | {led.tried.get(cat, '(did not run)')} |")
    failed = [c for c in led.cases if not c[2]]
    print()
    for note in led.notes:
        print(f"- {note}")
    if failed:
        print(f"\n{len(failed)} case(s) did not hold:")
        for cat, name, _, detail in failed:
            print(f"- [{cat}] {name}: {detail}")
    if not verbose:
        print("\n(--verbose lists every case with what happened)")
    print(
        f"\ntotal: {len(led.cases)} cases, {sum(c[2] for c in led.cases)} held, {len(failed)} did not hold; "
        f"wall time {wall:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in led.seconds.items())})"
    )
    return 1 if failed else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer random cases (about 70 s on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--only", nargs="+", choices=sorted(KEYS), help="run only these categories")
    p.add_argument(
        "--dir", default=None, help="where to create the work folder (default: the system's temporary folder)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (it is removed at the end otherwise)")
    p.add_argument("--verbose", action="store_true", help="list every case with what happened")
    p.add_argument(
        "--no-mount",
        action="store_true",
        help="fill the disk by patching zarr's LocalStore.set instead of mounting a small tmpfs",
    )
    p.add_argument("--diskfull-child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.diskfull_child:
        return diskfull_child(a.diskfull_child)
    t_start = time.perf_counter()

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")  # workers' lost-task chatter is expected here
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if a.dir:
        Path(a.dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tilemap-robustness-", dir=a.dir))
    led = Ledger()
    runs = {
        "models": category_models,
        "images": category_images,
        "interruption": category_interruption,
        "concurrency": category_concurrency,
        "diskfull": category_diskfull,
        "distributed": category_distributed,
    }
    try:
        ctx = setup(root, a.quick, a.seed)
        ctx.no_mount = a.no_mount
        for key, fn in runs.items():
            if a.only and key not in a.only:
                continue
            t0 = time.perf_counter()
            try:
                fn(ctx, led)
            except Exception as err:  # noqa: BLE001 - a category that could not run is a failure too
                led.add(
                    KEYS[key],
                    "(the category could not finish)",
                    False,
                    f"{type(err).__name__}: {_short(err)} [{_where(err)}]",
                )
            led.seconds[KEYS[key]] = time.perf_counter() - t0
            rows = [c for c in led.cases if c[0] == KEYS[key]]
            print(
                f"{KEYS[key]:>14}: {sum(c[2] for c in rows):3d} of {len(rows):3d} held "
                f"({led.seconds[KEYS[key]]:5.1f} s)",
                flush=True,
            )
    finally:
        if a.keep:
            print(f"work folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(print_report(led, time.perf_counter() - t_start, a.verbose))


if __name__ == "__main__":
    main()
