import dataclasses
import json
import os
import pickle
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from napari_tilemap import ModelFileError, load_model, predict
from napari_tilemap._classes import ClassTable
from napari_tilemap.learn._modelfile import model_from_bytes, model_to_bytes
from napari_tilemap.learn._networks import architecture


def test_save_then_load_gives_identical_predictions(random_model, tmp_path):
    model = random_model("medium", 48, 3, classes=4)
    model.record = {"seed": 3, "final": {"val_accuracy": 0.9}}
    path = tmp_path / "m.tilemap"
    model.save(path)
    loaded = load_model(path)
    assert loaded.arch == model.arch
    assert loaded.class_table == model.class_table
    assert loaded.record == model.record
    np.testing.assert_array_equal(loaded.mean, model.mean)
    image = np.random.default_rng(1).uniform(0, 255, (70, 90, 3))
    a = predict(model, image, device="cpu")
    b = predict(loaded, image, device="cpu")
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not list(tmp_path.glob(".*partial")), "the temporary file was left behind"


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.tilemap"
    hostile.write_bytes(pickle.dumps(_Exploit(str(marker))))
    torch.save({"x": _Exploit(str(marker))}, tmp_path / "torch.tilemap")
    for path in (hostile, tmp_path / "torch.tilemap"):
        with pytest.raises(ModelFileError, match="not a napari-tilemap model file"):
            load_model(path)
    assert not marker.exists()
    # the payload is live: unpickling it would have created the file
    pickle.loads(hostile.read_bytes()).close()
    assert marker.exists()


