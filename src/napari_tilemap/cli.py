"""The ``tilemap`` command line: ``demo``, ``train``, ``predict``, ``evaluate`` and ``export``.

Exit status 0 on success, 2 on bad input, 1 when the environment fails (disk full, a
lost cluster), 130 when interrupted; every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._classes import UNKNOWN
from ._cli_progress import EpochProgress, Steps, duration
from ._errors import TilemapInputError
from ._levels import NORMALISATIONS
from ._progress import Cancelled

BAD_INPUT = 2
ENVIRONMENT = 1
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tilemap`` console command."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed in one line
        return int(done.code or 0)
    args.kept = "nothing was written"  # each command says here what an interrupt would leave
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line(args.command)
            return args.run(args)
    except (TilemapInputError, ValueError, TypeError) as err:
        return _fail(args.command, _one_line(err), BAD_INPUT)
    except KeyboardInterrupt:
        print(f"tilemap {args.command}: interrupted; {args.kept}", file=sys.stderr)
        return INTERRUPTED
    except Cancelled as err:
        return _fail(args.command, _one_line(err), INTERRUPTED)
    except Exception as err:  # disks, networks and clusters: one line, never a traceback
        if os.environ.get("TILEMAP_DEBUG"):
            raise
        return _fail(args.command, _environment_message(err, args.command), ENVIRONMENT)


def _warning_line(command: str):
    """A ``warnings.showwarning`` that prints each warning meant for the user as one line naming the command."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if for_the_user(category, filename):
            print(f"tilemap {command}: warning: {_one_line(message)}", file=sys.stderr)

    return show


_PACKAGE = Path(__file__).resolve().parent


def for_the_user(category: type[Warning], filename: str) -> bool:
    """Whether a warning is one of napari-tilemap's own, about the user's data or options.

    Those are its own categories (:class:`IntensityWarning`) and :class:`UserWarning` raised in this
    package. Warnings of Python and of the libraries underneath (an unclosed file, a deprecation) are
    for developers; they are shown too when ``TILEMAP_DEBUG`` is set.
    """
    if os.environ.get("TILEMAP_DEBUG") or category.__module__.startswith("napari_tilemap"):
        return True
    return issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(_PACKAGE)


def _fail(command: str, message: str, status: int) -> int:
    print(f"tilemap {command}: error: {message}", file=sys.stderr)
    return status


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return cli_words(text) or type(err).__name__


# The library's messages name Python arguments; on the command line they name the options.
_OPTION_OF = {"overwrite": "--overwrite", "block_size": "--chunk", "tile_size": "--tile-size", "epochs": "--epochs",
              "preset": "--preset", "device": "--device", "background": "--background", "loss": "--loss",
              "seed": "--seed", "threshold": "--threshold", "workers": "--workers", "min_area": "--min-area",
              "min_score": "--min-score",
              "hard_negative_rounds": "--hard-negatives", "augment": "--augment", "prior": "--prior",
              "pixel_size": "--pixel-size", "format": "--format"}


def cli_words(text: str) -> str:
    """``text`` with Python spellings (``overwrite=True``, ``background='none'``) as CLI options."""
    import re

    def option(match: re.Match) -> str:
        flag = _OPTION_OF[match.group(1)]
        value = match.group(3)
        return flag if value == "True" else f"{flag} {value}"

    names = "|".join(_OPTION_OF)
    text = re.sub(rf"\b({names})=(['\"]?)([\w.:-]+)\2", option, text)
    return text.replace('scores_dtype="float16"', "--float16")


def _environment_message(err: Exception, command: str) -> str:
    resume = "; run the same command again to resume" if command == "predict" else ""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on the disk ({err.filename or 'while writing'}): free some space{resume}"
    if isinstance(err, MemoryError):
        return f"out of memory{resume}; for predict, lower --chunk or --workers"
    module = type(err).__module__.split(".")[0]
    if module == "distributed" or (isinstance(err, OSError) and "connect" in str(err).lower()):
        return f"the dask cluster failed ({type(err).__name__}: {_one_line(err)}){resume}"
    if isinstance(err, OSError):
        return f"{type(err).__name__}: {_one_line(err)}{resume}"
    return (f"{type(err).__name__}: {_one_line(err)}{resume} "
            "(unexpected: set TILEMAP_DEBUG=1 to see the traceback, and please report it)")


