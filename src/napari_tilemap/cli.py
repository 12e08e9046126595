"""The ``tilemap`` command line: ``demo``, ``train``, ``predict`` and ``evaluate``.

Exit status 0 on success, 2 on bad input, 1 when the environment fails (disk full, a
lost cluster), 130 when interrupted; every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path

import numpy as np

from ._classes import UNKNOWN
from ._errors import TilemapInputError
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
    try:
        return args.run(args)
    except (TilemapInputError, ValueError, TypeError) as err:
        return _fail(args.command, _one_line(err), BAD_INPUT)
    except KeyboardInterrupt:
        hint = "; run the same command again to resume" if args.command == "predict" else ""
        print(f"tilemap {args.command}: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED
    except Cancelled as err:
        return _fail(args.command, _one_line(err), INTERRUPTED)
    except Exception as err:  # disks, networks and clusters: one line, never a traceback
        if os.environ.get("TILEMAP_DEBUG"):
            raise
        return _fail(args.command, _environment_message(err, args.command), ENVIRONMENT)


def _fail(command: str, message: str, status: int) -> int:
    print(f"tilemap {command}: error: {message}", file=sys.stderr)
    return status


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


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


def _threshold_arg(text: str):
    """``0.7`` or ``pit=0.9,scratch=0.6`` (class names or label values) as a float or a dict."""
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a threshold: give one number in 0..1 or NAME=T pairs such as pit=0.9,scratch=0.6"
        ) from None


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tilemap", description="Tile classification of images of any size.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="sample surface -> tiles -> train -> map, end to end")
    d.add_argument("-o", "--out", default="tilemap-demo", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--view", action="store_true", help="open the result in napari (needs a display)")
    d.set_defaults(run=_demo)

    t = sub.add_parser("train", help="train a model on painted images")
    t.add_argument("pairs", nargs="+", metavar="IMAGE LABELS", help="image and labels files, in pairs")
    t.add_argument("-o", "--out", required=True, help="model file to write (*.tilemap)")
    t.add_argument("--tile-size", type=int, default=64)
    t.add_argument("--preset", default="medium", choices=["small", "medium", "large"])
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--background", default="unpainted", choices=["unpainted", "none"])
    t.add_argument("--loss", default="softmax", choices=["softmax", "sigmoid"],
                   help="softmax: scores sum to 1; sigmoid: one-vs-rest scores, each class on its own "
                        "(default: %(default)s)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    t.set_defaults(run=_train)

    r = sub.add_parser("predict", help="compute the classification map of an image")
    r.add_argument("model", help="model file (*.tilemap)")
    r.add_argument("image", help="image file: TIFF, PNG/JPEG, .npy, zarr / OME-Zarr")
    r.add_argument("-o", "--out", required=True, help="map store to write (MAP.zarr)")
    r.add_argument("--chunk", type=int, default=1024, help="work block side in pixels (default: %(default)s)")
    r.add_argument("--device", default="auto")
    r.add_argument("--workers", type=int, default=None, help="local worker threads (default: 2)")
    r.add_argument("--scheduler", default=None, help="run on the dask.distributed cluster at this address")
    r.add_argument("--float16", action="store_true", help="store scores as float16 (half the disk)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing, different map store")
    r.add_argument("--threshold", type=_threshold_arg, default=None, metavar="T", help=THRESHOLD_HELP)
    r.set_defaults(run=_predict)

    e = sub.add_parser("evaluate", help="measure a model against labelled images: cells, objects, scores")
    e.add_argument("model", help="model file (*.tilemap)")
    e.add_argument("pairs", nargs="+", metavar="IMAGE TRUTH", help="image and truth label files, in pairs")
    e.add_argument("--unlabelled", default="background", choices=["background", "ignore"],
                   help="truth value 0 is background (a full ground truth) or is ignored (sparse painting); "
                        "default: %(default)s")
    e.add_argument("--threshold", type=_threshold_arg, default=None, metavar="T",
                   help=THRESHOLD_HELP)
    e.add_argument("--report", default=None, metavar="DIR",
                   help="write evaluation.json and pictures (confusion, score histograms, precision-recall) here")
    e.add_argument("--chunk", type=int, default=1024, help="work block side in pixels (default: %(default)s)")
    e.add_argument("--device", default="auto")
    e.set_defaults(run=_evaluate)
    return p


def _bar(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)


def _train_with_bar(tiles, **kw):
    from .learn._training import BatchProgress, TrainingRun

    run = TrainingRun(tiles, **kw)
    bar = None
    for event in run:
        if isinstance(event, BatchProgress):
            if bar is None or event.batch == 1:
                if bar is not None:
                    bar.close()
                bar = _bar(event.batches, f"epoch {event.epoch}/{run.config.epochs}", "batch")
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}")
        else:
            bar.set_postfix(loss=f"{event.train_loss:.3f}", val_loss=f"{event.val_loss:.3f}",
                            val_acc=f"{event.val_accuracy:.3f}")
    if bar is not None:
        bar.close()
    if run.model is None:
        from ._progress import Cancelled

        raise Cancelled("training stopped before its first epoch ended; no model was written")
    return run.model


def _predict_with_bar(model, image, out, **kw):
    from .maps._predict import predict

    bar = None

    def progress(event):
        nonlocal bar
        if bar is None:
            bar = _bar(event.total, "predict", "block")
        bar.update(1)

    try:
        return predict(model, image, out, callback=progress, **kw)
    finally:
        if bar is not None:
            bar.close()


def _metrics_line(model) -> str:
    final = model.record.get("final") or {}
    recall = ", ".join(
        f"{name} {v:.3f}" if v is not None else f"{name} n/a" for name, v in (final.get("per_class_recall") or {}).items()
    )
    acc = final.get("val_accuracy")
    acc_text = f"{acc:.3f}" if acc is not None else "n/a"
    lines = [f"validation accuracy {acc_text} (epoch {final.get('epoch')}); recall per class: {recall}"]
    if final.get("confusion"):
        lines.append(confusion_table(final["confusion"], model.class_table.names))
    return "\n".join(lines)


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
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sample = sample_surface(seed=args.seed)
    tiles = extract_tiles(sample.image, sample.labels, tile_size=48, class_table=sample.class_table, seed=args.seed)
    print(f"tiles: {tiles.counts()}", file=sys.stderr)
    model = _train_with_bar(tiles, epochs=args.epochs, device=args.device, seed=args.seed)
    model.save(out / "model.tilemap")
    cmap = _predict_with_bar(model, sample.image, out / "map.zarr", device=args.device, overwrite=True)
    imsave(out / "overlay.png", overlay(sample.image, cmap), check_contrast=False)
    print(_metrics_line(model))
    print(f"wrote {out / 'model.tilemap'}, {out / 'map.zarr'}, {out / 'overlay.png'} "
          f"in {time.perf_counter() - t0:.0f} s")
    if args.view:
        _view(sample, cmap)
    return 0


def _view(sample, cmap) -> None:
    try:
        import napari
    except ImportError:
        print("tilemap demo: --view needs napari: pip install 'napari-tilemap[all]'", file=sys.stderr)
        return
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
    from .learn._tiles import extract_tiles

    if len(args.pairs) % 2:
        raise TilemapInputError("train takes IMAGE LABELS pairs; got an odd number of files")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise TilemapInputError(f"{out} already exists; choose another output or pass --overwrite")
    if not out.absolute().parent.is_dir():
        raise TilemapInputError(f"the folder of the output {str(out)!r} does not exist; create it first")
    images = [_read_array(p) for p in args.pairs[0::2]]
    labels = [_read_array(p) for p in args.pairs[1::2]]
    tiles = extract_tiles(images, labels, tile_size=args.tile_size, background=args.background, seed=args.seed)
    print(f"tiles: {tiles.counts()}", file=sys.stderr)
    model = _train_with_bar(tiles, preset=args.preset, epochs=args.epochs, device=args.device, seed=args.seed,
                            loss=args.loss)
    model.save(out)
    print(_metrics_line(model))
    print(f"wrote {out}")
    return 0


def _predict(args) -> int:
    from .learn._modelfile import load_model

    model = load_model(args.model)
    cmap = _predict_with_bar(
        model, args.image, args.out, block_size=args.chunk, device=args.device, overwrite=args.overwrite,
        workers=args.workers, scheduler=args.scheduler, scores_dtype="float16" if args.float16 else "float32",
    )
    if args.threshold is not None:
        from .maps._threshold import write_threshold

        cmap = write_threshold(args.out, args.threshold)
        rows = range(0, cmap.shape[0], 1024)  # counted in strips: the map may not fit in memory
        unknown = sum(int((np.asarray(cmap.classes[r : r + 1024]) == UNKNOWN).sum()) for r in rows)
        print(f"threshold {args.threshold}: {unknown} of {cmap.shape[0] * cmap.shape[1]} cells unknown")
    print(f"wrote {args.out}: map of {cmap.shape[0]}x{cmap.shape[1]} cells, step {cmap.step}")
    return 0


def _evaluate(args) -> int:
    from .analysis._evaluate import evaluate
    from .analysis._report import write_report
    from .learn._modelfile import load_model

    if len(args.pairs) % 2:
        raise TilemapInputError("evaluate takes IMAGE TRUTH pairs after the model; got an odd number of files")
    if args.report is not None and not Path(args.report).absolute().parent.is_dir():
        raise TilemapInputError(f"the folder of the report {args.report!r} does not exist; create it first")
    model = load_model(args.model)
    bar = None

    def progress(event):
        nonlocal bar
        if bar is None or bar.desc != event.stage:
            if bar is not None:
                bar.close()
            bar = _bar(event.total, event.stage, "block")
        bar.n = event.done
        bar.refresh()

    try:
        result = evaluate(model, args.pairs[0::2], args.pairs[1::2], unlabelled=args.unlabelled,
                          threshold=args.threshold, block_size=args.chunk, device=args.device, callback=progress)
    finally:
        if bar is not None:
            bar.close()
    print(result.summary())
    if args.report is not None:
        paths = write_report(result, args.report)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