def test_truncated_foreign_and_missing_files_are_refused(random_model, tmp_path):
    path = tmp_path / "m.tilemap"
    random_model().save(path)
    data = path.read_bytes()
    (tmp_path / "cut.tilemap").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a napari-tilemap model file"):
        load_model(tmp_path / "cut.tilemap")
    (tmp_path / "text.tilemap").write_text("hello")
    with pytest.raises(ModelFileError, match="not a napari-tilemap model file"):
        load_model(tmp_path / "text.tilemap")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a napari-tilemap model"):
        load_model(tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.tilemap")
    assert isinstance(ModelFileError("x"), ValueError)


def test_saving_over_a_model_is_atomic(random_model, tmp_path, monkeypatch):
    path = tmp_path / "m.tilemap"
    random_model(seed=1).save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        random_model(seed=2).save(path)
    assert path.read_bytes() == before


# --- hostile and inconsistent files ---------------------------------------------------------------


def _split(data: bytes) -> tuple[dict, str, bytes]:
    """(safetensors header, tilemap metadata text, tensor bytes) of a model file's bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    return header, header["__metadata__"]["tilemap"], data[8 + n :]


def _join(header: dict, tensors: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + tensors


def _with_text(data: bytes, text: str) -> bytes:
    """``data`` with its tilemap metadata replaced by ``text``."""
    header, _, tensors = _split(data)
    return _join({**header, "__metadata__": {"tilemap": text}}, tensors)


def _edit(data: bytes, *path_and_value) -> bytes:
    """``data`` with the metadata entry at ``path`` set to ``value``."""
    *path, value = path_and_value
    meta = json.loads(_split(data)[1])
    d = meta
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value
    return _with_text(data, json.dumps(meta))


def _edit_header(data: bytes, key: str, field: str, value) -> bytes:
    header, _, tensors = _split(data)
    header[key][field] = value
    return _join(header, tensors)


def _hostile(random_model) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, pattern of the refusal), one per lie a file can tell."""
    good = model_to_bytes(random_model("small", 18, 1))
    meta = json.loads(_split(good)[1])

    def tampered(change) -> bytes:
        model = random_model("small", 18, 1)
        change(model)
        return model_to_bytes(model)

    def arch(key, value) -> bytes:
        return _edit(good, "architecture", key, value)

    def norm(key, value) -> bytes:
        return _edit(good, "normalisation", key, value)

    def table(key, value) -> bytes:
        return _edit(good, "class_table", key, value)

    four_classes = model_to_bytes(random_model("small", 18, 1, classes=4))
    three_class_table = ClassTable.from_values([1, 2]).to_dict()
    return {
        # the weights are of an 18-pixel model, the metadata a consistent 22-pixel architecture
        "tile_size": (
            _edit(good, "architecture", architecture("small", 22, 1, 3).to_dict()),
            r"tile_size 22 in the metadata does not match its weights .*imply tile size 18\)",
        ),
        "tile_size_alone": (arch("tile_size", 22), r"not preset 'small' at tile_size 22: \w+_kernel is \d+ where"),
        "num_classes": (
            _edit(four_classes, "class_table", three_class_table),
            r"num_classes 4 in the architecture does not match its class table of 3 classes",
        ),
        "nan_weight": (
            tampered(lambda m: m.network[0].weight.data.__setitem__((0, 0, 0, 0), float("nan"))),
            r"weight '0.weight' holds NaN or infinite values",
        ),
        "huge_weight": (
            tampered(lambda m: m.network[0].weight.data.__setitem__((0, 0, 0, 0), 1e35)),
            r"its weights can overflow \(activations up to [\d.]+e\+\d+ per unit",
        ),
        "negative_variance": (
            tampered(lambda m: m.network[1].running_var.__setitem__(0, -1.0)),
            r"weight '1.running_var' holds negative variances",
        ),
        "zero_std": (
            tampered(lambda m: m.std.__setitem__(0, 0.0)),
            r"normalisation std \[0.0\] is below 1e-06 \* max\(1, \|mean\|\)",
        ),
        "tiny_std": (norm("std", [1e-30]), r"std \[1e-30\] is below"),
        "float32_inf_mean": (norm("mean", [1e39]), r"mean \[1e\+39\] is not finite in float32"),
        "nan_mean": (_with_text(good, _split(good)[1].replace("[100.0]", "[NaN]")), r"mean \[nan\] is not finite"),
        "mean_per_channel": (norm("mean", [1.0, 2.0]), r"mean must be a list of 1 numbers"),
        "convs_per_stage": (arch("convs_per_stage", 200_000), r"convs_per_stage is 200000 where the preset has 2$"),
        "widths": (arch("widths", [4096] * 30), r"widths is \[4096, 4096, 4096, 4096, 4096, 4096, \.\.\.\] where"),
        "head_width": (arch("head_width", 10**9), r"head_width is 1000000000 where the preset has 32"),
        "no_widths": (arch("widths", []), r"widths is \[\] where the preset has \[8, 16\]"),
        "tile_too_large": (arch("tile_size", 100_000), r"tile_size 100000 is above the maximum of 1024"),
        "odd_tile": (arch("tile_size", 19), r"tile_size must be even"),
        "unknown_preset": (arch("preset", "giant"), r"unknown preset 'giant'"),
        "in_channels": (arch("in_channels", 5), r"in_channels 5 in the architecture is outside 1..4"),
        "num_classes_range": (arch("num_classes", 10**6), r"num_classes 1000000 in the architecture is outside 2..256"),
        "bool_tile_size": (arch("tile_size", True), r"integer tile_size, in_channels and num_classes"),
        "float_tile_size": (arch("tile_size", 18.0), r"got 'small', 18.0, 1, 3"),
        "class_values": (table("values", [0, 1, 1]), r"class table is invalid: class label values must be unique"),
        "class_names": (table("class_names", [1, 2, 3]), r"class table needs lists of names"),
        "colour_overflow": (table("colors", [[10**400, 0, 0]] * 3), r"class table is invalid"),
        "metadata_list": (_with_text(good, json.dumps([meta])), r"tilemap metadata is an array, not an object"),
        "metadata_null": (_with_text(good, "null"), r"tilemap metadata is null, not an object"),
        "metadata_not_json": (_with_text(good, "{'format': 1}"), r"its tilemap metadata is not JSON"),
        "metadata_nested": (_with_text(good, "[" * 100_000 + "]" * 100_000), r"nested too deeply"),
        "architecture_null": (_edit(good, "architecture", None), r"its architecture is null, not an object"),
        "record": (_edit(good, "record", [1, 2]), r"training record is an array, not an object"),
        "unknown_entry": (_edit(good, "code", "import os"), r"the metadata has unknown entries \['code'\]"),
        "missing_entry": (
            _with_text(good, json.dumps({k: v for k, v in meta.items() if k != "normalisation"})),
            r"the metadata lacks \['normalisation'\]",
        ),
        "version": (_edit(good, "version", 4), r"has model format version 4; .*: upgrade napari-tilemap"),
        "activation": (arch("activation", "tanh"), r"activation 'tanh' in the architecture is not one of \['softmax', 'sigmoid'\]"),
        "activation_type": (arch("activation", ["sigmoid"]), r"activation \['sigmoid'\] in the architecture is not one of"),
        "version_type": (_edit(good, "version", "1"), r"model format version '1' is not a positive integer"),
        "header_length": (struct.pack("<Q", 2**63) + good[8:], r"header length \d+ is above the 16 MiB limit"),
        "header_past_end": (struct.pack("<Q", 10**6) + good[8:], r"header length 1000000 is longer than the file"),
        "header_array": (_join_raw(b"[1, 2]", b""), r"its header is an array, not an object"),
        "appended": (good + b"\0" * 8, r"it is \d+ bytes, but its header describes \d+ \(truncated or padded\)"),
        "dtype": (_edit_header(good, "0.weight", "dtype", "F64"), r"weight '0.weight' has dtype 'F64' where F32"),
        "extra_field": (_edit_header(good, "0.weight", "x", 1), r"tensor entry '0.weight' is malformed"),
        "overlap": (
            _edit_header(good, "1.num_batches_tracked", "data_offsets", [4, 12]),
            r"tensor '1.num_batches_tracked' lies at bytes 4..12 of the data, expected 0..8",
        ),
    }


def _join_raw(raw: bytes, tensors: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw + tensors


def test_every_lie_a_file_can_tell_is_refused_with_a_message_naming_it(random_model, tmp_path):
    for case, (data, pattern) in _hostile(random_model).items():
        path = tmp_path / f"{case}.tilemap"
        path.write_bytes(data)
        with pytest.raises(ModelFileError) as info:
            load_model(path)
        message = str(info.value)
        assert message.startswith(repr(str(path))), (case, message)
        assert "\n" not in message and len(message) < 400, (case, message)
        assert info.match(pattern), case
        with pytest.raises(ModelFileError, match=pattern):  # the same checks on bytes in memory
            model_from_bytes(data, name="payload")


def test_a_huge_sparse_file_and_a_directory_are_refused_without_reading(random_model, tmp_path):
    good = model_to_bytes(random_model("small", 18, 1))
    for size, pattern in ((1_500_000_000, r"is 1500000000 bytes, above the 512 MiB limit"),
                          (300_000_000, r"is 300000000 bytes, but its header describes \d+ \(truncated")):
        path = tmp_path / f"sparse{size}.tilemap"
        with open(path, "wb") as f:
            f.write(good)
            f.truncate(size)
        start = time.perf_counter()
        with pytest.raises(ModelFileError, match=pattern):
            load_model(path)
        assert time.perf_counter() - start < 0.5, "the file was read"
    with pytest.raises(ModelFileError, match=r"'.*' is a directory, not a model file"):
        load_model(tmp_path)


def test_loading_hostile_files_stays_small_in_memory(random_model, tmp_path):
    good = model_to_bytes(random_model("small", 18, 1))
    files = {case: data for case, (data, _) in _hostile(random_model).items()}
    # architectures that took gigabytes to build from a small file
    files["big_arch"] = _edit(good, "architecture", architecture("large", 1024, 4, 256).to_dict())
    files["stages"] = _edit(good, "architecture", "widths", [1024] * 12)
    paths = []
    for case, data in files.items():
        paths.append(tmp_path / f"{case}.tilemap")
        paths[-1].write_bytes(data)
    with open(tmp_path / "sparse.tilemap", "wb") as f:
        f.write(good)
        f.truncate(1_500_000_000)
    paths += [tmp_path / "sparse.tilemap", tmp_path]
    script = (
        "import resource, sys\n"
        "from napari_tilemap import ModelFileError, load_model\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        load_model(path)\n"
        "    except ModelFileError:\n"
        "        continue\n"
        "    sys.exit(f'{path} loaded')\n"
        # VmHWM is this program's own peak; ru_maxrss also counts the parent's memory at fork time
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "print(hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout
    peak_kib = int(done.stdout.split()[-1])
    assert peak_kib < 1024 * 1024, f"peak memory {peak_kib / 1024:.0f} MiB"


# --- property: any bytes load as a sound model or are refused -----------------------------------

_IMAGE = np.random.default_rng(7).uniform(0, 255, (30, 34))
_BASELINE: dict = {}


def _baseline(random_model, activation: str = "softmax") -> tuple[bytes, np.ndarray, list]:
    """A small model's file bytes, its map of ``_IMAGE`` and the paths into its metadata."""
    if activation not in _BASELINE:
        model = random_model("small", 18, 1)
        model.arch = dataclasses.replace(model.arch, activation=activation)
        data = model_to_bytes(model)

        def paths(node, prefix=()):
            yield prefix
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in items:
                yield from paths(v, (*prefix, k))

        meta = json.loads(_split(data)[1])
        _BASELINE[activation] = data, predict(model, _IMAGE, device="cpu").scores, list(paths(meta))[1:]
    return _BASELINE[activation]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-3, 40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _mutated(draw, data: bytes, paths: list) -> tuple[str, bytes]:
    """(kind of change, changed bytes) of a model file's ``data``."""
    kind = draw(st.sampled_from(["random bytes", "random metadata", "metadata field", "tensor bytes"]))
    if kind == "random bytes":
        prefix = draw(st.sampled_from([b"", data[:8], data[: len(data) // 2]]))
        return kind, prefix + draw(st.binary(max_size=2000))
    if kind == "random metadata":
        return kind, _with_text(data, json.dumps(draw(_json)))
    if kind == "metadata field":
        meta = json.loads(_split(data)[1])
        for _ in range(draw(st.integers(0, 3))):  # none: the same metadata in a rewritten header
            path = draw(st.sampled_from(paths))
            parent = meta
            try:
                for key in path[:-1]:
                    parent = parent[key]
                old = parent[path[-1]]
            except (KeyError, IndexError, TypeError):  # an earlier change removed the path
                continue
            change = draw(st.sampled_from(["delete", "same type", "same type", "any JSON"]))
            if change == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif change == "same type" and isinstance(old, str):
                parent[path[-1]] = draw(st.text(max_size=12))
            elif change == "same type" and isinstance(old, (int, float)) and not isinstance(old, bool):
                parent[path[-1]] = draw(st.sampled_from([old * 2, old + 2, -old, 0, old * 1e6, old / 1e6, 1e38]))
            else:
                parent[path[-1]] = draw(_json)
        return kind, _with_text(data, json.dumps(meta))
    start = 8 + struct.unpack("<Q", data[:8])[0]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(start, len(data) - 1))] ^= draw(st.integers(1, 255))
    return kind, bytes(out)


@settings(
    max_examples=int(os.environ.get("TILEMAP_FUZZ_EXAMPLES", "60")),  # more for a longer hunt
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_any_bytes_load_as_a_sound_model_or_are_refused(random_model, tmp_path, data):
    original, scores, paths = _baseline(random_model, data.draw(st.sampled_from(["softmax", "sigmoid"])))
    kind, blob = data.draw(_mutated(original, paths))
    path = tmp_path / "fuzz.tilemap"
    path.write_bytes(blob)
    try:
        model = load_model(path)
    except ModelFileError as err:
        assert str(err).startswith(repr(str(path))) and "\n" not in str(err)
        event(f"{kind}: refused")
        return
    got = predict(model, _IMAGE, device="cpu").scores
    same = model_to_bytes(model) == original  # the same model, however its file was written
    event(f"{kind}: loaded {'the same' if same else 'a changed'} model")
    if same:
        np.testing.assert_array_equal(got, scores)
    else:
        assert np.isfinite(got).all()
        if model.activation == "softmax":
            np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-4)
        else:  # sigmoid: one independent score per class
            assert ((got >= 0) & (got <= 1)).all()


def test_a_version_1_file_cannot_claim_sigmoid_scores(random_model, tmp_path):
    from napari_tilemap.learn._model import TileClassifier

    soft = random_model("small", 18, 1)
    arch = architecture("small", 18, 1, 3, "sigmoid")
    sigmoid = TileClassifier(arch, soft.class_table, soft.mean, soft.std, soft.network)
    data = model_to_bytes(sigmoid)
    assert model_from_bytes(data).activation == "sigmoid"
    with pytest.raises(ModelFileError, match="format version 1 cannot hold sigmoid scores"):
        model_from_bytes(_edit(data, "version", 1))


def test_a_changed_weight_byte_is_caught_by_the_checksum(random_model):
    data = bytearray(model_to_bytes(random_model("small", 18, 1)))
    data[-100] ^= 0x59  # one byte of a weight: still a finite, valid-looking model
    with pytest.raises(ModelFileError, match="do not match their checksum"):
        model_from_bytes(bytes(data), name="'m.tilemap'")
