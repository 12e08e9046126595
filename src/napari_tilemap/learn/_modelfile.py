"""Model files (``*.tilemap``): safetensors weights with JSON metadata, loaded without pickle.

A file is checked before anything is built from it: its size and header length are
bounded before they are read, the architecture is rebuilt from the named preset (never
taken from the file), every tensor's name, dtype, shape and byte range must be those of
that architecture, and the weights must be finite and unable to overflow.
"""

from __future__ import annotations

import json
import os
import reprlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._classes import ClassTable
from .._errors import ModelFileError, TilemapInputError
from ..io._images import MAX_CHANNELS
from ._model import TileClassifier
from ._modelwriter import (  # noqa: F401
    FORMAT,
    model_digest,
    model_to_bytes,
    save_model,
    weights_digest,
)
from ._networks import ACTIVATIONS, PRESETS, Architecture, _tile_size, architecture

VERSION = 3
"""The newest format version this module reads. A file carries the oldest version that can
read it: 1 for softmax models (whose metadata has no ``activation``, byte for byte as before
version 2 existed), 2 for sigmoid models, so an older napari-tilemap asks to be upgraded
rather than reading sigmoid scores as softmax ones."""
MAX_FILE_BYTES = 512 * 2**20  # the largest legitimate model (preset "large", tile 1024) is ~170 MiB
MAX_HEADER_BYTES = 16 * 2**20
MAX_CLASSES = 256  # label values 0..255
MIN_STD = 1e-6  # training floors std at MIN_STD * max(1, |mean|)
MAX_GAIN = 1e30  # bound on |activation| per unit of normalised input: overflow-free up to ~3e8 std
_DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64"}
_REPR = reprlib.Repr()  # bounded, one-line reprs of what a file holds, for messages
_REPR.maxstring = _REPR.maxother = 40
_short = _REPR.repr


def load_model(path: str | os.PathLike) -> TileClassifier:
    """Read and check a ``.tilemap`` model file.

    Only JSON and raw tensor bytes are parsed: nothing stored in the file is executed,
    and no more than the header is read (or allocated) until the header, the metadata
    and the file size all agree with the architecture the metadata names.

    Parameters
    ----------
    path : str or Path
        A file written by :meth:`TileClassifier.save`.

    Returns
    -------
    TileClassifier
        The model, in eval mode, on the CPU.

    Raises
    ------
    ModelFileError
        If the file is missing, is not a napari-tilemap model (a pickle, a truncated or
        foreign file), or its contents do not match their own description; the message
        names the file and the problem.

    Examples
    --------
    >>> model = load_model("surface.tilemap")  # doctest: +SKIP
    """
    path = Path(path)
    name = repr(str(path))
    if path.is_dir():
        raise ModelFileError(f"{name} is a directory, not a model file")
    if not path.exists():
        raise ModelFileError(f"model file {name} does not exist")
    if not path.is_file():
        raise ModelFileError(f"{name} is not a regular file")
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            plan = _check_header(f.read(_header_length(head, size, name)), size, name)
            f.seek(0)
            data = f.read(size + 1)
    except OSError as err:
        raise ModelFileError(f"{name} cannot be read: {err.strerror or err}") from None
    if len(data) != size:
        raise ModelFileError(f"{name} changed while it was being read")
    return _build(plan, data, name)


def model_from_bytes(data: bytes, name: str = "model data") -> TileClassifier:
    """Inverse of :func:`model_to_bytes`, with the checks of :func:`load_model`.

    Parameters
    ----------
    data : bytes
        The bytes of a ``.tilemap`` file.
    name : str
        What to call the data in error messages.

    Returns
    -------
    TileClassifier
        The model, in eval mode, on the CPU.

    Raises
    ------
    ModelFileError
        As :func:`load_model`.
    """
    data = bytes(data)
    n = _header_length(data[:8], len(data), name)
    return _build(_check_header(data[8 : 8 + n], len(data), name), data, name)


@dataclass
class _Plan:
    """What a checked header promises: the model to fill, still without weights (meta device)."""

    model: TileClassifier
    expected: dict[str, torch.Tensor]
    checksum: str | None
    """SHA-256 of the tensor data the writer recorded (files from before it did: None)."""


def _not_a_model(name: str, problem: str) -> ModelFileError:
    return ModelFileError(f"{name} is not a napari-tilemap model file: {problem}")


def _header_length(head: bytes, size: int, name: str) -> int:
    """The safetensors header length in the first 8 bytes, checked against the file size."""
    if size > MAX_FILE_BYTES:
        raise _not_a_model(name, f"it is {size} bytes, above the {MAX_FILE_BYTES // 2**20} MiB limit")
    if len(head) < 8:
        raise _not_a_model(name, f"only {size} bytes long")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise _not_a_model(name, f"header length {n} is above the {MAX_HEADER_BYTES // 2**20} MiB limit")
    if n > size - 8:
        raise _not_a_model(name, f"header length {n} is longer than the file ({size} bytes)")
    return n