THRESHOLD_HELP = ("reject threshold: cells whose best score is below it are 'unknown' (255); one value in 0..1 "
                  "or one per class, as NAME=T,NAME=T (default: none)")
MIN_SCORE_HELP = ("regions whose peak score is below this become 'unknown' (255), whole, and are left out; "
                  "confident regions keep every cell; one value in 0..1 or one per class, as NAME=S,NAME=S; "
                  "'none' keeps every region; 'model': the one training suggested, which 'tilemap train' "
                  "prints ('tilemap evaluate' suggests one from labelled images) (default: model)")


TTA_HELP = ("test-time augmentation: average each tile's scores over the quarter turns and mirrors the model was "
            "trained on (steadier on busy surfaces; up to 8x the time)")


AUGMENT_NAMES = ("flip", "rot90", "rotate", "shift", "intensity", "noise", "blur")
PRIOR_NAMES, DEFAULT_PRIOR = ("tiles", "balanced"), "tiles"  # as TrainConfig, without importing torch
PRIOR_HELP = ("class frequencies the scores assume: tiles = each class's share of the training tiles (far fewer "
              "false alarms on a busy surface; needs every defect of the training images painted, as an "
              "unpainted one is learnt as background); balanced = every class equally likely (for a painting of "
              "only some of the defects: finds rare classes also where you did not paint them, with more false "
              "alarms)")

DEFAULT_NORMALISE = "image"  # as TrainConfig, without importing torch
NORMALISE_HELP = ("how pixels are scaled for the network: image = first by each image's own 1st-99th percentiles, "
                  "in training and in every prediction (images under other lighting, gain or exposure look "
                  "alike); dataset = by the mean and spread of the training tiles alone")


def _augment_arg(text: str):
    """``default``, ``none`` or comma-separated augmentation names, as :attr:`TrainConfig.augment` takes them."""
    if text.strip() == "default":
        return True
    if text.strip() == "none":
        return False
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENT_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown augmentation(s) {', '.join(unknown)}: choose from "
                                         f"{','.join(AUGMENT_NAMES)}, or default, or none")
    return names


CLASS_NAMES_HELP = ("names of the painted classes, kept in the model: VALUE=NAME pairs (1=hole,2=crack; a value "
                    "left out keeps 'class VALUE') or one name per painted value, in increasing order of the "
                    "values (hole,crack) (default: 'class 1', 'class 2', ...)")


def _class_names_arg(text: str) -> dict[int, str] | tuple[str, ...]:
    """``1=hole,2=crack`` as {1: 'hole', 2: 'crack'}, or ``hole,crack`` as ('hole', 'crack')."""
    items = [item.strip() for item in text.split(",")]
    form = "give VALUE=NAME pairs such as 1=hole,2=crack, or names such as hole,crack"
    if not all(items):
        raise argparse.ArgumentTypeError(f"an empty name in {text!r}: {form}")
    paired = ["=" in item for item in items]
    if not any(paired):
        result: dict[int, str] | tuple[str, ...] = tuple(items)
        names = list(result)
    elif not all(paired):
        raise argparse.ArgumentTypeError(f"{text!r} mixes VALUE=NAME pairs and plain names: {form}")
    else:
        result = {}
        for item in items:
            value, _, name = (part.strip() for part in item.partition("="))
            if not value.isdigit() or not name:
                raise argparse.ArgumentTypeError(f"{item!r} is not VALUE=NAME with a painted value (1, 2, ...): "
                                                 f"{form}")
            if int(value) in result:
                raise argparse.ArgumentTypeError(f"value {int(value)} is named twice in {text!r}")
            result[int(value)] = name
        names = list(result.values())
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, twice))} names two classes: give each its own name")
    return result


