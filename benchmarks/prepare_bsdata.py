"""Lay out the BSData ball-screw pitting set as the folder ``bench_real.py`` reads.

BSData (Schlagenhauf & Landwehr, Data in Brief 2021; CC BY-SA 4.0) is a public repository of photographs
of ball screw drive spindles wearing down, with LabelMe polygons of the pitting. This takes a copy of it
that you obtained yourself (``data/*.jpg``, ``label/*.json``, ``image_data.json``) and writes the subset
the README's figures use:

- the 1130×460 images of type 2; 60 annotated ones and 60 unannotated ones, evenly spaced over them by
  name; unannotated images taken after an annotated one of their sequence (same camera position and crop)
  are left out, as their pits may simply not be labelled;
- ``images/STEM.png``, ``masks/STEM.png`` (1 = pitting; none for the unannotated images), ``classes.txt``;
- ``split.txt``: the camera positions, sorted, alternate between training and test, so that no sequence
  of near-identical frames lies on both sides.

Run:
    python benchmarks/prepare_bsdata.py BSDATA_DIR OUT_DIR [--per-kind 60]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def sequence(stem: str) -> str:
    """Camera position and crop of a frame (``01_<time>_<pos>_<angle>_crop_<k>``): its sequence."""
    parts = stem.split("_")
    return f"{parts[2]}_{parts[3]}_{parts[-1]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="BSData folder (data/, label/, image_data.json)")
    p.add_argument("out", type=Path, help="output folder, created")
    p.add_argument("--per-kind", type=int, default=60, help="annotated and unannotated images each")
    args = p.parse_args()
    import imageio.v3 as iio
    from skimage.draw import polygon

    entries = json.loads((args.source / "image_data.json").read_text())["images"]
    frames = {}
    for e in entries:
        stem = Path(e["filename"]).stem
        if str(e["type"]) == "2" and iio.improps(args.source / "data" / e["filename"]).shape[:2] == (460, 1130):
            frames[stem] = e
    first_defect: dict[str, str] = defaultdict(lambda: "~")
    for stem, e in frames.items():
        if e.get("annotations"):
            first_defect[sequence(stem)] = min(first_defect[sequence(stem)], stem.split("_")[1])
    bad = sorted(s for s, e in frames.items() if e.get("annotations"))
    good = sorted(s for s, e in frames.items() if not e.get("annotations") and s.split("_")[1] < first_defect[sequence(s)])
    chosen = [[kind[i] for i in np.linspace(0, len(kind) - 1, args.per_kind).round().astype(int)] for kind in (bad, good)]
    (args.out / "images").mkdir(parents=True)
    (args.out / "masks").mkdir()
    for stem in chosen[0] + chosen[1]:
        e = frames[stem]
        image = iio.imread(args.source / "data" / e["filename"])
        iio.imwrite(args.out / "images" / f"{stem}.png", image)
        if e.get("annotations"):
            mask = np.zeros(image.shape[:2], np.uint8)
            for shape in json.loads((args.source / "label" / e["annotations"]).read_text())["shapes"]:
                xy = np.asarray(shape["points"], float)
                rr, cc = polygon(xy[:, 1], xy[:, 0], shape=mask.shape)
                mask[rr, cc] = 1
            iio.imwrite(args.out / "masks" / f"{stem}.png", mask)
    (args.out / "classes.txt").write_text("1 pitting\n")
    positions = sorted({sequence(s) for s in chosen[0] + chosen[1]})
    train = set(positions[0::2])
    (args.out / "split.txt").write_text("".join(f"{s} {'train' if sequence(s) in train else 'test'}\n"
                                                for s in sorted(chosen[0] + chosen[1])))
    print(f"wrote {len(chosen[0])} annotated and {len(chosen[1])} unannotated images to {args.out}")


if __name__ == "__main__":
    main()