def _check_header(raw: bytes, size: int, name: str) -> _Plan:
    """Check a header against the preset it names and the file size, without reading weights."""
    try:
        return _check_header_json(raw, size, name)
    except RecursionError:
        raise _not_a_model(name, "its header or metadata is nested too deeply") from None


def _check_header_json(raw: bytes, size: int, name: str) -> _Plan:
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _not_a_model(name, f"its header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise _not_a_model(name, f"its header is {_json_type(header)}, not an object")
    text = header.get("__metadata__")
    text = text.get("tilemap") if isinstance(text, dict) else None
    if not isinstance(text, str):
        raise ModelFileError(f"{name} is a safetensors file but not a napari-tilemap model (no tilemap metadata)")
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise _not_a_model(name, f"its tilemap metadata is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{name}: its tilemap metadata is {_json_type(meta)}, not an object")
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{name} is a safetensors file but not a napari-tilemap model")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise ModelFileError(f"{name}: model format version {_short(version)} is not a positive integer")
    if version > VERSION:
        raise ModelFileError(
            f"{name} has model format version {version}; this napari-tilemap reads up to {VERSION}: "
            "upgrade napari-tilemap"
        )
    _check_keys(meta, {"format", "version", "architecture", "class_table", "normalisation"},
                {"record", "weights_sha256"}, "the metadata", name)
    checksum = meta.get("weights_sha256")
    if checksum is not None and not (isinstance(checksum, str) and len(checksum) == 64):
        raise ModelFileError(f"{name}: weights_sha256 {_short(checksum)} is not a SHA-256 hex digest")
    arch = _architecture(meta["architecture"], name)
    if arch.activation != "softmax" and version < 2:
        raise ModelFileError(
            f"{name}: format version {version} cannot hold {arch.activation} scores (version 2 can); "
            "the file was altered or written by another program"
        )
    table = _class_table(meta["class_table"], arch, name)
    mean, std, per_image = _normalisation(meta["normalisation"], arch, name, version)
    record = meta.get("record", {})
    if not isinstance(record, dict):
        raise ModelFileError(f"{name}: its training record is {_json_type(record)}, not an object")
    with torch.device("meta"):  # shapes and dtypes only: nothing is allocated
        model = TileClassifier.create(arch, table, mean, std, record, per_image)
    expected = dict(model.network.state_dict())
    data_bytes = _check_tensors(header, expected, arch, name)
    if 8 + len(raw) + data_bytes != size:
        raise _not_a_model(
            name, f"it is {size} bytes, but its header describes {8 + len(raw) + data_bytes} (truncated or padded)"
        )
    return _Plan(model, expected, checksum)


def _json_type(x) -> str:
    if x is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(x), "a number")


def _is_int(x) -> bool:
    return type(x) is int  # not bool, not float


def _is_number(x) -> bool:
    return type(x) in (int, float)


def _check_keys(d: dict, required: set[str], optional: set[str], what: str, name: str) -> None:
    missing, unknown = sorted(required - d.keys()), sorted(d.keys() - required - optional)
    if missing or unknown:
        problem = f"lacks {missing}" if missing else f"has unknown entries {_short(unknown)}"
        raise ModelFileError(f"{name}: {what} {problem}")


def _architecture(stored, name: str) -> Architecture:
    """The architecture rebuilt from the stored preset, tile size, channels, classes and activation.

    ``activation`` may be absent (softmax: every version-1 file, and softmax files since).
    """
    if not isinstance(stored, dict):
        raise ModelFileError(f"{name}: its architecture is {_json_type(stored)}, not an object")
    preset, tile_size = stored.get("preset"), stored.get("tile_size")
    in_channels, num_classes = stored.get("in_channels"), stored.get("num_classes")
    if not isinstance(preset, str) or not all(_is_int(x) for x in (tile_size, in_channels, num_classes)):
        raise ModelFileError(
            f"{name}: its architecture needs a preset name and integer tile_size, in_channels and "
            f"num_classes, got {_short(preset)}, {_short(tile_size)}, {_short(in_channels)}, {_short(num_classes)}"
        )
    if not 1 <= in_channels <= MAX_CHANNELS:
        raise ModelFileError(f"{name}: in_channels {in_channels} in the architecture is outside 1..{MAX_CHANNELS}")
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ModelFileError(f"{name}: num_classes {num_classes} in the architecture is outside 2..{MAX_CLASSES}")
    activation = stored.get("activation", "softmax")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ModelFileError(
            f"{name}: activation {_short(activation)} in the architecture is not one of {list(ACTIVATIONS)}"
        )
    try:
        arch = architecture(preset, tile_size, in_channels, num_classes, activation)
    except TilemapInputError as err:
        raise ModelFileError(f"{name}: its architecture is invalid: {err}") from None
    want = {**arch.to_dict(), "widths": list(arch.widths)}
    if "activation" not in stored:
        del want["activation"]
    wrong = [k for k in want.keys() | stored.keys() if json.dumps(stored.get(k)) != json.dumps(want.get(k))]
    if wrong:
        k = min(wrong)
        raise ModelFileError(
            f"{name}: its architecture is not preset {preset!r} at tile_size {tile_size}: "
            f"{k} is {_short(stored.get(k))} where the preset has {_short(want.get(k))}"
        )
    return arch