def _class_names_of(spec: dict[int, str] | tuple[str, ...], labels: list[np.ndarray],
                    background: str) -> dict[int, str]:
    """``--class-names`` checked against the values the labels paint, as {value: name}."""
    from ._classes import ClassTable

    painted = sorted(set().union(*(np.unique(lb).tolist() for lb in labels)) - {0})
    shown = ", ".join(f"{v:g}" for v in painted) or "none"
    if isinstance(spec, tuple):
        if len(spec) != len(painted):
            raise TilemapInputError(f"--class-names gives {len(spec)} name(s) but the labels paint {len(painted)} "
                                    f"value(s) ({shown}): give one name per painted value, or VALUE=NAME pairs")
        spec = dict(zip(painted, spec))
    unpainted = sorted(set(spec) - set(painted))
    if unpainted:
        raise TilemapInputError(f"--class-names names value(s) {', '.join(map(str, unpainted))}, which no labels "
                                f"file paints (painted: {shown}); name only painted values")
    names = ClassTable.from_values(painted, spec, background=background == "unpainted").names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TilemapInputError(f"--class-names: {', '.join(map(repr, twice))} would name two classes (the "
                                "unpainted background or a value left unnamed has it already); choose another name")
    return spec


def _threshold_arg(text: str):
    """``0.7`` or ``pit=0.9,scratch=0.6`` (class names or label values) as a float or a dict."""
    from .maps._threshold import parse_threshold

    if text.strip() in ("model", "none"):
        return text.strip()  # the model's own min score, or none, resolved once the model is loaded

    try:
        value = parse_threshold(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value is None:
        raise argparse.ArgumentTypeError("an empty value: give one number in 0..1 or NAME=VALUE pairs")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default (required options and flags have none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "default" in text:
            return text
        if not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


DEVICE_HELP = "where the network runs: auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps"
SEED_HELP = "random seed: the same seed and data give the same tiles and model"
TILE_HELP = ("tile side T in pixels, the network's receptive field: even, at least 18 (small), 38 (medium) or "
             "78 (large); a map cell's class is decided by the T x T tile around it, so choose T a bit larger "
             "than the structures you paint")
PRESET_HELP = ("network size and map step S (pixels per map cell): small = step 4, fast, fine details; "
               "medium = step 8; large = step 16, more context")
BACKGROUND_HELP = ("unpainted: everything you did not paint is one more class, 'background' (defects on a "
                   "surface: paint only the defects). none: every region of the image is one of the painted "
                   "classes and unpainted pixels are ignored (textures, tissue types: paint a few strokes of each)")
EPOCHS_HELP = "most passes over the training tiles; training stops earlier when validation stops improving"


def _subparser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_Help)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tilemap", description="Tile classification of images of any size.")
    sub = p.add_subparsers(dest="command", required=True)

    d = _subparser(sub, "demo", "sample surface -> tiles -> train -> map, end to end")
    d.add_argument("-o", "--out", default="tilemap-demo", help="output folder, created if missing")
    d.add_argument("--epochs", type=int, default=20, help=EPOCHS_HELP)
    d.add_argument("--device", default="auto", help=DEVICE_HELP)
    d.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    d.add_argument("--view", action="store_true", help="open the result in napari (needs a display)")
    d.add_argument("--overwrite", action="store_true", help="replace the results of an earlier demo in --out")
    d.set_defaults(run=_demo)

    t = _subparser(sub, "train", "train a model on painted images")
    t.add_argument("pairs", nargs="+", metavar="IMAGE LABELS",
                   help="image and labels files, in pairs; labels: 0 = unpainted, 1, 2, ... = classes")
    t.add_argument("-o", "--out", required=True, help="model file to write (*.tilemap)")
    t.add_argument("--tile-size", type=int, default=64, help=TILE_HELP)
    t.add_argument("--preset", default="medium", choices=["small", "medium", "large"], help=PRESET_HELP)
    t.add_argument("--epochs", type=int, default=20, help=EPOCHS_HELP)
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    t.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    t.add_argument("--background", default="unpainted", choices=["unpainted", "none"], help=BACKGROUND_HELP)
    t.add_argument("--loss", default="softmax", choices=["softmax", "sigmoid"],
                   help="softmax: a cell's scores sum to 1; sigmoid: one-vs-rest scores, each class on its own")
    t.add_argument("--augment", type=_augment_arg, default="default", metavar="NAMES",
                   help=f"training augmentations, comma-separated from {','.join(AUGMENT_NAMES)}; 'default' is all "
                        "but intensity with --background unpainted (add it for images lit otherwise) and all with "
                        "none, 'none' turns augmentation off; leave out flip,rot90,rotate for defects whose "
                        "direction matters (default: default)")
    t.add_argument("--hard-negatives", type=int, default=0, metavar="N",
                   help="after training, N rounds of: predict over the training images, add unpainted places "
                        "called a painted class as background, fine-tune; needs --background unpainted and every "
                        "defect of the training images painted")
    t.add_argument("--prior", default=DEFAULT_PRIOR, choices=PRIOR_NAMES, help=PRIOR_HELP)
    t.add_argument("--normalise", default=DEFAULT_NORMALISE, choices=NORMALISATIONS, help=NORMALISE_HELP)
    t.add_argument("--max-time", type=float, default=None, metavar="SECONDS",
                   help="time limit of the training: after the first epoch the epochs are cut to those that fit, "
                        "and training ends at the limit in any case, keeping the best epoch so far")
    t.add_argument("--clean", nargs="+", default=[], metavar="IMAGE",
                   help="defect-free images, trained on as background throughout (no labels file needed)")
    t.add_argument("--class-names", type=_class_names_arg, default=None, metavar="NAMES", help=CLASS_NAMES_HELP)
    t.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    t.set_defaults(run=_train)

    r = _subparser(sub, "predict", "compute the classification map of one or more images")
    r.add_argument("model", help="model file (*.tilemap)")
    r.add_argument("images", nargs="+", metavar="IMAGE", help="image files: TIFF, PNG/JPEG, .npy, zarr / OME-Zarr")
    r.add_argument("-o", "--out", required=True,
                   help="map store to write (MAP.zarr); with several images, a folder that gets one IMAGE.zarr each")
    r.add_argument("--chunk", type=int, default=1024, help="work block side in pixels; memory grows with its square")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.add_argument("--workers", type=int, default=None, help="local worker threads (default: 2)")
    r.add_argument("--scheduler", default=None, help="run on the dask.distributed cluster at this address "
                                                     "(default: run here)")
    r.add_argument("--float16", action="store_true", help="store scores as float16 (half the disk)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing, different map store")
    r.add_argument("--threshold", type=_threshold_arg, default=None, metavar="T", help=THRESHOLD_HELP)
    r.add_argument("--min-score", type=_threshold_arg, default="model", metavar="S", help=MIN_SCORE_HELP)
    r.add_argument("--tta", action="store_true", help=TTA_HELP)
    r.set_defaults(run=_predict)

    e = _subparser(sub, "evaluate", "measure a model against labelled images: cells, objects, scores")
    e.add_argument("model", help="model file (*.tilemap)")
    e.add_argument("pairs", nargs="+", metavar="IMAGE TRUTH", help="image and truth label files, in pairs")
    e.add_argument("--unlabelled", default="background", choices=["background", "ignore"],
                   help="truth value 0 is background (a full ground truth) or is ignored (sparse painting)")
    e.add_argument("--threshold", type=_threshold_arg, default=None, metavar="T", help=THRESHOLD_HELP)
    e.add_argument("--min-score", type=_threshold_arg, default="model", metavar="S",
                   help="regions whose peak score is below this are 'unknown', as 'tilemap predict --min-score' "
                        "makes them; one value in 0..1, NAME=S,NAME=S, 'none', or 'model': the one training "
                        "suggested (default: model)")
    e.add_argument("--report", default=None, metavar="DIR",
                   help="write evaluation.json and pictures (confusion, score histograms, precision-recall) here "
                        "(default: none)")
    e.add_argument("--overwrite", action="store_true", help="replace the files of an earlier report in DIR")
    e.add_argument("--chunk", type=int, default=1024, help="work block side in pixels; memory grows with its square")
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    e.add_argument("--tta", action="store_true", help=TTA_HELP)
    e.set_defaults(run=_evaluate)

    from ._cli_export import add_export_parser

    add_export_parser(sub)
    return p


def _check_output(path: Path, *, overwrite: bool, exists_ok: bool = False) -> None:
    """Refuse an output before any work: its folder must exist, and an existing output needs --overwrite."""
    if not path.absolute().parent.is_dir():
        raise TilemapInputError(f"the folder of the output {str(path)!r} does not exist; create it first")
    if path.exists() and not (overwrite or exists_ok):
        raise TilemapInputError(f"{str(path)!r} already exists; choose another output or pass --overwrite")


def _check_training_options(tile_size: int, background: str = "unpainted", **config):
    """A :class:`TrainConfig` of ``config``, checked with the tile size before any image is read."""
    from .learn._networks import architecture
    from .learn._training import TrainConfig

    checked = TrainConfig(**config)
    architecture(checked.preset, tile_size, 1, 2 if background == "none" else 3)
    return checked


def _train_with_bar(tiles, config, args, out: Path):
    """Train with progress on stderr and write the model; Ctrl-C keeps the best model so far."""
    from .learn._training import BatchProgress, EpochReport, TrainingRun

    run = TrainingRun(tiles, config)
    shown = EpochProgress(config.epochs)
    events = iter(run)
    try:
        for event in events:
            if isinstance(event, BatchProgress):
                shown.batch(event)
            elif isinstance(event, EpochReport):
                shown.epoch(event)
            else:
                shown.mining(event)
    except KeyboardInterrupt:
        events.close()  # the run puts its best weights back
        if run.model is None:
            args.kept = "training stopped before its first epoch ended; no model was written"
            raise
        run.model.save(out)
        final = run.model.record["final"]
        args.kept = (f"the best model so far (epoch {final['epoch']} of {len(run.history)} run) "
                     f"was written to {out}")
        raise
    finally:
        shown.close()
    if run.model is None:
        raise Cancelled("training stopped before its first epoch ended; no model was written")
    run.model.save(out)
    return run.model


def _predict_with_bar(model, image, out, name: str | None = None, *, transient: bool = False, **kw):
    """Predict with a progress bar on stderr named ``name``, by default the image file's name.

    A ``transient`` bar (one image of a batch) shows on a terminal only, and goes when done.
    """
    from .maps._predict import predict

    shown = None

    def progress(event):
        nonlocal shown
        if shown is None:
            shown = Steps(event.total, f"predict {name or Path(str(image)).name}", "block", transient=transient)
        shown.update_to(event.done)

    try:
        return predict(model, image, out, callback=progress, **kw)
    finally:
        if shown is not None:
            shown.close()


def _metrics_line(model) -> str:
    from .learn._advice import kept_epoch

    record = model.record
    final = record.get("final") or {}
    recall = ", ".join(
        f"{name} {v:.3f}" if v is not None else f"{name} n/a" for name, v in (final.get("per_class_recall") or {}).items()
    )
    acc = final.get("val_accuracy")
    acc_text = f"{acc:.3f}" if acc is not None else "n/a"
    lines = [f"validation accuracy {acc_text}; recall per class: {recall}", kept_epoch(record)]
    if record.get("hard_negatives"):
        lines.append(f"hard negatives added per round: {', '.join(map(str, record['hard_negatives']))}")
    if model.min_score:
        lines.append(f"suggested min score: {_cut_text(model.min_score)} (tilemap predict and evaluate apply it "
                     "by default; --min-score none turns it off)")
    if final.get("confusion"):
        lines.append(confusion_table(final["confusion"], model.class_table.names))
    return "\n".join(lines)


def _min_score_of(value, model):
    """``--min-score`` once the model is loaded: 'model' is the model's own (said on stderr), 'none' None."""
    from .maps._predict import model_min_score

    cut = model_min_score(model, None if value == "none" else value)
    if value == "model" and cut:
        print(f"min score from the model: {_cut_text(cut)} ('--min-score none' keeps every region)", file=sys.stderr)
    return cut


def _cut_text(cut) -> str:
    """A min score as the command line takes it: ``pit=0.72,scratch=0.85``, or ``none``."""
    return ",".join(f"{n}={v:.3f}" for n, v in cut.items()) if cut else "none"


def confusion_table(confusion, names) -> str:
    """A confusion matrix (rows: true class, columns: predicted) as aligned text."""
    names = [str(n) for n in names]
    width = max(len(n) for n in names + ["true \\ predicted"]) + 1
    cell = max(max(len(str(v)) for row in confusion for v in row), *(len(n) for n in names)) + 2
    head = "true \\ predicted".ljust(width) + "".join(n.rjust(cell) for n in names)
    rows = [n.ljust(width) + "".join(str(v).rjust(cell) for v in row) for n, row in zip(names, confusion)]
    return "validation confusion matrix (tiles):\n" + "\n".join([head, *rows])


def _demo(args) -> int:
    from skimage.io import imsave

    from .io._sample import sample_surface
    from .learn._tiles import extract_tiles
    from .maps._overlay import overlay

    out = Path(args.out)
    results = [out / "model.tilemap", out / "map.zarr", out / "overlay.png"]
    if not out.absolute().parent.is_dir():
        raise TilemapInputError(f"the folder of the output {str(out)!r} does not exist; create it first")
    if out.exists() and not out.is_dir():
        raise TilemapInputError(f"{str(out)!r} is a file; choose a folder for the demo's results")
    if not args.overwrite and any(p.exists() for p in results):
        raise TilemapInputError(f"{str(out)!r} already holds demo results; choose another folder or pass --overwrite")
    if args.view:
        _check_display()
    # the sample paints only some of its defects, which is what the balanced prior is for
    config = _check_training_options(48, epochs=args.epochs, device=args.device, seed=args.seed, prior="balanced")
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    sample = sample_surface(seed=args.seed)
    tiles = extract_tiles(sample.image, sample.labels, tile_size=48, class_table=sample.class_table, seed=args.seed)
    painted = len(sample.painted_pits) + len(sample.painted_scratches)
    print(f"tiles: {tiles.counts()}; {painted} of the {len(sample.pits) + len(sample.scratches)} defects are "
          f"painted, so the prior is {config.prior!r}", file=sys.stderr)
    model = _train_with_bar(tiles, config, args, results[0])
    args.kept = f"the model was written to {results[0]}; the map store keeps its finished blocks"
    cmap = _predict_with_bar(model, sample.image, results[1], name="the sample", device=args.device, overwrite=True)
    imsave(results[2], overlay(sample.image, cmap), check_contrast=False)
    print(_metrics_line(model))
    print(f"wrote {', '.join(map(str, results))} in {time.perf_counter() - t0:.0f} s")
    if args.view:
        _view(sample, cmap)
    return 0


def _check_display() -> None:
    """Refuse --view early, in one line, where napari cannot open a window."""
    try:
        import napari  # noqa: F401
    except ImportError:
        raise TilemapInputError("--view needs napari: pip install 'napari-tilemap[all]'") from None
    if sys.platform.startswith("linux") and os.environ.get("QT_QPA_PLATFORM", "") not in ("offscreen", "minimal"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise TilemapInputError("--view needs a display, and none is set (DISPLAY is empty); run without "
                                    "--view and open the results later, or run under xvfb-run")


def _view(sample, cmap) -> None:
    import napari

    from ._layerdata import map_layer_data

    viewer = napari.Viewer()
    viewer.add_image(sample.image, name="surface")
    viewer.add_labels(sample.labels, name="painted defects")
    for data, kwargs, kind in map_layer_data(cmap):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    napari.run()


def _read_array(path: str) -> np.ndarray:
    """A whole image or labels file as an array, in its own dtype (training data fits in memory)."""
    from .io._sources import open_image

    return np.asarray(open_image(path).array)


def _train(args) -> int:
    from .learn._advice import advice
    from .learn._tiles import extract_tiles

    if len(args.pairs) % 2:
        raise TilemapInputError("train takes IMAGE LABELS pairs; got an odd number of files")
    out = Path(args.out)
    _check_output(out, overwrite=args.overwrite)
    config = _check_training_options(args.tile_size, args.background, preset=args.preset, epochs=args.epochs,
                                     device=args.device, seed=args.seed, loss=args.loss, augment=args.augment,
                                     hard_negative_rounds=args.hard_negatives, prior=args.prior,
                                     normalise=args.normalise, max_time=args.max_time)
    if args.hard_negatives and args.background == "none":
        raise TilemapInputError("--hard-negatives needs --background unpainted: with 'none', unpainted pixels are "
                                "not background, so no false alarm can be told from a class")
    if args.clean and args.background == "none":
        raise TilemapInputError("--clean needs --background unpainted: with 'none', an unpainted image teaches nothing")
    images = [_read_array(p) for p in [*args.pairs[0::2], *args.clean]]
    labels = [_read_array(p) for p in args.pairs[1::2]]
    names = None if args.class_names is None else _class_names_of(args.class_names, labels, args.background)
    labels += [None] * len(args.clean)  # defect-free: every pixel background
    tiles = extract_tiles(images, labels, tile_size=args.tile_size, background=args.background, seed=args.seed,
                          class_names=names)
    print(f"tiles: {tiles.counts()}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _train_with_bar(tiles, config, args, out)
    for warning in caught:
        if for_the_user(warning.category, warning.filename):
            print(f"tilemap train: warning: {cli_words(str(warning.message))}", file=sys.stderr)
    for text in advice(model):
        print(f"tilemap train: warning: {cli_words(text)}", file=sys.stderr)
    print(_metrics_line(model))
    print(f"wrote {out}")
    return 0


def _predict(args) -> int:
    from .learn._modelfile import load_model

    out = Path(args.out)
    if len(args.images) == 1:
        _check_output(out, overwrite=args.overwrite, exists_ok=True)  # an existing store resumes or is refused
        targets = [(args.images[0], out)]
    else:
        targets = _batch_targets(args.images, out)
    model = load_model(args.model)
    from .maps._threshold import normalize_threshold

    from_model = args.min_score == "model"
    args.min_score = _min_score_of(args.min_score, model)
    for value, what in ((args.threshold, "threshold"), (args.min_score, "min_score")):
        if value is not None:  # a bad value fails before any work
            normalize_threshold(value, model.class_table, what)
    if args.tta:
        from .maps._dense import trained_orientations

        trained_orientations(model)
    given = (("threshold", args.threshold), ("min score", args.min_score))
    rules = ", ".join(f"{what} {_rule_text(value)}" for what, value in given if value is not None)
    batch = len(targets) > 1
    if batch:
        out.mkdir(exist_ok=True)
        if rules and not (from_model and args.threshold is None):  # the model's min score is said already
            print(f"every map: {rules}", file=sys.stderr)
    done: list[str] = []
    start = time.perf_counter()
    for k, (image, store) in enumerate(targets, 1):
        args.kept = ("; ".join([*(f"{p} is complete" for p in done),
                                f"{store} keeps its finished blocks: run the same command again to resume"]))
        name = Path(image.rstrip("/\\")).name
        cmap = _predict_with_bar(
            model, image, store, f"[{k}/{len(targets)}] {name}" if batch else None, transient=batch,
            block_size=args.chunk, device=args.device, overwrite=args.overwrite, workers=args.workers,
            scheduler=args.scheduler, scores_dtype="float16" if args.float16 else "float32", tta=args.tta,
            min_score=args.min_score, threshold=args.threshold,
        )
        cells = f"map of {cmap.shape[0]}x{cmap.shape[1]} cells"
        if rules:
            rows = range(0, cmap.shape[0], 1024)  # counted in strips: the map may not fit in memory
            unknown = sum(int((np.asarray(cmap.classes[r : r + 1024]) == UNKNOWN).sum()) for r in rows)
            cells = f"{unknown} of {cmap.shape[0] * cmap.shape[1]} cells unknown"
            if not batch:
                print(f"{rules}: {cells}")
        done.append(str(store))
        if batch:
            elapsed = time.perf_counter() - start
            timing = duration(elapsed) + (f", ~{duration(elapsed / k * (len(targets) - k))} left"
                                          if k < len(targets) else " in all")
            print(f"[{k}/{len(targets)}] {name}: {cells}, wrote {store} ({timing})", flush=True)
        else:
            print(f"wrote {store}: map of {cmap.shape[0]}x{cmap.shape[1]} cells, step {cmap.step}")
    return 0


def _rule_text(value) -> str:
    """A threshold or min score as the command line takes it, rounded to 3 digits: ``0.4``, ``pit=0.735``."""
    def number(v) -> str:
        return f"{round(float(v), 3):g}"

    if isinstance(value, dict):
        return ",".join(f"{name}={number(v)}" for name, v in value.items())
    return number(value)


def _batch_targets(images: list[str], folder: Path) -> list[tuple[str, Path]]:
    """One map store per image in ``folder``, named after the image; checked before any work."""
    if not folder.absolute().parent.is_dir():
        raise TilemapInputError(f"the folder above the output {str(folder)!r} does not exist; create it first")
    if folder.exists() and not folder.is_dir():
        raise TilemapInputError(f"with several images, -o names a folder, and {str(folder)!r} is a file")
    stores: dict[Path, str] = {}
    for image in images:
        name = Path(image.rstrip("/\\")).name
        stem = name[: -len(".ome.zarr")] if name.endswith(".ome.zarr") else Path(name).stem
        store = folder / f"{stem}.zarr"
        if store in stores:
            raise TilemapInputError(f"{stores[store]!r} and {image!r} would both write {str(store)!r}; "
                                    "rename one of them or predict them one by one")
        stores[store] = image
    return [(image, store) for store, image in stores.items()]


def _evaluate(args) -> int:
    from .analysis._evaluate import evaluate
    from .analysis._report import check_report_folder, write_report
    from .learn._modelfile import load_model

    if len(args.pairs) % 2:
        raise TilemapInputError("evaluate takes IMAGE TRUTH pairs after the model; got an odd number of files")
    if args.report is not None:
        check_report_folder(args.report, overwrite=args.overwrite)  # before any work
    model = load_model(args.model)
    min_score = _min_score_of(args.min_score, model)
    args.min_score = 0.0 if min_score is None else min_score  # 0: every region judged
    shown = None

    def progress(event):
        nonlocal shown
        if shown is None or shown.desc != event.stage:
            if shown is not None:
                shown.close()
            shown = Steps(event.total, event.stage, "block")
        shown.update_to(event.done)

    try:
        result = evaluate(model, args.pairs[0::2], args.pairs[1::2], unlabelled=args.unlabelled,
                          threshold=args.threshold, min_score=args.min_score, block_size=args.chunk,
                          device=args.device, tta=args.tta, callback=progress)
    finally:
        if shown is not None:
            shown.close()
    print(result.summary())
    if args.report is not None:
        paths = write_report(result, args.report, overwrite=args.overwrite)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