def _class_table(stored, arch: Architecture, name: str) -> ClassTable:
    if not isinstance(stored, dict):
        raise ModelFileError(f"{name}: its class table is {_json_type(stored)}, not an object")
    _check_keys(stored, {"class_names", "colors", "values"}, set(), "its class table", name)
    names, colors, values = stored["class_names"], stored["colors"], stored["values"]
    if not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
        and isinstance(colors, list) and all(isinstance(c, list) and all(map(_is_number, c)) for c in colors)
        and isinstance(values, list) and all(map(_is_int, values))
    ):
        raise ModelFileError(
            f"{name}: its class table needs lists of names (strings), colours (lists of numbers) and "
            "label values (integers)"
        )
    try:
        table = ClassTable.from_dict(stored)
    except (ValueError, OverflowError) as err:  # TilemapInputError is a ValueError
        raise ModelFileError(f"{name}: its class table is invalid: {err}") from None
    if len(table) != arch.num_classes:
        raise ModelFileError(
            f"{name}: num_classes {arch.num_classes} in the architecture does not match its class table "
            f"of {len(table)} classes"
        )
    return table


def _normalisation(stored, arch: Architecture, name: str,
                   version: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
    """Per-channel mean and std: finite float32, and std above the floor training applies; and the
    percentiles of per-image normalisation (version 3 on), or None."""
    if not isinstance(stored, dict):
        raise ModelFileError(f"{name}: its normalisation is {_json_type(stored)}, not an object")
    _check_keys(stored, {"mean", "std"}, {"per_image"} if version >= 3 else set(), "its normalisation", name)
    per_image = stored.get("per_image")
    if per_image is not None:
        if not (isinstance(per_image, list) and len(per_image) == 2 and all(map(_is_number, per_image))
                and 0 <= per_image[0] < per_image[1] <= 100):
            raise ModelFileError(f"{name}: normalisation per_image must be two percentiles 0 <= low < high <= 100, "
                                 f"got {_short(per_image)}")
        per_image = (float(per_image[0]), float(per_image[1]))
    out = []
    for key in ("mean", "std"):
        v = stored[key]
        if not (isinstance(v, list) and len(v) == arch.in_channels and all(map(_is_number, v))):
            raise ModelFileError(
                f"{name}: normalisation {key} must be a list of {arch.in_channels} numbers "
                f"(one per channel), got {_short(v)}"
            )
        with np.errstate(over="ignore"):
            try:
                a = np.array(v, np.float64).astype(np.float32)
            except OverflowError:  # an integer beyond float64
                a = np.array([np.inf], np.float32)
        if not np.isfinite(a).all():
            raise ModelFileError(f"{name}: normalisation {key} {_short(v)} is not finite in float32")
        out.append(a)
    mean, std = out
    floor = np.float32(MIN_STD) * np.maximum(np.float32(1), np.abs(mean))
    if not (std >= floor * np.float32(1 - 2**-20)).all():
        raise ModelFileError(
            f"{name}: normalisation std {_short(stored['std'])} is below {MIN_STD:g} * max(1, |mean|), the floor "
            "training applies; such a model would divide by (nearly) zero"
        )
    return mean, std, per_image


def _check_tensors(header: dict, expected: dict[str, torch.Tensor], arch: Architecture, name: str) -> int:
    """Check tensor entries against the network ``arch`` implies; the data size they cover."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    missing, unknown = sorted(expected.keys() - entries.keys()), sorted(entries.keys() - expected.keys())
    if missing or unknown:
        raise ModelFileError(
            f"{name}: its weights are not those of preset {arch.preset!r}: "
            + (f"missing {_short(missing)}" if missing else f"unknown tensors {_short(unknown)}")
        )
    for key, e in entries.items():
        if not (
            isinstance(e, dict) and e.keys() == {"dtype", "shape", "data_offsets"}
            and isinstance(e["shape"], list) and all(map(_is_int, e["shape"]))
            and isinstance(e["data_offsets"], list) and len(e["data_offsets"]) == 2
            and all(map(_is_int, e["data_offsets"]))
        ):
            raise _not_a_model(name, f"tensor entry {key!r} is malformed: {_short(e)}")
    spans = []
    for key, want in expected.items():
        e = entries[key]
        if e["shape"] != list(want.shape):
            raise ModelFileError(f"{name}: {_shape_problem(key, e['shape'], want, entries, arch)}")
        if e["dtype"] != _DTYPE_NAMES[want.dtype]:
            raise ModelFileError(
                f"{name}: weight {key!r} has dtype {_short(e['dtype'])} where {_DTYPE_NAMES[want.dtype]} is needed"
            )
        begin, end = e["data_offsets"]
        spans.append((begin, end, key, want.numel() * want.element_size()))
    position = 0
    for begin, end, key, nbytes in sorted(spans):
        if (begin, end) != (position, position + nbytes):
            span = f"{position}..{position + nbytes}"
            raise _not_a_model(name, f"tensor {key!r} lies at bytes {begin}..{end} of the data, expected {span}")
        position = end
    return position


def _shape_problem(key: str, shape: list[int], want: torch.Tensor, entries: dict, arch: Architecture) -> str:
    """Why a stored weight shape is wrong: a tile size that disagrees with the kernels, if so."""
    stem, head = "0.weight", f"{_head_index(arch)}.weight"
    kernels = [entries[k]["shape"][-1] if len(entries[k]["shape"]) == 4 else None for k in (stem, head)]
    if key in (stem, head) and all(_is_int(k) and k > 0 for k in kernels):
        implied = _tile_size(PRESETS[arch.preset], *kernels)
        if implied != arch.tile_size:
            return (
                f"tile_size {arch.tile_size} in the metadata does not match its weights (the stem and head "
                f"kernels, {kernels[0]} and {kernels[1]}, imply tile size {implied})"
            )
    return f"weight {key!r} has shape {_short(shape)} where the architecture needs {list(want.shape)}"


def _head_index(arch: Architecture) -> int:
    """Position of the head convolution in :func:`build_network`'s layer list."""
    return 3 + len(arch.widths) * (3 * arch.convs_per_stage + 1)


def _build(plan: _Plan, data: bytes, name: str) -> TileClassifier:
    """Fill the planned model with the weights in ``data`` and check what they compute."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if plan.checksum is not None and weights_digest(data) != plan.checksum:
        raise ModelFileError(f"{name}: its weights do not match their checksum; the file was damaged or altered")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:  # the header was checked: a parser disagreement
        raise _not_a_model(name, " ".join(f"{type(err).__name__}: {err}".split())) from None
    if tensors.keys() != plan.expected.keys():
        raise _not_a_model(name, "its tensors do not read back as its header describes")
    for key, t in tensors.items():
        want = plan.expected[key]
        if t.dtype != want.dtype or t.shape != want.shape:
            raise _not_a_model(name, f"tensor {key!r} does not read back as its header describes")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"{name}: weight {key!r} holds NaN or infinite values")
        if key.endswith("running_var") and (t < 0).any():
            raise ModelFileError(f"{name}: weight {key!r} holds negative variances")
    model = plan.model
    model.network.load_state_dict(tensors, strict=True, assign=True)
    model.network.eval()
    net = model.inference_network("cpu")
    gain = _gain(net[1], model.in_channels)
    if not np.isfinite(gain):
        raise ModelFileError(f"{name}: its weights overflow float32 once BatchNorm is folded into them")
    if gain > MAX_GAIN:
        raise ModelFileError(
            f"{name}: its weights can overflow (activations up to {gain:.3g} per unit of normalised input; "
            f"at most {MAX_GAIN:g} is accepted)"
        )
    tile = torch.from_numpy(model.mean).view(1, -1, 1, 1).expand(1, -1, model.tile_size, model.tile_size)
    with torch.inference_mode():
        logits = net[:2](tile.contiguous())  # before the activation: a sigmoid maps ±inf to finite scores
        scores = net[2](logits)
    if not (torch.isfinite(logits).all() and torch.isfinite(scores).all()):
        raise ModelFileError(f"{name}: its network gives non-finite scores on a tile of the mean value")
    return model


def _gain(net: nn.Sequential, channels: int) -> float:
    """Bound on |activation| anywhere in a conv / ReLU / max-pool ``net`` for inputs in [-1, 1].

    Interval arithmetic (per-kernel absolute sums in float32, then float64); stops at the
    first layer over :data:`MAX_GAIN` or non-finite (a fused BatchNorm that overflowed).
    """
    bound = torch.ones(channels, dtype=torch.float64)
    for m in net:
        if isinstance(m, nn.Conv2d):
            bound = torch.linalg.vector_norm(m.weight.detach(), 1, dim=(2, 3)).double() @ bound
            if m.bias is not None:
                bound = bound + m.bias.detach().double().abs()
            worst = float(bound.max())
            if not worst <= MAX_GAIN:
                return worst
    return float(bound.max())
